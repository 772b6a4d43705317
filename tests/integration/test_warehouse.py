"""The warehouse layer on both backends: DuckDB, and BigQuery through the official client
against the local emulator. One suite, parametrised where the behaviour is the same."""
from __future__ import annotations

import zlib
from datetime import datetime, timezone
from decimal import Decimal

import pytest

from payflow.cards import find_pans
from payflow.keys import KeyRing
from payflow.pipeline import BatchProcessor, RawItem
from payflow.simulator.generator import EventStream, SimOptions
from payflow.warehouse import schema
from payflow.warehouse.base import build_batch
from tests.helpers import TEST_HMAC_KEYS

pytestmark = pytest.mark.integration
RING = KeyRing.parse(TEST_HMAC_KEYS)


def processed(count: int = 600, seed: int = 5, start=datetime(2026, 11, 18, 22, 0, tzinfo=timezone.utc), **kw):
    stream = EventStream(SimOptions(count=count, seed=seed, start_time=start, **kw))
    msgs = list(stream)
    bp = BatchProcessor(keyring=RING, dedup_table={}, watermark_table={}, sender_table={}, card_table={})
    # partitioned by key, as the raw topic is: every copy of a transaction in one partition
    # (state is per partition; dedup finds a copy only there)
    result = bp.process([RawItem(zlib.crc32(m.key or b"") % 4, i, m.value) for i, m in enumerate(msgs)])
    valid = {m.transaction_id: m for m in msgs if m.kind == "valid"}
    return result, valid


def test_schema_is_idempotent_and_has_every_table_and_view(warehouse):
    warehouse.ensure_schema()  # second time: no error, nothing dropped
    for table in schema.tables():
        assert warehouse.query(f"SELECT COUNT(*) AS n FROM {table}")[0]["n"] == 0
    for view in ("daily_summary", "fraud_summary", "deduplication_effectiveness"):
        warehouse.query(f"SELECT * FROM {view}")


def test_batch_lands_once_and_replay_adds_nothing(warehouse):
    result, valid = processed()
    batch = build_batch(result.enriched, result.duplicates, result.rejections, result.late, result.watermarks)
    first = warehouse.land(batch)
    assert first["payment_transactions"] == len(result.enriched) == len(valid)
    again = warehouse.land(batch)
    assert all(n == 0 for n in again.values()), again
    rows = warehouse.query("SELECT COUNT(*) AS n, COUNT(DISTINCT transaction_id) AS d FROM payment_transactions")
    assert rows[0]["n"] == rows[0]["d"] == len(valid)
    sums = {r["currency"]: Decimal(r["s"]) for r in warehouse.query(
        "SELECT currency, SUM(amount) AS s FROM payment_transactions GROUP BY currency")}
    expected: dict[str, Decimal] = {}
    for m in valid.values():
        expected[m.currency] = expected.get(m.currency, Decimal(0)) + m.amount
    assert sums == expected
    daily = warehouse.query("SELECT SUM(payments) AS n FROM daily_summary")
    assert daily[0]["n"] == len(valid)
    fraud = warehouse.query("SELECT SUM(payments) AS n, SUM(high_risk_payments) AS h FROM fraud_summary")
    assert fraud[0]["n"] == len(valid)
    assert fraud[0]["h"] == sum(1 for e in result.enriched if e.fraud.is_high_risk)
    eff = warehouse.query("SELECT SUM(duplicates_dropped) AS d FROM deduplication_effectiveness")
    assert eff[0]["d"] == len(result.duplicates) > 0


def test_dlq_remains_and_masked_columns_hold_no_card_data(warehouse):
    result, _ = processed(count=800, malformed_ratio=0.05)
    warehouse.land(build_batch(result.enriched, result.duplicates, result.rejections, result.late))
    for table, cols in warehouse.string_columns().items():
        for col in cols:
            for row in warehouse.query(f"SELECT {col} AS v FROM {table} WHERE {col} IS NOT NULL"):
                assert not find_pans(str(row["v"])), f"{table}.{col}"
    assert warehouse.query("SELECT COUNT(*) AS n FROM dead_letter_events")[0]["n"] == len(result.rejections) > 0


def test_partitioning_and_types_in_the_bigquery_ddl():
    ddl = " ".join(schema.bigquery_statements("p", "d"))
    assert "PARTITION BY DATE(event_time)" in ddl
    assert "CLUSTER BY sender_account_id, receiver_account_id, currency" in ddl
    assert "PRIMARY KEY (transaction_id) NOT ENFORCED" in ddl
    assert "NUMERIC(38, 9)" in ddl
    duck = " ".join(schema.duckdb_statements())
    assert "NOT ENFORCED" not in duck and "PARTITION BY" not in duck and "DECIMAL(38, 9)" in duck
