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

A partition can also stop one short of its end with nothing acked: its last records landed
and were committed, and the fetcher then stepped over offsets that hold no record (a
transaction's commit or abort marker, an aborted transaction) without the fetch loop seeing
it happen (`payflow.runtime.fetch` notes such steps only from positions it observed with
nothing in between). The commit then waits below the fetcher's position for good: lag 1 on
a partition that ends in a marker. The guard notices that shape too (nothing acked,
nothing delivered at or past the committed position, the fetcher's position above it)
and seeks back: the fetch from the committed position brings no record, and the fetch
loop notes the run it steps over from a position it observed, so commits reach the end.
If records are there after all, they are read and land as the rest do.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Hashable

from payflow import metrics


log = logging.getLogger("payflow.stall_guard")


@dataclass(frozen=True)
class PartitionAcks:
    committed: int | None   # committed position (the next offset to read), as Faust keeps it
    lowest_acked: int | None
    in_flight: bool         # delivered to the agent and not acked yet (or held by the fetch loop)
    # the fetcher's position (the next offset it hands out) and the highest offset delivered
    # to the pipeline since the partition's last seek (-1: none); None: not known
    fetch_position: int | None = None
    delivered_up_to: int = -1
    # the lowest offset in flight, where known (None with in_flight: unknown, any may be)
    lowest_in_flight: int | None = None

    def hole_at_head(self) -> bool:
        """Acks start above the committed position, and no offset below the lowest ack is in
        flight: an offset at the head never acked. Messages in flight above the acks (a busy
        partition always has some) do not hide the hole."""
        if self.committed is None or self.lowest_acked is None or self.lowest_acked <= self.committed:
            return False
        return not self.in_flight or (self.lowest_in_flight is not None and self.lowest_in_flight > self.lowest_acked)

    def unreached_tail(self) -> bool:
        """Everything delivered is committed, and the fetcher reads past the committed
        position: the offsets between were stepped over without being noted."""
        return (self.committed is not None and self.lowest_acked is None and not self.in_flight
                and self.fetch_position is not None and self.fetch_position > self.committed
                and self.delivered_up_to < self.committed)


@dataclass
class StallGuard:
    patience_seconds: float = 15.0
    _since: dict[Hashable, tuple[Hashable, float]] = field(default_factory=dict)

    def check(self, partitions: dict[Hashable, PartitionAcks], now: float) -> list[tuple[Hashable, int]]:
        """The partitions to seek back, with the first offset to read again.

        Progress means the lowest acked offset moving (at the head), or the committed or
        fetch position moving (at the tail); Faust's own gap bookkeeping may creep the
        committed offset forward meanwhile, which does not count at the head.
        """
        to_seek = []
        for tp in [tp for tp in self._since if tp not in partitions]:
            del self._since[tp]  # revoked: its patience starts again if it comes back
        for tp, acks in partitions.items():
            if acks.hole_at_head():
                state: Hashable = acks.lowest_acked
            elif acks.unreached_tail():
                state = ("tail", acks.committed, acks.fetch_position)
            else:
                self._since.pop(tp, None)
                continue
            seen = self._since.get(tp)
            if seen is None or seen[0] != state:
                self._since[tp] = (state, now)
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


def snapshot(consumer: Any, raw_topic: str) -> dict:
    """The raw topic's partitions as the guard judges them, read from Faust's consumer."""
    from payflow.runtime import fetch

    in_flight: dict[Any, int] = {}  # tp -> its lowest offset delivered and not acked
    for m in list(consumer._unacked_messages):  # noqa: SLF001
        if m.tp not in in_flight or m.offset < in_flight[m.tp]:
            in_flight[m.tp] = m.offset
    out = {}
    for tp in consumer.assignment():
        if tp.topic != raw_topic:
            continue
        acked = consumer._acked.get(tp) or []  # noqa: SLF001
        # records the fetch loop holds for tp (waiting for room in the route) are in flight too
        lowest = [o for o in (in_flight.get(tp), fetch.held_from(tp)) if o is not None]
        out[tp] = PartitionAcks(consumer._committed_offset.get(tp), min(acked) if acked else None,  # noqa: SLF001
                                bool(lowest), fetch.fetch_position(consumer, tp),
                                fetch.delivered_up_to(tp), min(lowest) if lowest else None)
    return out


async def unstick_partitions(consumer: Any, raw_topic: str, guard: StallGuard) -> None:
    """Seek back every raw partition whose commits wait on offsets Faust will never deliver."""
    from payflow.runtime import fetch

    try:
        partitions = snapshot(consumer, raw_topic)
    except Exception:  # noqa: BLE001 - consumer not started or rebalancing: look again later
        return
    for tp, offset in guard.check(partitions, time.monotonic()):
        # each seek awaits the consumer thread: what another partition's verdict saw may have
        # moved meanwhile (the route freed, records delivered), so it is judged again first
        try:
            now = snapshot(consumer, raw_topic).get(tp)
        except Exception:  # noqa: BLE001 - rebalancing: look again later
            return
        if now is None or now.committed != offset or not (now.hole_at_head() or now.unreached_tail()):
            continue
        if now.unreached_tail():
            # what the fetch loop knew is logged: the case docs/architecture.md names (a start's
            # seek ending while the first fetch was delivered) or another one
            log.warning("partition %s: commits stopped at %s below the fetcher's position %s with "
                        "nothing acked; reading it again from %s to account for the offsets between "
                        "(fetch loop: %s)", tp.partition, offset, now.fetch_position, offset,
                        fetch.knowledge(tp))
        else:
            log.warning("partition %s: offsets from %s were read but never delivered (Faust race, "
                        "faust-streaming/faust#596); seeking back to %s, the rest comes back as replays",
                        tp.partition, offset, offset)
        metrics.STALL_RECOVERIES.inc()
        await seek_back(consumer, tp, offset)


async def seek_back(consumer: Any, tp: Any, offset: int) -> bool:
    """Read tp again from `offset`, at or before what was delivered of it. False if tp was
    revoked before the seek reached the consumer (a rebalance): its new owner reads it from
    the committed offset."""
    from aiokafka.errors import IllegalStateError

    # offsets Faust filed as gaps (never to arrive) will now arrive: forget them, or
    # they would be counted twice when the commit is computed (faust#625's symptom)
    gaps = consumer._gap.get(tp)  # noqa: SLF001
    if gaps:
        gaps.chop(offset, 2**63)
    # acks above the seek are read again (replays): kept, they would put acks out of
    # order, and Faust's gap folding (up to the highest ack) would then count a message
    # of the re-read that is delivered but not landed as acked
    forget_acks_from(consumer._acked.get(tp), consumer._acked_index.get(tp), offset)  # noqa: SLF001
    # counted as a seek (payflow.runtime.fetch.seek_noted): what the fetch loop still
    # holds for tp is stale
    try:
        await consumer.seek(tp, offset)
    except IllegalStateError:  # aiokafka: "No current assignment for partition"
        log.info("partition %s[%d] was revoked before it could be read again from %d: its new owner reads it",
                 tp.topic, tp.partition, offset)
        return False
    return True


def register(app: Any, raw_topic: str, interval: float = 5.0) -> StallGuard:
    """Run the guard on `app` every `interval` seconds."""
    guard = StallGuard()

    @app.timer(interval=interval, name="payflow.unstick_partitions")
    async def unstick() -> None:
        await unstick_partitions(app.consumer, raw_topic, guard)

    return guard
