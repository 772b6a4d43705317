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
