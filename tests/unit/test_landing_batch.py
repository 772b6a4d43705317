"""A batch's warehouse rows travel column by column as ints and strings; rows() restores them."""
from __future__ import annotations

import pickle
from datetime import datetime, timedelta, timezone
from decimal import Decimal

from payflow.models import DedupAudit, EnrichedPayment, FraudAssessment, MaskedPayment, Rejection
from payflow.warehouse import schema
from payflow.warehouse.base import LANDING_ORDER, build_batch, from_us, to_us

NOW = datetime(2026, 11, 26, 12, 0, 0, 123457, tzinfo=timezone.utc)


def _payment(txn: str, amount: str, offset: int) -> MaskedPayment:
    return MaskedPayment(
        transaction_id=txn, event_time=NOW - timedelta(seconds=offset, microseconds=1), sender_account_id="acct_a",
        receiver_account_id="mrch_b", amount=Decimal(amount), currency="JPY" if "." not in amount else "USD",
        credit_card_masked="XXXX-XXXX-XXXX-1111", cvv_masked="XXX", card_expiry_masked="12/XX", card_brand="visa",
        pii_hash="abcd" * 16, pii_key_id="k1", masked_at=NOW, masking_reason="why", ip_address="10.0.0.1",
        geo_region="us-west", device_id="dev_1", merchant_id="mrch_b", user_email="a@example.com" if offset else None,
        source_partition=2, source_offset=offset)


def _batch():
    enriched = [EnrichedPayment(_payment(f"txn_{i}", a, i), FraudAssessment(20 * i, ["HIGH_AMOUNT"] * i, 0, i + 1, 1))
                for i, a in enumerate(["12.345678901", "5000", "0.01"])]
    dup = DedupAudit("txn_0", 2, 0, NOW - timedelta(hours=1), 2, 9, NOW, NOW)
    rej = Rejection("invalid_json", "the message is not valid JSON", remains="{", source_partition=1, source_offset=4)
    late = _payment("txn_late", "7.50", 11)
    return build_batch(enriched, [dup], [rej], [late], watermarks={2: to_us(NOW)}, now=NOW)


def test_every_table_gets_exactly_its_schema_columns_and_one_row_per_record():
    batch = _batch()
    counts = {t: batch.count(t) for t in LANDING_ORDER}
    assert counts == {"payment_transactions": 3, "payment_transactions_fraud": 3, "pii_masking_audit": 3,
                      "deduplication_audit": 1, "dead_letter_events": 1, "late_events": 1}
    assert len(batch) == 12
    for table in LANDING_ORDER:
        assert list(batch.columns(table)) == [c.name for c in schema.tables()[table]]


def test_rows_restore_exact_timestamps_and_decimals():
    rows = _batch().rows("payment_transactions_fraud")
    assert [r["amount"] for r in rows] == [Decimal("12.345678901"), Decimal("5000"), Decimal("0.01")]
    assert rows[1]["event_time"] == NOW - timedelta(seconds=1, microseconds=1)
    assert rows[1]["event_time"].tzinfo is not None
    assert rows[2]["risk_flags"] == "HIGH_AMOUNT,HIGH_AMOUNT" and rows[2]["fraud_score"] == 40
    audit = _batch().rows("pii_masking_audit")
    assert audit[0]["masking_timestamp"] == NOW and audit[0]["user_email"] is None
    assert audit[1]["user_email"] == "a@example.com" and audit[1]["erasure_requested"] is False
    late = _batch().rows("late_events")[0]
    assert late["watermark"] == NOW and late["amount"] == Decimal("7.50")


def test_microseconds_are_exact_where_a_float_timestamp_is_not():
    t = datetime(2026, 11, 26, 23, 59, 59, 999999, tzinfo=timezone.utc)
    assert from_us(to_us(t)) == t
    assert all(from_us(to_us(t + timedelta(microseconds=k))) == t + timedelta(microseconds=k) for k in range(-50, 50))


def test_extend_appends_later_rows_once_and_survives_pickling():
    first, later = _batch(), _batch()
    first.extend(later)
    first = pickle.loads(pickle.dumps(first))
    assert first.count("payment_transactions") == 6 and first.count("pii_masking_audit") == 6
    assert first.count("dead_letter_events") == 2
    assert len(first.columns("payment_transactions")["transaction_id"]) == 6
    empty = build_batch([], now=NOW)
    assert len(empty) == 0 and empty.rows("payment_transactions") == []
    empty.extend(later)
    assert empty.count("late_events") == 1
