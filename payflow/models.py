"""Records that flow between stages. None of them can hold raw card data.

Plain slotted dataclasses serialised with orjson rather than faust.Record: the per-event
cost of faust.Record (de)serialisation is a large share of a 2-core budget.
Money is Decimal (serialised as a string); time is timezone-aware UTC (RFC 3339).
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, Callable

import orjson

from payflow.stages.cards import mask_pans
from payflow.stages.redact import mask_text

# a fraud score above this is high risk (payflow.stages.fraud scores; the warehouse and the
# enriched record carry is_high_risk): the operating point docs/fraud.md measures
HIGH_RISK_ABOVE = 48

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND = timedelta(microseconds=1)


def to_us(t: datetime) -> int:
    """Microseconds since the epoch, exactly (a float timestamp can be off by one): the one
    converter (watermarks, dedup entries, the warehouse batch's timestamps). Integer arithmetic
    on the timedelta's parts: a third cheaper than dividing it by a microsecond."""
    d = t - _EPOCH
    return (d.days * 86_400 + d.seconds) * 1_000_000 + d.microseconds


def from_us(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


def dumps(record: Any) -> bytes:
    # orjson serialises dataclasses itself; dataclasses.asdict deep-copied every value first
    return orjson.dumps(record, default=_default)


# Columns that link a payment to a person, per erasable table: nulled by anonymize-mode
# erasure (the financial facts stay). Erasable tables carry pii_hash and consult the erasure
# ledger when landing.
LINK_COLUMNS = {
    "payment_transactions": ("pii_hash", "pii_key_id", "credit_card_masked", "card_expiry_masked", "device_id", "ip_address"),
    "payment_transactions_fraud": ("pii_hash", "pii_key_id", "credit_card_masked", "card_expiry_masked", "device_id", "ip_address"),
    "pii_masking_audit": ("pii_hash", "pii_key_id", "user_email"),
    "late_events": ("pii_hash",),
}
# anonymize-mode erasure, column by column: NULLED (a link to the person), ERASED_AT (the
# erasure's time), ERASED_FLAG (true); any other column is kept. The mask stage, both
# landings (DuckDB's SQL, BigQuery's write rows and MERGE) and the erasure of landed rows
# (compliance.gdpr) each render this one rule
NULLED, ERASED_AT, ERASED_FLAG = "nulled", "erased_at", "erased_flag"
ERASURE_MARKS = {"anonymized_at": ERASED_AT, "erasure_timestamp": ERASED_AT, "erasure_requested": ERASED_FLAG}


def anonymized(table: str, column: str) -> str | None:
    """What anonymize-mode erasure does to `column` of erasable `table` (None: kept)."""
    if column in LINK_COLUMNS[table]:
        return NULLED
    return ERASURE_MARKS.get(column)


@dataclass(slots=True)
class MaskedPayment:
    transaction_id: str
    event_time: datetime
    sender_account_id: str
    receiver_account_id: str
    amount: Decimal
    currency: str
    credit_card_masked: str
    cvv_masked: str
    card_expiry_masked: str
    card_brand: str
    pii_hash: str
    pii_key_id: str
    masked_at: datetime
    masking_reason: str
    ip_address: str
    geo_region: str
    device_id: str
    merchant_id: str
    # PII that is not card data: it goes to pii_masking_audit only and is erasable.
    user_email: str | None = field(default=None, repr=False)
    # where the event was read: dedup's replay-versus-duplicate test and the audit trail
    source_partition: int = -1
    source_offset: int = -1

    def to_masked_json(self, **extra: Any) -> bytes:
        """The masked payment as JSON (late topic), without the email."""
        doc = {f: getattr(self, f) for f in self.__dataclass_fields__ if f != "user_email"}
        doc.update(extra)
        return orjson.dumps(doc, default=_default)


@dataclass(slots=True)
class FraudAssessment:
    fraud_score: int
    risk_flags: list[str]
    geographic_risk: int
    velocity_5m: int
    distinct_devices_30m: int
    # "CODE: the values behind it", one per risk flag (docs/fraud.md); no commas inside
    risk_reasons: list[str] = field(default_factory=list)
    # the operating point the score was judged at (PAYFLOW_FRAUD_HIGH_RISK_ABOVE)
    high_risk_above: int = HIGH_RISK_ABOVE

    @property
    def is_high_risk(self) -> bool:
        return self.fraud_score > self.high_risk_above


# The enriched record (payments-enriched): every MaskedPayment field but these, then the
# published part of the fraud assessment.
ENRICHED_OMITS = ("user_email",)  # PII that is not card data: pii_masking_audit only
ENRICHED_FRAUD = ("fraud_score", "risk_flags", "geographic_risk", "is_high_risk", "risk_reasons")
ENRICHED_SCHEMA_VERSION = 1
ENRICHED_FIELDS = ("schema_version",
                   *(f.name for f in fields(MaskedPayment) if f.name not in ENRICHED_OMITS), *ENRICHED_FRAUD)


def _enriched_json_method() -> Callable[..., bytes]:
    """EnrichedPayment.to_enriched_json, generated once at import from the field lists above.

    Generated rather than looping over the names per event: the result is the dict display a
    hand-written method would hold (as fast), without a second copy of the field list. Money
    is written as a string; masked_at as `masked_at_text` when given."""
    items = ['"schema_version": %d' % ENRICHED_SCHEMA_VERSION]
    for f in fields(MaskedPayment):
        if f.name in ENRICHED_OMITS:
            continue
        if f.name == "masked_at":
            value = "masked_at_text or p.masked_at"
        elif f.type == "Decimal":
            value = f"str(p.{f.name})"
        else:
            value = f"p.{f.name}"
        items.append(f'"{f.name}": {value}')
    items += [f'"{name}": s.{name}' for name in ENRICHED_FRAUD]
    source = ("def to_enriched_json(self, masked_at_text=None):\n"
              "    p = self.payment\n    s = self.fraud\n"
              "    return dumps({" + ", ".join(items) + "})\n")
    namespace: dict[str, Any] = {}
    exec(source, {"dumps": orjson.dumps, "str": str}, namespace)  # noqa: S102 - our own text
    return namespace["to_enriched_json"]


@dataclass(slots=True)
class EnrichedPayment:
    payment: MaskedPayment
    fraud: FraudAssessment

    # to_enriched_json(masked_at_text=None) -> bytes: the payments-enriched record (masked
    # payment + scores, without the email). `masked_at_text` is masked_at already written
    # out (a batch shares one masked_at): the same text orjson would write.
    to_enriched_json = _enriched_json_method()


@dataclass(slots=True)
class Rejection:
    """A message that failed decoding or validation: it goes to the DLQ (topic and table).

    The text fields copied into a DLQ record as they are (transaction_id, detail) are masked
    here, whoever builds the Rejection: a card number in them (a producer's transaction_id
    holding a PAN) is masked to its last four, by the same detector as the input guard.
    `remains` must come masked (payflow.stages.redact.masked_remains)."""
    reason: str
    detail: str
    remains: Any  # masked remains of the message (dict or str), never raw card data
    transaction_id: str | None = None
    source_partition: int = -1
    source_offset: int = -1

    def __post_init__(self) -> None:
        if self.transaction_id is not None:
            self.transaction_id = mask_pans(self.transaction_id)
        self.detail = mask_text(self.detail)

    def to_dlq_json(self, rejected_at: datetime) -> bytes:
        return orjson.dumps({
            "reason": self.reason,
            "detail": self.detail,
            "transaction_id": self.transaction_id,
            "source_partition": self.source_partition,
            "source_offset": self.source_offset,
            "rejected_at": rejected_at,
            "remains": self.remains,
        }, default=_default)


@dataclass(slots=True)
class DedupAudit:
    transaction_id: str
    first_partition: int
    first_offset: int
    first_event_time: datetime
    duplicate_partition: int
    duplicate_offset: int
    duplicate_event_time: datetime
    detected_at: datetime
