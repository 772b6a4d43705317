"""The raw topic grown from 4 to 8 partitions while the worker runs (a routine operation).

The state changelogs and the erasure requests must follow (payflow.pipeline.partition_growth),
the worker must keep running through the rebalances, and the warehouse must still hold every
payment once. After the growth a sender's key maps to another partition, whose dedup state
never saw its earlier payments: copies of those payments re-sent after the growth must still
land once and be audited as duplicates (the warehouse key, base.same_payment), so the run
reconciles exactly against the two simulator runs plus the copies."""
from __future__ import annotations

import asyncio
from collections import Counter
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import orjson
import pytest
from aiokafka.partitioner import murmur2

from aiokafka.admin import AIOKafkaAdminClient, NewPartitions
from payflow.simulator.generator import SimOptions
from tests.fault.test_faults import assert_reconciled_and_clean, consumed
from tests.helpers import KAFKA, Worker, produce, read_topic, simulate, unique, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.fault]
BEFORE, AFTER = 4, 8
START = datetime(2026, 11, 20, 8, 0, tzinfo=timezone.utc)


async def _grow(topic: str, partitions: int) -> None:
    """What an operator's `kafka-topics.sh --alter --partitions` does."""
    admin = AIOKafkaAdminClient(bootstrap_servers=KAFKA)
    await admin.start()
    try:
        await admin.create_partitions({topic: NewPartitions(total_count=partitions)})
    finally:
        await admin.close()


async def _counts(topics: list[str]) -> dict[str, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=KAFKA)
    await admin.start()
    try:
        await admin._client.force_metadata_update()
        return {t: len(admin._client.cluster.partitions_for_topic(t) or ()) for t in topics}
    finally:
        await admin.close()


def _partition(key: bytes, partitions: int) -> int:
    return (murmur2(key) & 0x7FFFFFFF) % partitions  # aiokafka's (and Kafka's) default partitioner


def _moved_copies(topic: str, valid_ids: set[str], n: int) -> list[tuple[bytes, bytes]]:
    """Up to n valid payments already sent whose sender's key maps elsewhere with AFTER
    partitions, re-sent as they were (oldest first: a copy is never late for its new partition)."""
    picked: dict[str, tuple[int, bytes, bytes]] = {}
    for record in read_topic(topic):
        if record.key is None or _partition(record.key, AFTER) == record.partition:
            continue
        try:
            doc = orjson.loads(record.value)
        except orjson.JSONDecodeError:
            continue
        txn = doc.get("transaction_id") if isinstance(doc, dict) else None
        if txn in valid_ids and txn not in picked:
            picked[txn] = (record.timestamp, record.key, record.value)
    chosen = sorted(picked.values())[:n]
    assert len(chosen) == n, f"only {len(chosen)} moved payments to copy"
    return [(key, value) for _, key, value in sorted(chosen, key=lambda c: orjson.loads(c[2])["event_time"])]


def _merged(parts: list[dict], copies: int) -> dict:
    """The manifests of several runs on one topic as one, plus `copies` duplicates."""
    sums: Counter = Counter()
    malformed: Counter = Counter()
    for m in parts:
        sums.update({c: Decimal(v) for c, v in m["sum_by_currency"].items()})
        malformed.update(m["malformed"]["by_kind"])
    ids = set().union(*(m["transaction_ids"] for m in parts))
    assert len(ids) == sum(len(m["transaction_ids"]) for m in parts), "the runs share a transaction id"
    return {"transaction_ids": sorted(ids), "sum_by_currency": dict(sums),
            "expected_duplicates": sum(m["expected_duplicates"] for m in parts) + copies,
            "late": sum(m["late"] for m in parts), "malformed": {"by_kind": dict(malformed)},
            "messages_sent": sum(m["messages_sent"] for m in parts) + copies}


def test_raw_topic_grown_mid_run_reconciles_with_moved_copies(kafka, tmp):
    prefix = unique("grow-") + "-"
    raw = prefix + "payment-events"
    first = simulate(prefix, tmp / "m1.json", count=8000, seed=61, partitions=BEFORE, start_time=START)
    worker = Worker(tmp, prefix=prefix, extra_env={"PAYFLOW_SINK_BATCH_SIZE": "500"}).start()
    changelogs = [f"{worker.app_id}-{t}-changelog" for t in ("dedup", "watermarks", "sender-activity", "card-activity")]
    followers = changelogs + [prefix + "payflow-erasure-requests"]
    try:
        # grown mid-stream: part of the first run still to be processed
        wait_until(lambda: worker.alive() and consumed(worker) >= 0.3 * first["messages_sent"], 300,
                   interval=0.2, what="a third of the first run consumed")
        asyncio.run(_grow(raw, AFTER))
        assert consumed(worker) < first["messages_sent"], "the first run was processed before the growth"

        # the copies: payments of the first run whose sender now maps to a new partition
        copies = _moved_copies(raw, set(first["transaction_ids"]), 300)
        assert {_partition(k, AFTER) for k, _ in copies} <= set(range(BEFORE, AFTER))
        produce(raw, copies)
        # then a second run, in event time right after the first (the simulator's pace)
        second = simulate(prefix, tmp / "m2.json", count=8000, seed=62, partitions=AFTER,
                          start_time=START + timedelta(seconds=first["messages_sent"] / SimOptions.business_tps))

        wait_until(lambda: asyncio.run(_counts(followers)) == dict.fromkeys(followers, AFTER),
                   120, what="the changelogs and erasure requests grown to 8 partitions")
        worker.wait_caught_up(timeout=600)
        assert worker.alive() and worker.starts == 1, worker.log_tail()
    finally:
        code = worker.stop()
    assert code == 0, worker.log_tail()
    log = worker.log_path.read_text(errors="replace")
    assert "Unrecognized partition" not in log and "CRITICAL" not in log, worker.log_tail(80)

    merged = tmp / "merged.json"
    merged.write_text(orjson.dumps(_merged([first, second], len(copies)), default=str).decode())
    assert_reconciled_and_clean(worker, merged)
