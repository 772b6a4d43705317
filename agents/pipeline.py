"""The pipeline agent: raw payment events -> mask -> dedup -> fraud -> outputs + warehouse.

One agent over batches (`take_batches`): the stages share the raw topic's partitioning, so
folding them avoids a Kafka hop (a full pass through Faust) per stage. The raw topic's
messages reach the batches straight from Faust's fetch loop (payflow.runtime.fetch), not
event by event through the stream; what the stream delivers (test contexts) joins them.
Offsets are acked by hand, only after the batch's outputs are on Kafka, the warehouse
acknowledged it and its state changes reached the changelog.
"""
from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

from faust.types import TP

from payflow import metrics
from payflow.runtime import worker
from payflow.app import app, raw_events, settings
from payflow.runtime.take import ack, take_batches
from payflow.compliance.gdpr import load_erased_subjects
from payflow.kafka_admin import ensure_topics
from payflow.keys import KeyRing
from payflow.outputs import KafkaOutputs, enriched_records
from payflow.stages.batch import BatchProcessor, RawItem
from payflow.sink import SinkStopped, WarehouseSink
from payflow.warehouse import open_warehouse
from payflow.warehouse.base import ID_CONFLICT, LandingBatch, build_batch
from payflow.tables.definitions import ALL_TABLES, card_table, configure_changelog_limits, dedup_table, sender_table, watermark_table

log = logging.getLogger("payflow.pipeline")
# Fault injection for the tests only: hard-exit right after the Nth batch landed in the
# warehouse and before its offsets are acked (the crash window the sink must survive).
FAULT_EXIT_AFTER_LAND = int(os.environ.get("PAYFLOW_FAULT_EXIT_AFTER_LAND", "0"))


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
    configure_changelog_limits()  # state records sized by the broker's limits; refuses to start if one could not fit
    keyring = KeyRing.from_settings(settings)
    warehouse = open_warehouse(settings, child_process=True)
    warehouse.ensure_schema()
    log.info("stage mask: HMAC key %s active (%d key(s) in ring)", keyring.active.key_id, len(keyring.keys))
    log.info("stage sink: warehouse %s ready (schema ensured)", warehouse.name)
    processor = BatchProcessor(
        keyring=keyring, dedup_table=dedup_table, watermark_table=watermark_table, sender_table=sender_table,
        card_table=card_table, watermark_seconds=settings.watermark_seconds,
        max_message_bytes=settings.max_message_bytes, max_future_seconds=settings.max_future_seconds,
        committed_offset=committed_position,
        erased=load_erased_subjects(keyring, warehouse))  # GDPR: the erasure ledger, before the first batch
    return Runtime(processor, KafkaOutputs(app.producer._ensure_producer, settings.topics),
                   WarehouseSink(warehouse, max_retry_seconds=settings.sink_max_retry_seconds))


runtime_factory: Callable[[], Runtime] = default_runtime
current_runtime: Runtime | None = None


@app.agent(raw_events, name="process-payments")
async def process_payments(stream):
    """The pipeline. Any failure stops the worker (worker.fail_stop) instead of Faust's
    restart of the agent: nothing after the failure is committed, the exit is non-zero."""
    try:
        await _run(stream)
    except asyncio.CancelledError:
        if runtime_factory is not default_runtime or process_payments.should_stop or app.should_stop:
            raise  # shutdown: nothing was acked that did not land
        # cancelled while the worker runs: Faust would restart the agent beside its
        # predecessor's unacked messages, which would hold commits and rebalances for good
        worker.fail_stop("the pipeline agent", asyncio.CancelledError("cancelled outside shutdown"))
    except Exception as exc:  # noqa: BLE001 - every failure, known or not, stops the worker
        if runtime_factory is not default_runtime:
            raise  # under a test context: the test sees the error
        worker.fail_stop("the pipeline agent" if not isinstance(exc, SinkStopped) else "the warehouse sink",
                               exc)


async def _run(stream) -> None:
    global current_runtime
    t = settings.topics
    if runtime_factory is default_runtime:
        await ensure_topics(settings.kafka_bootstrap, [t.enriched, t.dlq, t.late, t.dedup_audit], settings.partitions)
    # the app's LeanMonitor skips Faust's per-event hooks; its stalled-stream detector
    # reads stream_inbound_time, kept current once per batch below
    monitor = app.monitor
    runtime = current_runtime = await asyncio.to_thread(runtime_factory) if runtime_factory is default_runtime \
        else runtime_factory()
    log.info("stages decode -> mask -> dedup (watermark %ss) -> fraud -> sink: consuming %s",
             settings.watermark_seconds, settings.topics.raw)
    landed = 0

    async def finish(landing: Landing) -> None:
        """Wait for the warehouse's ack of a batch, then expire state behind it, send the
        state changes to the changelog, and only then ack the batch's offsets."""
        nonlocal landed
        waited = time.perf_counter()
        landed_rows = await landing.task  # SinkStopped: nothing of this batch is acked; the worker stops
        conflicts = getattr(landed_rows, "conflicts", [])
        if conflicts:
            metrics.DLQ.labels(ID_CONFLICT).inc(len(conflicts))
            log.warning("stage sink: %d payment(s) refused: transaction_id already landed from another "
                        "partition or offset (id_conflict, sent to the DLQ)", len(conflicts))
        # the enriched payments the warehouse took are published now, not before: one it
        # refused (an id conflict) is no valid payment
        landing.published += await runtime.outputs.send_landed(landing.enriched, conflicts, datetime.now(timezone.utc))
        if landing.published:  # the batch's outputs are on Kafka before its input is acked
            await asyncio.gather(*landing.published)
        landed_at = time.time()
        metrics.STAGE_SECONDS.labels("sink_wait").inc(time.perf_counter() - waited)
        metrics.observe_many(metrics.END_TO_END, [landed_at - m.timestamp for m in landing.messages])
        landed += 1
        if FAULT_EXIT_AFTER_LAND and landed == FAULT_EXIT_AFTER_LAND:
            log.warning("fault injection: exiting after landing batch %d, before acking its offsets", landed)
            os._exit(86)
        runtime.processor.expire(landing.start_watermarks)
        await runtime.outputs.flush_state(ALL_TABLES)
        ack(app.consumer, landing.messages)
        metrics.DEDUP_KEYS.set(runtime.processor.dedup_index.size())

    # One landing is in flight (DuckDB: in its own process; BigQuery: network I/O in a
    # thread) while the next batches are buffered and processed in this task; what they
    # produce waits in `pending` and lands as one landing when the warehouse is free. A
    # landing has a large fixed cost (DuckDB: ~50 ms of statements and commit whatever its
    # size), so when the warehouse is the slower side, landings grow instead of the worker
    # waiting; `pending` is bounded (max_pending events), then the worker waits. A landing
    # that finishes wakes the loop, so it is acked at once rather than after the next batch.
    max_pending = settings.batch_size * settings.landing_batches
    in_flight: Landing | None = None
    pending: Landing | None = None
    landed_event = asyncio.Event()

    def launch(landing: Landing) -> Landing:
        landing.task = timed_land(runtime.sink, landing.batch)
        landing.task.add_done_callback(lambda _: landed_event.set())
        return landing

    async for messages in take_batches(stream, settings.batch_size, settings.batch_seconds, wake=landed_event,
                                     direct_topic=settings.topics.raw):
        if in_flight is not None and in_flight.task.done():
            landing, in_flight = in_flight, None
            await finish(landing)
        if messages:
            processed = await process_batch(runtime, messages, monitor)
            pending = processed if pending is None else pending.merge(processed)
        if in_flight is not None and pending is not None and len(pending.messages) >= max_pending:
            landing, in_flight = in_flight, None  # the warehouse is behind: wait for it
            await finish(landing)
        if in_flight is None and pending is not None:
            in_flight, pending = launch(pending), None
        if in_flight is None or not in_flight.task.done():
            # only a finished in-flight landing may wake us. A landing's done-callback
            # can run after this loop already saw the task done and finished it; left
            # set, that stale wake-up made take_batches yield [] at once, forever, while
            # the next landing could never complete: the worker spun (seen twice in ten
            # latency runs of `make bench`)
            landed_event.clear()


@app.on_partitions_assigned.connect
async def note_assignment(sender: Any, assigned: set[TP], **kwargs: Any) -> None:
    """After a rebalance, the processor reloads what it cached about the raw topic's
    assigned partitions before their next batch (the tables hold the current state)."""
    if current_runtime is not None:
        current_runtime.processor.assigned({tp.partition for tp in assigned if tp.topic == settings.topics.raw},
                                           getattr(app, "consumer_generation_id", None))


def timed_land(sink: WarehouseSink, batch: LandingBatch) -> asyncio.Task:
    started = time.perf_counter()
    task = sink.start(batch)
    task.add_done_callback(lambda _: metrics.STAGE_SECONDS.labels("sink").inc(time.perf_counter() - started))
    return task


@dataclass
class Landing:
    """Processed batches waiting for (or in) one landing."""
    batch: LandingBatch
    messages: list  # their Faust messages, acked once landed
    start_watermarks: dict[int, int]
    published: list  # futures of their output records
    enriched: list  # their enriched payments, published once landed (outputs.PendingEnriched)
    task: asyncio.Future | None = None

    def merge(self, later: "Landing") -> "Landing":
        self.batch.extend(later.batch)
        self.messages += later.messages
        for partition, watermark in later.start_watermarks.items():
            # expire no further than the earliest batch allows
            self.start_watermarks[partition] = min(watermark, self.start_watermarks.get(partition, watermark))
        self.published += later.published
        self.enriched += later.enriched
        return self


async def process_batch(runtime: Runtime, messages: list, monitor: Any):
    """Every stage but the warehouse; queues the outputs on the producer. Returns the rows to
    land, with what finishing the landing needs."""
    now = datetime.now(timezone.utc)
    inbound_at = time.monotonic()
    for tp in {m.tp for m in messages}:
        monitor.stream_inbound_time[tp] = inbound_at
    items = [RawItem(m.partition, m.offset, m.value, m, m.timestamp) for m in messages]
    keys = {(m.partition, m.offset): m.key for m in messages}
    clock = runtime.processor.clock.seconds
    before = dict(clock)
    result = runtime.processor.process(items)
    del items
    for m in messages:
        # acking needs the position only: the raw bytes (card data) are freed now, not when
        # the batch has landed (a batch waits for up to two landings)
        m.value = None
    _count(len(messages), result)
    for stage, seconds in clock.items():
        metrics.STAGE_SECONDS.labels(stage).inc(seconds - before[stage])
    t_publish = time.perf_counter()
    published = await runtime.outputs.send(result, keys, now)
    metrics.STAGE_SECONDS.labels("publish").inc(time.perf_counter() - t_publish)
    batch = build_batch(result.enriched, result.duplicates, result.rejections, result.late,
                        result.watermarks, now)
    return Landing(batch, messages, result.start_watermarks, published, enriched_records(result))


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
