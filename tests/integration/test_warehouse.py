"""The warehouse layer on both backends: DuckDB, and BigQuery through the official client
against the local emulator. One suite, parametrised where the behaviour is the same."""
from __future__ import annotations

import zlib
from datetime import datetime, timezone
from decimal import Decimal

import pytest

from payflow.stages.cards import find_pans
from payflow.keys import KeyRing
from payflow.stages.batch import RawItem
from tests.fakes import dict_processor
from payflow.simulator.generator import EventStream, SimOptions
from payflow.warehouse import schema
from payflow.warehouse.base import build_batch
from tests.helpers import TEST_HMAC_KEYS

pytestmark = pytest.mark.integration
RING = KeyRing.parse(TEST_HMAC_KEYS)


def processed(count: int = 600, seed: int = 5, start=datetime(2026, 11, 18, 22, 0, tzinfo=timezone.utc), **kw):
    stream = EventStream(SimOptions(count=count, seed=seed, start_time=start, **kw))
    msgs = list(stream)
    bp = dict_processor(keyring=RING, dedup_table={}, watermark_table={}, sender_table={}, card_table={})
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


def test_the_key_on_transaction_id_holds_in_every_payment_table_when_a_layer_above_fails(warehouse):
    """Invariant 2 at the warehouse alone: a replay overlapping what landed and a payment twice
    in one batch (dedup failed) leave one row per transaction_id in each of the three payment
    tables, and the counts the landing reports are what it inserted."""
    result, valid = processed()
    enriched = result.enriched
    assert len(enriched) > 400
    first = warehouse.land(build_batch(enriched[:300]))
    assert first["payment_transactions"] == first["payment_transactions_fraud"] == first["pii_masking_audit"] == 300
    # rows 200-299 landed already; the last payment comes twice
    second = warehouse.land(build_batch(enriched[200:] + enriched[-1:]))
    new = len(enriched) - 300
    assert second["payment_transactions"] == second["payment_transactions_fraud"] == second["pii_masking_audit"] == new
    for table in ("payment_transactions", "payment_transactions_fraud", "pii_masking_audit"):
        rows = warehouse.query(f"SELECT COUNT(*) AS n, COUNT(DISTINCT transaction_id) AS d FROM {table}")
        assert rows[0]["n"] == rows[0]["d"] == len(valid), table
    # each table's row of a payment is the one the payment table holds (same landing, same source row)
    mismatched = warehouse.query(
        "SELECT COUNT(*) AS n FROM payment_transactions AS p JOIN payment_transactions_fraud AS f "
        "ON f.transaction_id = p.transaction_id JOIN pii_masking_audit AS a ON a.transaction_id = p.transaction_id "
        "WHERE f.source_offset != p.source_offset OR f.amount != p.amount OR a.pii_hash != p.pii_hash")
    assert mismatched[0]["n"] == 0
    # a full replay of both batches adds nothing anywhere
    again = warehouse.land(build_batch(enriched))
    assert all(n == 0 for n in again.values()), again


def test_a_payment_id_shared_with_an_erased_subjects_payment_in_one_batch_still_lands(warehouse):
    """Two senders' payments with one transaction_id in one batch, the first of a subject
    erased by delete: the erased payment must not stand in for the id. It once did: it was
    kept as the id's one row, then refused as erased, and the other sender's payment was in
    no table and no DLQ record, its offset acked."""
    from dataclasses import replace

    from payflow.models import EnrichedPayment
    result, _ = processed(count=60, seed=17)
    erased = result.enriched[0]
    other = next(e for e in result.enriched if e.payment.pii_hash != erased.payment.pii_hash)
    copy = EnrichedPayment(replace(other.payment, transaction_id=erased.payment.transaction_id,
                                   source_partition=other.payment.source_partition + 4),
                           other.fraud)
    warehouse.erase([("k1", erased.payment.pii_hash)], "delete")
    landed = warehouse.land(build_batch([erased, copy]))
    assert landed["payment_transactions"] == landed["payment_transactions_fraud"] == 1, landed
    assert landed.conflicts == [] and landed.duplicates == []
    for table in ("payment_transactions", "payment_transactions_fraud", "pii_masking_audit"):
        rows = warehouse.query(f"SELECT transaction_id, pii_hash FROM {table}")
        assert [(r["transaction_id"], r["pii_hash"]) for r in rows] == [
            (erased.payment.transaction_id, other.payment.pii_hash)], table
    held = warehouse.query("SELECT source_partition, sender_account_id FROM payment_transactions")
    assert [(r["source_partition"], r["sender_account_id"]) for r in held] == [
        (copy.payment.source_partition, other.payment.sender_account_id)]
    # the erased subject's payment left no trace; a replay changes nothing
    assert warehouse.query("SELECT COUNT(*) AS n FROM dead_letter_events")[0]["n"] == 0
    assert all(n == 0 for n in warehouse.land(build_batch([erased, copy])).values())


def test_a_duckdb_file_from_before_keys_were_dropped_still_lands_once(tmp, monkeypatch):
    """Files written when every payment table had its own key keep it: landing still works
    on them and still inserts nothing twice."""
    from payflow.warehouse.duck import DuckDBWarehouse
    monkeypatch.setattr(schema, "DUCKDB_KEYED_BY_PAYMENT", ())
    old = DuckDBWarehouse(str(tmp / "old.duckdb"))
    old.ensure_schema()
    old.close()
    monkeypatch.undo()
    w = DuckDBWarehouse(str(tmp / "old.duckdb"))
    w.ensure_schema()
    result, valid = processed()
    keys = {r["table_name"] for r in w.query(
        "SELECT table_name FROM duckdb_constraints() WHERE constraint_type = 'PRIMARY KEY'")}
    assert {"payment_transactions_fraud", "pii_masking_audit"} <= keys
    w.land(build_batch(result.enriched[:300]))
    again = w.land(build_batch(result.enriched))
    assert again["payment_transactions_fraud"] == again["pii_masking_audit"] == len(valid) - 300
    n = w.query("SELECT COUNT(*) AS n FROM pii_masking_audit")[0]["n"]
    assert n == len(valid)
    w.close()


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
    duck_tables = " ".join(s for s in schema.duckdb_statements() if s.startswith("CREATE TABLE"))
    # (a view's window function may PARTITION BY; a table has no storage partitioning in DuckDB)
    assert "NOT ENFORCED" not in duck and "PARTITION BY" not in duck_tables and "DECIMAL(38, 9)" in duck
