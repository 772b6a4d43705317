"""A fetch delivered to its route at once (payflow.runtime.fetch), with Faust's per-message rules.

A stand-in for Faust's consumer holds only what the delivery reads (read offsets, gaps,
flow control, the generation); the route is the pipeline's own BatchBuffer. The integration
and fault tests run the same code in a worker against Kafka.
"""
from __future__ import annotations

import asyncio
from types import SimpleNamespace

from faust.types import TP

from payflow.runtime.fetch import _deliver_routed
from payflow.runtime.take import BatchBuffer

RAW = TP("raw", 0)


class StandInConsumer:
    def __init__(self, read_offset: int | None = None):
        self._read_offset = {RAW: read_offset}
        self.gaps: list[tuple[int, int]] = []
        self._commit_every = None
        self._n_acked = 0
        self.suspend_flow = asyncio.Event()
        flow = SimpleNamespace(is_active=lambda: True)
        self.app = SimpleNamespace(consumer_generation_id=3, flow_control=flow,
                                   topics=SimpleNamespace(acks_enabled_for=lambda topic: True))

    async def _add_gap(self, tp: TP, offset_from: int, offset_to: int) -> None:
        self.gaps.append((offset_from, offset_to))

    async def wait_first(self, *coros):
        tasks = [asyncio.ensure_future(c) for c in coros]
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for t in pending:
            t.cancel()


def messages(offsets) -> list:
    return [SimpleNamespace(offset=o, generation_id=3) for o in offsets]


async def test_a_fetch_larger_than_the_buffer_arrives_whole_and_in_order():
    consumer, buffer = StandInConsumer(), BatchBuffer(100, asyncio.get_running_loop())
    taken: list[int] = []

    async def agent():  # takes each full batch, as take_batches does
        while len(taken) < 250:
            await asyncio.sleep(0.01)
            taken.extend(m.offset for m in buffer.take())

    await asyncio.gather(_deliver_routed(consumer, RAW, messages(range(250)), buffer, 3), agent())
    assert taken == list(range(250))
    assert consumer._read_offset[RAW] == 249 and consumer.gaps == []


async def test_offsets_already_read_are_dropped_and_a_jump_is_a_gap():
    consumer, buffer = StandInConsumer(read_offset=10), BatchBuffer(100, asyncio.get_running_loop())
    await _deliver_routed(consumer, RAW, messages([8, 9, 10, 11, 15, 16]), buffer, 3)
    assert [m.offset for m in buffer.take()] == [10, 11, 15, 16]  # Faust re-reads the read offset itself
    assert consumer.gaps == [(12, 15)] and consumer._read_offset[RAW] == 16


async def test_a_seek_while_waiting_for_space_is_not_overwritten():
    """The stall guard or a rebalance seeks back to 40 while the loop waits with offsets
    100-149: moving the read offset to 149 after the wait would make the loop drop 40-148
    when they are fetched again."""
    consumer, buffer = StandInConsumer(read_offset=99), BatchBuffer(10, asyncio.get_running_loop())
    buffer.put_many(messages(range(90, 100)))  # full

    async def seek_then_rebalance():
        await asyncio.sleep(0.01)
        consumer._read_offset[RAW] = 40
        consumer.suspend_flow.set()  # the rest of the fetch is dropped
    await asyncio.gather(_deliver_routed(consumer, RAW, messages(range(100, 150)), buffer, 3), seek_then_rebalance())
    assert consumer._read_offset[RAW] == 40
    assert [m.offset for m in buffer.take()] == list(range(90, 100))


async def test_a_rebalance_stops_the_delivery_of_the_rest():
    consumer, buffer = StandInConsumer(), BatchBuffer(10, asyncio.get_running_loop())

    async def rebalance_once_full():
        while not buffer.full():
            await asyncio.sleep(0.005)
        consumer.app.consumer_generation_id = 4
        buffer.take()  # space again, but the generation moved on
    await asyncio.gather(_deliver_routed(consumer, RAW, messages(range(30)), buffer, 3), rebalance_once_full())
    assert buffer.messages == []


async def test_a_rebalance_that_seeks_to_the_same_read_offset_is_not_overwritten():
    """The rebalance's seek may put the read offset back to the value it had (the last
    message read was not committed): the loop must still not move it on."""
    consumer, buffer = StandInConsumer(read_offset=99), BatchBuffer(10, asyncio.get_running_loop())
    buffer.put_many(messages(range(95, 100)))  # room for five: 100-104 go in, then the loop waits

    async def rebalance():
        await asyncio.sleep(0.01)
        consumer._read_offset[RAW] = 99  # perform_seek: back to the committed position
        consumer.app.consumer_generation_id = 4
        buffer.take()
    await asyncio.gather(_deliver_routed(consumer, RAW, messages(range(100, 150)), buffer, 3), rebalance())
    assert consumer._read_offset[RAW] == 99



async def test_a_marker_after_a_fetch_s_last_record_is_noted_only_when_the_fetch_was_delivered_whole():
    """read_committed steps over a transaction's marker after the last record: the fetcher's
    position is then two past it, and the offset between never arrives."""
    from payflow.runtime import fetch

    def with_position(consumer: StandInConsumer, position: int) -> StandInConsumer:
        consumer._thread = SimpleNamespace(_consumer=SimpleNamespace(_subscription=SimpleNamespace(
            subscription=SimpleNamespace(assignment=SimpleNamespace(
                state_value=lambda tp: SimpleNamespace(has_valid_position=True, position=position))))))
        return consumer

    try:
        consumer = with_position(StandInConsumer(read_offset=5), 9)
        buffer = BatchBuffer(100, asyncio.get_running_loop())
        assert await _deliver_routed(consumer, RAW, messages([6, 7]), buffer, 3)
        fetch._note_skipped_tail(consumer, RAW, 7, 3)
        assert fetch._skipped[RAW] == {8: 9}
        assert fetch.skipped_run_end(RAW, 8) == 9 and fetch._skipped[RAW] == {}
        # nothing stepped over: nothing noted
        fetch._note_skipped_tail(with_position(consumer, 8), RAW, 7, 3)
        assert fetch._skipped[RAW] == {}
        # a fetch cut short by a full route is not delivered whole: its rest is not skipped
        small = BatchBuffer(1, asyncio.get_running_loop())
        consumer = with_position(StandInConsumer(read_offset=9), 12)
        consumer.suspend_flow.set()  # a rebalance interrupts the wait for space
        assert not await _deliver_routed(consumer, RAW, messages([10, 11]), small, 3)
    finally:
        fetch._skipped.clear()


async def test_the_buffer_keeps_what_it_holds_when_flow_resumes_and_drops_it_when_partitions_are_revoked():
    """Faust's flow_control.resume clears the queues it manages. Faust's recovery resumes flow
    to read the table changelogs, then seeks the raw partitions and resumes again: a fetch
    delivered in between was cleared with the fetch position past it (a restart with the local
    state lost waited for good). On a revocation (suspend, then clear) the buffer is dropped:
    it is read again from the committed offsets."""
    from mode.utils.queues import FlowControlEvent

    flow_control = FlowControlEvent(initially_suspended=False)
    consumer = StandInConsumer()
    consumer.app.flow_control = flow_control
    buffer = BatchBuffer(100, asyncio.get_running_loop(), flow_control)
    flow_control.manage_queue(buffer)
    assert await _deliver_routed(consumer, RAW, messages(range(0, 5)), buffer, 3)
    flow_control.resume()  # recovery done: what was fetched after the seek stays
    assert [m.offset for m in buffer.messages] == [0, 1, 2, 3, 4]
    flow_control.suspend()  # a rebalance revokes the partitions
    flow_control.clear()
    assert buffer.messages == []
