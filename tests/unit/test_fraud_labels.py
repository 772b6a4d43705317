"""Fraud labels fed back: what a record of the labels topic must hold, what of it reaches the
DLQ when it does not (nothing of its content), and the precision and recall the view gives,
against a computation of this test's own (DuckDB in memory)."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import orjson
import pytest

from payflow.pipeline.fraud_labels import (
    QUALITY_SQL, quality,
    INVALID_FRAUD_LABEL, InvalidFraudLabel, invalid_label_record, parse_label,
)
from payflow.warehouse.duck import DuckDBWarehouse
import random

from tests.unit.cards_fixtures import issuer_pan

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=timezone.utc)


def _label(**fields) -> bytes:
    doc = {"transaction_id": "txn_1", "label": "fraud", "source": "chargeback", "labelled_at": "2026-12-07T10:00:00Z"}
    doc.update(fields)
    return orjson.dumps({k: v for k, v in doc.items() if v is not ...})


def test_a_valid_label_is_read_with_its_position_and_its_time_in_utc():
    label = parse_label(_label(labelled_at="2026-12-07T11:30:00.1234567+01:30", extra="ignored"), 3, 41)
    assert (label.transaction_id, label.label, label.source) == ("txn_1", "fraud", "chargeback")
    assert label.labelled_at == datetime(2026, 12, 7, 10, 0, 0, 123456, tzinfo=timezone.utc)
    assert (label.label_partition, label.label_offset) == (3, 41)
    assert set(label.row(NOW)) == {"label_partition", "label_offset", "transaction_id", "label", "source",
                                   "labelled_at", "landed_at"}


@pytest.mark.parametrize("raw, words", [
    (b"", "empty"), (b"{not json", "not JSON"), (b"[1]", "not a JSON object"),
    (_label(transaction_id=...), "transaction_id"), (_label(transaction_id="  "), "transaction_id"),
    (_label(transaction_id="x" * 129), "transaction_id"), (_label(label="maybe"), "label must be"),
    (_label(source="twitter"), "source must be"), (_label(labelled_at="yesterday"), "labelled_at"),
    (_label(labelled_at="2026-12-07T10:00:00"), "labelled_at"), (_label(labelled_at=17), "labelled_at"),
    (_label(labelled_at="0001-01-01T00:00:00+01:00"), "not a valid time"),  # shifted out of range
    (_label(labelled_at="9999-12-31T23:59:59-01:00"), "not a valid time"),
    (_label(labelled_at="2026-02-30T10:00:00Z"), "not a valid time"),
    (_label(labelled_at="2026-12-09T12:00:01Z"), "ahead of the worker's clock"),
    (_label(transaction_id=" txn_1"), "white space"),
])
def test_an_invalid_label_is_refused_with_a_reason(raw, words):
    with pytest.raises(InvalidFraudLabel, match=words):
        parse_label(raw, 0, 0, NOW)


def test_card_data_in_a_label_never_reaches_the_dlq_record():
    pan = issuer_pan(random.Random(7), "visa")
    with pytest.raises(InvalidFraudLabel) as caught:
        parse_label(_label(transaction_id=f"order {pan}"), 1, 7)
    record = orjson.loads(invalid_label_record(str(caught.value), "labels", 1, 7, NOW))
    assert pan not in str(caught.value) and pan[-4:] not in orjson.dumps(record).decode()
    assert record["reason"] == INVALID_FRAUD_LABEL and record["remains"] == "" and record["transaction_id"] is None
    assert (record["source_topic"], record["source_partition"], record["source_offset"]) == ("labels", 1, 7)


def _fraud_row(con, txn: str, high_risk: bool, day: datetime) -> None:
    con.execute("INSERT INTO payment_transactions_fraud (transaction_id, sender_account_id, receiver_account_id, "
                "amount, currency, event_time, ingestion_time, fraud_score, is_high_risk, high_risk_above) "
                "VALUES (?, 'acct_1', 'mrch_1', 10, 'USD', ?, ?, ?, ?, 60)",
                [txn, day, day, 90 if high_risk else 5, high_risk])


def test_the_view_gives_precision_and_recall_over_the_latest_label_of_each_labelled_payment():
    w = DuckDBWarehouse(":memory:")
    w.ensure_schema()
    day = NOW - timedelta(days=1)
    flagged = {"a": True, "b": True, "c": False, "d": False, "e": True}
    for txn, high in flagged.items():
        _fraud_row(w.con, txn, high, day)
    labels = [("a", "fraud", 0), ("b", "legitimate", 0), ("c", "legitimate", 0), ("c", "fraud", 1),
              ("d", "legitimate", 0), ("zz", "fraud", 0)]  # c: a later chargeback overrides; zz: no payment
    rows = [parse_label(_label(transaction_id=t, label=lab, labelled_at=(NOW + timedelta(hours=h)).isoformat()),
                        0, i).row(NOW) for i, (t, lab, h) in enumerate(labels)]
    assert w.land_labels(rows) == len(rows)
    assert w.land_labels(rows) == 0  # the same positions again: nothing new
    assert w.query("SELECT COUNT(*) AS n FROM fraud_labels")[0]["n"] == len(rows)

    latest = {"a": "fraud", "b": "legitimate", "c": "fraud", "d": "legitimate"}  # e unlabelled
    hits = sum(1 for t, lab in latest.items() if flagged[t] and lab == "fraud")
    want_precision = hits / sum(1 for t in latest if flagged[t])
    want_recall = hits / sum(1 for lab in latest.values() if lab == "fraud")
    got = w.query(QUALITY_SQL, {"since": (NOW - timedelta(days=30)).date()})[0]
    precision, recall, labelled, flagged_labelled = quality(got)
    assert (precision, recall, labelled) == (want_precision, want_recall, len(latest))
    assert flagged_labelled == sum(1 for t in latest if flagged[t])
    assert (want_precision, want_recall) == (0.5, 0.5)  # the case has a hit, a false alarm and a miss
    by_day = w.query("SELECT label_precision, label_recall FROM fraud_label_quality")
    assert by_day == [{"label_precision": 0.5, "label_recall": 0.5}]
    # a window that ends before the payments' day leaves nothing to divide by
    assert quality(w.query(QUALITY_SQL, {"since": NOW.date() + timedelta(days=1)})[0]) == (None, None, 0, 0)
