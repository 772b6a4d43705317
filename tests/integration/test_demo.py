"""The README's front door: the demo (payflow.demo, what `make demo` runs once the stack is
up) end to end on the test broker, on a smaller stream: simulate, run the worker until it
caught up, reconcile, the example queries, the PCI scan; it exits 0 only if the
reconciliation balances and the scan finds no card data."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from payflow.settings import ROOT
from tests.helpers import TEST_HMAC_KEYS, free_port, unique

pytestmark = pytest.mark.integration


def test_the_demo_runs_end_to_end_and_its_checks_pass(kafka, tmp):
    prefix = unique("demo") + "-"
    env = {**os.environ, "PAYFLOW_KAFKA_BOOTSTRAP": kafka, "PAYFLOW_TOPIC_PREFIX": prefix,
           "PAYFLOW_APP_ID": prefix + "app", "PAYFLOW_WAREHOUSE": f"duckdb:///{tmp}/demo.duckdb",
           "PAYFLOW_DATA_DIR": str(tmp / "demo"), "PAYFLOW_DEMO_EVENTS": "3000",
           "PAYFLOW_HMAC_KEYS": TEST_HMAC_KEYS, "PAYFLOW_WEB_PORT": str(free_port())}
    done = subprocess.run([sys.executable, "-m", "payflow.demo"], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    for section in ("reconciliation against the simulator's manifest", "PCI scan of the warehouse and the worker's logs",
                    "done: query the views"):
        assert section in done.stdout, done.stdout[-4000:]
    assert (tmp / "demo" / "worker-stdout.log").is_file()  # the worker's output, scanned for card data
