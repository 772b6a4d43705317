"""The pipeline agent: raw payment events -> mask -> dedup -> fraud -> outputs + warehouse.

One agent over batches (`noack_take`): the stages share the raw topic's partitioning, so
folding them avoids a Kafka hop (a full pass through Faust) per stage. Offsets are acked
by hand, only after the batch's outputs are on Kafka and the warehouse acknowledged it.
"""
from __future__ import annotations

import asyncio
import logging
import os
import time
import weakref
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

from faust.streams import _current_event
from faust.types import TP

from payflow import metrics
from payflow.app import app, raw_events, settings
from payflow.kafka_admin import ensure_topics
from payflow.keys import KeyRing
from payflow.outputs import KafkaOutputs
from payflow.pipeline import BatchProcessor, RawItem
from payflow.sink import SinkStopped, WarehouseSink
from payflow.warehouse import open_warehouse
from payflow.warehouse.base import build_batch
from tables.state import card_table, dedup_table, sender_table, watermark_table

log = logging.getLogger("payflow.pipeline")
# Fault injection for the tests only: hard-exit right after the Nth batch landed in the
# warehouse and before its offsets are acked (the crash window the sink must survive).
FAULT_EXIT_AFTER_LAND = int(os.environ.get("PAYFLOW_FAULT_EXIT_AFTER_LAND", "0"))


def enter_event(event: Any) -> None:
    """Make `event` Faust's current event, so table reads and changelog writes use its partition.

    Faust finds a table's partition from the current event; in a batch that is not the event
    being processed, so it is set per event (Faust's own stream loop does the same).
    """
    if event is not None:
        _current_event.set(weakref.ref(event))


@dataclass
class Runtime:
    processor: BatchProcessor
    outputs: Any
    sink: WarehouseSink


def committed_position(partition: int) -> int | None:
    """The raw partition's committed position (next offset to read), as the consumer knows it."""
    try:
        return app.consumer._committed_offset.get(TP(settings.topics.raw, partition))
    except Exception:  # noqa: BLE001 - consumer not started yet: nothing known to be committed
        return None


def default_runtime() -> Runtime:
    keyring = KeyRing.from_settings(settings)
    warehouse = open_warehouse(settings)
    warehouse.ensure_schema()
    log.info("stage mask: HMAC key %s active (%d key(s) in ring)", keyring.active.key_id, len(keyring.keys))
    log.info("stage sink: warehouse %s ready (schema ensured)", warehouse.name)
    processor = BatchProcessor(
        keyring=keyring, dedup_table=dedup_table, watermark_table=watermark_table, sender_table=sender_table,
        card_table=card_table, watermark_seconds=settings.watermark_seconds,
        max_message_bytes=settings.max_message_bytes, max_future_seconds=settings.max_future_seconds,
        enter=enter_event, committed_offset=committed_position)
    return Runtime(processor, KafkaOutputs(app.producer.send, settings.topics, app.producer.buffer.flush),
                   WarehouseSink(warehouse, max_retry_seconds=settings.sink_max_retry_seconds))


runtime_factory: Callable[[], Runtime] = default_runtime
current_runtime: Runtime | None = None


@app.agent(raw_events, name="process-payments")
async def process_payments(stream):
    global current_runtime
    t = settings.topics
    if runtime_factory is default_runtime:
        await ensure_topics(settings.kafka_bootstrap, [t.enriched, t.dlq, t.late, t.dedup_audit], settings.partitions)
    # Faust flushes its changelog buffer 100 messages at a time, waiting on each, once it
    # holds more than max_messages; a batch writes thousands of keys, so make room for it.
    app.producer.buffer.max_messages = 8 * settings.batch_size
    # the app's LeanMonitor skips Faust's per-event hooks; its stalled-stream detector
    # reads stream_inbound_time, kept current once per batch below
    monitor = app.monitor
    runtime = current_runtime = await asyncio.to_thread(runtime_factory) if runtime_factory is default_runtime \
        else runtime_factory()
    log.info("stages decode -> mask -> dedup (watermark %ss) -> fraud -> sink: consuming %s",
             settings.watermark_seconds, settings.topics.raw)
    landed = 0

    async def land_then_ack(batch, events, started: float) -> None:
        """Land one batch, then flush its changelog writes, then ack its offsets, in that order."""
        nonlocal landed
        try:
            await runtime.sink.land(batch)
        except SinkStopped as exc:
            # nothing of this batch is acked: its offsets stay uncommitted; stop the worker
            await app.crash(exc)
            raise
        landed_at = time.time()
        metrics.STAGE_SECONDS.labels("sink").inc(time.perf_counter() - started)
        for e in events:
            metrics.END_TO_END.observe(landed_at - e.message.timestamp)
        landed += 1
        if FAULT_EXIT_AFTER_LAND and landed == FAULT_EXIT_AFTER_LAND:
            log.warning("fault injection: exiting after landing batch %d, before acking its offsets", landed)
            os._exit(86)
        # changelog writes of this batch reach Kafka before its offsets can be committed
        await runtime.outputs.flush_changelogs()
        for event in events:
            await stream.ack(event)
        metrics.DEDUP_KEYS.set(runtime.processor.dedup_index.size())

    async for events in stream.noack_take(settings.batch_size, within=settings.batch_seconds):
        now = datetime.now(timezone.utc)
        inbound_at = time.monotonic()
        for tp in {e.message.tp for e in events}:
            monitor.stream_inbound_time[tp] = inbound_at
        items = [RawItem(e.message.partition, e.message.offset, e.value, e) for e in events]
        keys = {(e.message.partition, e.message.offset): e.message.key for e in events}
        clock = runtime.processor.clock.seconds
        before = dict(clock)
        result = runtime.processor.process(items)
        enter_event(None)
        _count(len(items), result)
        for stage, seconds in clock.items():
            metrics.STAGE_SECONDS.labels(stage).inc(seconds - before[stage])
        t_publish = time.perf_counter()
        await runtime.outputs.publish(result, keys, now)
        metrics.STAGE_SECONDS.labels("publish").inc(time.perf_counter() - t_publish)
        batch = build_batch(result.enriched, result.duplicates, result.rejections, result.late,
                            result.watermarks, now)
        try:
            await land_then_ack(batch, events, time.perf_counter())
        except SinkStopped:
            return


def _count(n_in: int, result) -> None:
    metrics.EVENTS_IN.labels("decode").inc(n_in)
    valid = n_in - len(result.rejections)
    metrics.EVENTS_OUT.labels("decode").inc(valid)
    metrics.EVENTS_IN.labels("mask").inc(valid)
    metrics.EVENTS_OUT.labels("mask").inc(valid)
    metrics.EVENTS_IN.labels("dedup").inc(valid)
    metrics.EVENTS_OUT.labels("dedup").inc(len(result.enriched))
    metrics.EVENTS_IN.labels("fraud").inc(len(result.enriched))
    metrics.EVENTS_OUT.labels("fraud").inc(len(result.enriched))
    metrics.EVENTS_IN.labels("sink").inc(len(result.enriched))
    metrics.DUPLICATES.inc(len(result.duplicates))
    metrics.REPLAYS.inc(result.replays)
    metrics.LATE.inc(len(result.late))
    for r in result.rejections:
        metrics.DLQ.labels(r.reason).inc()
    high = sum(1 for e in result.enriched if e.fraud.is_high_risk)
    metrics.HIGH_RISK.inc(high)
    metrics.SCORED.inc(len(result.enriched))
    scored = metrics.SCORED._value.get()
    if scored:
        metrics.HIGH_RISK_SHARE.set(metrics.HIGH_RISK._value.get() / scored)
