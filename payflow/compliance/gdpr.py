"""GDPR erasure (Art. 17) end to end: warehouse, erasure ledger, and the worker's state.

1. The subject is found by card (PAN + expiry, hashed under every key in the ring, so
   rows hashed before a key rotation are found too) or by pii_hash.
2. The warehouse erases (delete: the subject's rows go; anonymize: the financial facts
   stay, every link to the person is nulled) and records the request in gdpr_erasures,
   which the sink consults on every landing, so replays cannot bring rows back.
3. An erasure request goes to the `payflow-erasure-requests` topic, keyed by each sender
   involved (so it lands in the partition that owns the sender's state); the worker deletes
   the subject's keys from its tables, which writes changelog tombstones.
"""
from __future__ import annotations

import asyncio
import re
import time
import uuid
from dataclasses import dataclass, field

import orjson
from aiokafka import AIOKafkaProducer

from payflow.kafka_admin import ensure_topics
from payflow.keys import PII_HASH_LENGTH, KeyRing
from payflow.settings import Settings
from payflow.warehouse.base import ErasureReceipt, Warehouse

_HASH = re.compile(rf"^[a-p]{{{PII_HASH_LENGTH}}}$")


class ErasureError(ValueError):
    pass


@dataclass
class ErasureResult:
    receipt: ErasureReceipt
    senders: list[str]
    transaction_ids: list[str]
    state_requests_sent: int
    seconds: float
    state_keys: dict[str, int] = field(default_factory=dict)

    def render(self) -> str:
        lines = [f"GDPR erasure {self.receipt.request_id} ({self.receipt.mode})",
                 f"subject hashes: {len(self.receipt.pii_hashes)} (one per key version)"]
        for table, n in sorted(self.receipt.rows_affected.items()):
            lines.append(f"  {table:28s} {n:6d} rows {'deleted' if self.receipt.mode == 'delete' else 'anonymized'}"
                         if table not in ("pii_masking_audit",) else f"  {table:28s} {n:6d} rows marked erased")
        lines.append(f"state: erasure request sent for {self.state_requests_sent} sender partition key(s); "
                     f"the worker deletes {len(self.transaction_ids)} dedup key(s), the card key(s) and sender key(s)")
        lines.append(f"warehouse {self.receipt.seconds:.3f} s, total {self.seconds:.3f} s")
        return "\n".join(lines)


def subject_hashes(keyring: KeyRing, *, card: str | None, expiry: str | None, pii_hash: str | None) -> list[tuple[str, str]]:
    if card:
        if not expiry:
            raise ErasureError("--card needs --expiry (MM/YY): the hash covers both")
        digits = re.sub(r"[ -]", "", card)
        if not digits.isdigit() or not 13 <= len(digits) <= 19:
            raise ErasureError("--card must be 13 to 19 digits")
        return keyring.hashes_for(digits, expiry)
    if pii_hash:
        if not _HASH.match(pii_hash):
            raise ErasureError(f"--pii-hash must be a payflow pii_hash ({PII_HASH_LENGTH} letters a-p)")
        return [("", pii_hash)]
    raise ErasureError("name the subject with --card and --expiry, or with --pii-hash")


def erase(settings: Settings, warehouse: Warehouse, hashes: list[tuple[str, str]], mode: str,
          *, send_state_requests: bool = True) -> ErasureResult:
    started = time.perf_counter()
    literal = ", ".join(f"'{h}'" for _, h in hashes if _HASH.match(h))
    rows = warehouse.query(
        f"SELECT DISTINCT transaction_id, sender_account_id FROM payment_transactions WHERE pii_hash IN ({literal}) "
        f"UNION DISTINCT SELECT DISTINCT transaction_id, sender_account_id FROM late_events WHERE pii_hash IN ({literal})"
    ) if literal else []
    senders = sorted({r["sender_account_id"] for r in rows})
    txns = sorted({r["transaction_id"] for r in rows})
    receipt = warehouse.erase(hashes, mode, str(uuid.uuid4()))
    sent = 0
    if send_state_requests and senders:
        sent = asyncio.run(_send_state_requests(settings, receipt.request_id, [h for _, h in hashes], senders, txns))
    return ErasureResult(receipt, senders, txns, sent, time.perf_counter() - started)


async def _send_state_requests(settings: Settings, request_id: str, hashes: list[str], senders: list[str],
                               txns: list[str]) -> int:
    topic = settings.topics.erasure_requests
    await ensure_topics(settings.kafka_bootstrap, [topic], settings.partitions)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, enable_idempotence=True, acks="all")
    await producer.start()
    try:
        futures = []
        for sender in senders:
            value = orjson.dumps({"request_id": request_id, "sender_account_id": sender, "pii_hashes": hashes,
                                  "transaction_ids": txns})
            futures.append(await producer.send(topic, value, key=sender.encode()))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return len(senders)
