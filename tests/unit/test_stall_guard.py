"""The guard against commits stuck behind offsets Faust never delivers (faust#596)."""
from payflow.stall_guard import PartitionAcks, StallGuard


def test_a_hole_at_the_head_that_persists_is_sought_back_to_the_first_missing_offset():
    guard = StallGuard(patience_seconds=15)
    stuck = {3: PartitionAcks(committed=591, lowest_acked=593, in_flight=False)}
    assert guard.check(stuck, now=0) == []
    assert guard.check(stuck, now=10) == []
    # Faust's gap bookkeeping may creep the committed offset: not progress
    assert guard.check({3: PartitionAcks(committed=591 + 0, lowest_acked=593, in_flight=False)}, now=12) == []
    assert guard.check(stuck, now=16) == [(3, 592)]
    assert guard.check(stuck, now=17) == []  # patience starts again after a seek


def test_progress_work_in_flight_or_no_hole_is_left_alone():
    guard = StallGuard(patience_seconds=15)
    assert guard.check({0: PartitionAcks(591, 593, in_flight=True)}, now=0) == []
    assert guard.check({0: PartitionAcks(591, 593, in_flight=True)}, now=100) == []
    assert guard.check({1: PartitionAcks(591, 592, in_flight=False)}, now=0) == []  # contiguous
    assert guard.check({1: PartitionAcks(591, 592, in_flight=False)}, now=100) == []
    assert guard.check({2: PartitionAcks(None, None, in_flight=False)}, now=100) == []
    # acks at the head move (real progress): the clock restarts
    assert guard.check({4: PartitionAcks(100, 105, False)}, now=0) == []
    assert guard.check({4: PartitionAcks(100, 205, False)}, now=14) == []
    assert guard.check({4: PartitionAcks(100, 205, False)}, now=20) == []
    assert guard.check({4: PartitionAcks(100, 205, False)}, now=29) == [(4, 101)]
