"""Fraud labels fed back through their topic: a real worker lands each label once per topic
position (read again after a rewind: still once), sends an invalid record to the DLQ without
its content, and publishes the precision and recall the labels give the scoring as gauges,
equal to what this test computes from the warehouse's own scores. The landing itself on both
backends (the BigQuery emulator too)."""
from __future__ import annotations

import asyncio
import math
import random
import time
from datetime import datetime, timedelta, timezone

import orjson
import pytest

from payflow.kafka_admin import group_lag, rewind_group
from payflow.pipeline.fraud_labels import QUALITY_SQL, parse_label, quality
from payflow.warehouse.duck import DuckDBWarehouse
from tests.helpers import KAFKA, Worker, produce, read_topic, unique, wait_until
from tests.integration.test_accounted_for import _payment
from tests.unit.cards_fixtures import issuer_pan

pytestmark = pytest.mark.integration
NOW = datetime.now(timezone.utc)


def _label(txn: str, label: str, source: str, hours: float = 0) -> tuple[bytes, bytes]:
    return txn.encode(), orjson.dumps({"transaction_id": txn, "label": label, "source": source,
                                       "labelled_at": (NOW + timedelta(hours=hours)).isoformat()})


def test_labels_land_once_per_position_and_give_the_gauges_the_warehouse_gives(kafka, tmp):
    prefix = unique("labels-") + "-"
    raw, labels_topic, dlq = prefix + "payment-events", prefix + "payflow-fraud-labels", prefix + "payment-events-dlq"
    # every payment scored above 0 is high risk: the large ones are, the small ones are not
    env = {"PAYFLOW_FRAUD_HIGH_RISK_ABOVE": "0", "PAYFLOW_FRAUD_QUALITY_REFRESH_SECONDS": "1"}
    produce(raw, [(b"acct_1", _payment("txn_big1", "acct_1", "20000.00")),
                  (b"acct_2", _payment("txn_big2", "acct_2", "20000.00")),
                  (b"acct_3", _payment("txn_small1", "acct_3", "10.00")),
                  (b"acct_4", _payment("txn_small2", "acct_4", "12.00"))], partitions=4)
    pan = issuer_pan(random.Random(11), "visa")
    produce(labels_topic, [_label("txn_big1", "fraud", "chargeback"), _label("txn_big2", "legitimate", "analyst"),
                           _label("txn_small1", "legitimate", "analyst"),
                           _label("txn_small1", "fraud", "chargeback", hours=1),  # overrides the one before
                           (b"x", b"not json"), (b"y", orjson.dumps({"transaction_id": pan, "label": "fraud"}))],
            partitions=4)
    worker = Worker(tmp, prefix=prefix, extra_env=env).start()

    def labels_lag() -> int:
        return sum(asyncio.run(group_lag(KAFKA, worker.app_id, labels_topic)).values())

    try:
        worker.wait_caught_up(timeout=120)
        wait_until(lambda: worker.alive() and labels_lag() == 0, 60, what="the labels committed")
        wait_until(lambda: not math.isnan(worker.metrics().get(("payflow_fraud_label_precision", ()), math.nan)),
                   30, what="the quality gauges")
        time.sleep(3)  # refreshed every second: now after every payment and label landed
        gauges = {name: worker.metrics()[(f"payflow_fraud_{name}", ())]
                  for name in ("label_precision", "label_recall", "labelled_payments", "labelled_flagged_payments")}
        assert worker.metrics()[("payflow_fraud_labels_landed_total", ())] == 4
    finally:
        assert worker.stop() == 0, worker.log_tail()

    db = worker.warehouse[len("duckdb:///"):]
    w = DuckDBWarehouse(db)
    try:
        flagged = {r["transaction_id"]: r["is_high_risk"] for r in w.query(
            "SELECT transaction_id, is_high_risk FROM payment_transactions_fraud")}
        positions = w.query("SELECT label_partition, label_offset, transaction_id FROM fraud_labels")
    finally:
        w.close()
    assert flagged["txn_big1"] and flagged["txn_big2"] and not flagged["txn_small1"]  # a hit, a false alarm, a miss
    assert len(positions) == 4 and len({(r["label_partition"], r["label_offset"]) for r in positions}) == 4
    latest = {"txn_big1": "fraud", "txn_big2": "legitimate", "txn_small1": "fraud"}
    hits = sum(1 for t, lab in latest.items() if flagged[t] and lab == "fraud")
    assert gauges == {"label_precision": hits / sum(flagged[t] for t in latest),
                      "label_recall": hits / sum(lab == "fraud" for lab in latest.values()),
                      "labelled_payments": len(latest), "labelled_flagged_payments": sum(flagged[t] for t in latest)}

    rejected = [orjson.loads(m.value) for m in read_topic(dlq)]
    invalid = [r for r in rejected if r["reason"] == "invalid_fraud_label"]
    assert len(invalid) == 2 and all(r["source_topic"] == labels_topic and r["remains"] == "" for r in invalid)
    assert not any(pan in orjson.dumps(r).decode() or pan[-4:] in orjson.dumps(r).decode() for r in invalid)

    # every label read again from the start: each position still lands once
    asyncio.run(rewind_group(KAFKA, worker.app_id, labels_topic))
    worker.start()
    try:
        wait_until(lambda: worker.alive() and labels_lag() == 0, 90, what="the labels read again")
    finally:
        assert worker.stop() == 0, worker.log_tail()
    w = DuckDBWarehouse(db)
    try:
        assert w.query("SELECT COUNT(*) AS n FROM fraud_labels")[0]["n"] == 4
    finally:
        w.close()


def test_a_label_lands_once_per_position_on_both_backends(warehouse):
    rows = [parse_label(_label(t, lab, "analyst")[1], 2, i).row(NOW)
            for i, (t, lab) in enumerate([("t1", "fraud"), ("t2", "legitimate"), ("t1", "legitimate")])]
    assert warehouse.land_labels(rows) == 3
    assert warehouse.land_labels(rows[1:]) == 0
    # a labels topic created anew: position 0 again, another record: not taken for a replay
    again = parse_label(_label("t9", "fraud", "chargeback")[1], 2, 0).row(NOW)
    assert warehouse.land_labels([again]) == 1
    got = warehouse.query("SELECT label_partition, label_offset, transaction_id, label FROM fraud_labels "
                          "ORDER BY label_offset")
    assert sorted((r["label_offset"], r["transaction_id"], r["label"]) for r in got) == [
        (0, "t1", "fraud"), (0, "t9", "fraud"), (1, "t2", "legitimate"), (2, "t1", "legitimate")]
    # the views run on both backends (no payment scored: nothing to divide by)
    assert len(warehouse.query("SELECT * FROM fraud_label_latest")) == 3
    assert quality(warehouse.query(QUALITY_SQL, {"since": (NOW - timedelta(days=30)).date()})[0]) == (None, None, 0, 0)


def test_a_worker_killed_while_labels_land_loses_none_and_doubles_none(kafka, tmp):
    """SIGKILL while labels stream in (no shutdown, no final commit): after the restart every
    record the topic holds is in fraud_labels once, whatever had landed or been committed."""
    prefix = unique("labelkill-") + "-"
    labels_topic = prefix + "payflow-fraud-labels"
    n = 3000
    produce(labels_topic, [_label(f"txn_{i:05d}", "fraud" if i % 3 else "legitimate", "analyst") for i in range(n)],
            partitions=4)
    worker = Worker(tmp, prefix=prefix, extra_env={"PAYFLOW_FRAUD_QUALITY_REFRESH_SECONDS": "0"}).start()

    def landed_total() -> float:
        return worker.metrics().get(("payflow_fraud_labels_landed_total", ()), 0.0)

    try:
        wait_until(lambda: landed_total() > 0, 90, interval=0.2, what="the first labels landed")
        worker.kill()
        uncommitted = sum(asyncio.run(group_lag(KAFKA, worker.app_id, labels_topic)).values())
        print(f"killed with {uncommitted} of {n} labels uncommitted")
        worker.start()
        wait_until(lambda: worker.alive() and sum(asyncio.run(group_lag(KAFKA, worker.app_id, labels_topic)).values()) == 0,
                   120, what="the labels committed after the restart")
    finally:
        assert worker.stop() == 0, worker.log_tail()
    w = DuckDBWarehouse(worker.warehouse[len("duckdb:///"):])
    try:
        rows = w.query("SELECT COUNT(*) AS n, COUNT(DISTINCT transaction_id) AS ids, "
                       "COUNT(DISTINCT label_partition * 100000 + label_offset) AS positions FROM fraud_labels")[0]
    finally:
        w.close()
    assert rows == {"n": n, "ids": n, "positions": n}
