"""The fraud labels agent: outcomes fed back (chargebacks, analyst decisions) land in the
warehouse's fraud_labels, once per labels-topic position; and the precision and recall they
give the scoring become gauges an alert watches.

Labels are keyed by transaction_id, a key no other topic has: the agent needs no state, only
the warehouse. A batch's labels land before their offsets are acked (at least once; the
table's key, the topic position, makes a second landing a no-op). A record that is not a
valid label goes to the DLQ (reason invalid_fraud_label, nothing of its content) and the
agent goes on; a warehouse that stays down past PAYFLOW_SINK_MAX_RETRY_SECONDS, or any
other failure, stops the worker with the batch unacked (read again at the restart).
"""
from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta, timezone
from typing import Any

from faust.types import TP

from payflow import metrics
from payflow.app import app, settings
from payflow.kafka_security import current as kafka_security
from payflow.pipeline.fraud_labels import (
    INVALID_FRAUD_LABEL, QUALITY_SQL, InvalidFraudLabel, invalid_label_record, parse_label, quality,
)
from payflow.pipeline.outputs import KafkaOutputs
from payflow.pipeline.sink import retrying
from payflow.runtime import internals, worker
from payflow.runtime.take import ack_by, take_batches

log = logging.getLogger("payflow.fraud_labels")

BATCH = 500  # labels landed per warehouse call at most

# internal: the worker creates it at start, so its subscription holds from the first rebalance
fraud_labels = app.topic(settings.topics.fraud_labels, key_type=bytes, value_type=bytes,
                         key_serializer="raw", value_serializer="raw", partitions=settings.partitions,
                         internal=True, config=kafka_security().topic_config().config)


@app.agent(fraud_labels, name="land-fraud-labels")
async def land_fraud_labels(stream):
    """Any failure stops the worker with the batch unacked (read again at the restart)."""
    await worker.run_or_fail_stop("the fraud labels agent", _land_labels(stream),
                                  lambda: land_fraud_labels.should_stop or app.should_stop)


async def _land_labels(stream: Any) -> None:
    outputs = KafkaOutputs(internals.kafka_producer_of(app), settings.topics)
    async for messages in take_batches(stream, BATCH, 1.0):
        if not messages:
            continue
        labels, invalid = [], []
        now = datetime.now(timezone.utc)
        for message in messages:
            try:
                labels.append(parse_label(message.value, message.partition, message.offset, now))
            except InvalidFraudLabel as exc:
                log.warning("stage labels: record at partition %d offset %d is not a valid label (%s); sent to "
                            "the DLQ", message.partition, message.offset, exc)
                invalid.append(invalid_label_record(str(exc), settings.topics.fraud_labels, message.partition,
                                                    message.offset, datetime.now(timezone.utc)))
        if invalid:
            await asyncio.gather(*await outputs.publisher.send(
                [(settings.topics.dlq, None, None, record) for record in invalid]))
            metrics.DLQ.labels(INVALID_FRAUD_LABEL).inc(len(invalid))
        if labels:
            landed = await _land(labels)
            metrics.FRAUD_LABELS_LANDED.inc(landed)
            log.info("stage labels: %d label(s) landed (%d new)", len(labels), landed)
        ack_by(app, messages)


async def _land(labels: list) -> int:
    """The labels in fraud_labels, transient warehouse errors retried as the sink retries them."""
    while app.pipeline_runtime is None:  # the pipeline agent opens the warehouse
        await asyncio.sleep(0.5)
    warehouse = app.pipeline_runtime.sink.warehouse
    now = datetime.now(timezone.utc)
    rows = [label.row(now) for label in labels]
    async for attempt in retrying(settings.sink_max_retry_seconds):
        with attempt:
            return await asyncio.to_thread(warehouse.land_labels, rows)
    raise AssertionError("unreachable")  # pragma: no cover


def _set_gauges(precision: float | None, recall: float | None, labelled: int, flagged: int) -> None:
    metrics.FRAUD_LABEL_PRECISION.set(float("nan") if precision is None else precision)
    metrics.FRAUD_LABEL_RECALL.set(float("nan") if recall is None else recall)
    metrics.FRAUD_LABELLED.set(labelled)
    metrics.FRAUD_LABELLED_FLAGGED.set(flagged)


async def refresh_quality() -> bool:
    """The gauges from the view, on the one worker holding partition 0 of the labels topic (so
    a fleet reads the view once per refresh); False when this worker is not that one, whose
    gauges are then emptied: a former holder's last figures would otherwise mask (or fake) a
    precision drop in the alert's max() over the fleet."""
    runtime = app.pipeline_runtime
    if runtime is None or TP(settings.topics.fraud_labels, 0) not in app.consumer.assignment():
        _set_gauges(None, None, 0, 0)
        return False
    # the window: today and the days before it, PAYFLOW_FRAUD_QUALITY_WINDOW_DAYS in all (UTC)
    since = datetime.now(timezone.utc).date() - timedelta(days=settings.fraud_quality_window_days - 1)
    rows = await asyncio.to_thread(runtime.sink.warehouse.query_beside_landings, QUALITY_SQL, {"since": since})
    _set_gauges(*quality(rows[0] if rows else {}))
    return True


if settings.fraud_quality_refresh_seconds > 0:
    @app.timer(interval=settings.fraud_quality_refresh_seconds)
    async def refresh_quality_gauges() -> None:
        try:
            await refresh_quality()
        except Exception as exc:  # noqa: BLE001 - the next refresh tries again; the gauges keep their value
            log.warning("stage labels: could not read fraud_label_quality (%s); retrying in %.0f s",
                        type(exc).__name__, settings.fraud_quality_refresh_seconds)
