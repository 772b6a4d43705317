"""The pipeline's assembly at the worker's start: topics ensured, the warehouse opened
(schema ensured) with its sink, the batch processor over the state tables (the GDPR erasure
ledger loaded before the first batch), the Kafka outputs, and the checkpoint that lands and
acks what they produce. The app and the state tables are passed in (agents/pipeline.py),
not imported: this layer sits below them.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable

import orjson

from payflow.compliance.gdpr import load_erased_subjects
from payflow.kafka_admin import ensure_topics
from payflow.key_config import key_ring_from_settings
from payflow.pipeline.account_types import AccountTypes
from payflow.pipeline.checkpoint import Checkpoint
from payflow.pipeline.outputs import KafkaOutputs
from payflow.pipeline.partition_growth import PartitionFollowers
from payflow.pipeline.runtime import PipelineRuntime
from payflow.pipeline.sink import WarehouseSink
from payflow.runtime import internals, landing_fence
from payflow.runtime.take import ack_by, release
from payflow.settings import Settings
from payflow.stages.batch import BatchProcessor
from payflow.stages.fraud import FraudConfig
from payflow.warehouse import open_warehouse

log = logging.getLogger("payflow.pipeline")


@dataclass(frozen=True)
class StateTables:
    """The worker's state tables (payflow.tables.definitions builds them on the app)."""
    dedup: Any
    watermarks: Any
    senders: Any
    cards: Any
    # sizes each changelog record from the broker's limits; refuses to start if one could not fit
    configure_changelog_limits: Callable[[], object]

    @property
    def all(self) -> tuple[Any, ...]:
        return (self.dedup, self.watermarks, self.senders, self.cards)


def new_checkpoint(app: Any, settings: Settings, tables: tuple[Any, ...], processor: BatchProcessor, outputs: Any,
                   sink: WarehouseSink) -> Checkpoint:
    bigquery = settings.warehouse.is_bigquery
    # BigQuery: fewer, larger landings (each opens write streams, a quota per project and hour)
    landing_batches = settings.bq_landing_batches if bigquery else settings.landing_batches
    fence = getattr(sink.warehouse, "fence", None)
    return Checkpoint(sink=sink, outputs=outputs, processor=processor, tables=tables,
                      ack=partial(ack_by, app),
                      max_pending=settings.batch_size * landing_batches,
                      min_pending=settings.batch_size, target_landing_seconds=settings.target_landing_seconds,
                      min_landing_seconds=settings.bq_min_landing_seconds if bigquery else 0.0,
                      fault_exit_after_land=settings.fault_exit_after_land,
                      max_buffered_bytes=settings.max_buffered_bytes,
                      read_again=lambda messages: landing_fence.read_again(app, messages),
                      confirm=fence.still_owner if isinstance(fence, landing_fence.KafkaLandingFence) else None,
                      accounted_from=partial(landing_fence.accounted_from, app)
                      if isinstance(fence, landing_fence.KafkaLandingFence) else None,
                      release=partial(release, app))


async def start_runtime(app: Any, settings: Settings, tables: StateTables) -> PipelineRuntime:
    """The worker's pipeline: topics ensured, then the blocking opens in a thread."""
    t = settings.topics
    await ensure_topics(settings.kafka_bootstrap, [t.enriched, t.dlq, t.late, t.dedup_audit, t.account_types],
                        settings.partitions, configs={t.account_types: {"cleanup.policy": "compact"}})
    followers = partition_followers(app, settings, tables.all)
    await followers.follow()
    # the senders' account types, read whole before the first payment is scored, then followed
    account_types = AccountTypes(settings.kafka_bootstrap, t.account_types,
                                 seed=load_account_kinds(settings.fraud_account_kinds_file))
    await account_types.start()
    app.on_before_shutdown.connect(lambda sender, **kwargs: account_types.stop(), weak=False)
    processor, outputs, sink = await asyncio.to_thread(_open, app, settings, tables, account_types.types)
    if settings.bq_landing_fence and getattr(sink.warehouse, "fence", False) is None \
            and settings.processing_guarantee == "at_least_once":
        # BigQuery: a landing is decided by a generation-fenced offset commit (landing_fence);
        # exactly_once commits offsets in the producer's transactions instead
        sink.warehouse.fence = landing_fence.KafkaLandingFence(app, asyncio.get_running_loop())
    return PipelineRuntime(processor, outputs, sink,
                           new_checkpoint(app, settings, tables.all, processor, outputs, sink), app.monitor,
                           followers=followers)


def follower_topics(settings: Settings, tables: tuple[Any, ...]) -> list[str]:
    """The topics keyed like the raw topic: the state changelogs and the erasure requests."""
    return [t.changelog_topic.get_topic_name() for t in tables] + [settings.topics.erasure_requests]


def partition_followers(app: Any, settings: Settings, tables: tuple[Any, ...]) -> PartitionFollowers:
    """Grows the follower topics when the raw topic grows (payflow.pipeline.partition_growth),
    checked at every rebalance and before a batch from a partition they lack."""
    followers = PartitionFollowers(app, bootstrap=settings.kafka_bootstrap, raw_topic=settings.topics.raw,
                                   followers=lambda: follower_topics(settings, tables))

    async def on_assigned(sender: Any, assigned: Any, **kwargs: Any) -> None:
        counts = {internals.topic_partition_count(app, t) for t in [settings.topics.raw, *follower_topics(settings, tables)]}
        if len(counts) > 1:  # not co-partitioned (or not all known yet)
            await followers.follow()

    app.on_partitions_assigned.connect(on_assigned, weak=False)
    return followers


def _open(app: Any, settings: Settings, tables: StateTables,
          account_kinds: dict[str, str]) -> tuple[BatchProcessor, KafkaOutputs, WarehouseSink]:
    tables.configure_changelog_limits()
    keyring = key_ring_from_settings(settings)
    warehouse = open_warehouse(settings, child_process=True)
    warehouse.ensure_schema()
    log.info("stage mask: HMAC key %s active (%d key(s) in ring)", keyring.active.key_id, len(keyring.keys))
    log.info("stage sink: warehouse %s ready (schema ensured)", warehouse.name)
    raw = settings.topics.raw
    processor = BatchProcessor(
        keyring=keyring, dedup_table=tables.dedup, watermark_table=tables.watermarks, sender_table=tables.senders,
        card_table=tables.cards, watermark_seconds=settings.watermark_seconds,
        max_message_bytes=settings.max_message_bytes, max_future_seconds=settings.max_future_seconds,
        committed_offset=internals.committed_position_of(app, raw),
        erased=load_erased_subjects(keyring, warehouse),  # GDPR: the erasure ledger, before the first batch
        account_kinds=account_kinds,  # kept current by AccountTypes
        fraud_config=FraudConfig(high_risk_above=settings.fraud_high_risk_above, small_usd=settings.fraud_small_usd,
                                 travel_max_kmh=settings.fraud_travel_max_kmh))
    return (processor, KafkaOutputs(internals.kafka_producer_of(app), settings.topics),
            WarehouseSink(warehouse, max_retry_seconds=settings.sink_max_retry_seconds))


def load_account_kinds(path: str) -> dict[str, str]:
    """The senders' account types (reference data for fraud scoring), from a JSON object."""
    if not path:
        return {}
    kinds = orjson.loads(Path(path).read_bytes())
    if not isinstance(kinds, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in kinds.items()):
        raise SystemExit(f"PAYFLOW_FRAUD_ACCOUNT_KINDS_FILE {path}: expected a JSON object of strings")
    log.info("stage fraud: %d account types from %s", len(kinds), path)
    return kinds
