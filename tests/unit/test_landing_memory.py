"""The DuckDB landing process's memory: no sqlglot in it, and DuckDB's cache of table blocks
bounded by a limit that follows the memory DuckDB cannot evict (its key index)."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

import duckdb
import pytest

from payflow.models import EnrichedPayment, FraudAssessment, MaskedPayment
from payflow.warehouse import schema
from payflow.warehouse.base import TransientWarehouseError, build_batch
from payflow.warehouse.child import ChildProcessDuckDB
from payflow.warehouse.duck import DuckDBWarehouse
from payflow.warehouse.duck_shared import QueryBounds

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc)


def _batch(first: int, n: int):
    enriched = [EnrichedPayment(MaskedPayment(
        transaction_id=f"txn_{i:09d}", event_time=NOW - timedelta(seconds=i), sender_account_id=f"acct_{i % 97}",
        receiver_account_id="mrch_b", amount=Decimal("12.50"), currency="EUR",
        credit_card_masked="XXXX-XXXX-XXXX-1111", cvv_masked="XXX", card_expiry_masked="12/XX", card_brand="visa",
        pii_hash=f"{i:064x}", pii_key_id="k1", masked_at=NOW, masking_reason="why", ip_address="10.0.0.1",
        geo_region="eu-west", device_id=f"dev_{i}", merchant_id="mrch_b", user_email=None,
        source_partition=0, source_offset=i), FraudAssessment(10, [], 0, 1, 1)) for i in range(first, first + n)]
    return build_batch(enriched, now=NOW)


def test_the_landing_process_lands_and_reads_the_ledger_without_sqlglot(tmp_path):
    wh = ChildProcessDuckDB(str(tmp_path / "w.duckdb"), web_port=0, cache_mb=48, bounds=QueryBounds())
    try:
        wh.ensure_schema()
        assert wh.erased_subjects() == []
        assert wh.land(_batch(0, 50))["payment_transactions"] == 50
        assert wh._pool.submit(eval, "'sqlglot' in __import__('sys').modules").result() is False
        # a query still works: sqlglot comes in when one needs it
        assert wh.query("SELECT count(*) AS n FROM payment_transactions") == [{"n": 50}]
    finally:
        wh.close()


def test_the_schema_snapshot_is_what_the_ddl_parses_to():
    snap = schema.snapshot()
    schema.preload(snap)
    try:
        assert [c.name for c in schema.tables()["payment_transactions"]][0] == "transaction_id"
        assert schema.primary_keys()["payment_transactions"] == ["transaction_id"]
        assert schema.duckdb_statements() == snap["duckdb_statements"]
    finally:
        schema._preloaded = None
        schema.tables.cache_clear()
        schema.primary_keys.cache_clear()
    parsed = schema.tables()
    assert {t: [tuple(c) for c in cols] for t, cols in snap["tables"].items()} == \
        {t: [(c.name, c.bq_type, c.nullable) for c in cols] for t, cols in parsed.items()}


def _base_table_mb(wh: DuckDBWarehouse) -> float:
    row = wh.con.execute("SELECT memory_usage_bytes FROM duckdb_memory() WHERE tag = 'BASE_TABLE'").fetchone()
    return row[0] / 2**20


def _limit(wh: DuckDBWarehouse) -> int:
    return wh.con.execute("SELECT current_setting('memory_limit')").fetchone()[0]


def _pinned(wh: DuckDBWarehouse) -> int:
    return wh.con.execute("SELECT sum(memory_usage_bytes) FROM duckdb_memory() WHERE tag <> 'BASE_TABLE'").fetchone()[0]


def test_the_memory_limit_follows_what_duckdb_cannot_evict(tmp_path):
    unbounded = DuckDBWarehouse(str(tmp_path / "a.duckdb"))
    bounded = DuckDBWarehouse(str(tmp_path / "b.duckdb"))
    for wh in (unbounded, bounded):
        wh.ensure_schema()
        wh.con.execute("SET threads = 1")
        wh.con.execute("SET checkpoint_threshold = '1MB'")  # blocks written out early, as a long run does
    default_limit = _limit(unbounded)
    bounded.limit_cache(1)
    for start in range(0, 60_000, 5_000):
        for wh in (unbounded, bounded):
            wh.land(_batch(start, 5_000))
        # after each landing: the pinned memory plus the cache, in 16 MB steps
        assert _pinned(bounded) + 2**20 <= bounded._memory_limit < _pinned(bounded) + 2**20 + 16 * 2**20
    assert bounded.con.execute("SELECT count(*) FROM payment_transactions").fetchone()[0] == 60_000
    assert _limit(unbounded) == default_limit  # DuckDB's default: 80% of the machine's memory
    assert _limit(bounded) != default_limit
    assert _base_table_mb(bounded) < _base_table_mb(unbounded)
    for wh in (unbounded, bounded):
        wh.close()


def test_a_landing_out_of_memory_is_retried_with_more_room(tmp_path, monkeypatch):
    wh = DuckDBWarehouse(str(tmp_path / "w.duckdb"))
    wh.ensure_schema()
    wh.limit_cache(1)
    before = wh._cache_bytes
    real = wh._land
    calls = []

    def fails_once(batch):
        calls.append(1)
        if len(calls) == 1:
            raise duckdb.OutOfMemoryException("Out of Memory Error: could not allocate block")
        return real(batch)

    monkeypatch.setattr(wh, "_land", fails_once)
    with pytest.raises(TransientWarehouseError):
        wh.land(_batch(0, 10))
    assert wh._cache_bytes == 2 * before
    assert wh.land(_batch(0, 10))["payment_transactions"] == 10
    wh.close()


def test_the_landing_process_is_replaced_with_more_room_when_duckdb_needs_it(tmp_path):
    """The landing process's memory limit cannot change once its configuration is locked,
    while DuckDB's key index (which it cannot evict, and pins whole at each checkpoint)
    grows with the table. With a fixed limit the landings failed for good once the index
    outgrew it (a 128 MB limit: at about 1.7 million payments). Here the room beyond the
    index is tiny: a landing runs out of memory, the process is replaced by one with more,
    and the landing, tried again as the sink does, lands once; so does everything after."""
    wh = ChildProcessDuckDB(str(tmp_path / "w.duckdb"), web_port=0, cache_mb=16, bounds=QueryBounds())
    tries = 0
    try:
        wh.ensure_schema()
        for first in range(0, 60_000, 5_000):
            for _ in range(5):
                tries += 1
                try:
                    assert wh.land(_batch(first, 5_000))["payment_transactions"] == 5_000
                    break
                except TransientWarehouseError as exc:
                    assert "ran out of memory" in str(exc)
            else:
                raise AssertionError("a landing never fitted")
        assert wh.restarts >= 1 and tries > 12
        assert wh.query("SELECT count(*) AS n, count(DISTINCT transaction_id) AS ids FROM payment_transactions") == \
            [{"n": 60_000, "ids": 60_000}]
    finally:
        wh.close()
