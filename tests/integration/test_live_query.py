"""The embedded warehouse is usable while a worker runs and consumes: `payflow query`,
`reconcile`, `audit pci` and `gdpr erase` go through the worker that holds the DuckDB file
(payflow/query.py), and a write sent as a query is refused."""
from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from pathlib import Path

import duckdb
import pytest

from payflow.settings import ROOT
from tests.helpers import KAFKA, Worker, unique, wait_until

pytestmark = pytest.mark.integration


def cli(worker: Worker, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "payflow.cli", *args], cwd=ROOT, env=worker.env,
                          capture_output=True, text=True, timeout=timeout)


def count(worker: Worker, sql: str) -> int:
    proc = cli(worker, "query", "--json", sql)
    assert proc.returncode == 0, proc.stderr
    return int(proc.stdout.split('"n": ')[1].split("}")[0])


def test_query_reconcile_audit_and_erase_while_the_worker_consumes(kafka, tmp: Path):
    from datetime import datetime, timezone

    from payflow.simulator.generator import SimOptions
    from payflow.simulator.producer import simulate

    prefix = unique("live") + "-"
    worker = Worker(tmp, prefix=prefix).start()
    db_path = Path(worker.warehouse[len("duckdb:///"):])
    manifest = tmp / "manifest.json"
    try:
        def started() -> bool:
            assert worker.alive(), worker.log_tail()
            try:
                return bool(worker.get_json("/readyz")["checks"]["pipeline_started"])
            except OSError:  # the web server is not up yet
                return False
        wait_until(started, 120, what="the worker's pipeline to start")
        # traffic at a bounded rate, so the worker is still consuming while the commands run
        options = SimOptions(count=3000, seed=11, start_time=datetime(2026, 11, 20, 8, 0, tzinfo=timezone.utc))
        sender = threading.Thread(target=lambda: asyncio.run(simulate(
            options, bootstrap=KAFKA, topic=prefix + "payment-events", partitions=4, manifest_path=manifest,
            rate=250, progress=False)))
        sender.start()
        try:
            wait_until(lambda: count(worker, "SELECT count(*) AS n FROM payment_transactions") > 0, 120,
                       what="payments to land")
            assert sender.is_alive(), "the simulation finished too soon to test reading while consuming"
            # the file really is held: another process cannot open it, not even read-only
            with pytest.raises(duckdb.IOException):
                duckdb.connect(str(db_path), read_only=True)
            first = count(worker, "SELECT count(*) AS n FROM payment_transactions")
            wait_until(lambda: count(worker, "SELECT count(*) AS n FROM payment_transactions") > first, 180,
                       what="the count to grow while querying")
            refused = cli(worker, "query", "DELETE FROM payment_transactions")
            assert refused.returncode == 2 and "read-only" in refused.stderr, refused.stderr
            assert "Traceback" not in refused.stderr, refused.stderr
            audit = cli(worker, "audit", "pci", "--no-topics", "--no-state")
            assert audit.returncode == 0, audit.stdout + audit.stderr
        finally:
            sender.join(timeout=120)
        worker.wait_caught_up()
        assert worker.alive()

        reconciled = cli(worker, "reconcile", "--manifest", str(manifest))
        assert reconciled.returncode == 0, reconciled.stdout + reconciled.stderr

        subject = cli(worker, "query", "--json", "SELECT pii_hash FROM payment_transactions "
                                                 "WHERE pii_hash IS NOT NULL ORDER BY transaction_id LIMIT 1")
        assert subject.returncode == 0, subject.stderr
        pii_hash = subject.stdout.split('"pii_hash": "')[1].split('"')[0]
        before = count(worker, f"SELECT count(*) AS n FROM payment_transactions WHERE pii_hash = '{pii_hash}'")
        assert before > 0
        erased = cli(worker, "gdpr", "erase", "--pii-hash", pii_hash, "--mode", "delete")
        assert erased.returncode == 0, erased.stdout + erased.stderr
        assert count(worker, f"SELECT count(*) AS n FROM payment_transactions WHERE pii_hash = '{pii_hash}'") == 0
        assert count(worker, f"SELECT count(*) AS n FROM gdpr_erasures WHERE pii_hash = '{pii_hash}'") == 1
        assert worker.alive(), worker.log_tail()
    finally:
        worker.stop()
    # no worker: the same command opens the file itself, read-only, and the owner file is gone
    assert not Path(str(db_path) + ".owner.json").exists()
    assert count(worker, "SELECT count(*) AS n FROM gdpr_erasures") == 1
