"""Dedup decisions and the watermark (pure functions); fraud signals: test_fraud_scoring.py."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from payflow.stages import dedup

T0 = datetime(2026, 11, 20, 10, 0, tzinfo=timezone.utc)


def test_replay_versus_duplicate():
    first = dedup.FirstSeen(2, 100, 5)
    assert dedup.classify(None, 2, 100) is dedup.Verdict.NEW
    assert dedup.classify(first, 2, 100) is dedup.Verdict.REPLAY
    assert dedup.classify(first, 2, 101) is dedup.Verdict.DUPLICATE
    assert dedup.classify(first, 3, 100) is dedup.Verdict.DUPLICATE
    assert dedup.FirstSeen.unpack(first.pack()) == first


def test_watermark_is_one_hour_behind_the_highest_event_time():
    hour = 3600 * 1_000_000
    wm = 10 * hour
    assert not dedup.is_late(wm - hour, wm, hour)
    assert dedup.is_late(wm - hour - 1, wm, hour)
    assert not dedup.is_late(0, None, hour)


def test_replay_after_a_crash_is_not_judged_late_by_the_recovered_watermark():
    """A batch processed (state written) but not landed before a crash is read again with
    the watermark it advanced: its early events are replays, not late events (found by the
    SIGKILL fault test: one payment went missing)."""
    import orjson

    from payflow.keys import KeyRing
    from payflow.stages.batch import RawItem
    from tests.fakes import dict_processor
    from tests.unit.cards_fixtures import event

    tables = dict(dedup_table={}, watermark_table={}, sender_table={}, card_table={})
    ring = KeyRing.parse("t-1:" + "ab" * 32)
    items = [RawItem(0, 0, orjson.dumps(event(transaction_id="txn_early_one", event_time="2026-11-20T10:00:00Z"))),
             RawItem(0, 1, orjson.dumps(event(transaction_id="txn_later_one", event_time="2026-11-20T11:30:00Z")))]
    first = dict_processor(keyring=ring, **tables).process(items)
    assert [e.payment.transaction_id for e in first.enriched] == ["txn_early_one", "txn_later_one"]
    replayed = dict_processor(keyring=ring, **tables).process(items)  # state recovered, batch read again
    assert [e.payment.transaction_id for e in replayed.enriched] == ["txn_early_one", "txn_later_one"]
    assert replayed.late == [] and replayed.replays == 2


def test_a_replay_writes_its_dedup_entry_again_unchanged():
    """A re-read after state changes that were never logged (a landing refused after its
    processing drops them: payflow.pipeline.checkpoint) must log them anew: a replay writes
    its entry again, the same bytes, or the changelog would lack it for good."""
    import orjson

    from payflow.keys import KeyRing
    from payflow.stages.batch import RawItem
    from tests.fakes import DictState, dict_processor
    from tests.unit.cards_fixtures import event

    class Recording(DictState):
        def __init__(self):
            super().__init__()
            self.writes: list[tuple[str, bytes]] = []

        def write(self, partition, key, value):
            self.writes.append((key, value))
            super().write(partition, key, value)

    dedup_table = Recording()
    ring = KeyRing.parse("t-1:" + "ab" * 32)
    items = [RawItem(0, 7, orjson.dumps(event(transaction_id="txn_replayed", event_time="2026-11-20T10:00:00Z")))]
    dict_processor(keyring=ring, dedup_table=dedup_table, watermark_table={}, sender_table={},
                   card_table={}).process(items)
    first = list(dedup_table.writes)
    replayed = dict_processor(keyring=ring, dedup_table=dedup_table, watermark_table={}, sender_table={},
                              card_table={}).process(items)
    assert replayed.replays == 1
    assert [k for k, _ in first] == ["txn_replayed"] and dedup_table.writes == first + first


def test_a_replay_of_a_landed_payment_is_not_a_duplicate_of_its_later_copy(tmp_path):
    """An id at offset 0 and again at 80, two hours of event time later: the second copy
    finds the first one's entry expired and takes the entry. A replay of both (a crash before
    the commit) once judged offset 0 a duplicate of 80, so position 0 was in
    payment_transactions and in deduplication_audit: counted twice."""
    import orjson

    from payflow.keys import KeyRing
    from payflow.stages.batch import BatchProcessor, RawItem
    from payflow.tables.memory import MemoryState
    from payflow.warehouse.base import build_batch
    from payflow.warehouse.duck import DuckDBWarehouse
    from tests.unit.cards_fixtures import event

    def pay(txn: str, seconds: int) -> bytes:
        t = (T0 + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")
        return orjson.dumps(event("4111111111111111", transaction_id=txn, event_time=t, sender_account_id="acct_1"))

    now = T0 + timedelta(hours=5)
    processor = BatchProcessor(keyring=KeyRing.parse("k1:" + "11" * 32), watermark_seconds=3600,
                               committed_offset=lambda p: 0, now=lambda: now,
                               **{t: MemoryState() for t in ("dedup_table", "watermark_table", "sender_table",
                                                             "card_table")})
    items = ([RawItem(0, 0, pay("T", 0))] + [RawItem(0, i, pay(f"t{i}", i * 100)) for i in range(1, 80)]
             + [RawItem(0, 80, pay("T", 7900))])
    warehouse = DuckDBWarehouse(str(tmp_path / "w.duckdb"))
    warehouse.ensure_schema()
    try:
        for _ in range(2):  # the run, then the replay of the same positions
            for chunk in (items[:40], items[40:]):
                result = processor.process(chunk)
                warehouse.land(build_batch(result.enriched, result.duplicates, result.rejections, result.late,
                                           result.watermarks, now))
        held = {t: warehouse.query(f"SELECT COUNT(*) AS n FROM {t} WHERE transaction_id = 'T'")[0]["n"]
                for t in ("payment_transactions", "deduplication_audit")}
        assert held == {"payment_transactions": 1, "deduplication_audit": 1}
        audit = warehouse.query("SELECT duplicate_offset, first_offset FROM deduplication_audit")
        assert [(r["duplicate_offset"], r["first_offset"]) for r in audit] == [(80, 0)]
    finally:
        warehouse.close()
