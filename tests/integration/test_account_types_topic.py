"""The senders' account types come from a compacted reference topic that every worker reads
whole before it scores, then follows: a payroll account's first large payment is not flagged
for its amount, an untyped account's is, and a type published while the worker runs applies
to the payments after it. Real broker, real worker, DuckDB."""
from __future__ import annotations

import asyncio

import orjson
import pytest

from payflow.kafka_admin import ensure_topics
from payflow.warehouse.duck import DuckDBWarehouse
from tests.helpers import KAFKA, Worker, produce, unique, wait_until
from tests.integration.test_accounted_for import _payment

pytestmark = pytest.mark.integration


def _type(account: str, kind: str | None) -> tuple[bytes, bytes | None]:
    return account.encode(), None if kind is None else orjson.dumps({"account_type": kind})


def test_account_types_are_read_whole_before_scoring_and_followed_after(kafka, tmp):
    prefix = unique("types-") + "-"
    raw, types_topic = prefix + "payment-events", prefix + "payflow-account-types"
    asyncio.run(ensure_topics(KAFKA, [raw], 4))
    asyncio.run(ensure_topics(KAFKA, [types_topic], 2, configs={types_topic: {"cleanup.policy": "compact"}}))
    produce(types_topic, [_type("acct_payroll", "payroll"), _type("acct_gone", "payout"), _type("acct_gone", None),
                          (b"acct_bad", b"not json")])
    produce(raw, [(b"acct_payroll", _payment("txn_payroll", "acct_payroll", "20000.00")),
                  (b"acct_plain", _payment("txn_plain", "acct_plain", "20000.00")),
                  (b"acct_gone", _payment("txn_gone", "acct_gone", "20000.00"))])
    worker = Worker(tmp, prefix=prefix).start()
    try:
        worker.wait_caught_up(timeout=120)
        held = ("payflow_account_types", ())
        assert worker.metrics()[held] == 1
        assert worker.metrics()[("payflow_reference_records_rejected_total", (("topic", types_topic),))] == 1
        # published while the worker runs: applies to the payments scored after it arrived
        produce(types_topic, [_type("acct_late", "billing")])
        wait_until(lambda: worker.metrics().get(held) == 2, 30, interval=0.5, what="the late type followed")
        produce(raw, [(b"acct_late", _payment("txn_late", "acct_late", "20000.00"))])
        worker.wait_caught_up(timeout=120)
    finally:
        assert worker.stop() == 0, worker.log_tail()
    w = DuckDBWarehouse(worker.warehouse[len("duckdb:///"):])
    try:
        flags = {r["transaction_id"]: r["risk_flags"] or "" for r in w.query(
            "SELECT transaction_id, risk_flags FROM payment_transactions_fraud")}
    finally:
        w.close()
    assert set(flags) == {"txn_payroll", "txn_plain", "txn_gone", "txn_late"}
    assert "HIGH_AMOUNT" in flags["txn_plain"] and "HIGH_AMOUNT" in flags["txn_gone"]  # untyped, removed
    assert "HIGH_AMOUNT" not in flags["txn_payroll"] and "HIGH_AMOUNT" not in flags["txn_late"]
