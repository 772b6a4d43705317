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


@pytest.mark.parametrize("local_state", ["kept", "lost"])
def test_dedup_state_survives_a_restart(kafka, tmp, local_state):
    """A client double-submit that arrives after the worker restarted is still caught: the
    dedup table comes back from RocksDB, or, when the local disk is lost (a pod rescheduled
    elsewhere), from its changelog (one record per partition per batch, payflow.tables.changelog)."""
    import asyncio
    import shutil

    import orjson
    from aiokafka import AIOKafkaProducer

    from tests.helpers import KAFKA, read_topic

    prefix = unique("restart-") + "-"
    simulate(prefix, tmp / "m.json", count=2000, seed=22, duplicate_ratio=0.0, late_ratio=0.0,
             malformed_ratio=0.0)
    worker = Worker(tmp, prefix=prefix).start()
    try:
        worker.wait_caught_up(timeout=180)
    finally:
        assert worker.stop() == 0, worker.log_tail()
    first = read_topic(prefix + "payment-events")[-1]  # a payment already landed

    async def resend() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=KAFKA, enable_idempotence=True)
        await producer.start()
        try:
            await producer.send_and_wait(prefix + "payment-events", first.value, key=first.key)
        finally:
            await producer.stop()

    asyncio.run(resend())
    if local_state == "lost":
        shutil.rmtree(tmp / "data" / "state")
    worker.start()
    try:
        worker.wait_caught_up(timeout=180)
    finally:
        assert worker.stop() == 0, worker.log_tail()
    txn = orjson.loads(first.value)["transaction_id"]
    audit = [orjson.loads(r.value) for r in read_topic(prefix + "payflow-dedup-audit")]
    # one duplicate detected; the audit topic is at-least-once (a batch read again after
    # recovery publishes its record again), so count distinct (partition, offset)
    assert {(a["transaction_id"], a["duplicate_partition"], a["duplicate_offset"]) for a in audit} == {
        (txn, first.partition, audit[0]["duplicate_offset"])}
    assert audit[0]["first_offset"] == first.offset and audit[0]["duplicate_offset"] > first.offset
    enriched = [orjson.loads(r.value)["transaction_id"] for r in read_topic(prefix + "payments-enriched")]
    assert enriched.count(txn) == 1
    landed = DuckDBWarehouse(worker.warehouse[len("duckdb:///"):])
    try:
        for table in ("payment_transactions", "deduplication_audit"):
            rows = landed.query(f"SELECT COUNT(*) AS n FROM {table} WHERE transaction_id = @t", {"t": txn})
            assert rows[0]["n"] == 1, table
    finally:
        landed.close()
