"""The guard against commits stuck behind offsets Faust never delivers (faust#596), and the
commit computation that must never step over an offset that was not acked (faust#606)."""
from types import SimpleNamespace

import pytest
from faust.types import TP
from intervaltree import IntervalTree

from payflow.runtime import commit_offsets
from payflow.runtime.stall_guard import PartitionAcks, StallGuard


@pytest.fixture(autouse=True)
def no_positions_known():
    """commit_offsets keeps the last committed position per partition across revocations."""
    commit_offsets._positions.clear()
    yield
    commit_offsets._positions.clear()


def test_a_hole_at_the_head_that_persists_is_sought_back_to_the_first_missing_offset():
    # committed is Kafka's committed position: the next offset to read, here 591
    guard = StallGuard(patience_seconds=15)
    stuck = {3: PartitionAcks(committed=591, lowest_acked=593, in_flight=False)}
    assert guard.check(stuck, now=0) == []
    assert guard.check(stuck, now=10) == []
    assert guard.check(stuck, now=16) == [(3, 591)]
    assert guard.check(stuck, now=17) == []  # patience starts again after a seek


def test_a_single_missing_offset_at_the_head_is_a_hole_too():
    guard = StallGuard(patience_seconds=15)
    one_missing = {1: PartitionAcks(591, 592, in_flight=False)}  # 591 never acked
    assert guard.check(one_missing, now=0) == []
    assert guard.check(one_missing, now=15) == [(1, 591)]


def test_progress_work_in_flight_or_no_hole_is_left_alone():
    guard = StallGuard(patience_seconds=15)
    assert guard.check({0: PartitionAcks(591, 593, in_flight=True)}, now=0) == []
    assert guard.check({0: PartitionAcks(591, 593, in_flight=True)}, now=100) == []
    assert guard.check({1: PartitionAcks(591, 591, in_flight=False)}, now=0) == []  # contiguous
    assert guard.check({1: PartitionAcks(591, 591, in_flight=False)}, now=100) == []
    assert guard.check({2: PartitionAcks(None, None, in_flight=False)}, now=100) == []
    # acks at the head move (real progress): the clock restarts
    assert guard.check({4: PartitionAcks(100, 105, False)}, now=0) == []
    assert guard.check({4: PartitionAcks(100, 205, False)}, now=14) == []
    assert guard.check({4: PartitionAcks(100, 205, False)}, now=20) == []
    assert guard.check({4: PartitionAcks(100, 205, False)}, now=29) == [(4, 100)]


def test_a_hole_on_a_busy_partition_is_sought_back_though_later_messages_are_in_flight():
    """A partition under steady load always has messages in flight: they once hid the hole
    for good (the patience restarted at every check that saw any), so its commits stopped
    while everything after the hole landed. Only messages in flight below the lowest ack (the
    hole's own offsets, on their way) keep the guard waiting."""
    guard = StallGuard(patience_seconds=15)
    busy = {0: PartitionAcks(591, 593, in_flight=True, lowest_in_flight=2_000)}
    assert guard.check(busy, now=0) == []
    assert guard.check({0: PartitionAcks(591, 593, in_flight=True, lowest_in_flight=4_000)}, now=10) == []
    assert guard.check({0: PartitionAcks(591, 593, in_flight=True, lowest_in_flight=6_000)}, now=16) == [(0, 591)]
    # the missing offset is in flight (delivered, not acked yet): no hole
    on_its_way = {1: PartitionAcks(591, 593, in_flight=True, lowest_in_flight=591)}
    assert guard.check(on_its_way, now=0) == []
    assert guard.check(on_its_way, now=100) == []
    # in flight, where unknown: as before, the guard waits
    unknown = {2: PartitionAcks(591, 593, in_flight=True)}
    assert guard.check(unknown, now=0) == [] and guard.check(unknown, now=100) == []


def test_commits_stopped_below_the_fetchers_position_with_nothing_acked_are_read_again():
    # a partition ending in a transaction marker: 0-5 delivered, landed and committed (6),
    # the fetcher stepped over the marker at 6 to 7 without the step being noted
    guard = StallGuard(patience_seconds=15)
    tail = {0: PartitionAcks(committed=6, lowest_acked=None, in_flight=False, fetch_position=7, delivered_up_to=5)}
    assert guard.check(tail, now=0) == []
    assert guard.check(tail, now=10) == []
    assert guard.check(tail, now=16) == [(0, 6)]  # read again from the committed position
    assert guard.check(tail, now=17) == []


def test_a_tail_still_being_delivered_acked_or_landed_is_left_alone():
    guard = StallGuard(patience_seconds=15)
    cases = {
        "caught up": PartitionAcks(7, None, False, fetch_position=7, delivered_up_to=6),
        "delivered, not yet acked": PartitionAcks(6, None, False, fetch_position=9, delivered_up_to=8),
        "landing": PartitionAcks(6, None, True, fetch_position=9, delivered_up_to=5),
        "acked, commit due": PartitionAcks(6, 6, False, fetch_position=7, delivered_up_to=6),
        "position unknown": PartitionAcks(6, None, False, fetch_position=None, delivered_up_to=5),
        "nothing committed": PartitionAcks(None, None, False, fetch_position=7, delivered_up_to=-1),
    }
    assert guard.check(cases, now=0) == []
    assert guard.check(cases, now=100) == []


def test_a_tail_that_moves_restarts_the_clock():
    guard = StallGuard(patience_seconds=15)
    assert guard.check({0: PartitionAcks(6, None, False, 7, 5)}, now=0) == []
    assert guard.check({0: PartitionAcks(6, None, False, 9, 5)}, now=14) == []  # the fetcher moved on
    assert guard.check({0: PartitionAcks(6, None, False, 9, 5)}, now=20) == []
    assert guard.check({0: PartitionAcks(6, None, False, 9, 5)}, now=29) == [(0, 6)]


def consumer_state(committed, acked, gaps=()):
    tree = IntervalTree()
    for begin, end in gaps:
        tree.addi(begin, end)
    return SimpleNamespace(_acked={"tp": list(acked)}, _acked_index={"tp": set(acked)},
                           _committed_offset={"tp": committed}, _gap={"tp": tree})


def test_faust_commits_over_a_single_unacked_offset_at_the_head_and_the_fix_does_not():
    # committed position 2585, acked 2586..2589: 2585 was never acked (faust#606's example)
    original = commit_offsets.FAUST_NEW_OFFSET
    assert original(consumer_state(2585, [2586, 2587, 2588, 2589]), "tp") == 2590  # 2585 lost
    assert commit_offsets.fixed_new_offset(consumer_state(2585, [2586, 2587, 2588, 2589]), "tp") is None
    # and a committed position of 0 is a position, not "nothing committed"
    assert original(consumer_state(0, [3, 4]), "tp") == 5
    assert commit_offsets.fixed_new_offset(consumer_state(0, [3, 4]), "tp") is None


def test_the_fix_commits_contiguous_acks_and_steps_over_known_gaps():
    fixed = commit_offsets.fixed_new_offset
    # no committed position known at all: nothing is committed until the assignment's seek sets one
    assert fixed(consumer_state(None, [7, 8, 9]), "tp") is None
    assert fixed(consumer_state(2585, [2585, 2586, 2588]), "tp") == 2587
    assert fixed(consumer_state(10, []), "tp") is None
    # offsets 11..14 are known never to arrive (compacted away): they count as acked
    assert fixed(consumer_state(10, [10, 15, 16], gaps=[(11, 15)]), "tp") == 17
    # a gap filed right after a seek starts one past the committed position; the broker
    # skipped the committed offset itself too
    assert fixed(consumer_state(10, [15, 16], gaps=[(11, 16)]), "tp") == 17


def test_the_worker_uses_the_fixed_commit_computation():
    import faust.transport.consumer

    import payflow.app  # noqa: F401  (installs the fix)
    assert faust.transport.consumer.Consumer._new_offset is commit_offsets.fixed_new_offset
    assert faust.transport.consumer.Consumer.perform_seek is commit_offsets.perform_seek_from_start_when_uncommitted


async def test_a_partition_with_nothing_committed_is_sought_to_its_first_offset_after_faust_seeks(monkeypatch):
    """Faust's perform_seek leaves a partition with no committed offset where the fetcher
    stopped (past messages dropped during recovery); the first commit then skipped them."""
    sought = {}

    async def faust_seek(self):  # Faust's own: seeks only partitions that have a commit
        pass

    async def earliest_offsets(*tps):
        return {tp: 7 for tp in tps}  # the log starts at 7 (older records deleted)

    async def seek(tp, offset):
        sought[tp] = offset

    monkeypatch.setattr(commit_offsets, "FAUST_PERFORM_SEEK", faust_seek)
    raw_new, raw_committed, changelog = TP("raw", 0), TP("raw", 1), TP("app-dedup-changelog", 0)
    consumer = SimpleNamespace(
        assignment=lambda: {raw_new, raw_committed, changelog},
        app=SimpleNamespace(topics=SimpleNamespace(acks_enabled_for=lambda topic: topic == "raw"),
                            consumer_generation_id=1),
        _committed_offset={raw_new: None, raw_committed: 500, changelog: None},
        earliest_offsets=earliest_offsets, seek=seek)
    commit_offsets.note_sought(None)
    await commit_offsets.perform_seek_from_start_when_uncommitted(consumer)
    assert sought == {raw_new: 7}
    assert commit_offsets.assignment_sought(consumer.app)  # landings are decided from now on (landing_fence)
    assert consumer._committed_offset == {raw_new: 7, raw_committed: 500, changelog: None}
    # and with that position the commit computation refuses to step over offsets 7..1999
    state = consumer_state(7, list(range(2000, 2100)))
    assert commit_offsets.fixed_new_offset(state, "tp") is None



def test_offsets_skipped_after_a_fetch_s_last_record_are_committed_past():
    """read_committed steps over a transaction's marker; when it follows a fetch's last
    record the fetch loop notes it (payflow.runtime.fetch._skipped), and a commit that reaches
    it goes past it, or the lag stays 1 for good. A Faust gap covers the message that
    revealed it, so it must not be folded before that message is acked."""
    from faust.types import TP
    from intervaltree import IntervalTree

    from payflow.runtime import fetch
    tp = TP("raw", 0)

    def state(committed, acked, gaps=()):
        tree = IntervalTree()
        for begin, end in gaps:
            tree.addi(begin, end)
        return SimpleNamespace(_acked={tp: list(acked)}, _acked_index={tp: set(acked)},
                               _committed_offset={tp: committed}, _gap={tp: tree})

    fixed = commit_offsets.fixed_new_offset
    try:
        fetch._skipped[tp] = {5: 6}  # 3 and 4 delivered, a commit marker at 5
        assert fixed(state(3, [3]), tp) == 4  # the run does not reach the marker yet
        assert fixed(state(4, [4]), tp) == 6  # it does: past the marker
        assert fetch._skipped[tp] == {}
        # Faust's gap for 6..7 covers 7, the message that revealed it: with 7 unacked the
        # commit stops at 6 (a skipped-run rule must not make it reach 8)
        fetch._skipped[tp] = {5: 6}
        assert fixed(state(4, [4], gaps=[(6, 8)]), tp) == 6
    finally:
        fetch._skipped.clear()


def test_a_seek_back_forgets_the_acks_it_will_read_again_so_gaps_fold_only_what_landed():
    """After a stall-guard seek to 100, acks 105..199 (read again as replays) are dropped:
    kept, a gap filed in the re-read (Faust's gap covers the message that revealed it) was
    folded up to the highest ack and a delivered, unlanded message counted as acked."""
    from payflow.runtime.stall_guard import forget_acks_from

    acked, index = [105, 150, 199], {105, 150, 199}
    forget_acks_from(acked, index, 100)
    assert acked == [] and index == set()
    # the re-read: 100 and 101 landed, a marker at 102, 103 delivered (gap [102, 104)) not landed
    state = consumer_state(100, acked + [100, 101], gaps=[(102, 104)])
    assert commit_offsets.fixed_new_offset(state, "tp") == 102  # not 104: 103 has not landed
    acked = [90, 120]
    forget_acks_from(acked, {90, 120}, 100)
    assert acked == [90]


async def test_a_seek_back_by_the_guard_is_noted_once_and_ends(monkeypatch):
    """The guard's seek goes through the counted seek (payflow.runtime.fetch.seek_noted): a fetch
    in flight for the partition is dropped, and the seek ends. Counted twice and ended once,
    the partition stayed "seek under way" for good, and a fetch dropped later was never sought
    back."""
    from payflow.runtime import fetch
    from payflow.runtime.stall_guard import unstick_partitions

    async def faust_seek(self, tp, offset):
        self.position = offset

    monkeypatch.setattr(fetch, "FAUST_SEEK", faust_seek)
    raw = TP("raw", 0)
    consumer = SimpleNamespace(
        position=40, assignment=lambda: {raw}, _unacked_messages=set(), _committed_offset={raw: 10},
        _acked={raw: [20, 21]}, _acked_index={raw: {20, 21}}, _gap={raw: IntervalTree()},
        app=SimpleNamespace(consumer_generation_id=1))
    consumer.seek = lambda tp, offset: fetch.seek_noted(consumer, tp, offset)
    guard = StallGuard(patience_seconds=0.0)
    fetched_at = fetch._seeks
    await unstick_partitions(consumer, "raw", guard)  # the hole is seen
    await unstick_partitions(consumer, "raw", guard)  # and has persisted: sought back
    assert consumer.position == 10
    assert fetch.sought_since(raw, fetched_at)
    assert not fetch.seeking(raw)


def test_messages_buffered_for_the_pipeline_count_as_in_flight_from_their_lowest_offset():
    """After a seek back, the re-read hole waits in the batch buffer while older landings ack
    above it: the guard must see it there, or it seeks again and again under a slow landing."""
    import asyncio

    from payflow.runtime import fetch
    from payflow.runtime.take import BatchBuffer

    tp = TP("raw", 0)
    loop = asyncio.new_event_loop()
    try:
        buffer = BatchBuffer(100, loop)
        buffer.put_many([SimpleNamespace(tp=tp, offset=o) for o in (591, 592, 700)])
        fetch.route("raw", buffer)
        try:
            assert fetch.held_from(tp) == 591
            assert fetch.held_from(TP("raw", 1)) is None
            acks = PartitionAcks(591, 650, in_flight=True, lowest_in_flight=fetch.held_from(tp))
            assert not acks.hole_at_head()
        finally:
            fetch.unroute("raw", buffer)
    finally:
        loop.close()
