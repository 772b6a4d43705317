"""The erasure agent: deletes a GDPR subject's keys from the state tables, and keeps the
worker's set of erased subjects (what the mask step drops) current.

Requests are keyed by sender account, like the raw topic, so each lands in the partition
whose tables hold that sender's state; a delete is logged to the changelog at once, so a
recovery does not bring the key back. The request's hashes join the worker's erased set at
once; every worker also re-reads the whole erasure ledger every
PAYFLOW_ERASURE_REFRESH_SECONDS, since a request reaches only the worker owning its
sender's partition and the subject's card may pay from senders on other workers.

A message that is not a valid request goes to the DLQ (reason invalid_erasure_request,
nothing of its content) and the agent goes on: a bad message must not stop erasures.
"""
from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timezone
from typing import Any

import orjson

from payflow import metrics
from payflow.runtime import internals, worker
from payflow.app import app, settings
from payflow.compliance.gdpr import (
    INVALID_ERASURE_REQUEST, ErasureRequest, InvalidErasureRequest, parse_request, refresh_erased_subjects,
)
from payflow.kafka_security import current as kafka_security
from payflow.pipeline.outputs import KafkaOutputs
from payflow.pipeline.checkpoint import flush_changelog
from payflow.tables.definitions import card_table, dedup_table, sender_table

log = logging.getLogger("payflow.erasure")

# internal: the worker creates the topic at start, so its subscription holds from the
# first rebalance (a topic created later by the CLI would wait for a metadata refresh)
erasure_requests = app.topic(settings.topics.erasure_requests, key_type=bytes, value_type=bytes,
                             key_serializer="raw", value_serializer="raw", partitions=settings.partitions,
                             internal=True, config=kafka_security().topic_config().config)


def forget(request: ErasureRequest, partition: int) -> int:
    keys = [(card_table, h) for h in request.pii_hashes]
    keys += [(dedup_table, t) for t in request.transaction_ids]
    keys.append((sender_table, request.sender_account_id))
    return sum(1 for table, key in keys if table.remove(partition, key))


def invalid_request_record(detail: str, partition: int, offset: int, now: datetime) -> bytes:
    """The DLQ record of an invalid erasure request: where it is and what is wrong, nothing of
    its content (it could hold a subject's hashes, or anything)."""
    return orjson.dumps({"reason": INVALID_ERASURE_REQUEST, "detail": detail, "transaction_id": None,
                         "source_topic": settings.topics.erasure_requests, "source_partition": partition,
                         "source_offset": offset, "rejected_at": now, "remains": ""})


@app.agent(erasure_requests, name="erase-state")
async def erase_state(stream):
    """Any failure but bad input stops the worker (worker.fail_stop): Faust would ack
    the request it failed on, and its state deletes, never logged, would come back."""
    await worker.run_or_fail_stop("the erasure agent", _erase(stream),
                                  lambda: erase_state.should_stop or app.should_stop)


async def _erase(stream) -> None:
    outputs = KafkaOutputs(internals.kafka_producer_of(app), settings.topics)
    async for event in stream.events():
        partition, offset = event.message.partition, event.message.offset
        try:
            request = parse_request(event.value)
        except InvalidErasureRequest as exc:
            log.warning("stage gdpr: erasure request at partition %d offset %d is invalid (%s); sent to the DLQ",
                        partition, offset, exc)
            record = invalid_request_record(str(exc), partition, offset, datetime.now(timezone.utc))
            await asyncio.gather(*await outputs.publisher.send([(settings.topics.dlq, None, None, record)]))
            metrics.DLQ.labels(INVALID_ERASURE_REQUEST).inc()
            continue
        runtime = app.pipeline_runtime
        if runtime is not None:  # drop the subject's payments from now on, not at the next refresh
            refresh_erased_subjects(runtime.processor.erased, request.ledger_entries())
        n = forget(request, partition)
        await flush_changelog(outputs.publisher, (card_table, dedup_table, sender_table))
        log.info("stage gdpr: erasure %s removed %d state key(s) for one sender partition", request.request_id, n)


@app.timer(interval=settings.erasure_refresh_seconds)
async def refresh_erasures() -> None:
    """Every worker re-reads the erasure ledger: it learns erasures whose requests went to
    another worker's partitions (or were sent while it was down)."""
    runtime = app.pipeline_runtime
    if runtime is None:
        return
    try:
        entries = await asyncio.to_thread(runtime.sink.warehouse.erased_subjects)
    except Exception as exc:  # noqa: BLE001 - the next refresh tries again; landings still join the ledger
        log.warning("stage gdpr: could not re-read the erasure ledger (%s); retrying in %.0f s",
                    type(exc).__name__, settings.erasure_refresh_seconds)
        return
    refresh_erased_subjects(runtime.processor.erased, entries)
