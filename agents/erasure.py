"""The erasure agent: deletes a GDPR subject's keys from the state tables.

Requests are keyed by sender account, like the raw topic, so each lands in the partition
whose tables hold that sender's state; a delete is logged to the changelog at once, so a
recovery does not bring the key back.
"""
from __future__ import annotations

import logging

import orjson

from payflow.app import app, settings
from payflow.outputs import KafkaOutputs
from tables.state import card_table, dedup_table, sender_table

log = logging.getLogger("payflow.erasure")

# internal: the worker creates the topic at start, so its subscription holds from the
# first rebalance (a topic created later by the CLI would wait for a metadata refresh)
erasure_requests = app.topic(settings.topics.erasure_requests, key_type=bytes, value_type=bytes,
                             key_serializer="raw", value_serializer="raw", partitions=settings.partitions,
                             internal=True)


def forget(request: dict, partition: int) -> int:
    keys = [(card_table, h) for h in request.get("pii_hashes", [])]
    keys += [(dedup_table, t) for t in request.get("transaction_ids", [])]
    keys.append((sender_table, request["sender_account_id"]))
    return sum(1 for table, key in keys if table.remove(partition, key))


@app.agent(erasure_requests, name="erase-state")
async def erase_state(stream):
    outputs = KafkaOutputs(app.producer._ensure_producer, settings.topics)
    async for event in stream.events():
        try:
            request = orjson.loads(event.value)
            n = forget(request, event.message.partition)
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            log.error("erasure request ignored: not a payflow erasure request (%s)", type(exc).__name__)
            continue
        await outputs.flush_state((card_table, dedup_table, sender_table))
        log.info("stage gdpr: erasure %s removed %d state key(s) for one sender partition", request.get("request_id"), n)
