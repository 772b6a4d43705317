"""What the pipeline agent runs per batch: `PipelineRuntime.process` runs a batch through
every stage but the warehouse (payflow.stages.batch), queues its outputs but the enriched
payments on the producer (the checkpoint publishes those once landed) and returns the rows
to land. Built at the worker's start by payflow.pipeline.assemble.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

from payflow import metrics
from payflow.pipeline.checkpoint import Checkpoint, Landing
from payflow.pipeline.outputs import enriched_records
from payflow.pipeline.partition_growth import PartitionFollowers
from payflow.pipeline.sink import WarehouseSink
from payflow.runtime import worker
from payflow.stages.batch import BatchProcessor, RawItem
from payflow.warehouse.base import build_batch


@dataclass
class PipelineRuntime:
    processor: BatchProcessor
    outputs: Any  # KafkaOutputs
    sink: WarehouseSink
    checkpoint: Checkpoint
    monitor: Any  # the app's LeanMonitor: its stalled-stream detector reads stream_inbound_time
    # what a failure of the pipeline does: stop the worker (tests raise instead)
    fail_stop: Callable[[str, BaseException], None] = worker.fail_stop
    # the topics that follow the raw topic's partitioning (None: tests without a broker)
    followers: PartitionFollowers | None = None
    # payments scored and found high risk since the worker started (payflow_high_risk_share)
    scored: int = field(default=0, init=False)
    high_risk: int = field(default=0, init=False)

    async def process(self, messages: list) -> Landing:
        """Every stage but the warehouse; queues the outputs on the producer. Returns the rows
        to land, with what committing the landing needs."""
        followers = self.followers
        if followers is not None and (followers.partitions is None
                                      or max(m.partition for m in messages) >= followers.partitions):
            await followers.follow()  # the raw topic grew: its state changelogs first
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
        self._count(len(messages), result)
        for stage, seconds in clock.items():
            metrics.STAGE_SECONDS.labels(stage).inc(seconds - before[stage])
        t_publish = time.perf_counter()
        published = await self.outputs.send(result, keys, now)
        metrics.STAGE_SECONDS.labels("publish").inc(time.perf_counter() - t_publish)
        batch = build_batch(result.enriched, result.duplicates, result.rejections, result.late,
                            result.watermarks, now)
        return Landing(batch, messages, result.start_watermarks, published, enriched_records(result))


    def _count(self, n_in: int, result: Any) -> None:
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
        self.scored += len(result.enriched)
        self.high_risk += high
        if self.scored:
            metrics.HIGH_RISK_SHARE.set(self.high_risk / self.scored)
