"""take_batches under Faust's test context: a caller slower than the batch window still gets
whole batches (it took one or two events per window before, ~5 events/s in the outage test)."""
from __future__ import annotations

import asyncio

import faust

from payflow.faust_take import take_batches

probe_app = faust.App("take-batches-probe", store="memory://", autodiscover=False)
sizes: list[int] = []


@probe_app.agent(probe_app.channel())
async def slow_lander(stream):
    wake = asyncio.Event()  # the pipeline's "a landing finished" event; never set here
    async for batch in take_batches(stream, 100, within=0.05, wake=wake):
        if batch:
            sizes.append(len(batch))
            for event in batch:
                await stream.ack(event)
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
