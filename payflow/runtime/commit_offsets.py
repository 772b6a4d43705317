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

`install()` puts both on Faust's Consumer class once.
"""
from __future__ import annotations

import logging
from typing import Optional

from faust.transport.consumer import Consumer
from faust.utils.functional import consecutive_numbers

from payflow.runtime import fetch, seams

FAUST_NEW_OFFSET = seams.original(Consumer, "_new_offset")  # Faust's own, for the test that shows the loss
FAUST_PERFORM_SEEK = seams.original(Consumer, "perform_seek")
log = logging.getLogger("payflow.consumer")


def fixed_new_offset(self, tp) -> Optional[int]:
    new_offset = _new_offset_of_acks(self, tp)
    # offsets stepped over after a fetch's last record (a transaction marker) never arrive:
    # a commit that reaches them goes past them (payflow.runtime.fetch)
    return fetch.skipped_run_end(tp, new_offset) if new_offset is not None else None


def _new_offset_of_acks(self, tp) -> Optional[int]:
    acked = self._acked[tp]  # noqa: SLF001
    if not acked:
        return None
    max_offset = max(acked)
    committed = self._committed_offset[tp]  # noqa: SLF001
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
    await FAUST_PERFORM_SEEK(self)
    # Faust reads a committed 0 as "nothing committed" too; either way the start is the first offset
    uncommitted = [tp for tp in self.assignment()
                   if self.app.topics.acks_enabled_for(tp.topic) and not self._committed_offset[tp]]  # noqa: SLF001
    if not uncommitted:
        return
    earliest = await self.earliest_offsets(*uncommitted)
    for tp in uncommitted:
        offset = earliest.get(tp)
        if offset is not None:
            log.info("%s[%d] has no committed offset: reading it from its first offset %d", tp.topic, tp.partition, offset)
            await self.seek(tp, offset)
            self._committed_offset[tp] = offset  # noqa: SLF001


def install() -> None:
    """Faust's `Consumer._commit_offsets` computes each partition's commit with `_new_offset`;
    the recovery and rebalance seeks call `perform_seek`."""
    seams.require(Consumer, "earliest_offsets", "seek", "assignment")
    seams.replace(Consumer, "_new_offset", fixed_new_offset)
    seams.replace(Consumer, "perform_seek", perform_seek_from_start_when_uncommitted)
