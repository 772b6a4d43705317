"""take_batches under Faust's test context: a caller slower than the batch window still gets
whole batches (it took one or two events per window before, ~5 events/s in the outage test)."""
from __future__ import annotations

import asyncio

import faust

from payflow.runtime.take import ack, take_batches

probe_app = faust.App("take-batches-probe", store="memory://", autodiscover=False)
sizes: list[int] = []


@probe_app.agent(probe_app.channel())
async def slow_lander(stream):
    wake = asyncio.Event()  # the pipeline's "a landing finished" event; never set here
    async for batch in take_batches(stream, 100, within=0.05, wake=wake):
        if batch:
            sizes.append(len(batch))
            ack(probe_app.consumer, batch)
            await asyncio.sleep(0.2)  # a landing slower than the batch window


async def test_a_caller_slower_than_the_window_gets_what_piled_up_as_whole_batches():
    sizes.clear()
    async with slow_lander.test_context() as agent:
        for i in range(400):  # arriving steadily, ~1,000 events/s
            await agent.put(i, wait=False)
            if i % 10 == 9:
                await asyncio.sleep(0.01)
        for _ in range(50):
            if sum(sizes) >= 400:
                break
            await asyncio.sleep(0.1)
    print("batch sizes", sizes)
    assert sum(sizes) == 400, sizes
    assert len(sizes) <= 12, sizes


# -- the fetch route: what Faust's fetch loop hands the buffer directly (payflow.runtime.fetch) --
from faust.types.tuples import ConsumerMessage  # noqa: E402

from payflow.runtime import fetch  # noqa: E402

DIRECT = "take-batches-probe-raw"
fetched: list[list[int]] = []


@probe_app.agent(probe_app.channel())
async def direct_consumer(stream):
    async for batch in take_batches(stream, 100, within=0.05, direct_topic=DIRECT):
        if batch:
            fetched.append([m.offset for m in batch])


def message(offset: int, generation: int | None) -> ConsumerMessage:
    return ConsumerMessage(DIRECT, 0, offset, 0.0, 0, None, b"k", b"v", None, generation_id=generation)


async def route_with(offsets: range) -> fetch.Route:
    """The agent's route, once registered, with these offsets put as the fetch loop would."""
    for _ in range(50):
        if fetch.routed(DIRECT):
            route = fetch._routes[DIRECT]
            route.put_many([message(offset, probe_app.consumer_generation_id) for offset in offsets])
            return route
        await asyncio.sleep(0.02)
    raise AssertionError("take_batches did not register its route")


async def until_fetched() -> None:
    for _ in range(50):
        if fetched:
            return
        await asyncio.sleep(0.02)


async def test_fetched_messages_arrive_as_batches_and_stale_generations_are_dropped():
    fetched.clear()
    async with direct_consumer.test_context():
        route = await route_with(range(5))
        route.put_many([message(5, probe_app.consumer_generation_id - 1)])  # fetched before a rebalance: read again after it
        await until_fetched()
    assert fetched == [[0, 1, 2, 3, 4]]
    assert not fetch.routed(DIRECT)  # the route ends with the batches


def revoke() -> None:
    """Faust's revocation: flow suspended, then the managed queues cleared; resumed after."""
    probe_app.flow_control.suspend()
    probe_app.flow_control.clear()
    probe_app.flow_control.resume()


async def test_a_rebalance_clears_what_the_fetch_loop_buffered():
    fetched.clear()
    async with direct_consumer.test_context():
        route = await route_with(range(3))
        revoke()  # what Faust does when partitions are revoked
        route.put_many([message(10, probe_app.consumer_generation_id)])
        await until_fetched()
    assert fetched == [[10]]


async def test_a_full_buffer_makes_the_fetch_loop_wait_for_space():
    fetched.clear()
    async with direct_consumer.test_context():
        route = await route_with(range(100))
        assert route.full()
        await asyncio.wait_for(route.wait_for_space(), timeout=2)  # the agent takes the batch
        assert not route.full()


async def test_fetched_messages_are_pending_acks_once_taken_not_while_buffered(monkeypatch):
    """Tracked while buffered, a message the fetch loop still referenced after a rebalance
    cleared the buffer kept Faust's rebalance (wait_empty) waiting for its ack forever
    (found by the scale-out fault test); the stream tracks what it delivers, so do we."""
    monkeypatch.setattr(probe_app.topics, "acks_enabled_for", lambda topic: True)
    fetched.clear()
    async with direct_consumer.test_context():
        route = await route_with(range(0))
        generation = probe_app.consumer_generation_id
        held = message(1, generation)  # still referenced, as by the fetch loop
        route.put_many([held])
        revoke()  # the rebalance drops it
        taken = message(2, generation)
        route.put_many([taken])
        await until_fetched()
    assert fetched == [[2]]
    assert not held.tracked and held not in probe_app.consumer._unacked_messages
    assert taken.tracked and taken in probe_app.consumer._unacked_messages
    probe_app.consumer._unacked_messages.discard(taken)


# -- both paths at once: messages Faust delivered through the stream before the route was set,
# while the fetch loop fills the route (a worker joining a group of several, tests/fault) --
RACE = "take-batches-probe-race"
race_batches: list[list] = []


@probe_app.agent(probe_app.channel())
async def both_paths(stream):
    async for batch in take_batches(stream, 10, within=0.05, direct_topic=RACE):
        if batch:
            race_batches.append(batch)
            await asyncio.sleep(0.01)


async def test_the_stream_path_waits_again_when_the_route_refilled_the_buffer_first():
    race_batches.clear()
    async with both_paths.test_context() as agent:
        for _ in range(50):
            if fetch.routed(RACE):
                break
            await asyncio.sleep(0.02)
        route = fetch._routes[RACE]

        async def fetch_loop():
            # the fetch loop: refills the buffer as soon as a batch is taken
            offset = 1000
            while offset < 1200:
                await route.wait_for_space()
                offset += route.put_many([ConsumerMessage(RACE, 0, o, 0.0, 0, None, b"k", b"v", None,
                                                          generation_id=probe_app.consumer_generation_id)
                                          for o in range(offset, min(offset + 10, 1200))])
                await asyncio.sleep(0)

        filler = asyncio.create_task(fetch_loop())
        for i in range(60):  # through the stream (Faust's own path), while the route fills
            await agent.put(i, wait=False)
        for _ in range(200):
            if sum(len(b) for b in race_batches) >= 260:
                break
            await asyncio.sleep(0.02)
        filler.cancel()
    assert sum(len(b) for b in race_batches) == 260, [len(b) for b in race_batches]
    assert all(len(b) <= 10 for b in race_batches)


async def test_a_tracked_message_the_buffer_drops_is_no_longer_pending_an_ack(monkeypatch):
    """Faust's own path (the stream, before the fetch loop's route is set) tracks a message
    before it reaches the buffer. Dropped there while tracked (a revocation's clear, partitions
    read again after a refused landing, an older generation), it held the rebalance's wait for
    acks until the shutdown bound (CI: a resumed zombie worker, 3 of 3 cases)."""
    monkeypatch.setattr(probe_app.topics, "acks_enabled_for", lambda topic: True)
    unacked = probe_app.consumer._unacked_messages
    fetched.clear()
    async with direct_consumer.test_context():
        route = await route_with(range(0))
        generation = probe_app.consumer_generation_id

        def tracked(offset: int, partition: int = 0, generation: int = generation) -> ConsumerMessage:
            m = ConsumerMessage(DIRECT, partition, offset, 0.0, 0, None, b"k", b"v", None, generation_id=generation)
            m.tracked = True  # as the stream tracks what Faust delivers through it
            unacked.add(m)
            return m

        cleared, sought, kept = tracked(1), tracked(2, partition=1), tracked(3, partition=2)
        route.put_many([cleared])
        revoke()
        route.put_many([sought, kept])
        assert fetch.drop_routed(DIRECT, {1}) == 1
        stale = tracked(4, generation=generation - 1)
        route.put_many([stale])
        await until_fetched()
        held = {m for m in (cleared, sought, kept, stale) if m in unacked}
    assert fetched == [[3]]
    assert held == {kept}  # taken by the agent: pending its ack; the dropped ones are not
