"""Publishing a processed batch to Kafka: enriched payments, DLQ, late events, dedup audit.

Every send is awaited before the batch's source offsets are acknowledged, so outputs are
durable before their input is committed (at-least-once; consumers de-duplicate on
transaction_id or (partition, offset)).
"""
from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable

import orjson

from payflow.masking_remains import mask_text
from payflow.models import dumps
from payflow.pipeline import BatchResult
from payflow.settings import Topics

Send = Callable[..., Awaitable[Awaitable[Any]]]


class KafkaOutputs:
    def __init__(self, send: Send, topics: Topics, flush: Callable[[], Awaitable[None]] | None = None):
        self._send = send
        self._flush = flush
        self.topics = topics

    async def flush_changelogs(self) -> None:
        if self._flush is not None:
            await self._flush()

    async def publish(self, result: BatchResult, keys: dict[tuple[int, int], bytes | None], now: datetime) -> None:
        t = self.topics
        futures = []
        send = self._send
        for e in result.enriched:
            p = e.payment
            futures.append(await send(t.enriched, p.sender_account_id.encode(), e.to_enriched_json(), None, None, None))
        for r in result.rejections:
            raw_key = keys.get((r.source_partition, r.source_offset))
            key = mask_text(raw_key.decode("utf-8", "replace")).encode() if raw_key else None
            futures.append(await send(t.dlq, key, r.to_dlq_json(now), None, None, None))
        for p in result.late:
            wm = result.watermarks.get(p.source_partition)
            watermark = datetime.fromtimestamp(wm / 1e6, timezone.utc) if wm else None
            futures.append(await send(t.late, p.sender_account_id.encode(),
                                      p.to_masked_json(watermark=watermark, received_at=now), None, None, None))
        for d in result.duplicates:
            futures.append(await send(t.dedup_audit, d.transaction_id.encode(), dumps(d), None, None, None))
        if futures:
            await asyncio.gather(*futures)


class RecordingOutputs:
    """Keeps what would be published, for unit tests of the agent (no Kafka involved)."""

    def __init__(self) -> None:
        self.published: dict[str, list[dict]] = {"enriched": [], "dlq": [], "late": [], "dedup_audit": []}

    async def flush_changelogs(self) -> None:
        pass

    async def publish(self, result: BatchResult, keys: dict, now: datetime) -> None:
        self.published["enriched"] += [orjson.loads(e.to_enriched_json()) for e in result.enriched]
        self.published["dlq"] += [orjson.loads(r.to_dlq_json(now)) for r in result.rejections]
        self.published["late"] += [orjson.loads(p.to_masked_json()) for p in result.late]
        self.published["dedup_audit"] += [orjson.loads(dumps(d)) for d in result.duplicates]
