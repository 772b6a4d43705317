"""The senders' account types (payroll, payout, marketplace, billing: reference data for fraud
scoring) from a compacted reference topic, read whole by every worker and kept current: a
global table, in Kafka Streams' words (a GlobalKTable), since a payment's sender may be any
account and the types are few next to the payments.

The topic (`payflow-account-types`, prefixed like the others) is keyed by
sender_account_id; a value is a JSON object `{"account_type": "payroll"}`, and a tombstone
(a null value) removes the account's type. Compaction keeps the last value per account, so
a worker starting reads every account's current type. The worker reads the topic to the end
offsets it finds at its start before it scores its first payment, then follows it:
a type published later applies to the payments scored after it arrives. A record that is
not such an object is skipped, logged with its position (the key is an account id, never
card data) and counted in `payflow_reference_records_rejected_total`
(`payflow_account_types` is how many types the worker holds); it is reference data
published by the operator, not a payment, so it does not go to the payments' DLQ.

The consumer joins no group (each worker reads every partition) and reads committed
records only; it honours the cluster's security settings as every payflow client does.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer

from payflow import metrics
from payflow.kafka_security import current as kafka_security

log = logging.getLogger("payflow.pipeline")

MAX_TYPE_LENGTH = 64


def parse_type(value: bytes | None) -> str | None:
    """The account type a record's value sets ('' for a tombstone), or None if it is not one."""
    if value is None:
        return ""
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    kind = doc.get("account_type") if isinstance(doc, dict) else None
    if not isinstance(kind, str) or not 0 < len(kind) <= MAX_TYPE_LENGTH or not kind.strip():
        return None
    return kind.strip().lower()


class AccountTypes:
    """sender_account_id -> account type: `types` is the dict the batch processor reads."""

    def __init__(self, bootstrap: str, topic: str, seed: dict[str, str] | None = None):
        self.bootstrap = bootstrap
        self.topic = topic
        self.types: dict[str, str] = dict(seed or {})
        self._consumer: AIOKafkaConsumer | None = None
        self._follow: asyncio.Task | None = None

    def apply(self, records: list[Any]) -> None:
        for record in records:
            key = record.key.decode("utf-8", "replace") if record.key else ""
            kind = parse_type(record.value)
            if not key or kind is None:
                metrics.REFERENCE_RECORDS_REJECTED.labels(topic=self.topic).inc()
                log.warning("%s[%d] offset %d: not an account type record (a key, and a JSON object with "
                            "account_type, or a tombstone): skipped", record.topic, record.partition, record.offset)
            elif kind:
                self.types[key] = kind
            else:
                self.types.pop(key, None)
        metrics.ACCOUNT_TYPES.set(len(self.types))

    async def start(self, load_seconds: float = 60.0) -> None:
        """Reads the topic to the end offsets it has now (for at most `load_seconds`), then
        follows it in the background."""
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False,
                                    auto_offset_reset="earliest", isolation_level="read_committed",
                                    client_id="payflow-account-types", **kafka_security().client_kwargs())
        await consumer.start()
        self._consumer = consumer
        # with no group, aiokafka assigns every partition of a subscribed topic (new ones too)
        consumer.subscribe([self.topic])
        loop = asyncio.get_running_loop()
        deadline = loop.time() + load_seconds
        ends: dict = {}
        while loop.time() < deadline:
            tps = consumer.assignment()
            if tps and not ends:
                ends = await consumer.end_offsets(list(tps))
            if ends and all([await consumer.position(tp) >= end for tp, end in ends.items()]):
                break
            for records in (await consumer.getmany(timeout_ms=500)).values():
                self.apply(records)
        else:
            log.warning("stage fraud: account types topic %s not read to its end within %.0f s: going on with "
                        "%d types, the rest follows", self.topic, load_seconds, len(self.types))
        metrics.ACCOUNT_TYPES.set(len(self.types))
        log.info("stage fraud: %d account types from %s", len(self.types), self.topic)
        self._follow = asyncio.ensure_future(self._follow_topic(consumer))

    async def _follow_topic(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                self.apply(records)

    async def stop(self) -> None:
        if self._follow is not None:
            self._follow.cancel()
            try:
                await self._follow
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - stopping: its end does not matter
                pass
            self._follow = None
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
