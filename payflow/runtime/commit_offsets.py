"""Faust's commit computation, with its off-by-one at the head of the acked run fixed, and
partitions with nothing committed given a committed position.

Faust keeps `_committed_offset[tp]` as Kafka does: the next offset to read. Its
`Consumer._new_offset` withholds a commit only when `min(acked) - committed > 1`, so a single
offset missing exactly at the head (acked 101, 102, ... with 100 never delivered or still in
flight) is committed over and lost for good (faust-streaming/faust#606, fix proposed in
#707, neither released). A committed offset of 0 is also read as "nothing committed"
(`if committed_offset:`). The SIGKILL fault test lost one or two payments this way.

`fixed_new_offset` is Faust's function with the head check made exact (`min(acked) >
committed`, 0 included) and the acked list de-duplicated after gap folding (a filed gap
includes the offset that revealed it, and a repeat ended the consecutive run early);
otherwise (gap folding for compacted topics, cleanup of the acked list) it is Faust's.

A partition with nothing committed yet had no such guard: `committed is None` let any acked
run be committed. Messages fetched while Faust recovers tables after an assignment are
dropped (flow control is off), and Faust then seeks the stream partitions back to their
committed offsets, which aiokafka skips for a partition with none. The fetch position stayed
past the dropped messages and the first commit skipped them: a two-worker run lost a
partition's first 2,000 offsets this way (neither worker processed them). After Faust's seek,
`perform_seek_from_start_when_uncommitted` seeks such partitions of acked source topics to
their first offset (what auto_offset_reset=earliest means) and records it as their
committed position, so the head check above applies to them too.

The commit is checked where it is computed: the offsets from the committed position up to the
one about to be committed must each be acked, in a gap Faust filed, or stepped over by the
fetcher (payflow.runtime.fetch); otherwise the partition's commit is refused with an ERROR and
`payflow_commit_refused_total{reason}`, and its acks are kept, so the stall guard reads the
hole again. Faust forgets a revoked partition's committed position before its last commit
(`wait_empty` in the revocation), which then took any run of acks; the position last known
here (`_positions`) is used instead, and with none known nothing is committed.

Commits that lose nothing: Faust's commit takes the acked runs off its lists before the
broker answers, so the commits payflow starts run whole even when their caller is
cancelled (`commit_whole`), and a revocation commits what is acked before Faust forgets the
revoked partitions' acks (`commit_before_revocation`).

`install()` puts these on Faust's Consumer class once.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Optional

from faust.transport.consumer import Consumer
from faust.types import TP
from faust.utils.functional import consecutive_numbers
from intervaltree import IntervalTree

from payflow.metrics import COMMIT_REFUSED
from payflow.runtime import fetch, seams

FAUST_NEW_OFFSET = seams.original(Consumer, "_new_offset")  # Faust's own, for the test that shows the loss
FAUST_PERFORM_SEEK = seams.original(Consumer, "perform_seek")
FAUST_ON_PARTITIONS_REVOKED = seams.original(Consumer, "on_partitions_revoked")
FAUST_COMMIT_OFFSETS = seams.original(Consumer, "_commit_offsets")
# how long a revocation waits for the commit of what is acked before Faust's own handling
REVOCATION_COMMIT_SECONDS = 5.0
log = logging.getLogger("payflow.consumer")


# tp -> the committed position (next offset to read) this worker last knew for it. Faust
# forgets its own when a partition is revoked, before its final commit (wait_empty) runs:
# without a position that commit took any run of acks, however far past the unacked head.
_positions: dict = {}
# the consumer generation whose assignment Faust's seek (perform_seek) has finished: Faust
# resumes the flow before that seek, so records are processed, and landings made, while the
# partitions' positions are still being set (read from the group or, with nothing committed,
# from the first offset below)
_sought_generation: Optional[int] = None


def fixed_new_offset(self, tp) -> Optional[int]:
    """The offset to commit for tp, or None: the acked run from the committed position, past
    offsets the fetcher stepped over; refused (None, an ERROR, payflow_commit_refused_total)
    if it would pass an offset neither acked nor known to be skipped."""
    acked = self._acked[tp]  # noqa: SLF001
    key = _key(tp)
    committed = self._committed_offset[tp]  # noqa: SLF001
    if committed is not None:
        _positions[key] = committed
    else:
        committed = _positions.get(key)
        if committed is None:
            return None  # no position known to commit from yet: the assignment's seek sets one
        # acks below the position are replays of what is committed already
        acked[:] = [o for o in acked if o >= committed]
    if not acked:
        # nothing acked: only offsets the fetcher stepped over from the committed position
        # (a transaction marker right at it, after a restart) move the commit
        end = fetch.skipped_run_end(tp, committed, forget=False)
        return end if end > committed else None
    before = _Snapshot.of(self, tp, key)
    # offsets stepped over right at the committed position (a transaction marker a seek went
    # to, before the first record after it) hold nothing: the acked run may start past them
    new_offset = _new_offset_of_acks(self, tp, fetch.skipped_run_end(tp, committed, forget=False))
    if new_offset is None:
        return None
    # offsets stepped over after a fetch's last record (a transaction marker) never arrive:
    # a commit that reaches them goes past them (payflow.runtime.fetch)
    new_offset = fetch.skipped_run_end(tp, new_offset)
    hole = before.first_unaccounted(committed, new_offset)
    if hole is not None:
        before.restore(self, tp, key)
        COMMIT_REFUSED.labels(reason="unacked_offset").inc()
        log.error("refusing to commit %s at offset %d: offset %d (from the committed position %d) was "
                  "neither acked nor known to be skipped; the partition's commits stop until it is "
                  "read again", key, new_offset, hole, committed)
        return None
    return new_offset


async def commit_whole(consumer: Consumer) -> bool:
    """Faust's `Consumer.commit`, run to its end whatever happens to its caller (a task,
    awaited shielded). Faust's commit takes each partition's acked run off its lists when it
    computes the offset, then awaits the producer's flush and the broker: cancelled in
    between (the fetcher's stop, a caller's timeout), those acks were forgot and never
    committed. A graceful stop's final commit then found nothing to commit: the last landing's
    offsets stayed uncommitted, its BigQuery decision left for the next owner to seal."""
    commit = asyncio.ensure_future(consumer.commit())
    commit.add_done_callback(_log_late_failure)
    return await asyncio.shield(commit)


def _log_late_failure(commit: "asyncio.Future[bool]") -> None:
    if not commit.cancelled() and commit.exception() is not None:
        log.warning("an offset commit failed after its caller stopped waiting: %r", commit.exception())


async def commit_before_revocation(self, revoked) -> None:
    """Consumer.on_partitions_revoked, after a commit of what is acked. Faust's takes the
    revoked partitions' acks, gaps and committed positions off its lists first and commits
    after (the app's handler, wait_empty): the acks since the last commit were forgot, and
    those of the landing in flight, arriving during that wait, were not committed either
    (the forgot ones missing before them): every rebalance read up to a second of landed
    payments again, and on BigQuery left the landing's decision for the next owner to seal.
    Bounded: past REVOCATION_COMMIT_SECONDS the revocation goes on, the commit beside it."""
    try:
        committed = await asyncio.wait_for(commit_whole(self), REVOCATION_COMMIT_SECONDS)
    except asyncio.TimeoutError:
        log.warning("the commit before a revocation did not finish within %.0f s; the revocation goes on",
                    REVOCATION_COMMIT_SECONDS)
        committed = False
    if committed:
        # Faust forgets these next: commits of the acks still to come start from here
        for tp in revoked:
            position = self._committed_offset.get(tp)  # noqa: SLF001
            if position is not None:
                _positions[_key(tp)] = position
    await FAUST_ON_PARTITIONS_REVOKED(self, revoked)


def assignment_sought(app) -> bool:
    """This worker's assignment has been sought to where it is read from (the seek of its
    current generation has finished)."""
    return _sought_generation is not None and _sought_generation == app.consumer_generation_id


def note_sought(generation: Optional[int]) -> None:
    global _sought_generation
    _sought_generation = generation


def known_position(consumer: Consumer, tp) -> Optional[int]:
    """Where tp is read from, as this worker knows it: Faust's committed offset, else the one
    last known here (Faust forgets it when the partition is revoked)."""
    key = _key(tp)
    committed = consumer._committed_offset.get(key)  # noqa: SLF001
    return committed if committed is not None else _positions.get(key)


def read_from(consumer: Consumer, tp, offset: int) -> None:
    """tp is read again from `offset` (a seek to it was made): Faust's commits and their check
    go on from there."""
    key = _key(tp)
    consumer._committed_offset[key] = offset  # noqa: SLF001
    _positions[key] = offset


# tp -> the log's first offset when this worker last asked (it only grows): no record below it
# can be read any more
_log_starts: dict = {}


def note_log_start(tp, offset: int) -> None:
    key = _key(tp)
    _log_starts[key] = max(offset, _log_starts.get(key, 0))


def log_start(tp) -> int:
    """The log's first offset as last seen here (0 if never asked)."""
    return _log_starts.get(_key(tp), 0)


def _key(tp):
    return TP(tp[0], tp[1]) if isinstance(tp, tuple) else tp


class _Snapshot:
    """A partition's acks, Faust's gaps and the skipped runs before a commit is computed: what
    the computed offset is checked against, and restored if it is refused."""

    def __init__(self, acked: list, acked_index: set, gaps: IntervalTree, skipped: dict):
        self.acked, self.acked_index, self.gaps, self.skipped = acked, acked_index, gaps, skipped

    @classmethod
    def of(cls, consumer, tp, key) -> "_Snapshot":
        return cls(list(consumer._acked[tp]), set(consumer._acked_index[tp]),  # noqa: SLF001
                   IntervalTree(consumer._gap[tp]), dict(fetch._skipped.get(key) or {}))  # noqa: SLF001

    def first_unaccounted(self, committed: int, new_offset: int) -> Optional[int]:
        """The first offset in [committed, new_offset) neither acked, nor in a gap Faust filed,
        nor stepped over by the fetcher; None if every one is accounted for. The committed
        offset itself counts as skipped when a gap begins right after it (the broker's first
        record after a seek came later, see _new_offset_of_acks)."""
        acked = set(self.acked)
        skipped_ends = self.skipped
        offset = committed
        while offset < new_offset:
            if offset in acked:
                offset += 1
                continue
            if offset in skipped_ends:
                offset = skipped_ends[offset]
                continue
            covering = self.gaps.at(offset)
            if covering:
                offset = max(i.end for i in covering)
                continue
            if offset == committed and self.gaps.at(committed + 1):
                offset += 1
                continue
            return offset
        return None

    def restore(self, consumer, tp, key) -> None:
        consumer._acked[tp][:] = self.acked  # noqa: SLF001
        consumer._acked_index[tp].clear()  # noqa: SLF001
        consumer._acked_index[tp].update(self.acked_index)  # noqa: SLF001
        consumer._gap[tp] = self.gaps  # noqa: SLF001
        if self.skipped:
            fetch._skipped[key] = self.skipped  # noqa: SLF001


def _new_offset_of_acks(self, tp, committed: Optional[int]) -> Optional[int]:
    acked = self._acked[tp]  # noqa: SLF001
    if not acked:
        return None
    max_offset = max(acked)
    gap_for_tp = self._gap[tp]  # noqa: SLF001
    if gap_for_tp:
        # offsets Faust knows will never arrive (compaction, transaction markers) count as acked
        candidates = sorted(gap_for_tp.overlap(0, max_offset), key=lambda x: x.begin)
        if candidates:
            filled: list[int] = []
            if committed is not None and candidates[0].begin == committed + 1:
                # Faust files a gap seen right after a seek from committed + 1 on, but the
                # broker skipped `committed` too (its first record came later)
                filled.append(committed)
            for entry in candidates:
                filled.extend(range(entry.begin, entry.end))
            acked.extend(filled)
            gap_for_tp.chop(0, max(filled[-1], max_offset + 1))
    # a filed gap also covers the offset that revealed it, which is acked too: without
    # de-duplication the run of consecutive offsets would stop at the repeat
    acked[:] = sorted(set(acked))
    if committed is not None and acked[0] > committed:
        # the next offset to commit from was never acked: committing now would skip it
        return None
    batch = next(consecutive_numbers(acked))
    acked[: len(batch)] = []
    self._acked_index[tp].difference_update(batch)  # noqa: SLF001
    return batch[-1] + 1


async def perform_seek_from_start_when_uncommitted(self) -> None:
    generation = self.app.consumer_generation_id
    try:
        await _seek_assignment(self, generation)
    finally:
        # a failed seek leaves the partitions with nothing committed unknown (no landing is
        # decided from them, landing_fence); a later generation's seek decides for itself
        if self.app.consumer_generation_id == generation:
            note_sought(generation)


async def _seek_assignment(self, generation: int) -> None:
    assignment = self.assignment()
    # Faust's seek moves every partition with a commit (in the consumer thread): what a fetch
    # in flight brings from the old positions is stale
    for tp in assignment:
        fetch.note_seek(tp)
    try:
        await FAUST_PERFORM_SEEK(self)
    finally:
        for tp in assignment:
            committed = self._committed_offset[tp]  # noqa: SLF001
            fetch.note_target(tp, committed)  # Faust's seek_to_committed went there (None: not yet known)
            if committed:
                _positions[_key(tp)] = committed
        await fetch.note_seek_ended(self, assignment)
    # Faust reads a committed 0 as "nothing committed" too; either way the start is the first offset
    uncommitted = [tp for tp in self.assignment()
                   if self.app.topics.acks_enabled_for(tp.topic) and not self._committed_offset[tp]]  # noqa: SLF001
    if not uncommitted:
        return
    earliest = await self.earliest_offsets(*uncommitted)
    for tp in uncommitted:
        offset = earliest.get(tp)
        if offset is None:
            continue
        if self.app.consumer_generation_id != generation or tp not in self.assignment():
            return  # a rebalance began meanwhile: its own seek decides
        log.info("%s[%d] has no committed offset: reading it from its first offset %d", tp.topic, tp.partition, offset)
        note_log_start(tp, offset)
        await self.seek(tp, offset)
        self._committed_offset[tp] = offset  # noqa: SLF001
        _positions[_key(tp)] = offset


async def commit_offsets_as_the_broker_holds_them(self, offsets, start_new_transaction: bool = True) -> bool:
    """Faust's commit, after which its committed positions say what the broker holds: Faust
    records the offsets it asked for even when the broker refused them (a CommitFailedError
    "already rebalanced": a zombie, a member expired during a broker restart). The pipeline
    trims each partition's watermark log to the committed position (payflow.stages.state,
    WatermarkLog), so the rejoin's replay from the broker's position found no entry and
    judged late events as on time: one position landed as a late event and as a payment."""
    before = {tp: self._committed_offset.get(tp) for tp in offsets}  # noqa: SLF001
    known = {tp: _positions.get(_key(tp)) for tp in offsets}
    did_commit = await FAUST_COMMIT_OFFSETS(self, offsets, start_new_transaction=start_new_transaction)
    if not did_commit:
        # Faust wrote the asked offsets over whatever a seek set meanwhile (read_from, the
        # assignment's seek: they note it in _positions): the seek's position wins
        for tp in offsets:
            sought = _positions.get(_key(tp))
            self._committed_offset[tp] = sought if sought != known[tp] else before[tp]  # noqa: SLF001
    return did_commit


def install() -> None:
    """Faust's `Consumer._commit_offsets` computes each partition's commit with `_new_offset`;
    the recovery and rebalance seeks call `perform_seek`; the consumer thread's rebalance
    listener calls `on_partitions_revoked`; every commit goes through `_commit_offsets`."""
    seams.require(Consumer, "earliest_offsets", "seek", "assignment")
    seams.replace(Consumer, "_new_offset", fixed_new_offset)
    seams.replace(Consumer, "perform_seek", perform_seek_from_start_when_uncommitted)
    seams.replace(Consumer, "on_partitions_revoked", commit_before_revocation)
    seams.replace(Consumer, "_commit_offsets", commit_offsets_as_the_broker_holds_them)
