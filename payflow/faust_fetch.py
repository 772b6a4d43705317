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

`drain_messages` is Faust 0.15's `Consumer._drain_messages` and `Consumer.getmany` taken a
fetch at a time rather than a message at a time: the records of a routed topic's partition
go to its `Route` (`route()`) in one call, with the read-offset, gap and commit checks
Faust makes per message; every other topic (erasure requests, anything else) takes Faust's
path, message by message, unchanged. (Faust's getmany is an async generator that looked up
the high-water mark and the generation for every message: ~3% of the worker's time at
10,000 events/s, py-spy.) What Faust does for a message is kept: it
waits for the app's flow control, a full buffer makes the loop wait (interruptible by a
rebalance, as Faust's is), the buffer is cleared when partitions are revoked (Faust clears
its queues then), and when the agent takes a batch (take_batches), messages of an older
consumer generation are dropped and the rest are tracked as unacked, so commits and a
rebalance wait for their acks (the stream's generation check and tracking, at the same
point as the stream does them: a message tracked while still buffered, or while this loop
still referenced it, kept a rebalance waiting forever once the buffer was cleared).
One change to Faust's rules: a read offset set by a seek while the loop waited (for space,
for flow control: a rebalance's seek, the stall guard's) is left where the seek put it,
and a delivery a rebalance interrupted does not move it on; Faust's loop overwrote it with
the offset of the message it had waited with, which would skip what the seek asked for.
`install()` puts it on Faust's Consumer class once.
"""
from __future__ import annotations

import asyncio
from typing import Any, Protocol, cast

from faust.transport.consumer import CONSUMER_FETCHING, Consumer
from faust.types import TP
from mode import Service


class Route(Protocol):
    def full(self) -> bool: ...

    def put_many(self, messages: list) -> int:
        """Take as many of `messages` as there is room for; return how many."""
        ...

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
    """Faust's fetch loop, a fetch at a time: `Consumer.getmany`, then each partition's
    records go to their route at once, or message by message through Faust's path."""
    consumer_should_stop = cast(Service, self)._stopped.is_set
    fetcher_should_stop = cast(Service, fetcher)._stopped.is_set
    flag_consumer_fetching = CONSUMER_FETCHING
    set_flag = self.diag.set_flag
    unset_flag = self.diag.unset_flag
    to_message = self._to_message
    app = self.app

    try:
        while not (consumer_should_stop() or fetcher_should_stop()):
            set_flag(flag_consumer_fetching)
            # Faust's getmany, without its per-message generator: one fetch, all partitions
            records, active_partitions = await self._wait_next_records(1.0)
            await self.sleep(0)
            if records is None or self.should_stop:
                unset_flag(flag_consumer_fetching)
                continue
            if not self.flow_active:
                # as getmany: fetched while flow stopped (a rebalance): seek back to the
                # committed offsets; the records are read again after it
                try:
                    await self.perform_seek()
                except Exception as ex:  # noqa: BLE001 - Faust's own handling
                    self.log.warning(f"exception performing seek when flow not active {ex}")
                unset_flag(flag_consumer_fetching)
                continue
            generation_id = app.consumer_generation_id
            for tp, tp_records in records.items():
                if not self.flow_active or app.consumer_generation_id != generation_id:
                    break  # a rebalance began: the rest is read again from committed offsets
                if not (active_partitions is None or tp in active_partitions or tp in self._buffered_partitions):
                    continue
                if not tp_records:
                    continue
                app.monitor.track_tp_end_offset(tp, self.highwater(tp))
                target = _routes.get(tp.topic)
                if target is None:
                    if not await _deliver_each(self, tp, tp_records, generation_id):
                        break
                else:
                    await _deliver_routed(self, tp, [to_message(tp, r) for r in tp_records], target, generation_id)
                await asyncio.sleep(0)
            else:
                if self.flow_active and app.consumer_generation_id == generation_id:
                    await _note_skipped_tails(self, generation_id)
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
        unset_flag(CONSUMER_FETCHING)


async def _accept(self: Consumer, tp: Any, messages: list) -> list:
    """The messages at or after the partition's read offset, in order; a jump in offsets is
    noted as a gap for commits (Faust's read-offset and gap rules, per message)."""
    get_read_offset = self._read_offset.__getitem__
    acks_enabled = self.app.topics.acks_enabled_for(tp.topic)
    r_offset = get_read_offset(tp)
    accepted = []
    for message in messages:
        offset = message.offset
        if r_offset is None or offset >= r_offset:
            if r_offset and offset - r_offset > 1 and acks_enabled:
                await self._add_gap(tp, r_offset + 1, offset)
            accepted.append(message)
            r_offset = offset
    start = _sought.pop(tp, None)
    if start is not None and accepted and accepted[0].offset > start and acks_enabled:
        # the first message after a seek comes later than the offset sought: what lies
        # between (a transaction marker, an aborted transaction, deleted records) never arrives
        await self._add_gap(tp, start, accepted[0].offset)
    return accepted


# tp -> the offset a seek set it to (the next to read), until its first message is accepted:
# Faust's read offset alone cannot tell "next to read" (after a seek) from "last delivered"
_sought: dict = {}


def sought(tp: Any, offset: int) -> None:
    """A partition was sought to `offset` (payflow.faust_commit after Faust's seek, the stall guard)."""
    _sought[TP(tp.topic, tp.partition)] = offset


async def _commit_if_due(self: Consumer) -> None:
    commit_every = self._commit_every
    if commit_every is not None and self._n_acked >= commit_every:
        self._n_acked = 0
        await self.commit()


async def _deliver_routed(self: Consumer, tp: Any, messages: list, target: Route, generation_id: int) -> None:
    """A partition's fetched messages to their route, as many at a time as it has room for.

    What Faust does per message is kept: the app's flow control is waited for (suspended
    until a rebalance's recovery is done), a full route makes the loop wait (interruptible by
    a rebalance), and what a rebalance interrupts is dropped: it is read again from the
    committed offset (take_batches also drops messages of an older generation)."""
    read_before = self._read_offset[tp]
    accepted = await _accept(self, tp, messages)
    if not accepted:
        return
    await _commit_if_due(self)
    suspended = self.suspend_flow.is_set
    flow_control = self.app.flow_control
    app = self.app
    start = 0
    while start < len(accepted) and not suspended() and app.consumer_generation_id == generation_id:
        if not flow_control.is_active():
            await self.wait_first(flow_control.acquire(), self.suspend_flow.wait())
            continue
        if target.full():
            await self.wait_first(target.wait_for_space(), self.suspend_flow.wait())
            continue
        # tracked for acks when the agent takes them (take_batches), as Faust's stream
        # does: tracked here, a message still referenced by this loop after a rebalance
        # cleared the buffer kept the rebalance waiting for its ack forever
        start += target.put_many(accepted[start:])
    if start:
        _move_read_offset(self, tp, read_before, accepted[start - 1].offset, generation_id)


async def _deliver_each(self: Consumer, tp: Any, records: list, generation_id: int) -> bool:
    """Faust's path for a partition of an unrouted topic: each message through the
    consumer's callback (the conductor). False if a rebalance interrupted it."""
    to_message = self._to_message
    for record in records:
        if not self.flow_active or self.app.consumer_generation_id != generation_id:
            return False
        message = to_message(tp, record)
        read_before = self._read_offset[tp]
        if await _accept(self, tp, [message]):
            await _commit_if_due(self)
            await self.wait_first(self.callback(message), self.suspend_flow.wait())
            _move_read_offset(self, tp, read_before, message.offset, generation_id)
    return True


async def _note_skipped_tails(self: Consumer, generation_id: int) -> None:
    """Offsets the fetcher stepped over after a routed partition's last delivered message
    (a transaction's commit or abort marker, an aborted transaction's records: read_committed
    skips them) are filed as a gap: they never arrive, and without the gap commits stopped
    one short of the end for good (lag 1 forever on a partition ending in a marker).

    Runs after a fetch has been delivered whole (nothing of it is still held by this loop),
    with the fetcher's position: the next offset it would hand out."""
    positions = _fetch_positions(self)
    if not positions:
        return
    read_offset = self._read_offset
    for atp, position in positions.items():
        if atp.topic not in _routes:
            continue
        tp = TP(atp.topic, atp.partition)
        last = read_offset.get(tp)
        # after a seek the read offset is the next offset to read, after a delivery the
        # last one delivered; either way nothing at or below it is in this gap
        if last is not None and position > last + 1 and self.app.consumer_generation_id == generation_id:
            await self._add_gap(tp, last + 1, position)
            read_offset[tp] = position - 1


def _fetch_positions(self: Consumer) -> dict:
    """tp -> the fetcher's position, for assigned partitions with a valid one (aiokafka's
    subscription state, read from this thread: plain ints)."""
    try:
        consumer = self._thread._consumer  # noqa: SLF001 - the aiokafka consumer under Faust's
        assignment = consumer._subscription.subscription.assignment  # noqa: SLF001
        out = {}
        for tp in assignment.tps:
            state = assignment.state_value(tp)
            if state.has_valid_position:
                out[tp] = state.position
        return out
    except AttributeError:  # not started, or rebalancing (no assignment): nothing to note
        return {}


def _move_read_offset(self: Consumer, tp: Any, read_before: int | None, offset: int, generation_id: int) -> None:
    """The read offset moves on to the last message delivered, unless a rebalance began
    (its seek sets every partition's read offset, possibly to the value it had) or a seek
    moved it while the loop waited (the stall guard): moved past where a seek put it, the
    read offset would drop the messages the seek asked for."""
    interrupted = self.suspend_flow.is_set() or self.app.consumer_generation_id != generation_id
    if not interrupted and self._read_offset[tp] == read_before:
        self._read_offset[tp] = offset


def install() -> None:
    Consumer._drain_messages = drain_messages
