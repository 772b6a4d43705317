"""GDPR erasure (Art. 17) end to end: warehouse, erasure ledger, and the worker's state.

1. The subject is found by card (PAN + expiry, hashed under every key in the ring, so
   rows hashed before a key rotation are found too) or by pii_hash.
2. The warehouse erases (delete: the subject's rows go; anonymize: the financial facts
   stay, every link to the person is nulled) and records the request in gdpr_erasures,
   which the sink consults on every landing, so replays cannot bring rows back.
3. An erasure request goes to the `payflow-erasure-requests` topic, keyed by each sender
   involved (so it lands in the partition that owns the sender's state); the worker deletes
   the subject's keys from its tables (the deletions reach the changelog with the batch's
   state records) and adds the subject's hashes to its set of erased subjects at once.
4. Every worker holds the whole ledger in memory (payflow.stages.mask.ErasedSubjects): loaded at start,
   re-read every PAYFLOW_ERASURE_REFRESH_SECONDS (a request reaches only the worker owning
   its sender's partition, but the subject's card may pay from senders elsewhere). The mask
   step drops an erased subject's payment, under whichever key of the ring it was erased.
"""
from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from payflow.kafka_admin import ensure_topics
from payflow.kafka_security import current as kafka_security
from payflow.keys import PII_HASH_LENGTH, KeyRing
from payflow.stages.cards import luhn_valid
from payflow.stages.mask import ErasedSubjects
from payflow.settings import Settings
from payflow.warehouse.base import ERASED_AT, ERASED_FLAG, NULLED, ErasureReceipt, Warehouse, anonymized

_HASH = re.compile(rf"^[a-p]{{{PII_HASH_LENGTH}}}$")
log = logging.getLogger("payflow.erasure")
ERASURE_MODES = ("delete", "anonymize")
# the DLQ reason of a message on the erasure-request topic that is not a valid request
INVALID_ERASURE_REQUEST = "invalid_erasure_request"


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

    @property
    def rows_erased(self) -> int:
        """Warehouse rows deleted, anonymized or marked erased (the ledger entry not counted)."""
        return sum(self.receipt.rows_affected.values())

    def to_json(self) -> dict[str, Any]:
        return {"request_id": self.receipt.request_id, "mode": self.receipt.mode,
                "subject_hashes": len(self.receipt.pii_hashes), "rows_erased": self.rows_erased,
                "rows_affected": dict(sorted(self.receipt.rows_affected.items())),
                "state_requests_sent": self.state_requests_sent, "transaction_ids": len(self.transaction_ids),
                "warehouse_seconds": round(self.receipt.seconds, 3), "seconds": round(self.seconds, 3)}

    def render(self) -> str:
        lines = [f"GDPR erasure {self.receipt.request_id} ({self.receipt.mode})",
                 f"subject hashes: {len(self.receipt.pii_hashes)} (one per key version)"]
        for table, n in sorted(self.receipt.rows_affected.items()):
            lines.append(f"  {table:28s} {n:6d} rows {'deleted' if self.receipt.mode == 'delete' else 'anonymized'}"
                         if table not in ("pii_masking_audit",) else f"  {table:28s} {n:6d} rows marked erased")
        lines.append(f"state: erasure request sent for {self.state_requests_sent} sender partition key(s); "
                     f"the worker deletes {len(self.transaction_ids)} dedup key(s), the card key(s) and sender key(s)")
        lines.append(f"warehouse {self.receipt.seconds:.3f} s, total {self.seconds:.3f} s")
        if self.rows_erased == 0:
            lines += ["", "*** NOTHING ERASED: no row in the warehouse matches this subject. ***",
                      "Check the card number and expiry (or the pii_hash) and the warehouse; the request is in "
                      "the erasure ledger, so a later copy of the subject's payments will not land."]
        return "\n".join(lines)


_EXPIRY = re.compile(r"(0[1-9]|1[0-2])/[0-9]{2}")


# -- the warehouse's erasure plan, once for both backends ------------------------------------
# BigQuery dialect with named parameters, rendered per backend (schema.render_sql): @rid the
# request id, @hashes the subject's hashes, @ids the transaction ids they paid, @now the time.
LEDGER_INSERT = ("INSERT INTO gdpr_erasures (request_id, pii_hash, pii_key_id, mode, requested_at) "
                 "VALUES (@rid, @h, @kid, @mode, @now)")
SUBJECT_TRANSACTIONS = ("SELECT transaction_id FROM pii_masking_audit WHERE pii_hash IN UNNEST(@hashes) "
                        "UNION DISTINCT SELECT transaction_id FROM payment_transactions WHERE pii_hash IN UNNEST(@hashes)")
LEDGER_COMPLETE = ("UPDATE gdpr_erasures SET completed_at = CURRENT_TIMESTAMP(), rows_affected = @ra "
                   "WHERE request_id = @rid")


def _anonymize(table: str) -> str:
    """The SET list of anonymize-mode erasure for `table` (models.anonymized): its links to
    the person nulled, the erasure's time and flag set where the table has them."""
    from payflow.warehouse import schema
    rendered = {NULLED: "{0} = NULL", ERASED_AT: "{0} = @now", ERASED_FLAG: "{0} = TRUE"}
    return ", ".join(rendered[rule].format(c.name) for c in schema.tables()[table]
                     if (rule := anonymized(table, c.name)) is not None)


# the subject's landed payments, as (id, raw position) joined to a dedup audit row's first copy
_FIRST_IS_SUBJECTS = ("SELECT 1 FROM payment_transactions AS p WHERE p.pii_hash IN UNNEST(@hashes) "
                      "AND p.transaction_id = {a}.transaction_id AND p.source_partition = {a}.first_partition "
                      "AND p.source_offset = {a}.first_offset")
# a dedup audit row is the subject's when its first copy is the subject's landed payment, or
# a copy audited as that payment's duplicate (a copy refused by the warehouse, then resent:
# the resend's first copy is the refused one)
_SUBJECTS_DEDUP_ROWS = (
    "DELETE FROM deduplication_audit AS d WHERE d.transaction_id IN UNNEST(@ids) AND ("
    f"EXISTS ({_FIRST_IS_SUBJECTS.format(a='d')}) "
    "OR EXISTS (SELECT 1 FROM deduplication_audit AS c WHERE c.transaction_id = d.transaction_id "
    "AND c.duplicate_partition = d.first_partition AND c.duplicate_offset = d.first_offset "
    f"AND EXISTS ({_FIRST_IS_SUBJECTS.format(a='c')})))")


def erasure_plan(mode: str) -> list[tuple[str, str]]:
    """(table, statement) in order, run after LEDGER_INSERT and SUBJECT_TRANSACTIONS; each
    statement's affected row count is the receipt's count for its table.

    delete: the subject's payments, their dedup audit rows and late events go. anonymize: the
    financial facts stay, every link to the person (LINK_COLUMNS) is nulled. Either way the
    masking audit keeps the fact of masking and shows the erasure, not the person.

    A row is the subject's by its pii_hash, not by its transaction_id alone: another sender
    may have paid with the same id (its copy an id_conflict, or landed after this subject's
    erasure), and its rows are not this subject's to erase. A dedup audit row is the
    subject's when its first copy is the subject's landed payment (same id and raw position)
    or a copy audited as its duplicate, so that step runs before the payments go."""
    if mode not in ERASURE_MODES:
        raise ValueError(f"erasure mode must be one of {ERASURE_MODES}")
    subjects = "transaction_id IN UNNEST(@ids) AND pii_hash IN UNNEST(@hashes)"
    steps = []
    if mode == "delete":
        steps.append(("deduplication_audit", _SUBJECTS_DEDUP_ROWS))
    for table in ("payment_transactions", "payment_transactions_fraud"):
        steps.append((table, f"DELETE FROM {table} WHERE {subjects}" if mode == "delete" else
                      f"UPDATE {table} SET {_anonymize(table)} WHERE {subjects}"))
    if mode == "delete":
        steps.append(("late_events", "DELETE FROM late_events WHERE pii_hash IN UNNEST(@hashes)"))
    else:
        steps.append(("late_events", f"UPDATE late_events SET {_anonymize('late_events')} WHERE pii_hash IN UNNEST(@hashes)"))
    steps.append(("pii_masking_audit", f"UPDATE pii_masking_audit SET {_anonymize('pii_masking_audit')} "
                  f"WHERE {subjects}"))
    return steps


def subject_hashes(keyring: KeyRing | None, *, card: str | None, expiry: str | None,
                   pii_hash: str | None) -> list[tuple[str, str]]:
    """(key_id, pii_hash) pairs naming the subject. Errors never repeat the card number."""
    if card:
        if not expiry:
            raise ErasureError("--card needs --expiry (MM/YY): the hash covers both")
        if not _EXPIRY.fullmatch(expiry.strip()):
            raise ErasureError("--expiry must be MM/YY with a month from 01 to 12 (as the event contract's "
                               "card_expiry)")
        digits = re.sub(r"[ -]", "", card)
        if not digits.isdigit() or not digits.isascii() or not 13 <= len(digits) <= 19:
            raise ErasureError("the card number must be 13 to 19 digits")
        if not luhn_valid(digits):
            raise ErasureError("the card number fails the Luhn check (a typo?): no payment with it can have landed")
        if keyring is None:
            raise ErasureError("erasure by card needs the HMAC key ring")
        return keyring.hashes_for(digits, expiry.strip())
    if pii_hash:
        if not _HASH.match(pii_hash):
            raise ErasureError(f"--pii-hash must be a payflow pii_hash ({PII_HASH_LENGTH} letters a-p)")
        return [("", pii_hash)]
    raise ErasureError("name the subject with --card and --expiry, or with --pii-hash")


def missing_key_ids(keyring: KeyRing, warehouse: Warehouse) -> list[str]:
    """Key ids the warehouse's rows were hashed under that the ring lacks: their subjects
    cannot be found by card, so an erasure by card would miss them silently."""
    held = set()
    for table in ("payment_transactions", "pii_masking_audit"):
        held |= {r["k"] for r in warehouse.query(
            f"SELECT DISTINCT pii_key_id AS k FROM {table} WHERE pii_key_id IS NOT NULL")}
    return sorted(held - set(keyring.key_ids))


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
    if literal and any(not key_id for key_id, _ in hashes):
        # erased by pii_hash alone: record the key it was taken under where rows know it, so
        # workers recompute it under that key only after a rotation (not under every key)
        known = {r["pii_hash"]: r["pii_key_id"] for r in warehouse.query(
            f"SELECT DISTINCT pii_hash, pii_key_id FROM pii_masking_audit WHERE pii_hash IN ({literal}) "
            f"AND pii_key_id IS NOT NULL")}
        hashes = [(key_id or known.get(h) or "", h) for key_id, h in hashes]
    receipt = warehouse.erase(hashes, mode, str(uuid.uuid4()))
    sent = 0
    if send_state_requests and senders:
        sent = asyncio.run(_send_state_requests(settings, receipt.request_id, hashes, mode, senders, txns))
    return ErasureResult(receipt, senders, txns, sent, time.perf_counter() - started)


async def _send_state_requests(settings: Settings, request_id: str, hashes: list[tuple[str, str]], mode: str,
                               senders: list[str], txns: list[str]) -> int:
    topic = settings.topics.erasure_requests
    await ensure_topics(settings.kafka_bootstrap, [topic], settings.partitions)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, enable_idempotence=True, acks="all",
                                **kafka_security().client_kwargs())
    await producer.start()
    try:
        futures = []
        for sender in senders:
            value = orjson.dumps({"request_id": request_id, "sender_account_id": sender,
                                  "pii_hashes": [h for _, h in hashes], "pii_key_ids": [k for k, _ in hashes],
                                  "mode": mode, "transaction_ids": txns})
            futures.append(await producer.send(topic, value, key=sender.encode()))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return len(senders)


# -- the worker's side -----------------------------------------------------------------------
class InvalidErasureRequest(ValueError):
    """A message on the erasure-request topic that is not a valid request. Its text names
    what is wrong, never a value (the message could hold anything)."""


@dataclass(frozen=True)
class ErasureRequest:
    request_id: str
    sender_account_id: str
    pii_hashes: list[str]
    transaction_ids: list[str]
    pii_key_ids: list[str]  # parallel to pii_hashes; "" where unknown
    mode: str | None  # None from a sender that did not say (the ledger refresh still learns it)

    def ledger_entries(self) -> list[tuple[str, str, str]]:
        """(key_id, pii_hash, mode) for ErasedSubjects.add; none without a mode."""
        if self.mode is None:
            return []
        return [(k, h, self.mode) for k, h in zip(self.pii_key_ids, self.pii_hashes)]


def _strings(doc: dict, name: str, *, required: bool = True) -> list[str]:
    value = doc.get(name)
    if value is None and not required:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidErasureRequest(f"{name} must be a list of strings")
    return value


def parse_request(raw: Any) -> ErasureRequest:
    """An erasure request from its message bytes; InvalidErasureRequest for anything else."""
    if not raw or not isinstance(raw, (bytes, bytearray, memoryview, str)):
        raise InvalidErasureRequest("empty message")
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidErasureRequest("not JSON") from None
    if not isinstance(doc, dict):
        raise InvalidErasureRequest("not a JSON object")
    for name in ("request_id", "sender_account_id"):
        if not isinstance(doc.get(name), str) or not doc[name]:
            raise InvalidErasureRequest(f"{name} must be a non-empty string")
    hashes = _strings(doc, "pii_hashes")
    if not all(_HASH.match(h) for h in hashes):
        raise InvalidErasureRequest(f"pii_hashes must be payflow pii_hashes ({PII_HASH_LENGTH} letters a-p)")
    txns = _strings(doc, "transaction_ids", required=False)
    key_ids = _strings(doc, "pii_key_ids", required=False) or [""] * len(hashes)
    if len(key_ids) != len(hashes):
        raise InvalidErasureRequest("pii_key_ids must name one key id per pii_hash")
    mode = doc.get("mode")
    if mode is not None and mode not in ERASURE_MODES:
        raise InvalidErasureRequest(f"mode must be one of {ERASURE_MODES}")
    return ErasureRequest(doc["request_id"], doc["sender_account_id"], hashes, txns, key_ids, mode)


def load_erased_subjects(keyring: KeyRing, warehouse: Warehouse) -> ErasedSubjects:
    """The worker's set of erased subjects, read from the warehouse's ledger (at start)."""
    erased = ErasedSubjects(keyring)
    refresh_erased_subjects(erased, warehouse.erased_subjects())
    return erased


def refresh_erased_subjects(erased: ErasedSubjects, entries: list[tuple[str, str, str]]) -> int:
    """Merge ledger entries into the worker's set; warns of entries whose key left the ring."""
    missing = set(erased.missing_key_ids)
    new = erased.add(entries)
    if new:
        log.info("stage gdpr: %d erased subject hash(es) added from the ledger (%d in all; %d older key(s) "
                 "checked per payment)", new, len(erased), len(erased.other_keys))
    for key_id in sorted(erased.missing_key_ids - missing):
        log.warning("stage gdpr: the erasure ledger holds hashes under key %s, which is no longer in "
                    "PAYFLOW_HMAC_KEYS: payments of those subjects are recognised only by their ledger "
                    "hash; keep a key in the ring while a ledger entry uses it", key_id)
    return new
