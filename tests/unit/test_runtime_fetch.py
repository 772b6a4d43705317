"""payflow.runtime.fetch.drain_messages, Faust's fetch loop a fetch at a time, over a stub
consumer whose fetches are scripted: routing to the agent's buffer, flow control, the
read-offset rule, and a rebalance's clearing. (test_fetch_delivery.py covers one routed
partition's delivery, `_deliver_routed`, in detail.)"""
from __future__ import annotations

import asyncio
from types import SimpleNamespace

from faust.types import TP
from mode.utils.queues import FlowControlEvent

from payflow.runtime import fetch
from payflow.runtime.take import BatchBuffer

RAW, RAW1, OTHER = TP("fetch-raw", 0), TP("fetch-raw", 1), TP("fetch-other", 0)


class StubConsumer:
    """What drain_messages reads of Faust's Consumer; `fetches` are handed out one per
    `_wait_next_records` call, then the loop stops."""

    consumer_stopped_errors = ()

    def __init__(self, fetches, *, read_offsets=None, flow=None):
        self.fetches = list(fetches)
        self._stopped = asyncio.Event()
        self._read_offset = {tp: None for tp in (RAW, RAW1, OTHER)} | (read_offsets or {})
        self._buffered_partitions: set = set()
        self._commit_every = None
        self._n_acked = 0
        self.suspend_flow = asyncio.Event()
        self.diag = SimpleNamespace(set_flag=lambda f: None, unset_flag=lambda f: None)
        self.flow_active = True
        self.should_stop = False
        self.gaps: list = []
        self.delivered_each: list = []  # (tp, offset) through Faust's per-message path
        self.seeks = 0
        flow_control = flow or FlowControlEvent(initially_suspended=False)
        self.app = SimpleNamespace(consumer_generation_id=1, flow_control=flow_control,
                                   monitor=SimpleNamespace(track_tp_end_offset=lambda tp, offset: None),
                                   topics=SimpleNamespace(acks_enabled_for=lambda topic: True))
        self.transport = SimpleNamespace(app=self.app)
        self.log = SimpleNamespace(info=print, warning=print, exception=print)

    async def _wait_next_records(self, timeout):
        if not self.fetches:
            self._stopped.set()
            return None, None
        records = self.fetches.pop(0)
        return {tp: [SimpleNamespace(offset=o) for o in offsets] for tp, offsets in records.items()}, None

    async def sleep(self, seconds):
        await asyncio.sleep(0)

    def assignment(self):
        return {RAW, RAW1, OTHER}

    async def perform_seek(self):
        self.seeks += 1

    def _to_message(self, tp, record):
        return SimpleNamespace(tp=tp, offset=record.offset, generation_id=self.app.consumer_generation_id,
                               tracked=False)

    def highwater(self, tp):
        return 1000

    async def _add_gap(self, tp, start, end):
        self.gaps.append((tp, start, end))

    async def callback(self, message):
        self.delivered_each.append((message.tp, message.offset))

    async def wait_first(self, *coros):
        tasks = [asyncio.ensure_future(c) for c in coros]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            task.cancel()


class RecordingRoute(BatchBuffer):
    def __init__(self, max_: int = 1000):
        super().__init__(max_, asyncio.get_running_loop())
        self.calls: list[list[int]] = []

    def put_many(self, messages):
        taken = super().put_many(messages)
        if taken:
            self.calls.append([(m.tp.partition, m.offset) for m in messages[:taken]])
        return taken


async def drain(consumer, route=None, topic=RAW.topic):
    if route is not None:
        fetch.route(topic, route)
    try:
        fetcher = SimpleNamespace(_stopped=asyncio.Event())
        await asyncio.wait_for(fetch.drain_messages(consumer, fetcher), 5)
    finally:
        if route is not None:
            fetch.unroute(topic, route)


async def test_a_routed_topic_s_fetch_goes_to_its_route_whole_and_other_topics_message_by_message():
    consumer, route = StubConsumer([{RAW: [0, 1, 2], RAW1: [7, 8], OTHER: [4, 5]}]), RecordingRoute()
    await drain(consumer, route)
    assert route.calls == [[(0, 0), (0, 1), (0, 2)], [(1, 7), (1, 8)]]  # one call per partition
    assert consumer.delivered_each == [(OTHER, 4), (OTHER, 5)]  # Faust's conductor path
    assert consumer._read_offset == {RAW: 2, RAW1: 8, OTHER: 5}
    assert not fetch.routed(RAW.topic)


async def test_without_a_route_every_topic_takes_faust_s_path():
    consumer = StubConsumer([{RAW: [0, 1]}])
    await drain(consumer)
    assert consumer.delivered_each == [(RAW, 0), (RAW, 1)]


def fetching_from(monkeypatch, positions: dict) -> None:
    """The fetcher's position per partition when a fetch is asked for (aiokafka's state)."""
    monkeypatch.setattr(fetch, "fetch_position", lambda self, tp: positions.get(tp))


async def test_records_below_the_read_offset_are_dropped_and_a_jump_is_filed_as_a_gap(monkeypatch):
    consumer, route = StubConsumer([{RAW: [3, 4, 5, 9]}], read_offsets={RAW: 4}), RecordingRoute()
    fetching_from(monkeypatch, {RAW: 3})
    await drain(consumer, route)
    assert route.calls == [[(0, 4), (0, 5), (0, 9)]]
    assert consumer.gaps == [(RAW, 6, 9)]
    assert consumer._read_offset[RAW] == 9


async def test_a_fetch_made_while_flow_is_stopped_is_not_delivered_and_seeks_back():
    consumer, route = StubConsumer([{RAW: [0, 1]}]), RecordingRoute()
    consumer.flow_active = False  # a rebalance is under way
    await drain(consumer, route)
    assert route.calls == [] and consumer.seeks == 1
    assert consumer._read_offset[RAW] is None


async def test_delivery_waits_for_the_app_s_flow_control():
    flow = FlowControlEvent(initially_suspended=True)  # recovery not finished
    consumer, route = StubConsumer([{RAW: [0, 1]}], flow=flow), RecordingRoute()
    task = asyncio.ensure_future(drain(consumer, route))
    await asyncio.sleep(0.05)
    assert route.calls == [] and not task.done()
    flow.resume()
    await task
    assert route.calls == [[(0, 0), (0, 1)]]


async def test_a_full_route_holds_the_loop_until_the_agent_takes_a_batch():
    consumer, route = StubConsumer([{RAW: list(range(5))}]), RecordingRoute(max_=3)
    task = asyncio.ensure_future(drain(consumer, route))
    await asyncio.sleep(0.05)
    assert [m.offset for m in route.messages] == [0, 1, 2] and not task.done()
    assert consumer._read_offset[RAW] is None  # moved only once the whole fetch is delivered
    first = route.take()
    await task
    assert [m.offset for m in first] + [m.offset for m in route.messages] == [0, 1, 2, 3, 4]
    assert consumer._read_offset[RAW] == 4


async def test_partitions_whose_records_the_loop_holds_are_not_idle_for_the_stall_guard():
    """One fetch for two partitions, the route full after the first: the second's records sit in
    the loop, its fetcher position past them. The stall guard must not take it for a partition
    idle below its position (it would seek it back and drop them, every 15 s while the route
    stays full: an outside review's finding)."""
    second = TP(RAW.topic, RAW.partition + 1)
    consumer, route = StubConsumer([{RAW: list(range(5)), second: [100, 101]}]), RecordingRoute(max_=3)
    task = asyncio.ensure_future(drain(consumer, route))
    await asyncio.sleep(0.05)
    assert not task.done() and fetch.holding(second) and fetch.holding(RAW)
    route.take()
    await asyncio.sleep(0.05)
    route.take()
    await task
    assert not fetch.holding(second) and not fetch.holding(RAW)


async def test_a_rebalance_while_the_loop_waits_drops_the_rest_and_the_buffer_is_cleared():
    flow = FlowControlEvent(initially_suspended=False)
    consumer, route = StubConsumer([{RAW: list(range(5)), RAW1: [0]}], flow=flow), RecordingRoute(max_=3)
    flow.manage_queue(route)  # as take_batches registers the buffer
    task = asyncio.ensure_future(drain(consumer, route))
    await asyncio.sleep(0.05)
    # partitions revoked: Faust suspends the flow, clears its queues, a new generation starts
    consumer.suspend_flow.set()
    consumer.app.consumer_generation_id = 2
    flow.clear()
    await task
    assert route.messages == []  # cleared, and nothing after the interruption was put
    # an interrupted delivery leaves the read offset where it was: the rebalance's seek decides
    assert consumer._read_offset[RAW] is None
    assert route.calls == [[(0, 0), (0, 1), (0, 2)]]  # RAW1's record was not delivered either


async def test_a_seek_while_a_fetch_is_outstanding_drops_what_that_fetch_holds():
    consumer, route = StubConsumer([{RAW1: [3], RAW: [10, 11]}]), RecordingRoute()
    highwater = consumer.highwater

    def seek_raw_meanwhile(tp):  # while RAW1 is handled, the stall guard seeks RAW
        if tp == RAW1:
            fetch.note_seek(RAW)
        return highwater(tp)

    consumer.highwater = seek_raw_meanwhile
    await drain(consumer, route)
    assert route.calls == [[(1, 3)]]  # RAW's records were fetched before the seek: read again
    assert consumer._read_offset[RAW] is None


async def test_a_seek_of_another_topic_s_partition_mid_delivery_does_not_skip_the_raw_records():
    """A fetch holds an unrouted partition's records first and the raw partition's after. A
    seek of the unrouted one while its message is delivered (a rebalance's seek of a partition
    with nothing committed) stopped the whole fetch: the raw records, already past the
    fetcher's position, were never delivered, and the next fetch's first record was filed as
    a gap over them (commits and a landing's range passed them)."""
    consumer, route = StubConsumer([{OTHER: [4, 5], RAW: [0, 1]}]), RecordingRoute()
    delivered = consumer.callback

    async def seek_other_meanwhile(message):
        await delivered(message)
        fetch.note_seek(OTHER)

    consumer.callback = seek_other_meanwhile
    await drain(consumer, route)
    assert consumer.delivered_each == [(OTHER, 4)]  # the rest of OTHER comes from where the seek points
    assert route.calls == [[(0, 0), (0, 1)]]  # without the fix: [] (RAW skipped)


async def test_a_jump_right_after_offset_0_is_filed_as_a_gap(monkeypatch):
    """Faust's rule `if r_offset` read offset 0 as "nothing read": a jump from 0 (a record at 0,
    a transaction's marker at 1) was not filed, so offset 1 was accounted for by nothing and
    a BigQuery landing of a partition with nothing committed was refused for ever."""
    consumer, route = StubConsumer([{RAW: [0, 2, 3]}]), RecordingRoute()
    fetching_from(monkeypatch, {RAW: 0})
    await drain(consumer, route)
    assert route.calls == [[(0, 0), (0, 2), (0, 3)]]
    assert consumer.gaps == [(RAW, 1, 2)]


async def test_offsets_between_the_read_offset_and_where_the_fetch_read_from_are_no_gap(monkeypatch):
    """A scale-in/out run on BigQuery lost 24 payments: after a rebalance, with 1595 sought
    (the read offset 1595), the fetcher read from 1642. Faust filed 1596-1641 as a gap (never
    to arrive), commits passed them and a landing claimed them. Only what the fetch read (from
    its position on) is a gap; the rest stops commits until it is read again."""
    consumer, route = StubConsumer([{RAW: [1642, 1643, 1650]}], read_offsets={RAW: 1595}), RecordingRoute()
    fetching_from(monkeypatch, {RAW: 1642})
    await drain(consumer, route)
    assert route.calls == [[(0, 1642), (0, 1643), (0, 1650)]]
    assert consumer.gaps == [(RAW, 1644, 1650)]  # Faust's rule: [(RAW, 1596, 1642), (RAW, 1644, 1650)]


async def test_with_no_position_known_a_jump_is_no_gap(monkeypatch):
    consumer, route = StubConsumer([{RAW: [7, 9]}], read_offsets={RAW: 4}), RecordingRoute()
    fetching_from(monkeypatch, {})
    await drain(consumer, route)
    assert route.calls == [[(0, 7), (0, 9)]]
    assert consumer.gaps == [(RAW, 8, 9)]  # within the fetch: stepped over by the broker
