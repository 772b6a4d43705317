"""The pipeline's commit protocol: when a processed batch's input offsets may be acked.

A batch's offsets are acked only once all it produced is durable: its rows in the warehouse,
its outputs on Kafka, its state changes on the changelog. A crash before the ack replays the
batch from the committed position, and every step is idempotent (the warehouse inserts
absent keys only, consumers de-duplicate outputs, changelog records are replayed in order).

The steps, in order:

1. `add`: a processed batch (a `Landing`: its warehouse rows, its messages, the futures of
   the outputs processing queued on the producer, its enriched payments) joins `pending`;
   batches waiting together merge into one landing.
2. `advance`: at most one landing is in flight. With one in flight and the landing limit
   reached by what is pending, or the bytes held by the landing in flight and what is
   pending reaching `max_buffered_bytes`, the worker waits for it (commits it first: bounds
   memory and the size of the next landing). While it waits, the agent takes no batch, the
   batch buffer fills and Faust's fetch loop stops fetching (payflow.runtime.fetch waits
   for room in it): backpressure, nothing dropped. With none in flight, `pending` is launched (`sink.start`:
   it lands in the background). The limit starts at `max_pending` messages; a landing slower
   than `target_landing_seconds` halves it (down to `min_pending`, one batch), one four times
   faster doubles it back: a slow warehouse gets smaller landings, each well inside the
   consumer's rebalance and session timeouts, instead of ever larger merged ones. A landing
   starts at most every `min_landing_seconds` (BigQuery: each landing opens write streams,
   a quota per project and hour); meanwhile batches gather, and at the limit the worker
   waits out the interval.
3. `commit_landed` commits the landing in flight once the warehouse is done with it (a
   landing the group refused instead goes back to be read again, with everything taken
   after it: pending, and the batch the agent took but has not processed yet):
   a. await the warehouse's ack; a failed landing raises SinkStopped here, and nothing of
      it is published, expired, flushed or acked;
   b. payments the warehouse refused (id conflicts) are counted as DLQ;
   c. publish the enriched payments it took (refused ones: a DLQ record each);
   d. await every output future of the landing (processing's and c's);
   d2. with the BigQuery fence (`confirm`): ask the group whether this worker still owns the
      landing's partitions (a generation-fenced offset commit that moves nothing). A worker
      evicted since its decision (paused past its session) makes nothing more durable: its
      unsent state changes are dropped (the partitions' changelogs are another worker's
      now), and the landing with everything after it is read again, which makes them again;
   e. expire state no further than the earliest merged batch allows (a replay from the
      committed position must find the dedup entries its events found the first time);
   f. send the tables' changelog records, await them and note their offsets;
   g. ack the landing's offsets (Faust commits acked offsets).

Fault injection (the fault tests): with `fault_exit_after_land` = N, the process exits
(code 86) after the Nth landing's step d, before its state is expired and its offsets acked:
the crash window the warehouse's idempotence must survive. With PAYFLOW_FAULT_PAUSE_LANDING
= before_offset_commit:N, the worker stops itself (SIGSTOP) at the same point of its Nth
landing (payflow.fault): a zombie whose rows are in and whose offsets are not.
"""
from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable, Iterable

from payflow import metrics
from payflow import fault
from payflow.warehouse.base import ID_CONFLICT, LandingBatch

log = logging.getLogger("payflow.pipeline")

FAULT_EXIT_CODE = 86


@dataclass
class Landing:
    """Processed batches waiting for (or in) one landing."""
    batch: LandingBatch
    messages: list  # their Faust messages, acked once landed
    start_watermarks: dict[int, int]  # partition -> watermark a replay would start from
    published: list  # futures of their output records
    enriched: list  # their enriched payments, published once landed (outputs.PendingEnriched)
    task: asyncio.Future | None = None
    size: int = -1  # bytes it holds (estimated: `held_bytes`), set when added

    def merge(self, later: "Landing") -> "Landing":
        self.size += later.size
        self.batch.extend(later.batch)
        self.messages += later.messages
        for partition, watermark in later.start_watermarks.items():
            # expire no further than the earliest batch allows
            self.start_watermarks[partition] = min(watermark, self.start_watermarks.get(partition, watermark))
        self.published += later.published
        self.enriched += later.enriched
        return self


async def flush_changelog(publisher: Any, tables: Iterable[Any]) -> int:
    """Send each table's pending changelog records and await them; note the offsets the
    changelog acknowledged (recovery resumes after them). Returns the records sent."""
    records: list = []
    owners: list[tuple[Any, str]] = []
    for table in tables:
        topic = table.changelog_topic.get_topic_name()
        owners.append((table, topic))
        for partition, chunks in table.take_pending().items():
            records += [(topic, partition, None, chunk) for chunk in chunks]
    futures = await publisher.send(records)
    offsets: dict[tuple[str, int], int] = {}
    for meta in await asyncio.gather(*futures):
        tp = (meta.topic, meta.partition)
        offsets[tp] = max(offsets.get(tp, -1), meta.offset)
    for table, topic in owners:
        table.note_logged({p: o for (t, p), o in offsets.items() if t == topic})
    return len(records)


class Checkpoint:
    """Lands processed batches one landing at a time and acks their offsets (steps above).

    Collaborators: `sink.start(batch)` (a future of the warehouse's ack, payflow.pipeline.sink),
    `outputs.send_landed(...)` and `outputs.publisher.send(records)` (payflow.pipeline.outputs),
    `processor.expire(start_watermarks)` (payflow.stages.batch), the state `tables`, and
    `ack(messages)`, which hands offsets to the consumer (payflow.runtime.take.ack).
    """

    def __init__(self, *, sink: Any, outputs: Any, processor: Any, tables: Iterable[Any],
                 ack: Callable[[list], None], max_pending: int, min_pending: int = 1,
                 target_landing_seconds: float = 10.0, min_landing_seconds: float = 0.0,
                 fault_exit_after_land: int = 0, max_buffered_bytes: int = 64 * 2**20,
                 exit_: Callable[[int], None] = os._exit,
                 read_again: Callable[[list], Awaitable[None]] | None = None,
                 confirm: Callable[[set], Awaitable[bool]] | None = None,
                 accounted_from: Callable[[list], dict[tuple[str, int], int]] | None = None,
                 release: Callable[[list], None] | None = None):
        self.sink = sink
        self.outputs = outputs
        self.processor = processor
        self.tables = tuple(tables)
        self.ack = ack
        # a refused (fenced) landing's messages and those after it: read again, not acked
        self.read_again = read_again
        # BigQuery with the fence: is this worker still the owner of a landing's partitions
        # (payflow.runtime.landing_fence)? Asked before its state changes and acks (e-g)
        self.confirm = confirm
        # per (topic, partition): the lowest offset from which a landing's messages, with what
        # the consumer knows holds no record, leave no offset out (LandingBatch.accounted_from)
        self.accounted_from = accounted_from
        # a stopping worker's processed batches it will not land: no longer pending acks (`close`)
        self.release = release
        self.max_pending = max_pending
        self.min_pending = min(min_pending, max_pending)
        self.target_landing_seconds = target_landing_seconds
        self.landing_limit = max_pending  # adapts to the warehouse's speed (step 2)
        self.min_landing_seconds = min_landing_seconds
        self.max_buffered_bytes = max_buffered_bytes
        self.last_launch = -float("inf")
        self.fault_exit_after_land = fault_exit_after_land
        self.exit = exit_
        self.pending: Landing | None = None
        self.in_flight: Landing | None = None
        self.landed = asyncio.Event()  # a landing finished: wakes the batch loop (take_batches)
        self.commits = 0
        self.closing = False  # a graceful stop began: no landing is launched any more (`close`)
        self._committing = 0  # step 3 running (the landing is no longer `in_flight`)

    def add(self, landing: Landing) -> None:
        """Step 1: a processed batch joins what waits for the next landing."""
        if landing.size < 0:
            landing.size = held_bytes(landing)
        self.pending = landing if self.pending is None else self.pending.merge(landing)
        self._note_buffered()

    @property
    def buffered_bytes(self) -> int:
        """Bytes held by the landing in flight and what waits for the next one."""
        return sum(landing.size for landing in (self.in_flight, self.pending) if landing is not None)

    def _note_buffered(self) -> None:
        metrics.BUFFERED_BYTES.set(self.buffered_bytes)

    def must_wait(self) -> bool:
        """The landing in flight must commit before anything more is taken (step 2)."""
        if self.in_flight is None or self.pending is None:
            return False
        return (len(self.pending.messages) >= self.landing_limit
                or self.buffered_bytes >= self.max_buffered_bytes)

    async def commit_landed(self, taken: list | None = None) -> list:
        """Step 3, if the warehouse is done with the landing in flight (else nothing).
        `taken`: the batch the agent took before this call, not yet processed; returned to
        be processed, or [] if the landing was refused: taken after the refused landing's
        messages and before their seek back, it is read again with them."""
        taken = [] if taken is None else taken
        if self.in_flight is not None and self.in_flight.task.done():
            landing, self.in_flight = self.in_flight, None
            refused = await self._commit(landing, taken)
            self._note_buffered()
            if refused:
                return []
        return taken

    async def advance(self) -> None:
        """Step 2: wait for the landing in flight if too much is pending; launch the next."""
        if self.must_wait():
            if self.buffered_bytes >= self.max_buffered_bytes:
                metrics.BUFFER_FULL.inc()
            landing, self.in_flight = self.in_flight, None  # the warehouse is behind: wait for it
            await self._commit(landing)
            self._note_buffered()
        if self.closing:
            await self._release_pending()
        elif self.in_flight is None and self.pending is not None:
            wait = self.last_launch + self.min_landing_seconds - time.monotonic()
            if wait > 0 and len(self.pending.messages) >= self.landing_limit:
                await asyncio.sleep(wait)  # at the limit: wait out the cadence, then land
                wait = 0
            if self.closing:  # the stop began during the wait
                await self._release_pending()
            elif wait <= 0:
                self.in_flight, self.pending = self._launch(self.pending), None
                self._note_buffered()
        if self.in_flight is None or not self.in_flight.task.done():
            # only a finished in-flight landing may wake the loop. A landing's done-callback
            # can run after the loop already saw the task done and committed it; left set,
            # that stale wake-up made take_batches yield [] at once, forever, while the next
            # landing could never complete: the worker spun
            self.landed.clear()

    def _launch(self, landing: Landing) -> Landing:
        started = self.last_launch = time.monotonic()
        landing.batch.partitions = message_partitions(landing.messages)
        landing.batch.starts, landing.batch.ends = message_range(landing.messages)
        if self.accounted_from is not None:
            landing.batch.accounted_from = self.accounted_from(landing.messages)
        landing.task = self.sink.start(landing.batch)

        def done(task: asyncio.Future) -> None:
            if not task.cancelled() and task.exception() is None:
                self.landing_limit = next_landing_limit(self.landing_limit, time.monotonic() - started,
                                                        self.target_landing_seconds, self.min_pending,
                                                        self.max_pending)
            self.landed.set()

        landing.task.add_done_callback(done)
        return landing

    async def close(self, timeout: float, poll: float = 0.05) -> bool:
        """A graceful stop, before the consumer leaves the group: the landing in flight is
        given up to `timeout` seconds to land and be committed by the batch loop (step 3),
        so that its offsets are in the consumer's final commit; no other landing is
        launched, and what is processed but not landed is released, to be read again (the
        batch loop does both in `advance`). Cut off instead (the consumer's leaving refused
        its ownership check), a decided BigQuery landing was left for the next owner to
        seal and land again. True when nothing was left in flight."""
        self.closing = True
        deadline = time.monotonic() + timeout
        while self.in_flight is not None or self._committing or self.pending is not None:
            task = self.in_flight.task if self.in_flight is not None else None
            if task is not None and task.done() and (task.cancelled() or task.exception() is not None):
                return False  # a failed landing: the batch loop stops the worker
            if time.monotonic() >= deadline:
                log.warning("stage sink: the landing in flight did not finish within %.0f s of the stop; "
                            "its messages are read again at the next start", timeout)
                return False
            await asyncio.sleep(poll)
        return True

    async def _release_pending(self) -> None:
        """Closing: the processed batches not launched are not acked; their messages are
        released (no longer pending acks, which a stop waits for), read again at the next start."""
        if self.pending is None or self.in_flight is not None or self._committing:
            return
        landing, self.pending = self.pending, None
        self._note_buffered()
        if self.release is not None:
            self.release(landing.messages)

    async def _commit(self, landing: Landing, taken: list | None = None) -> bool:
        """Step 3 for `landing`; True if the group refused it (nothing committed)."""
        self._committing += 1
        try:
            return await self._commit_landing(landing, taken)
        finally:
            self._committing -= 1

    async def _commit_landing(self, landing: Landing, taken: list | None) -> bool:
        waited = time.perf_counter()
        assert landing.task is not None
        landed_rows = await landing.task  # (a) SinkStopped: nothing of this landing is acked
        if getattr(landed_rows, "fenced", False):
            # the group refused this worker's decision (evicted, or the range moved on): nothing
            # of the landing is in the warehouse, and its messages are not acked. What was
            # taken after it goes too, processed or not (a commit of it would pass the refused
            # offsets; kept unacked, it held a rebalance's wait for acks for good): all of it
            # is read again from the committed offsets
            metrics.STAGE_SECONDS.labels("sink_wait").inc(time.perf_counter() - waited)
            await self._read_again(landing, taken)
            return True
        conflicts = getattr(landed_rows, "conflicts", [])
        # copies of a payment landed from the same sender (its key moved with a partition
        # growth): duplicates, audited; the rest of the refused are id conflicts, to the DLQ
        duplicates = getattr(landed_rows, "duplicates", [])
        if duplicates:
            metrics.DUPLICATES.inc(len(duplicates))
        if len(conflicts) > len(duplicates):  # (b)
            refused = len(conflicts) - len(duplicates)
            metrics.DLQ.labels(ID_CONFLICT).inc(refused)
            log.warning("stage sink: %d payment(s) refused: transaction_id already landed from another "
                        "partition or offset (id_conflict, sent to the DLQ)", refused)
        # (c) the enriched payments the warehouse took are published now, not before: one it
        # refused (an id conflict) is no valid payment
        landing.published += await self.outputs.send_landed(landing.enriched, conflicts, datetime.now(timezone.utc),
                                                            duplicates)
        if landing.published:  # (d) the landing's outputs are on Kafka before its input is acked
            await asyncio.gather(*landing.published)
        landed_at = time.time()
        metrics.STAGE_SECONDS.labels("sink_wait").inc(time.perf_counter() - waited)
        metrics.observe_many(metrics.END_TO_END, [landed_at - m.timestamp for m in landing.messages])
        self.commits += 1
        if self.fault_exit_after_land and self.commits == self.fault_exit_after_land:
            log.warning("fault injection: exiting after landing batch %d, before acking its offsets", self.commits)
            self.exit(FAULT_EXIT_CODE)
        fault.pause_at("before_offset_commit")
        if self.confirm is not None and not await self.confirm(landing.batch.partitions):
            # evicted since the decision (a pause past the session): the rows are in, but the
            # partitions are another worker's now, and so are their changelogs. Nothing more
            # of it is made durable; everything processed since the last logged changes is
            # read again (by whoever owns it), which makes those changes again
            for table in self.tables:
                table.discard_pending()
            await self._read_again(landing, taken)
            return True
        self.processor.expire(landing.start_watermarks)  # (e)
        await flush_changelog(self.outputs.publisher, self.tables)  # (f)
        self.ack(landing.messages)  # (g)
        metrics.DEDUP_KEYS.set(self.processor.dedup_index.size())
        return False

    async def _read_again(self, landing: Landing, taken: list | None) -> None:
        """The landing's messages and everything taken after them, unacked, read again."""
        messages = landing.messages
        if self.pending is not None:
            messages, self.pending = messages + self.pending.messages, None
        messages = messages + list(taken or ())
        if self.read_again is not None:
            await self.read_again(messages)


def held_bytes(landing: Landing) -> int:
    """The bytes a processed batch holds until it has landed, estimated from a sample of
    each column and list (Python object sizes and the lists' pointers): its warehouse rows,
    its enriched payments' JSON, its Faust messages (their values already freed)."""
    total = 0
    for columns in getattr(landing.batch, "sources", {}).values():
        for column in columns.values():
            total += _list_bytes(column)
    for entry in landing.enriched:  # (transaction id, partition, offset, key, JSON)
        total += sys.getsizeof(entry) + sum(sys.getsizeof(field) for field in entry)
    total += _list_bytes(landing.messages, _message_bytes) + _list_bytes(landing.published)
    return total


_SAMPLE = 16


def _list_bytes(values: list, size: Callable[[Any], int] = sys.getsizeof) -> int:
    """A list's size with its items', estimated from evenly spaced samples; one object
    repeated through the list (a batch's timestamp, None) is counted once."""
    sample = values[::max(1, len(values) // _SAMPLE)]
    if not sample:
        return sys.getsizeof(values)
    if all(v is sample[0] for v in sample):
        return sys.getsizeof(values) + size(sample[0])
    return sys.getsizeof(values) + len(values) * sum(map(size, sample)) // len(sample)


def _message_bytes(message: Any) -> int:
    return (sys.getsizeof(message) + sys.getsizeof(getattr(message, "key", None))
            + sys.getsizeof(getattr(message, "value", None)) + sys.getsizeof(getattr(message, "offset", 0))
            + sys.getsizeof(getattr(message, "timestamp", 0.0)))


def message_partitions(messages: list) -> set[tuple[str, int]]:
    """The (topic, partition)s of the messages."""
    return {(m.tp.topic, m.tp.partition) for m in messages
            if getattr(m, "tp", None) is not None}  # a test's stand-in message has none


def message_range(messages: list) -> tuple[dict[tuple[str, int], int], dict[tuple[str, int], int]]:
    """Per (topic, partition): the offset of the messages' first one there, and the offset
    after their last."""
    starts: dict[tuple[str, int], int] = {}
    ends: dict[tuple[str, int], int] = {}
    for m in messages:
        if getattr(m, "tp", None) is not None:
            key = (m.tp.topic, m.tp.partition)
            starts[key] = min(starts.get(key, m.offset), m.offset)
            ends[key] = max(ends.get(key, 0), m.offset + 1)
    return starts, ends


def next_landing_limit(limit: int, seconds: float, target: float, floor: int, ceiling: int) -> int:
    """The pending messages the next landing may gather, after one that took `seconds`."""
    if seconds > target:
        return max(floor, limit // 2)
    if seconds < target / 4:
        return min(ceiling, limit * 2)
    return limit
