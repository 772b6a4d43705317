"""The warehouse sink's retry policy: transient failures and hung calls are retried."""
from __future__ import annotations

import asyncio
import threading

import pytest

from payflow import metrics
from payflow.pipeline.sink import SinkStopped, WarehouseSink
from payflow.warehouse.base import LandingBatch, TransientWarehouseError


class ScriptedWarehouse:
    """Lands after the scripted failures: 'hang' blocks the call, 'error' raises a transient error."""

    name = "scripted"

    def __init__(self, script: list[str]):
        self.script = list(script)
        self.calls = 0
        self.release = threading.Event()

    def land(self, batch: LandingBatch) -> dict[str, int]:
        self.calls += 1
        step = self.script.pop(0) if self.script else "ok"
        if step == "hang":
            self.release.wait(10)  # a request that never answers (the test releases it at the end)
            return {}
        if step == "error":
            raise TransientWarehouseError("unavailable")
        if step == "fatal":
            raise ValueError("schema mismatch")
        return {"payment_transactions": len(batch)}


async def test_a_hung_attempt_times_out_and_is_retried():
    warehouse = ScriptedWarehouse(["hang", "error"])
    sink = WarehouseSink(warehouse, attempt_timeout=0.3, initial_backoff=0.01, max_backoff=0.05)
    retries_before = metrics.SINK_RETRIES._value.get()
    try:
        assert await sink.land(LandingBatch()) == {"payment_transactions": 0}
    finally:
        warehouse.release.set()
    assert warehouse.calls == 3
    assert metrics.SINK_RETRIES._value.get() - retries_before == 2


async def test_a_permanent_error_stops_the_sink():
    sink = WarehouseSink(ScriptedWarehouse(["fatal"]), initial_backoff=0.01)
    with pytest.raises(SinkStopped):
        await sink.land(LandingBatch())
    assert not sink.healthy
    metrics.SINK_UP.set(1)  # other tests share the process-wide gauge


class HangingWarehouse:
    """Every call hangs until released; counts how many run at once."""

    name = "hanging"

    def __init__(self):
        self.running = self.most = self.calls = 0
        self.lock = threading.Lock()
        self.release = threading.Event()

    def land(self, batch: LandingBatch) -> dict[str, int]:
        with self.lock:
            self.calls += 1
            self.running += 1
            self.most = max(self.most, self.running)
        self.release.wait(10)
        with self.lock:
            self.running -= 1
        return {}


async def test_hung_calls_of_a_landing_are_bounded_and_a_late_answer_lands_it():
    warehouse = HangingWarehouse()
    sink = WarehouseSink(warehouse, attempt_timeout=0.05, initial_backoff=0.01, max_backoff=0.02,
                         max_retry_seconds=5.0)
    landing = asyncio.ensure_future(sink.land(LandingBatch()))
    await asyncio.sleep(1.0)  # ~15 attempts timed out
    assert not landing.done()
    assert warehouse.most == 2, f"{warehouse.most} calls at once: each holds its own copy of the rows"
    assert 0.9 < sink.landing_seconds() < 3
    assert not sink.up(0.5) and sink.up(30)
    warehouse.release.set()  # the hung calls answer after all: the landing is done
    assert await landing == {}
    assert sink.landing_seconds() == 0 and sink.up(0.5)


async def test_landings_refused_by_the_group_for_longer_than_the_stall_bound_make_the_sink_not_up():
    """BigQuery's fence refuses every landing at once while the group does not answer its
    decisions: no landing hangs, yet nothing is committed. Readiness once stayed green."""
    from payflow.warehouse.base import Landed

    class RefusingWarehouse:
        name = "refusing"
        refuse = True

        def land(self, batch):
            return Landed(fenced=self.refuse)

    warehouse = RefusingWarehouse()
    sink = WarehouseSink(warehouse)
    assert (await sink.land(LandingBatch())).fenced
    assert sink.up(30) and sink.up(0.2)  # refused just now
    await asyncio.sleep(0.3)
    assert (await sink.land(LandingBatch())).fenced
    assert 0.3 <= sink.refused_seconds() < 5
    assert not sink.up(0.2) and sink.up(30)
    warehouse.refuse = False
    await sink.land(LandingBatch())
    assert sink.refused_seconds() == 0 and sink.up(0.2)


async def test_one_refused_landing_with_none_after_it_does_not_keep_the_sink_down():
    """A landing refused at a rebalance whose partitions went elsewhere: nothing follows it.
    Readiness once went red 30 s later and stayed red for good."""
    import time

    from payflow.warehouse.base import Landed

    class RefusingOnce:
        name = "refusing-once"

        def land(self, batch):
            return Landed(fenced=True)

    sink = WarehouseSink(RefusingOnce())
    assert (await sink.land(LandingBatch())).fenced
    now = time.monotonic()
    assert sink.up(30, now + 10)
    assert sink.up(30, now + 31) and sink.up(30, now + 3600)
