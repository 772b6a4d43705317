"""End to end: simulator -> real broker -> real worker process -> warehouse -> reconciliation."""
from __future__ import annotations

import pytest

from payflow.reconcile import reconcile
from payflow.simulator.manifest import load
from payflow.warehouse.duck import DuckDBWarehouse
from tests.helpers import Worker, simulate, unique

pytestmark = pytest.mark.integration


def _reconciled(worker: Worker, manifest_path) -> None:
    w = DuckDBWarehouse(worker.warehouse[len("duckdb:///"):])
    try:
        result = reconcile(w, load(manifest_path))
    finally:
        w.close()
    assert result.ok, result.report()


def test_crash_between_landing_and_commit_keeps_one_row_per_payment(kafka, tmp):
    prefix = unique("sinkstop-") + "-"
    simulate(prefix, tmp / "m.json", count=6000, seed=21)
    worker = Worker(tmp, prefix=prefix, extra_env={"PAYFLOW_FAULT_EXIT_AFTER_LAND": "2",
                                                    "PAYFLOW_SINK_BATCH_SIZE": "1000"}).start()
    worker.proc.wait(timeout=120)
    assert worker.proc.returncode == 86, worker.log_tail()  # died after landing, before acking
    assert worker.lag() > 0  # what it landed last is not committed: it will be read again
    landed = DuckDBWarehouse(worker.warehouse[len("duckdb:///"):])
    first_rows = landed.query("SELECT COUNT(*) AS n FROM payment_transactions")[0]["n"]
    landed.close()
    assert first_rows > 0
    worker.env.pop("PAYFLOW_FAULT_EXIT_AFTER_LAND")
    worker.start()
    try:
        worker.wait_caught_up(timeout=180)
    finally:
        assert worker.stop() == 0, worker.log_tail()
    _reconciled(worker, tmp / "m.json")
