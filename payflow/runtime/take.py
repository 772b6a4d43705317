"""Batches of raw messages for the pipeline agent, with manual acks, that also report idle time.

Faust's `Stream.noack_take` yields only non-empty batches, and blocks the stream while the
caller holds a batch. The pipeline agent lands one batch while it processes the next, and
must finish (land, then ack) the last one when traffic stops; acks come from the agent's own
task (acking from a second task stalled commits in our restart tests). So this variant:

- yields an empty list when `within` passes with nothing buffered, and also when `wake` is
  set (a landing finished: ack it now, not after the next batch) while the next batch is
  still filling; the caller clears `wake` once it has handled the landing;
- hands over the buffer and keeps filling a new one while the caller works (bounded: the
  feeder waits once `max_` messages are buffered). Blocking instead, as noack_take does,
  collapsed batches to one or two events whenever a landing took longer than `within`
  (seen against the BigQuery emulator: 0.45 s per landing, ~5 events/s): the caller came
  back after the window had expired and took whatever had trickled in meanwhile;
- hands over whatever is buffered as soon as the caller asks (after a short `linger` for
  the first message, to gather a burst): the batch size follows the load, small when the
  caller keeps up (latency), up to `max_` when it does not (throughput). A fixed window
  instead (a batch due `within` after its first event) added up to `within` to every
  event's latency: p99 at 2,000 events/s went from 3.0 s to 3.8 s (`make bench`).

The buffer is fed two ways: by the stream (what Faust's conductor delivers, and what test
contexts put), and, for `direct_topic`, by Faust's fetch loop itself (payflow.runtime.fetch),
which skips Faust's per-event machinery. Batches hold Faust Messages; `ack` them once done.
"""
from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator, Callable, Iterable

from mode.utils.aiter import aiter
from mode.utils.futures import notify

from payflow.runtime import fetch, seams


class BatchBuffer:
    """The messages of the batch being filled; a `fetch.Route`.

    What it drops (partitions read again, a revocation's clear, an older generation) it
    hands to `untrack`: a message Faust delivered through its own path (the stream, before
    the fetch loop's route was set) is tracked for acks before it gets here, and one dropped
    while tracked held a rebalance's wait for acks until the shutdown bound (CI: a resumed
    zombie worker, its first message after a refused landing)."""

    def __init__(self, max_: int, loop: asyncio.AbstractEventLoop, flow_control: Any = None,
                 untrack: Callable[[list], None] | None = None):
        self.max = max_
        self.flow_control = flow_control  # the app's FlowControlEvent, which clears the buffer
        self.untrack = untrack or (lambda messages: None)
        self.messages: list = []
        self.first_at = 0.0
        self.started = asyncio.Event()  # the first message of a batch is buffered
        self.filled = asyncio.Event()   # max_ messages are buffered
        self.taken = asyncio.Event()    # a batch was handed over: there is space again
        self.loop = loop

    def full(self) -> bool:
        return len(self.messages) >= self.max

    def put(self, message: Any) -> None:
        """One message (the stream's path: it waits for space first)."""
        if not self.put_many([message]):
            raise RuntimeError("the batch buffer is full")

    def put_many(self, messages: list) -> int:
        """As many of `messages` as there is room for (a fetch at a time from the fetch loop)."""
        room = self.max - len(self.messages)
        if room <= 0 or not messages:
            return 0
        taken = messages if len(messages) <= room else messages[:room]
        if not self.messages:
            self.first_at = self.loop.time()
            self.started.set()
        self.messages.extend(taken)
        if len(self.messages) >= self.max:
            self.filled.set()
        return len(taken)

    async def wait_for_space(self) -> None:
        while self.full():
            self.taken.clear()
            await self.taken.wait()

    def drop(self, partitions: set[int]) -> int:
        """Drop the buffered messages of these partitions (read again from an earlier offset)."""
        kept = [m for m in self.messages if m.tp.partition not in partitions]
        dropped = len(self.messages) - len(kept)
        if dropped:
            self.untrack([m for m in self.messages if m.tp.partition in partitions])
            self.messages = kept
            if not kept:
                self.started.clear()
            if not self.full():
                self.filled.clear()
                self.taken.set()
        return dropped

    def lowest_offset(self, partition: int) -> int | None:
        """The lowest offset buffered of `partition` (None: none); the stall guard asks."""
        offsets = [m.offset for m in self.messages if m.tp.partition == partition]
        return min(offsets) if offsets else None

    def take(self) -> list:
        batch, self.messages = self.messages, []
        self.started.clear()
        self.filled.clear()
        self.taken.set()
        return batch

    def clear(self) -> None:
        """Partitions revoked (Faust's flow_control.clear after its suspend): drop what is
        buffered, unacked; it is read again from the committed offsets.

        Faust's flow_control.resume also clears its queues. Then the buffer is kept: what it
        holds was fetched for the current assignment after its seek to the committed offsets
        (take_batches drops anything of an older generation). Dropped there, those messages
        were lost until a restart: recovery resumes flow to read the table changelogs, the
        raw partitions are sought and fetched, and its final resume cleared them, with the
        fetch position already past them (a restart with the local state lost stalled)."""
        if self.flow_control is not None and self.flow_control.is_active():
            return
        self.untrack(self.take())


def ack(consumer: Any, messages: Iterable[Any]) -> None:
    """Ack messages of a finished batch (untracked ones, as in test contexts, have nothing to ack)."""
    consumer_ack = consumer.ack
    for message in messages:
        if message.tracked:
            consumer_ack(message)


def release(app: Any, messages: Iterable[Any]) -> None:
    """Messages a stopping worker will not land: no longer pending acks (Faust's stop waits
    for those), and not acked, so no commit passes them: read again at the next start."""
    unacked = app.consumer._unacked_messages  # noqa: SLF001 - Faust's pending acks
    for message in messages:
        unacked.discard(message)
    notify(app.consumer._waiting_for_ack)  # noqa: SLF001 - wakes Faust's wait for acks


def ack_by(app: Any, messages: Iterable[Any]) -> None:
    """`ack` on the app's consumer."""
    ack(app.consumer, messages)


async def take_batches(stream: Any, max_: int, within: float, wake: asyncio.Event | None = None,
                       linger: float = 0.02, direct_topic: str | None = None) -> AsyncIterator[list]:
    loop = stream.loop
    app = stream.app
    channel_it = aiter(stream.channel)

    async def add_to_buffer(value: Any) -> Any:
        try:
            event = stream.current_event
            if event is None:
                raise RuntimeError("take buffer found current_event is None")
            # never more than max_ per batch: wait until the full one is taken. A loop: the
            # fetch loop's route may fill the buffer again between the space appearing and
            # this coroutine resuming (messages Faust delivered before the route was set)
            while buffer.full():
                await stream.wait(buffer.wait_for_space())
                if stream.should_stop:
                    return value  # stopping: unacked, the message is read again at restart
            buffer.put(event.message)
        except asyncio.CancelledError:  # pragma: no cover
            raise
        except Exception as exc:  # pragma: no cover - Faust's own handling
            stream.log.exception("Error adding to take buffer: %r", exc)
            await stream.crash(exc)
        return value

    acks_enabled_for = app.topics.acks_enabled_for
    unacked = app.consumer._unacked_messages  # noqa: SLF001 - Faust's pending acks

    def untrack(dropped: list) -> None:
        """Dropped messages are read again: no longer pending acks (not acked either)."""
        tracked = [m for m in dropped if m.tracked]
        for message in tracked:
            unacked.discard(message)
        if tracked:
            notify(app.consumer._waiting_for_ack)  # noqa: SLF001 - wakes Faust's wait for acks

    def track(batch: list) -> None:
        """Taken messages are pending acks: commits and a rebalance wait for them (the stream
        tracks the messages it delivers itself; fetched ones are tracked here)."""
        for message in batch:
            if not message.tracked and acks_enabled_for(message.topic):
                message.tracked = True
                unacked.add(message)

    buffer = BatchBuffer(max_, loop, app.flow_control, untrack)
    enable_acks = stream.enable_acks
    stream.enable_acks = False  # acked by the caller, after the batch landed
    stream.add_processor(add_to_buffer)
    stream._enable_passive(channel_it)  # noqa: SLF001 - as Stream.noack_take starts its channel
    if direct_topic is not None:
        app.flow_control.manage_queue(buffer)  # cleared with Faust's queues on a rebalance
        fetch.route(direct_topic, buffer)
    last_yield = loop.time()
    try:
        while not stream.should_stop:
            if not buffer.messages:
                # idle: wait for a message, a landing to ack, or the idle tick (`within`)
                remaining = last_yield + within - loop.time()
                if remaining > 0 and not (wake is not None and wake.is_set()):
                    waits = [buffer.started] if wake is None else [buffer.started, wake]
                    await stream.wait_first(*waits, timeout=remaining)
            if buffer.messages and not buffer.filled.is_set():
                gather = buffer.first_at + linger - loop.time()
                if gather > 0:
                    await stream.wait_first(buffer.filled, timeout=gather)
            now = loop.time()
            if buffer.messages:
                generation = app.consumer_generation_id
                # a message of an older generation belongs to a revoked assignment (the
                # stream's own check): it is read again from the committed offset
                taken = buffer.take()
                batch = [m for m in taken if m.generation_id == generation]
                if len(batch) < len(taken):
                    untrack([m for m in taken if m.generation_id != generation])
                track(batch)
                last_yield = now
                yield batch
            elif (wake is not None and wake.is_set()) or now >= last_yield + within:
                last_yield = now
                yield []  # a landing to ack, or the idle tick
    finally:
        if direct_topic is not None:
            fetch.unroute(direct_topic, buffer)
        stream.enable_acks = enable_acks
        stream._processors.remove(add_to_buffer)  # noqa: SLF001


def install() -> None:
    """take_batches replaces nothing; it calls Faust's Stream internals, checked here."""
    from faust.streams import Stream
    seams.require(Stream, "_enable_passive", "add_processor", "wait_first", "crash")
