"""Whole fetches for the pipeline agent: Faust's fetch loop hands raw-topic messages to the
agent's batch buffer directly, instead of one event at a time through its conductor, channel
queue and stream.

Measured (`make bench`, 2 cores): an empty Faust agent tops out at ~8,600 events/s, ~115 µs
per event, while raw aiokafka consumes the same topic at ~340,000/s. Per message, Faust's
fetch loop runs `wait_first(callback(message), suspend_flow.wait())` (two tasks and an
`asyncio.wait`), the conductor takes a lock, waits on flow control, builds an Event and
queues it, and the stream dequeues it, runs its processors and sets context variables.
Routed here, a raw-topic message costs the loop's own bookkeeping, tracking for acks
and an append.

`drain_messages` is Faust 0.15's `Consumer._drain_messages` with one change: a message of
a routed topic goes to its `Route` (`route()`); every other topic (erasure requests,
anything else) takes Faust's path unchanged. What Faust does for a message is kept: it
waits for the app's flow control, a full buffer makes the loop wait (interruptible by a
rebalance, as Faust's is), the buffer is cleared when partitions are revoked (Faust clears
its queues then), and when the agent takes a batch (take_batches), messages of an older
consumer generation are dropped and the rest are tracked as unacked, so commits and a
rebalance wait for their acks (the stream's generation check and tracking, at the same
point as the stream does them: a message tracked while still buffered, or while this loop
still referenced it, kept a rebalance waiting forever once the buffer was cleared).
`install()` puts it on Faust's Consumer class once.
"""
from __future__ import annotations

import asyncio
from typing import Any, Protocol, cast

from faust.transport.consumer import CONSUMER_FETCHING, Consumer
from mode import Service


class Route(Protocol):
    def full(self) -> bool: ...

    def put(self, message: Any) -> None: ...

    async def wait_for_space(self) -> None: ...


_routes: dict[str, Route] = {}


def route(topic: str, target: Route) -> None:
    """Send `topic`'s messages to `target` from now on."""
    _routes[topic] = target


def unroute(topic: str, target: Route) -> None:
    if _routes.get(topic) is target:
        del _routes[topic]


def routed(topic: str) -> bool:
    return topic in _routes


async def drain_messages(self: Consumer, fetcher: Any) -> None:  # pragma: no cover - run by the worker
    callback = self.callback
    getmany = self.getmany
    consumer_should_stop = cast(Service, self)._stopped.is_set
    fetcher_should_stop = cast(Service, fetcher)._stopped.is_set

    get_read_offset = self._read_offset.__getitem__
    set_read_offset = self._read_offset.__setitem__
    flag_consumer_fetching = CONSUMER_FETCHING
    set_flag = self.diag.set_flag
    unset_flag = self.diag.unset_flag
    commit_every = self._commit_every
    acks_enabled_for = self.app.topics.acks_enabled_for
    suspended = self.suspend_flow.is_set
    flow_control = self.app.flow_control
    routes = _routes

    yield_every = 100
    num_since_yield = 0
    sleep = asyncio.sleep

    try:
        while not (consumer_should_stop() or fetcher_should_stop()):
            set_flag(flag_consumer_fetching)
            ait = getmany(timeout=1.0)
            await self.sleep(0)
            if not self.should_stop:
                async for tp, message in ait:
                    num_since_yield += 1
                    if num_since_yield > yield_every:
                        await sleep(0)
                        num_since_yield = 0

                    offset = message.offset
                    r_offset = get_read_offset(tp)
                    if r_offset is None or offset >= r_offset:
                        gap = offset - (r_offset or 0)
                        if gap > 1 and r_offset:
                            if acks_enabled_for(message.topic):
                                await self._add_gap(tp, r_offset + 1, offset)
                        if commit_every is not None:
                            if self._n_acked >= commit_every:
                                self._n_acked = 0
                                await self.commit()
                        target = routes.get(tp.topic)
                        if target is None:
                            await self.wait_first(callback(message), self.suspend_flow.wait())
                        else:
                            if not flow_control.is_active():
                                # as Faust's conductor does: wait for the app's flow control
                                # (suspended until a rebalance's recovery is done)
                                await self.wait_first(flow_control.acquire(), self.suspend_flow.wait())
                            while target.full() and not suspended():
                                await self.wait_first(target.wait_for_space(), self.suspend_flow.wait())
                            if not suspended():
                                # tracked for acks when the agent takes it (take_batches), as
                                # Faust's stream does: tracked here, a message still referenced
                                # by this loop after a rebalance cleared the buffer kept the
                                # rebalance waiting for its ack forever
                                target.put(message)
                            # else dropped, as Faust drops what a rebalance interrupts; it is
                            # read again from the committed offset after the rebalance
                        set_read_offset(tp, offset)
            unset_flag(flag_consumer_fetching)
    except self.consumer_stopped_errors:
        if self.transport.app.should_stop:
            self.log.info("Broker stopped consumer, shutting down...")
            return
        raise
    except asyncio.CancelledError:
        if self.transport.app.should_stop:
            self.log.info("Consumer shutting down for user cancel.")
            return
        raise
    except Exception as exc:
        self.log.exception("Drain messages raised: %r", exc)
        raise
    finally:
        unset_flag(flag_consumer_fetching)


def install() -> None:
    Consumer._drain_messages = drain_messages
