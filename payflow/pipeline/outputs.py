"""Publishing a processed batch to Kafka: enriched payments, DLQ, late events, dedup audit
(the state tables' changelog records go through the same publisher: payflow.pipeline.checkpoint).

Records are appended to aiokafka record batches per (topic, partition) and sent with
`send_batch`: one future per record batch, not one per message (per-message `send` cost
~50 µs per payment, more than masking it). Every batch is awaited before the source
offsets are acknowledged, so outputs are durable before their input is committed
(at-least-once; consumers de-duplicate on transaction_id or (partition, offset)); the
agent awaits them while the batch lands, not before (the broker's round trip overlaps
the landing).
"""
from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from datetime import datetime, timezone
from typing import Any, Callable, Iterable

import orjson
from aiokafka.errors import KafkaError, MessageSizeTooLargeError

from payflow.stages.mask import ERASED_SUBJECT
from payflow.stages.redact import mask_text
from payflow.models import DedupAudit, Rejection, dumps, from_us
from payflow.runtime.internals import partition_for
from payflow.stages.batch import BatchResult
from payflow.settings import Topics
from payflow.warehouse.base import ID_CONFLICT, conflict_detail

Record = tuple[str, int | None, bytes | None, bytes]  # topic, partition (None: by key), key, value


# an enriched payment waiting for its landing: (transaction_id, source partition, source
# offset, record key, record value); published once the warehouse took it (not an id conflict)
PendingEnriched = tuple[str, int, int, bytes, bytes]


def enriched_records(result: BatchResult) -> list[PendingEnriched]:
    """A batch's enriched payments, serialised now, published after their landing.

    Each JSON value is copied into a bytes object of its own length: orjson returns its
    output in the buffer it wrote it to, 4-8 KiB for a ~1 KiB record, and these records
    are held until the landing commits (several batches while the warehouse is slow)."""
    out: list[PendingEnriched] = []
    masked_at, masked_at_text = None, None
    for e in result.enriched:
        p = e.payment
        if p.masked_at is not masked_at:  # one per batch
            masked_at = p.masked_at
            masked_at_text = orjson.dumps(masked_at).decode()[1:-1]
        out.append((p.transaction_id, p.source_partition, p.source_offset, p.sender_account_id.encode(),
                    bytes(memoryview(e.to_enriched_json(masked_at_text)))))
    return out


def landed_records(pending: list[PendingEnriched], conflicts: list[tuple[str, int, int, int, int]],
                   topics: Topics, now: datetime,
                   duplicates: Iterable[tuple[str, int, int, int, int, int, int]] = ()) -> list[Record]:
    """After a landing: the enriched payments it took, and for each one it refused because
    the id had landed from another raw position a DLQ record (id_conflict), or a dedup audit
    record when it was a copy of the landed payment (base.Landed.duplicates)."""
    refused = {(p, o): (lp, lo) for _, p, o, lp, lo in conflicts}
    copies = {(p, o): (lp, lo, first_us, copy_us) for _, p, o, lp, lo, first_us, copy_us in duplicates}
    records: list[Record] = []
    for txn, partition, offset, key, value in pending:
        landed_at = refused.get((partition, offset))
        copy = copies.get((partition, offset))
        if landed_at is None:
            records.append((topics.enriched, None, key, value))
        elif copy is not None:
            lp, lo, first_us, copy_us = copy
            audit = DedupAudit(transaction_id=txn, first_partition=lp, first_offset=lo,
                               first_event_time=from_us(first_us), duplicate_partition=partition,
                               duplicate_offset=offset, duplicate_event_time=from_us(copy_us), detected_at=now)
            records.append((topics.dedup_audit, None, txn.encode(), dumps(audit)))
        else:
            rejection = Rejection(ID_CONFLICT, conflict_detail(*landed_at), remains=None, transaction_id=txn,
                                  source_partition=partition, source_offset=offset)
            records.append((topics.dlq, None, key, rejection.to_dlq_json(now)))
    return records


def output_records(result: BatchResult, keys: dict[tuple[int, int], bytes | None], topics: Topics,
                   now: datetime) -> list[Record]:
    """A batch's outputs but the enriched payments (landed_records), keyed by sender (DLQ: the masked raw key; dedup audit: the transaction id)."""
    t = topics
    records: list[Record] = []
    for r in result.rejections:
        raw_key = keys.get((r.source_partition, r.source_offset))
        # an erased subject's record keeps nothing of them, not even the sender as its key
        key = (mask_text(raw_key.decode("utf-8", "replace")).encode()
               if raw_key and r.reason != ERASED_SUBJECT else None)
        records.append((t.dlq, None, key, r.to_dlq_json(now)))
    for p in result.late:
        wm = result.watermarks.get(p.source_partition)
        watermark = datetime.fromtimestamp(wm / 1e6, timezone.utc) if wm else None
        records.append((t.late, None, p.sender_account_id.encode(),
                        p.to_masked_json(watermark=watermark, received_at=now)))
    for d in result.duplicates:
        records.append((t.dedup_audit, None, d.transaction_id.encode(), dumps(d)))
    return records


async def partitions_including(producer: Any, topic: str, partition: int, timeout: float = 60.0) -> set[int]:
    """The producer's partitions of `topic`, its metadata refreshed until they include
    `partition`: a topic grown a moment ago (payflow.pipeline.partition_growth, by this worker
    or another) is known to the producer with its old count until its next refresh (minutes),
    and aiokafka refuses a record for a partition it does not know with an AssertionError."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            await asyncio.wait_for(producer.client.force_metadata_update(),
                                   timeout=max(1.0, deadline - time.monotonic()))
        except asyncio.TimeoutError:
            pass
        partitions = await producer.partitions_for(topic)
        if partition in partitions:
            return partitions
        if time.monotonic() > deadline:
            raise KafkaError(f"{topic} has no partition {partition} in the brokers' metadata after {timeout:.0f} s "
                             f"({len(partitions)} known)")
        await asyncio.sleep(0.2)


class BatchPublisher:
    """Sends records as aiokafka record batches; partitions by key with the producer's partitioner."""

    def __init__(self, producer: Callable[[], Any]):
        self._producer = producer  # resolved late: Faust starts its producer after import
        # (topic, partition count, key) -> partition: the partitioner hashes every key in
        # pure Python (murmur2), and keys (senders) repeat
        self._partitions: dict[tuple[str, int, bytes], int] = {}

    def _partition_of(self, producer: Any, topic: str, count: int, key: bytes | None, value: bytes) -> int:
        if key is None:
            return partition_for(producer, topic, key, value)
        cache_key = (topic, count, key)
        partition = self._partitions.get(cache_key)
        if partition is None:
            if len(self._partitions) >= 200_000:
                self._partitions.clear()
            partition = self._partitions[cache_key] = partition_for(producer, topic, key, value)
        return partition

    async def send(self, records: Iterable[Record]) -> list[Any]:
        """Queue every record; return the futures of their record batches (RecordMetadata)."""
        producer = self._producer()
        groups: dict[tuple[str, int], list[tuple[bytes | None, bytes]]] = defaultdict(list)
        known: dict[str, set[int]] = {}
        for topic, partition, key, value in records:
            if topic not in known:
                known[topic] = await producer.partitions_for(topic)  # metadata, so partitioning can run
            if partition is None:
                partition = self._partition_of(producer, topic, len(known[topic]), key, value)
            elif partition not in known[topic]:
                known[topic] = await partitions_including(producer, topic, partition)
            groups[(topic, partition)].append((key, value))
        futures = []
        for (topic, partition), messages in groups.items():
            batch = producer.create_batch()
            for key, value in messages:
                if batch.append(key=key, value=value, timestamp=None) is None:
                    futures.append(await producer.send_batch(batch, topic, partition=partition))
                    batch = producer.create_batch()
                    if batch.append(key=key, value=value, timestamp=None) is None:
                        raise MessageSizeTooLargeError(f"a record of {len(value)} bytes does not fit a batch")
            futures.append(await producer.send_batch(batch, topic, partition=partition))
        return futures


class KafkaOutputs:
    def __init__(self, producer: Callable[[], Any], topics: Topics):
        self.publisher = BatchPublisher(producer)
        self.topics = topics

    async def send(self, result: BatchResult, keys: dict[tuple[int, int], bytes | None], now: datetime) -> list[Any]:
        """Queue a batch's outputs but its enriched payments; await the returned futures
        before acking its input."""
        return await self.publisher.send(output_records(result, keys, self.topics, now))

    async def send_landed(self, pending: list[PendingEnriched], conflicts: list[tuple[str, int, int, int, int]],
                          now: datetime, duplicates: Iterable[tuple[str, int, int, int, int, int, int]] = ()
                          ) -> list[Any]:
        """Queue the enriched payments a landing took (id conflicts to the DLQ, copies of a
        landed payment to the dedup audit)."""
        return await self.publisher.send(landed_records(pending, conflicts, self.topics, now, duplicates))
