"""Detects a partition whose commits are stuck behind offsets that will never be delivered.

Faust's fetcher can advance its read offset past messages that a rebalance or recovery
dropped from its queues (faust-streaming/faust#596, open): those offsets are never
delivered, so never acked, and Faust commits only contiguous acks, so the partition's
commits stop for good while everything after the hole is processed. Nothing is lost (the
offsets stay uncommitted), but the lag never drains. The guard notices the shape (acks
start above the committed offset, nothing of the partition is in flight) persisting, and
the worker seeks the partition back to its committed offset: the missing messages are
read again, and the ones already processed come back as replays, which dedup passes
through and the idempotent sink absorbs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Hashable


@dataclass(frozen=True)
class PartitionAcks:
    committed: int | None   # committed position (the next offset to read), as Faust keeps it
    lowest_acked: int | None
    in_flight: bool         # delivered to the agent and not acked yet


@dataclass
class StallGuard:
    patience_seconds: float = 15.0
    _since: dict[Hashable, tuple[int, float]] = field(default_factory=dict)

    def check(self, partitions: dict[Hashable, PartitionAcks], now: float) -> list[tuple[Hashable, int]]:
        """The partitions to seek back, with the first offset to read again.

        Progress means the lowest acked offset moving; Faust's own gap bookkeeping may
        creep the committed offset forward meanwhile, which does not count.
        """
        to_seek = []
        for tp, acks in partitions.items():
            hole = (acks.committed is not None and acks.lowest_acked is not None
                    and acks.lowest_acked > acks.committed and not acks.in_flight)
            if not hole:
                self._since.pop(tp, None)
                continue
            seen = self._since.get(tp)
            if seen is None or seen[0] != acks.lowest_acked:
                self._since[tp] = (acks.lowest_acked, now)
            elif now - seen[1] >= self.patience_seconds:
                to_seek.append((tp, acks.committed))
                self._since.pop(tp, None)
        return to_seek


def forget_acks_from(acked: list[int] | None, acked_index: set[int] | None, offset: int) -> None:
    """Drop acks at or above `offset` (the partition is sought back there and those messages
    come again as replays). Kept, they put acks out of order: Faust folds its gaps up to the
    highest ack, and a gap filed during the re-read covers the message that revealed it, which
    would then count as acked before it landed."""
    if not acked:
        return
    dropped = [o for o in acked if o >= offset]
    if dropped:
        acked[:] = [o for o in acked if o < offset]
        if acked_index is not None:
            acked_index.difference_update(dropped)
