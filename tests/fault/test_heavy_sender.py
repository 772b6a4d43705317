"""Fault test: one sender with 100,000 payments within 30 minutes of event time, mixed into
a 50,000-event simulated run, and a SIGKILL of the worker mid-run. The run reconciles
exactly, the worker's memory stays bounded, and no state changelog record exceeds the
limit derived from the broker's (a sender's whole history was one value, logged as one
record: past the broker's 1 MB limit the worker crash-looped)."""
from __future__ import annotations

import asyncio
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from payflow.simulator.generator import EventStream, SimOptions
from payflow.simulator.manifest import Manifest
from payflow.simulator.producer import make_producer
from payflow.tables.changelog import MAGIC, max_message_bytes, record_limit, unpack_changes
from tests.fault.test_faults import assert_reconciled_and_clean, consumed
from tests.helpers import KAFKA, Worker, read_topic, unique, wait_until
from tests.unit.test_bounded_state_events import START, heavy_sender_messages

pytestmark = [pytest.mark.integration, pytest.mark.fault]
NORMAL, HEAVY = 50_000, 100_000
# the chart's memory request for a worker (helm values): also what the warehouse outage
# test holds the worker to
RSS_BOUND = 512 * 2**20
# the state tables written today (card-activity is read only, for values of an older format)
TABLES = ("dedup", "watermarks", "sender-activity")


async def _produce(topic: str, manifest_path: Path) -> Manifest:
    """The normal run with the heavy sender's payments merged in by event time; every
    acknowledged message goes in the manifest, as the simulator's own producer does."""
    options = SimOptions(count=NORMAL, seed=35, start_time=datetime(2026, 11, 20, 8, 0, tzinfo=timezone.utc))
    stream = EventStream(options)
    manifest = Manifest(seed=options.seed, options={"count": NORMAL, "heavy_sender": HEAVY},
                        start_time=stream.start.isoformat(), topic=topic)
    from payflow.kafka_admin import ensure_topics
    await ensure_topics(KAFKA, [topic], 4)
    producer = make_producer(KAFKA)
    await producer.start()
    heavy = heavy_sender_messages(HEAVY, START)
    heavy_at = START.timestamp()
    heavy_step = 1800 / HEAVY
    pending = []

    async def settle():
        for fut, msg in pending:
            await fut
            manifest.record(msg)
        pending.clear()

    async def send(msg):
        pending.append((await producer.send(topic, msg.value, key=msg.key), msg))
        if len(pending) >= 20_000:
            await settle()

    try:
        for msg in stream:
            while heavy_at <= stream.t.timestamp():
                nxt = next(heavy, None)
                if nxt is None:
                    heavy_at = float("inf")
                    break
                await send(nxt)
                heavy_at += heavy_step
            await send(msg)
        for msg in heavy:  # (the normal run outlasts the heavy sender's half hour)
            await send(msg)
        await producer.flush()
        await settle()
    finally:
        await producer.stop()
    manifest.write(manifest_path)
    return manifest


def _vm_hwm(pid: int) -> int:
    """The process's peak resident set (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def test_a_sender_with_100k_payments_in_30_minutes_amid_a_50k_run_and_a_sigkill(kafka, tmp):
    prefix = unique("heavy-") + "-"
    started = time.monotonic()
    manifest = asyncio.run(_produce(prefix + "payment-events", tmp / "m.json"))
    total = manifest.messages_sent
    assert total == NORMAL + HEAVY and len(manifest.valid_ids) > HEAVY
    produced = time.monotonic()
    worker = Worker(tmp, prefix=prefix).start()
    peaks = []
    try:
        wait_until(lambda: worker.alive() and consumed(worker) >= 0.4 * total, 300, interval=0.1,
                   what="40% consumed before the kill")
        peaks.append(_vm_hwm(worker.proc.pid))
        worker.kill()
        worker.start()
        worker.wait_caught_up(timeout=600)
        peaks.append(_vm_hwm(worker.proc.pid))
    finally:
        assert worker.stop() == 0, worker.log_tail()
    caught_up = time.monotonic()
    assert worker.starts == 2
    assert_reconciled_and_clean(worker, tmp / "m.json")

    # every state changelog record within the limit the worker derived from the broker's
    topics = [f"{worker.app_id}-{name}-changelog" for name in TABLES]
    broker_limits = asyncio.run(max_message_bytes(KAFKA, topics))
    largest: dict[str, int] = {}
    heavy_values = 0
    for topic in topics:
        limit = record_limit(broker_limits[topic], 1_000_000)  # Faust's producer_max_request_size
        records = read_topic(topic)
        assert records, topic
        largest[topic] = max(len(r.value) for r in records)
        assert largest[topic] <= limit, (topic, largest[topic], limit)
        if topic.endswith("sender-activity-changelog"):
            for r in records:
                assert r.value.startswith(MAGIC)
                heavy_values = max([heavy_values] + [len(v) for _, v in unpack_changes(r.value) if v])
    from payflow.stages.batch import history_value_bound
    assert 0 < heavy_values <= history_value_bound()
    print(f"\nproduce {produced - started:.0f} s, process {caught_up - produced:.0f} s; worker VmHWM "
          f"{[p // 2**20 for p in peaks]} MiB; largest changelog records {largest}; largest sender value "
          f"{heavy_values} bytes")
    assert max(peaks) < RSS_BOUND, peaks
