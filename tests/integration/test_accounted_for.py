"""Every raw record is accounted for: an id reused by another sender (another partition) is
an `id_conflict` in the DLQ, not a silently refused row; a payment inside an aborted
producer transaction is never processed (read_committed). Real broker, real worker, both
warehouse backends for the landing itself."""
from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta, timezone

import orjson
import pytest

from payflow.keys import KeyRing
from payflow.stages.batch import RawItem
from tests.fakes import dict_processor
from payflow.warehouse.base import build_batch
from payflow.warehouse.duck import DuckDBWarehouse
from tests.helpers import KAFKA, TEST_HMAC_KEYS, Worker, dlq_records, produce, read_topic, unique, wait_until
from tests.unit.cards_fixtures import event

pytestmark = pytest.mark.integration
RING = KeyRing.parse(TEST_HMAC_KEYS)


def _payment(txn: str, sender: str, amount: str, minutes: float = 0) -> bytes:
    t = (datetime.now(timezone.utc) - timedelta(minutes=30) + timedelta(minutes=minutes))
    return orjson.dumps(event(transaction_id=txn, sender_account_id=sender, amount=amount,
                              event_time=t.isoformat().replace("+00:00", "Z")))


def test_an_id_landed_from_another_position_is_an_id_conflict_on_both_backends(warehouse):
    bp = dict_processor(keyring=RING, dedup_table={}, watermark_table={}, sender_table={}, card_table={})
    first = bp.process([RawItem(0, 5, _payment("txn_shared", "acct_a", "10.00"))])
    landed = warehouse.land(build_batch(first.enriched))
    assert landed["payment_transactions"] == 1 and landed.conflicts == []

    # the same id from another sender: another partition, another amount, its own state
    other = dict_processor(keyring=RING, dedup_table={}, watermark_table={}, sender_table={}, card_table={})
    second = other.process([RawItem(1, 9, _payment("txn_shared", "acct_b", "99.00")),
                            RawItem(1, 10, _payment("txn_fresh", "acct_b", "1.00", minutes=1))])
    batch = build_batch(second.enriched)
    landed = warehouse.land(batch)
    assert landed["payment_transactions"] == 1  # txn_fresh
    assert landed.conflicts == [("txn_shared", 1, 9, 0, 5)]
    rows = warehouse.query("SELECT amount, source_partition FROM payment_transactions "
                           "WHERE transaction_id = 'txn_shared'")
    assert [(str(r["amount"]).rstrip("0").rstrip("."), r["source_partition"]) for r in rows] == [("10", 0)]
    dlq = warehouse.query("SELECT reason, transaction_id, source_partition, source_offset FROM dead_letter_events")
    assert [(r["reason"], r["transaction_id"], r["source_partition"], r["source_offset"]) for r in dlq] == [
        ("id_conflict", "txn_shared", 1, 9)]

    # a replay of either batch (same ids at the same positions) is no conflict, adds nothing
    again = warehouse.land(build_batch(first.enriched))
    assert again.conflicts == [] and again["payment_transactions"] == 0
    again = warehouse.land(batch)
    assert again.conflicts == [("txn_shared", 1, 9, 0, 5)]  # still refused, recorded once
    assert warehouse.query("SELECT COUNT(*) AS n FROM dead_letter_events")[0]["n"] == 1

    # a replay after a crash brings both copies in one landing, the refused one first: the
    # landed copy (0, 5) is no conflict, whatever the order
    both = build_batch(second.enriched[:1])
    both.extend(build_batch(first.enriched))
    replayed = warehouse.land(both)
    assert replayed.conflicts == [("txn_shared", 1, 9, 0, 5)]
    assert warehouse.query("SELECT COUNT(*) AS n FROM dead_letter_events")[0]["n"] == 1


def _send(topic: str, messages: list[tuple[bytes, bytes]], **kw) -> None:
    produce(topic, messages, **kw)


def test_a_reused_id_and_an_aborted_transaction_are_accounted_for_end_to_end(kafka, tmp):
    prefix = unique("acct-") + "-"
    raw = prefix + "payment-events"
    from payflow.kafka_admin import ensure_topics
    asyncio.run(ensure_topics(KAFKA, [raw], 4))
    # senders chosen to land in different partitions of the 4-partition raw topic
    from aiokafka.partitioner import DefaultPartitioner
    part = DefaultPartitioner()
    senders = {}
    for i in range(50):
        s = f"acct_{i:04d}"
        senders.setdefault(part(s.encode(), [0, 1, 2, 3], [0, 1, 2, 3]), s)
    a, b = senders[0], senders[1]
    # the aborted payment and the committed one after it share nothing with the others
    _send(raw, [(a.encode(), _payment("txn_reused", a, "10.00")),
                (b.encode(), _payment("txn_reused", b, "77.00", minutes=1)),
                (a.encode(), _payment("txn_plain", a, "5.00", minutes=2))],
          aborted=[(a.encode(), _payment("txn_aborted", a, "123.00", minutes=3))])
    # the partition ends with a transaction's commit marker: read_committed steps over it,
    # and the commits must still reach the partition's end (lag 0)
    _send(raw, [(a.encode(), _payment("txn_after_abort", a, "6.00", minutes=4))],
          committed_tx=[(a.encode(), _payment("txn_in_committed_tx", a, "7.00", minutes=5))])
    worker = Worker(tmp, prefix=prefix).start()
    try:
        worker.wait_caught_up(timeout=120)
    finally:
        assert worker.stop() == 0, worker.log_tail()

    w = DuckDBWarehouse(worker.warehouse[len("duckdb:///"):])
    try:
        landed = {r["transaction_id"]: str(r["amount"]) for r in w.query(
            "SELECT transaction_id, amount FROM payment_transactions")}
        dlq = [(r["reason"], r["transaction_id"]) for r in w.query(
            "SELECT reason, transaction_id FROM dead_letter_events")]
    finally:
        w.close()
    assert set(landed) == {"txn_reused", "txn_plain", "txn_after_abort", "txn_in_committed_tx"}  # not txn_aborted
    assert dlq == [("id_conflict", "txn_reused")]
    enriched = [orjson.loads(r.value)["transaction_id"] for r in read_topic(prefix + "payments-enriched")]
    assert sorted(enriched) == sorted(landed)  # the refused copy is not published as valid
    dlq_topic = dlq_records(prefix + "payment-events-dlq")
    assert [(d["reason"], d["transaction_id"]) for d in dlq_topic] == [("id_conflict", "txn_reused")]
    # which of the two copies landed depends on which partition's batch landed first; the
    # other one is the conflict, with the position it came from
    kept = "10" if landed["txn_reused"].startswith("10") else "77"
    refused_sender_partition = 1 if kept == "10" else 0
    assert dlq_topic[0]["source_partition"] == refused_sender_partition


@pytest.mark.alone
def test_readiness_waits_for_the_raw_topic_and_finds_it_within_seconds(kafka, tmp):
    prefix = unique("ready-") + "-"
    worker = Worker(tmp, prefix=prefix).start()
    try:
        def answers() -> bool:
            assert worker.alive(), worker.log_tail()
            try:
                return worker.get("/readyz")[0] in (200, 503)
            except OSError:
                return False

        wait_until(answers, 120, what="the web server")
        time.sleep(3)  # joined the group, subscribed to a topic that does not exist
        status, body = worker.get("/readyz")
        assert status == 503, body  # payment-events does not exist yet: nothing to do
        assert orjson.loads(body)["checks"]["raw_partitions_assigned"] is False
        from payflow.kafka_admin import ensure_topics
        asyncio.run(ensure_topics(KAFKA, [prefix + "payment-events"], 4))
        a = "acct_ready"
        _send(prefix + "payment-events", [(a.encode(), _payment("txn_ready", a, "3.00"))])
        created = time.monotonic()
        wait_until(lambda: worker.get("/readyz")[0] == 200, 120, interval=0.5, what="ready after the topic exists")
        # found within seconds (a short metadata max age), not aiokafka's default five minutes
        assert time.monotonic() - created < 30
        wait_until(lambda: worker.lag() == 0 and worker.metrics().get(
            ("payflow_stage_events_in_total", (("stage", "decode"),)), 0) >= 1, 60, what="the payment processed")
    finally:
        assert worker.stop() == 0, worker.log_tail()

