"""The check at the point of commit (payflow.runtime.commit_offsets.fixed_new_offset): the offset
committed for a partition never passes an offset that was neither acked nor known to be
skipped (a Faust gap, a run the fetcher stepped over); otherwise the partition's commit is
refused, loudly (an ERROR without record contents, payflow_commit_refused_total), and its
acks are kept so the stall guard can seek back and read the hole again."""
from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
from faust.transport.consumer import Consumer
from prometheus_client import REGISTRY
from faust.types import TP
from intervaltree import IntervalTree

from payflow.runtime import commit_offsets, fetch

RAW = TP("check-raw", 0)


@pytest.fixture(autouse=True)
def fresh_runtime_state():
    commit_offsets._positions.clear()
    fetch._skipped.clear()
    yield
    commit_offsets._positions.clear()
    fetch._skipped.clear()


def state(committed, acked, gaps=()):
    tree = IntervalTree()
    for begin, end in gaps:
        tree.addi(begin, end)
    return SimpleNamespace(_acked={RAW: list(acked)}, _acked_index={RAW: set(acked)},
                           _committed_offset={RAW: committed}, _gap={RAW: tree})


def refused() -> float:
    return REGISTRY.get_sample_value("payflow_commit_refused_total", {"reason": "unacked_offset"}) or 0.0


def test_a_computation_that_passes_an_unacked_offset_is_refused_loudly_and_the_acks_are_kept(monkeypatch, caplog):
    """Faust's own computation (faust#606) commits over 2585, never acked: plugged in, the
    check refuses it."""
    monkeypatch.setattr(commit_offsets, "_new_offset_of_acks",
                        lambda self, tp, committed: commit_offsets.FAUST_NEW_OFFSET(self, tp))
    consumer = state(2585, [2586, 2587, 2588])
    before = refused()
    with caplog.at_level(logging.ERROR, logger="payflow.consumer"):
        assert commit_offsets.fixed_new_offset(consumer, RAW) is None
    assert refused() == before + 1
    assert "refusing to commit" in caplog.text and "offset 2585" in caplog.text and "2589" in caplog.text
    # the acks stay: the stall guard sees them above the committed position and seeks back
    assert consumer._acked[RAW] == [2586, 2587, 2588] and consumer._acked_index[RAW] == {2586, 2587, 2588}
    # once 2585 is read again and acked, the commit goes through
    consumer._acked[RAW].append(2585)
    consumer._acked_index[RAW].add(2585)
    assert commit_offsets.fixed_new_offset(consumer, RAW) == 2589
    assert refused() == before + 1


def test_acks_gaps_and_skipped_runs_from_the_committed_position_are_committed_without_a_refusal():
    before = refused()
    assert commit_offsets.fixed_new_offset(state(10, [10, 11, 12]), RAW) == 13
    # 13..14 never arrive (a Faust gap, filed with 15, the message that revealed it)
    assert commit_offsets.fixed_new_offset(state(13, [15, 16], gaps=[(14, 16)]), RAW) == 17
    fetch._skipped[RAW] = {20: 22}  # a transaction marker stepped over after a fetch's last record
    assert commit_offsets.fixed_new_offset(state(17, [17, 18, 19]), RAW) == 22
    assert refused() == before


def test_a_hole_at_the_head_is_waited_for_not_refused():
    before = refused()
    consumer = state(100, [101, 102])
    assert commit_offsets.fixed_new_offset(consumer, RAW) is None  # 100 in flight: not yet
    assert consumer._acked[RAW] == [101, 102]
    assert refused() == before


def test_after_faust_forgets_a_revoked_partition_s_position_its_final_commit_still_starts_there():
    """Faust's Consumer.on_partitions_revoked drops the committed position before its
    wait_empty commits what is still in flight: that commit starts at the last position
    this worker knew, and one with no position known commits nothing."""
    consumer = state(0, [])
    assert commit_offsets.fixed_new_offset(consumer, RAW) is None
    consumer._acked[RAW] = [0, 1, 2]
    assert commit_offsets.fixed_new_offset(consumer, RAW) == 3
    consumer._committed_offset[RAW] = 3
    consumer._acked[RAW] = [3]  # remembers 3
    assert commit_offsets.fixed_new_offset(consumer, RAW) == 4
    del consumer._committed_offset[RAW]  # revoked
    consumer._committed_offset = {RAW: None}
    consumer._acked[RAW] = [26, 27]  # 4..25 never acked
    assert commit_offsets.fixed_new_offset(consumer, RAW) is None
    consumer._acked[RAW] = [1, 2, 3, 4, 5]  # replays below the remembered position 3 (and 4..5, new)
    consumer._acked_index[RAW] = {1, 2, 3, 4, 5}
    assert commit_offsets.fixed_new_offset(consumer, RAW) == 6
    commit_offsets._positions.clear()
    consumer._acked[RAW] = [7, 8]
    assert commit_offsets.fixed_new_offset(consumer, RAW) is None  # no position known: nothing


def test_faust_s_commit_path_skips_a_refused_partition_and_commits_the_others(monkeypatch):
    other = TP("check-raw", 1)

    class Stub:
        _committed_offset = {RAW: 50, other: 7}
        _acked = {RAW: [51, 52], other: [7, 8]}
        _acked_index = {RAW: {51, 52}, other: {7, 8}}
        _gap = {RAW: IntervalTree(), other: IntervalTree()}
        _new_offset = commit_offsets.fixed_new_offset
        _should_commit = Consumer._should_commit

    monkeypatch.setattr(commit_offsets, "_new_offset_of_acks",
                        lambda self, tp, committed: commit_offsets.FAUST_NEW_OFFSET(self, tp))
    # Faust's off-by-one plugged in would commit RAW at 53 over 50, never acked
    assert Consumer._filter_committable_offsets(Stub(), [RAW, other]) == {other: 9}
