"""The pipeline agent's runtime: its collaborators, built from the settings, and one batch's
processing.

`start_runtime` opens the warehouse (schema ensured) and its sink, the batch processor over
the state tables (the GDPR erasure ledger loaded before the first batch), the Kafka outputs,
and the checkpoint that lands and acks what they produce (payflow.runtime.checkpoint).
`Runtime.process` runs a batch through every stage but the warehouse and queues its outputs
but the enriched payments on the producer; the checkpoint publishes those once landed.
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from faust.types import TP

from payflow import metrics
from payflow.compliance.gdpr import load_erased_subjects
from payflow.kafka_admin import ensure_topics
from payflow.key_config import key_ring_from_settings
from payflow.outputs import KafkaOutputs, enriched_records
from payflow.runtime import internals, landing_fence, worker
from payflow.runtime.checkpoint import Checkpoint, Landing
from payflow.runtime.partition_growth import PartitionFollowers
from payflow.runtime.take import ack
from payflow.settings import Settings
from payflow.sink import WarehouseSink
from payflow.stages.batch import BatchProcessor, RawItem
from payflow.stages.fraud import FraudConfig
from payflow.warehouse import open_warehouse
from payflow.warehouse.base import build_batch

log = logging.getLogger("payflow.pipeline")


@dataclass
class Runtime:
    processor: BatchProcessor
    outputs: Any  # KafkaOutputs
    sink: WarehouseSink
    checkpoint: Checkpoint
    monitor: Any  # the app's LeanMonitor: its stalled-stream detector reads stream_inbound_time
    # what a failure of the pipeline does: stop the worker (tests raise instead)
    fail_stop: Callable[[str, BaseException], None] = worker.fail_stop
    # the topics that follow the raw topic's partitioning (None: tests without a broker)
    followers: PartitionFollowers | None = None

    async def process(self, messages: list) -> Landing:
        """Every stage but the warehouse; queues the outputs on the producer. Returns the rows
        to land, with what committing the landing needs."""
        if self.followers is not None:  # the raw topic grew: its state changelogs first
            await self.followers.cover({m.partition for m in messages})
        now = datetime.now(timezone.utc)
        inbound_at = time.monotonic()
        for tp in {m.tp for m in messages}:
            self.monitor.stream_inbound_time[tp] = inbound_at
        items = [RawItem(m.partition, m.offset, m.value, m.timestamp) for m in messages]
        keys = {(m.partition, m.offset): m.key for m in messages}
        clock = self.processor.clock.seconds
        before = dict(clock)
        result = self.processor.process(items)
        del items
        for m in messages:
            # acking needs the position only: the raw bytes (card data) are freed now, not when
            # the batch has landed (a batch waits for up to two landings)
            m.value = None
        _count(len(messages), result)
        for stage, seconds in clock.items():
            metrics.STAGE_SECONDS.labels(stage).inc(seconds - before[stage])
        t_publish = time.perf_counter()
        published = await self.outputs.send(result, keys, now)
        metrics.STAGE_SECONDS.labels("publish").inc(time.perf_counter() - t_publish)
        batch = build_batch(result.enriched, result.duplicates, result.rejections, result.late,
                            result.watermarks, now)
        return Landing(batch, messages, result.start_watermarks, published, enriched_records(result))


def new_checkpoint(app: Any, settings: Settings, processor: BatchProcessor, outputs: Any,
                   sink: WarehouseSink) -> Checkpoint:
    from payflow.tables.definitions import ALL_TABLES
    bigquery = settings.warehouse.is_bigquery
    # BigQuery: fewer, larger landings (each opens write streams, a quota per project and hour)
    landing_batches = settings.bq_landing_batches if bigquery else settings.landing_batches
    fence = getattr(sink.warehouse, "fence", None)
    return Checkpoint(sink=sink, outputs=outputs, processor=processor, tables=ALL_TABLES,
                      ack=lambda messages: ack(app.consumer, messages),
                      max_pending=settings.batch_size * landing_batches,
                      min_pending=settings.batch_size, target_landing_seconds=settings.target_landing_seconds,
                      min_landing_seconds=settings.bq_min_landing_seconds if bigquery else 0.0,
                      fault_exit_after_land=settings.fault_exit_after_land,
                      max_buffered_bytes=settings.max_buffered_bytes,
                      read_again=lambda messages: landing_fence.read_again(app, messages),
                      confirm=fence.still_owner if isinstance(fence, landing_fence.KafkaLandingFence) else None)


async def start_runtime(app: Any, settings: Settings) -> Runtime:
    """The worker's runtime: topics ensured, then the blocking opens in a thread."""
    t = settings.topics
    await ensure_topics(settings.kafka_bootstrap, [t.enriched, t.dlq, t.late, t.dedup_audit], settings.partitions)
    followers = partition_followers(app, settings)
    await followers.follow()
    processor, outputs, sink = await asyncio.to_thread(_open, app, settings)
    if settings.bq_landing_fence and getattr(sink.warehouse, "fence", False) is None \
            and settings.processing_guarantee == "at_least_once":
        # BigQuery: a landing is decided by a generation-fenced offset commit (landing_fence);
        # exactly_once commits offsets in the producer's transactions instead
        sink.warehouse.fence = landing_fence.KafkaLandingFence(app, asyncio.get_running_loop())
    return Runtime(processor, outputs, sink, new_checkpoint(app, settings, processor, outputs, sink), app.monitor,
                   followers=followers)


def follower_topics(settings: Settings) -> list[str]:
    """The topics keyed like the raw topic: the state changelogs and the erasure requests."""
    from payflow.tables.definitions import ALL_TABLES
    return [t.changelog_topic.get_topic_name() for t in ALL_TABLES] + [settings.topics.erasure_requests]


def partition_followers(app: Any, settings: Settings) -> PartitionFollowers:
    """Grows the follower topics when the raw topic grows (payflow.runtime.partition_growth),
    checked at every rebalance and before a batch from a partition they lack."""
    followers = PartitionFollowers(app, bootstrap=settings.kafka_bootstrap, raw_topic=settings.topics.raw,
                                   followers=lambda: follower_topics(settings))

    async def on_assigned(sender: Any, assigned: Any, **kwargs: Any) -> None:
        counts = {internals.topic_partition_count(app, t) for t in [settings.topics.raw, *follower_topics(settings)]}
        if len(counts) > 1:  # not co-partitioned (or not all known yet)
            await followers.follow()

    app.on_partitions_assigned.connect(on_assigned, weak=False)
    return followers


def _open(app: Any, settings: Settings) -> tuple[BatchProcessor, KafkaOutputs, WarehouseSink]:
    from payflow.tables.definitions import (
        card_table, configure_changelog_limits, dedup_table, sender_table, watermark_table,
    )
    configure_changelog_limits()  # state records sized by the broker's limits; refuses to start if one could not fit
    keyring = key_ring_from_settings(settings)
    warehouse = open_warehouse(settings, child_process=True)
    warehouse.ensure_schema()
    log.info("stage mask: HMAC key %s active (%d key(s) in ring)", keyring.active.key_id, len(keyring.keys))
    log.info("stage sink: warehouse %s ready (schema ensured)", warehouse.name)
    raw = settings.topics.raw
    processor = BatchProcessor(
        keyring=keyring, dedup_table=dedup_table, watermark_table=watermark_table, sender_table=sender_table,
        card_table=card_table, watermark_seconds=settings.watermark_seconds,
        max_message_bytes=settings.max_message_bytes, max_future_seconds=settings.max_future_seconds,
        committed_offset=lambda partition: internals.committed_position(app, TP(raw, partition)),
        erased=load_erased_subjects(keyring, warehouse),  # GDPR: the erasure ledger, before the first batch
        account_kinds=load_account_kinds(settings.fraud_account_kinds_file),
        fraud_config=FraudConfig(high_risk_above=settings.fraud_high_risk_above, small_usd=settings.fraud_small_usd,
                                 travel_max_kmh=settings.fraud_travel_max_kmh))
    return (processor, KafkaOutputs(internals.kafka_producer_of(app), settings.topics),
            WarehouseSink(warehouse, max_retry_seconds=settings.sink_max_retry_seconds))


def load_account_kinds(path: str) -> dict[str, str]:
    """The senders' account types (reference data for fraud scoring), from a JSON object."""
    if not path:
        return {}
    import orjson
    kinds = orjson.loads(Path(path).read_bytes())
    if not isinstance(kinds, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in kinds.items()):
        raise SystemExit(f"PAYFLOW_FRAUD_ACCOUNT_KINDS_FILE {path}: expected a JSON object of strings")
    log.info("stage fraud: %d account types from %s", len(kinds), path)
    return kinds


def _count(n_in: int, result: Any) -> None:
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
    scored = metrics.value(metrics.SCORED)
    if scored:
        metrics.HIGH_RISK_SHARE.set(metrics.value(metrics.HIGH_RISK) / scored)
