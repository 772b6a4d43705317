"""The warehouse interface both backends implement, and the rows a batch lands.

Every landing is idempotent: a row whose key already exists is left alone (DuckDB: primary
key + INSERT OR IGNORE; BigQuery: MERGE ... WHEN NOT MATCHED). Rows of subjects in
gdpr_erasures never come back: erased-by-delete rows are not inserted, erased-by-anonymize
rows are inserted without any link to the person.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterable

import orjson

from payflow.models import DedupAudit, EnrichedPayment, MaskedPayment, Rejection

# Columns that link a payment to a person: nulled by anonymize-mode erasure.
LINK_COLUMNS = {
    "payment_transactions": ("pii_hash", "pii_key_id", "credit_card_masked", "card_expiry_masked", "device_id", "ip_address"),
    "payment_transactions_fraud": ("pii_hash", "pii_key_id", "credit_card_masked", "card_expiry_masked", "device_id", "ip_address"),
    "pii_masking_audit": ("pii_hash", "pii_key_id", "user_email"),
    "late_events": ("pii_hash",),
}
# Tables whose rows carry pii_hash and so consult the erasure list when landing.
ERASABLE = tuple(LINK_COLUMNS)
LANDING_ORDER = ("payment_transactions", "payment_transactions_fraud", "pii_masking_audit",
                 "deduplication_audit", "dead_letter_events", "late_events")


@dataclass
class LandingBatch:
    rows: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: {t: [] for t in LANDING_ORDER})

    def __len__(self) -> int:
        return sum(len(r) for r in self.rows.values())


def _payment_row(p: MaskedPayment, ingested: datetime) -> dict[str, Any]:
    return {
        "transaction_id": p.transaction_id, "sender_account_id": p.sender_account_id,
        "receiver_account_id": p.receiver_account_id, "amount": p.amount, "currency": p.currency,
        "credit_card_masked": p.credit_card_masked, "cvv_masked": p.cvv_masked,
        "card_expiry_masked": p.card_expiry_masked, "card_brand": p.card_brand, "pii_hash": p.pii_hash,
        "pii_key_id": p.pii_key_id, "merchant_id": p.merchant_id, "geo_region": p.geo_region,
        "device_id": p.device_id, "ip_address": p.ip_address, "event_time": p.event_time,
        "masked_at": p.masked_at, "ingestion_time": ingested, "source_partition": p.source_partition,
        "source_offset": p.source_offset, "anonymized_at": None,
    }


def build_batch(enriched: Iterable[EnrichedPayment], duplicates: Iterable[DedupAudit] = (),
                rejections: Iterable[Rejection] = (), late: Iterable[MaskedPayment] = (),
                watermarks: dict[int, int] | None = None, now: datetime | None = None) -> LandingBatch:
    now = now or datetime.now(timezone.utc)
    b = LandingBatch()
    for e in enriched:
        p, f = e.payment, e.fraud
        row = _payment_row(p, now)
        b.rows["payment_transactions"].append(row)
        b.rows["payment_transactions_fraud"].append({
            **row, "fraud_score": f.fraud_score, "risk_flags": ",".join(f.risk_flags),
            "geographic_risk": f.geographic_risk, "velocity_5m": f.velocity_5m,
            "distinct_devices_30m": f.distinct_devices_30m, "is_high_risk": f.is_high_risk,
        })
        b.rows["pii_masking_audit"].append({
            "transaction_id": p.transaction_id, "pii_hash": p.pii_hash, "pii_key_id": p.pii_key_id,
            "masking_timestamp": p.masked_at, "masking_reason": p.masking_reason, "user_email": p.user_email,
            "event_time": p.event_time, "erasure_requested": False, "erasure_timestamp": None,
        })
    for d in duplicates:
        b.rows["deduplication_audit"].append({
            "transaction_id": d.transaction_id, "first_partition": d.first_partition, "first_offset": d.first_offset,
            "first_event_time": d.first_event_time, "duplicate_partition": d.duplicate_partition,
            "duplicate_offset": d.duplicate_offset, "duplicate_event_time": d.duplicate_event_time,
            "detected_at": d.detected_at,
        })
    for r in rejections:
        b.rows["dead_letter_events"].append({
            "source_partition": r.source_partition, "source_offset": r.source_offset, "reason": r.reason,
            "detail": r.detail, "transaction_id": r.transaction_id, "rejected_at": now,
            "remains": orjson.dumps(r.remains).decode() if not isinstance(r.remains, str) else r.remains,
        })
    for p in late:
        wm = (watermarks or {}).get(p.source_partition)
        b.rows["late_events"].append({
            "transaction_id": p.transaction_id, "source_partition": p.source_partition,
            "source_offset": p.source_offset, "sender_account_id": p.sender_account_id, "amount": p.amount,
            "currency": p.currency, "pii_hash": p.pii_hash, "event_time": p.event_time,
            "watermark": datetime.fromtimestamp(wm / 1e6, timezone.utc) if wm else None, "received_at": now,
        })
    return b


@dataclass
class ErasureReceipt:
    mode: str
    pii_hashes: list[str]
    rows_affected: dict[str, int]
    seconds: float
    request_id: str


class TransientWarehouseError(Exception):
    """Worth retrying (network, 5xx, rate limit, lock contention)."""


class Warehouse(abc.ABC):
    name: str

    @abc.abstractmethod
    def ensure_schema(self) -> None: ...

    @abc.abstractmethod
    def land(self, batch: LandingBatch) -> dict[str, int]:
        """Land every table's rows idempotently; return rows newly inserted per table."""

    @abc.abstractmethod
    def query(self, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Run a read query written in BigQuery's dialect (transpiled where needed)."""

    @abc.abstractmethod
    def erase(self, pii_hashes: list[tuple[str, str]], mode: str, request_id: str) -> ErasureReceipt: ...

    @abc.abstractmethod
    def string_columns(self) -> dict[str, list[str]]:
        """table -> its STRING columns (the PCI scan reads these)."""

    def close(self) -> None:
        pass
