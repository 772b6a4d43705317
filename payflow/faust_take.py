"""Batches from a Faust stream, with manual acks, that also report idle time.

Faust's `Stream.noack_take` yields only non-empty batches. The pipeline agent lands one
batch while it processes the next, and must finish (land, then ack) the last one when
traffic stops; acks come from the agent's own task (acking from a second task stalled
commits in our restart tests). So this variant, otherwise Faust's noack_take, yields an empty list
when `within` passes with nothing buffered, and also when `wake` is set (a landing
finished: ack it now, not after the next batch) while the next batch is still filling;
the caller clears `wake` once it has handled the landing. Batches keep their size:
full, or what `within` gathered.
"""
from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator

from mode.utils.aiter import aiter
from mode.utils.futures import notify


async def take_batches(stream: Any, max_: int, within: float,
                       wake: asyncio.Event | None = None) -> AsyncIterator[list]:
    buffer: list = []
    buffer_full = asyncio.Event()
    buffer_consumed = asyncio.Event()
    buffer_consuming: asyncio.Future | None = None
    channel_it = aiter(stream.channel)

    async def add_to_buffer(value: Any) -> Any:
        nonlocal buffer_consuming
        try:
            if buffer_consuming is not None:
                try:
                    await buffer_consuming
                finally:
                    buffer_consuming = None
            event = stream.current_event
            if event is None:
                raise RuntimeError("take buffer found current_event is None")
            buffer.append(event)
            if len(buffer) >= max_:
                # never more than max_ per batch: wait until this one is consumed
                buffer_full.set()
                buffer_consumed.clear()
                await stream.wait(buffer_consumed)
        except asyncio.CancelledError:  # pragma: no cover
            raise
        except Exception as exc:  # pragma: no cover - Faust's own handling
            stream.log.exception("Error adding to take buffer: %r", exc)
            await stream.crash(exc)
        return value

    enable_acks = stream.enable_acks
    stream.enable_acks = False  # acked by the caller, after the batch landed
    stream.add_processor(add_to_buffer)
    stream._enable_passive(channel_it)
    loop = stream.loop
    deadline = loop.time() + within  # when the batch being buffered is due
    try:
        while not stream.should_stop:
            remaining = max(0.0, deadline - loop.time())
            if wake is None:
                await stream.wait_for_stopped(buffer_full, timeout=remaining)
            elif not wake.is_set():
                await stream.wait_first(buffer_full, wake, timeout=remaining)
            if wake is not None and wake.is_set() and not buffer_full.is_set() and loop.time() < deadline:
                yield []  # woken to ack a landing: the batch being buffered keeps filling
                continue
            deadline = loop.time() + within
            if not buffer:
                yield []
                continue
            buffer_consuming = stream.loop.create_future()
            try:
                yield list(buffer)
            finally:
                buffer.clear()
                notify(buffer_consuming)
                buffer_full.clear()
                buffer_consumed.set()
    finally:
        stream.enable_acks = enable_acks
        stream._processors.remove(add_to_buffer)
