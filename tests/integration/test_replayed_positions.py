"""Rows keyed by raw position (DLQ, late events, dedup audit) land once per position, whatever
the order a partition is read in: a stall-guard seek or a rebalance reads a partition again
from its committed offset, so a position below one already landed can arrive for the first
time (it was dropped from a batch of an older consumer generation)."""
from __future__ import annotations

import pytest

from payflow.models import Rejection
from payflow.warehouse.base import build_batch

pytestmark = pytest.mark.integration


def rejection(partition: int, offset: int) -> Rejection:
    return Rejection(reason="invalid_json", detail="not JSON", remains="{", source_partition=partition,
                     source_offset=offset)


def dlq_positions(warehouse) -> list[tuple[int, int]]:
    rows = warehouse.query("SELECT source_partition, source_offset FROM dead_letter_events "
                           "ORDER BY source_partition, source_offset")
    return [(int(r["source_partition"]), int(r["source_offset"])) for r in rows]


def test_a_position_below_one_landed_still_lands_and_a_replay_does_not(warehouse):
    warehouse.land(build_batch([], rejections=[rejection(5, 190), rejection(2, 40)]))
    # partition 5 read again from offset 150: 155 arrives for the first time, 190 again
    warehouse.land(build_batch([], rejections=[rejection(5, 155), rejection(5, 190)]))
    warehouse.land(build_batch([], rejections=[rejection(5, 155)]))
    assert dlq_positions(warehouse) == [(2, 40), (5, 155), (5, 190)]
