"""Replays are judged by the watermark they were first judged by (payflow/stages/state.py: WatermarkLog).

Found by the SIGKILL fault test: the stall guard sought a partition back ~20,000 events
(over an hour of event time); the offsets Faust had never delivered, and replays whose
dedup entries had expired, were judged late against the advanced watermark: 147 payments
went to the late topic instead of the payments table.
"""
from datetime import datetime, timedelta, timezone

import orjson
import pytest

from payflow.keys import KeyRing
from payflow.stages.batch import RawItem
from tests.fakes import dict_processor
from payflow.stages.state import MAX_ENTRIES, WatermarkLog
from tests.unit.cards_fixtures import event

RING = KeyRing.parse("t-1:" + "ab" * 32)
START = datetime(2026, 11, 20, 8, 0, tzinfo=timezone.utc)
NOW = lambda: datetime(2026, 11, 21, tzinfo=timezone.utc)  # noqa: E731


def item(offset: int, minutes: float, txn: str | None = None) -> RawItem:
    t = START + timedelta(minutes=minutes)
    doc = event(transaction_id=txn or f"txn_{offset:020d}".replace("0", "a")[:24],
                event_time=t.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                sender_account_id=f"acct_{offset % 7}")
    return RawItem(0, offset, orjson.dumps(doc))


def stream(n: int) -> list[RawItem]:
    """One event per simulated minute; every 25th is 70 minutes behind (late by design)."""
    return [item(o, o - 70 if o % 25 == 24 else o, txn=f"txn_{o:06d}_late" if o % 25 == 24 else f"txn_{o:06d}_ok")
            for o in range(n)]


def processor(tables, committed=None):
    return dict_processor(keyring=RING, now=NOW, committed_offset=committed, **tables)


def run(bp, items, size=20):
    enriched, late = [], []
    for i in range(0, len(items), size):
        out = bp.process(items[i:i + size])
        bp.expire(out.start_watermarks)  # as the agent does once the batch landed
        enriched += [e.payment.transaction_id for e in out.enriched]
        late += [p.transaction_id for p in out.late]
    return enriched, late


@pytest.fixture
def tables():
    return dict(dedup_table={}, watermark_table={}, sender_table={}, card_table={})


def verdicts(items):
    return run(processor(dict(dedup_table={}, watermark_table={}, sender_table={}, card_table={})), items)


@pytest.mark.parametrize("restart", [True, False], ids=["after a restart", "after a seek back in process"])
def test_a_replay_from_the_committed_position_gets_the_verdicts_of_the_first_pass(tables, restart):
    events = stream(300)  # 300 minutes of event time
    hole = {45, 46, 130}  # read by the consumer but never delivered the first time (faust#596)
    bp = processor(tables, committed=lambda p: 40)  # commits stuck at 40 behind the hole
    first_enriched, first_late = run(bp, [e for e in events if e.offset not in hole])
    assert first_late  # the stream has late events, and the first pass found them

    again = processor(tables, committed=lambda p: 40) if restart else bp
    replay_enriched, replay_late = run(again, events[40:])

    expected_enriched, expected_late = verdicts(events)
    assert set(first_enriched) | set(replay_enriched) == set(expected_enriched)
    assert set(replay_late) == {t for t in expected_late if int(t[4:10]) >= 40}
    assert not set(replay_late) & set(first_enriched)


def test_without_the_committed_position_state_expires_a_batch_at_a_time(tables):
    bp = processor(tables)  # outside a consumer: what came before a batch counts as committed
    run(bp, stream(300))
    # only the last ~hour of event time (plus the last batch) is kept in the dedup table
    assert 55 <= len(tables["dedup_table"]) <= 90


def test_dedup_entries_after_the_committed_position_never_expire(tables):
    run(processor(tables, committed=lambda p: 40), stream(300))
    kept = {k for k in tables["dedup_table"]}
    assert all(f"txn_{o:06d}_ok" in kept for o in range(40, 300) if o % 25 != 24)


def test_the_log_keeps_entries_back_to_the_committed_position():
    log = WatermarkLog()
    for batch_end in range(9, 100, 10):
        log.record(batch_end, batch_end * 1000, committed=35)
    assert log.entries[0] == (29, 29000)  # the replay from 35 resumes after offset 29's batch
    assert log.before(35) == 29000 and log.before(0) is None
    assert log.rewind(35) == 29000 and log.last_offset == 29
    assert WatermarkLog.unpack(log.pack()) == log
    assert WatermarkLog.unpack((123).to_bytes(8, "big")).entries == [(-1, 123)]  # written before the log
    assert WatermarkLog.unpack(None).watermark is None


def test_the_log_is_bounded_when_nothing_commits():
    log = WatermarkLog()
    for o in range(MAX_ENTRIES + 50):
        log.record(o, o, committed=None)
    assert len(log.entries) == MAX_ENTRIES and log.entries[-1] == (MAX_ENTRIES + 49, MAX_ENTRIES + 49)



def test_a_partition_assigned_again_is_judged_by_the_state_another_worker_left():
    """Worker A processes partition 0, loses it in a rebalance, worker B (same tables: the
    changelog) moves its watermark on by two hours, and A gets the partition back: A must
    judge the next events by B's watermark and expire B's keys, not by what it cached."""
    shared = dict(dedup_table={}, watermark_table={}, sender_table={}, card_table={})
    a, b = processor(shared), processor(shared)
    a.assigned([0, 1])
    run(a, [item(o, o) for o in range(0, 40)])
    a.assigned([1])  # partition 0 goes to B
    run(b, [item(o, o) for o in range(40, 160)])  # up to minute 159
    early = item(160, 80, txn="txn_behind_b")  # 79 minutes behind B's watermark: late
    a.assigned([0, 1])  # and comes back
    assert [p.transaction_id for p in a.process([early]).late] == ["txn_behind_b"]
    # and A's expiry index now knows B's dedup keys, so they expire behind the new watermark
    assert a.dedup_index.size() == len(shared["dedup_table"]) > 40  # B's keys, not only A's 40
    a.expire({0: int((START + timedelta(minutes=300)).timestamp() * 1_000_000)})  # window: 60 min
    assert a.dedup_index.size() == 0 and not shared["dedup_table"]


def test_a_partition_held_through_a_rebalance_keeps_its_cache():
    """Only partitions that were not assigned at the previous rebalance are reloaded (a
    reload scans the partition's state); one held throughout was processed by no one else.
    Shown with a watermark moved behind A's back, which A must not pick up."""
    shared = dict(dedup_table={}, watermark_table={}, sender_table={}, card_table={})
    a, b = processor(shared), processor(shared)
    a.assigned([0])
    run(a, [item(o, o) for o in range(0, 40)])
    run(b, [item(o, o) for o in range(40, 160)])
    a.assigned([0, 1])  # 0 held throughout: its cached watermark (minute 39) stands
    assert [e.payment.transaction_id for e in a.process([item(160, 80, txn="txn_behind_b")]).enriched] == \
        ["txn_behind_b"]


@pytest.mark.parametrize("generation,reloaded", [(6, False), (8, True)], ids=["next generation", "a generation missed"])
def test_a_worker_that_missed_a_generation_reloads_what_it_holds(generation, reloaded):
    """A worker out of the group for a generation (fenced, then back) cannot know who had its
    partitions meanwhile: it reloads them all, even ones assigned on both sides of the gap."""
    shared = dict(dedup_table={}, watermark_table={}, sender_table={}, card_table={})
    a, b = processor(shared), processor(shared)
    a.assigned([0], generation=5)
    run(a, [item(o, o) for o in range(0, 40)])
    run(b, [item(o, o) for o in range(40, 160)])
    a.assigned([0], generation=generation)
    out = a.process([item(160, 80, txn="txn_behind_b")])
    assert [p.transaction_id for p in out.late] == (["txn_behind_b"] if reloaded else [])
