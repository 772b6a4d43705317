"""Fraud outcomes fed back: the records of the labels topic (payflow-fraud-labels), checked.

A fraud team learns what a payment was after payflow scored it: a chargeback, an analyst's
decision, a customer's report. Each is one JSON record, keyed by transaction_id:

    {"transaction_id": "txn_...", "label": "fraud", "source": "chargeback",
     "labelled_at": "2026-12-07T10:00:00Z"}

`transaction_id` is the payment's id as the warehouse holds it; `label` is `fraud` or
`legitimate`; `source` one of SOURCES; `labelled_at` an RFC 3339 time with its offset. A
later label of the same payment overrides an earlier one (the view fraud_label_latest).
Other fields are ignored and never land. The agent (agents/fraud_labels.py) lands each
valid record in fraud_labels once per topic position; anything else goes to the DLQ with
the reason invalid_fraud_label and none of the record's content.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson

from payflow.stages.cards import may_hold_pan
from payflow.stages.validation import MAX_ID_LENGTH, RFC3339

INVALID_FRAUD_LABEL = "invalid_fraud_label"
LABELS = ("fraud", "legitimate")
SOURCES = ("chargeback", "analyst", "customer_report", "issuer_report", "other")
MAX_AHEAD = timedelta(days=1)  # labelled_at at most this far ahead of the worker's clock


# the labelled payments' precision and recall over the days from @since (view fraud_label_quality)
QUALITY_SQL = """
SELECT SUM(labelled_payments) AS labelled, SUM(labelled_fraud) AS labelled_fraud,
       SUM(flagged) AS flagged, SUM(flagged_fraud) AS flagged_fraud
FROM fraud_label_quality WHERE day >= @since
"""


def quality(row: dict[str, Any]) -> tuple[float | None, float | None, int, int]:
    """Precision and recall of one QUALITY_SQL row (None: nothing to divide by), how many
    labelled payments it covers and how many of those were flagged."""
    flagged, labelled_fraud = int(row.get("flagged") or 0), int(row.get("labelled_fraud") or 0)
    hits = int(row.get("flagged_fraud") or 0)
    return (hits / flagged if flagged else None, hits / labelled_fraud if labelled_fraud else None,
            int(row.get("labelled") or 0), flagged)


class InvalidFraudLabel(ValueError):
    """What is wrong with a label record, in words that quote none of its content."""


@dataclass(frozen=True, slots=True)
class FraudLabel:
    transaction_id: str
    label: str
    source: str
    labelled_at: datetime
    label_partition: int
    label_offset: int

    def row(self, landed_at: datetime) -> dict[str, Any]:
        """The row of fraud_labels."""
        return {"label_partition": self.label_partition, "label_offset": self.label_offset,
                "transaction_id": self.transaction_id, "label": self.label, "source": self.source,
                "labelled_at": self.labelled_at, "landed_at": landed_at}


def parse_label(raw: Any, partition: int, offset: int, now: datetime | None = None) -> FraudLabel:
    """The label a record of the labels topic holds; InvalidFraudLabel for anything else
    (with `now`, a label more than MAX_AHEAD ahead of it too)."""
    if not raw or not isinstance(raw, (bytes, bytearray, memoryview, str)):
        raise InvalidFraudLabel("empty message")
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidFraudLabel("not JSON") from None
    if not isinstance(doc, dict):
        raise InvalidFraudLabel("not a JSON object")
    txn = doc.get("transaction_id")
    if not isinstance(txn, str) or not txn.strip() or len(txn) > MAX_ID_LENGTH:
        raise InvalidFraudLabel(f"transaction_id must be a string of 1 to {MAX_ID_LENGTH} characters")
    if txn != txn.strip():
        raise InvalidFraudLabel("transaction_id has leading or trailing white space: no payment's id would match")
    if may_hold_pan(txn):
        # the warehouse never holds card-like digits in an id (masking tokenizes them): the
        # label must name the payment by the id the warehouse shows
        raise InvalidFraudLabel("transaction_id holds card-like digits: use the id as the warehouse holds it")
    label = doc.get("label")
    if label not in LABELS:
        raise InvalidFraudLabel(f"label must be one of {', '.join(LABELS)}")
    source = doc.get("source")
    if source not in SOURCES:
        raise InvalidFraudLabel(f"source must be one of {', '.join(SOURCES)}")
    labelled_at = _labelled_at(doc.get("labelled_at"))
    if now is not None and labelled_at > now + MAX_AHEAD:
        # it would stay the latest label of its payment for good
        raise InvalidFraudLabel(f"labelled_at is more than {MAX_AHEAD} ahead of the worker's clock")
    return FraudLabel(txn, label, source, labelled_at, partition, offset)


def _labelled_at(value: Any) -> datetime:
    if not isinstance(value, str) or not RFC3339.fullmatch(value):
        raise InvalidFraudLabel("labelled_at must be an RFC 3339 time with its offset (2026-12-07T10:00:00Z)")
    text = value.replace(" ", "T").replace("t", "T").replace("z", "Z")
    if "." in text:  # datetime takes six fraction digits at most
        head, _, tail = text.partition(".")
        digits = len(tail) - len(tail.lstrip("0123456789"))
        text = head + "." + tail[:min(digits, 6)] + tail[digits:]
    try:
        return datetime.fromisoformat(text).astimezone(timezone.utc)
    except (ValueError, OverflowError):  # a day that does not exist; year 1 or 9999 shifted out of range
        raise InvalidFraudLabel("labelled_at is not a valid time") from None


def invalid_label_record(detail: str, topic: str, partition: int, offset: int, now: datetime) -> bytes:
    """The DLQ record of an invalid label: where it is and what is wrong, nothing of its
    content (a free-form feed could carry anything, card data included)."""
    return orjson.dumps({"reason": INVALID_FRAUD_LABEL, "detail": detail, "transaction_id": None,
                         "source_topic": topic, "source_partition": partition, "source_offset": offset,
                         "rejected_at": now, "remains": ""})
