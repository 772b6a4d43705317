"""The read-only query face (payflow/query.py), on a DuckDB file read directly and in the
landing process that answers reads for a worker (payflow/warehouse/child.py): no write by
any spelling, no file, URL or extension, bounded in time and rows, rolled back always."""
from __future__ import annotations

import json
import os
import stat
import time
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from payflow import query
from payflow.warehouse import duck_shared
from payflow.settings import Settings
from payflow.warehouse.duck import DuckDBWarehouse

TXN = "txn_face_1"
WRITES = [
    f"WITH u AS (UPDATE payment_transactions SET amount = 999999.99 WHERE transaction_id = '{TXN}' "
    "RETURNING transaction_id, amount) SELECT * FROM u",
    "WITH d AS (DELETE FROM gdpr_erasures RETURNING *) SELECT * FROM d",
    "WITH i AS (INSERT INTO gdpr_erasures (request_id, pii_hash, mode) VALUES ('r', 'x', 'delete') RETURNING *) "
    "SELECT * FROM i",
    "SELECT * INTO copied FROM payment_transactions",
    "DELETE FROM gdpr_erasures",
    "SELECT 1; DELETE FROM gdpr_erasures",
    "CREATE TABLE t AS SELECT 1 AS x",
    "DROP TABLE gdpr_erasures",
    "COPY payment_transactions TO '/tmp/out.csv'",
    "ATTACH '/tmp/other.duckdb'",
    "INSTALL httpfs",
    "LOAD httpfs",
    "SET enable_external_access = true",
    "PRAGMA database_list",
    "CALL pragma_version()",
]
OUTSIDE = [
    "SELECT * FROM read_text('/proc/self/environ')",
    "SELECT * FROM read_csv_auto('/etc/passwd')",
    "SELECT * FROM read_csv_auto('http://127.0.0.1:9/x.csv')",
    "SELECT * FROM read_parquet('https://example.com/x.parquet')",
    "SELECT * FROM read_json_auto('/etc/hostname')",
    "SELECT * FROM read_blob('/etc/hostname')",
    "SELECT (SELECT content FROM read_text('/etc/hostname')) AS c",
    "SELECT * FROM glob('/*')",
    "SELECT * FROM `/etc/passwd`",
    "SELECT * FROM `http://127.0.0.1:9/x.csv`",
    "SELECT * FROM query('SELECT 1')",
    "SELECT * FROM duckdb_settings()",
    "SELECT getenv('HOME') AS h",
    "SELECT current_setting('memory_limit') AS m",
    "SELECT * FROM sqlite_master",
]
LEGITIMATE = [
    ("SELECT count(*) AS n FROM payment_transactions", [{"n": 1}]),
    ("SELECT amount FROM payment_transactions", [{"amount": Decimal("42.500000000")}]),
    ("SELECT currency, payments FROM daily_summary", None),
    ("SELECT day, payments FROM fraud_summary", None),
    ("WITH t AS (SELECT transaction_id FROM payment_transactions) SELECT count(*) AS n FROM t", [{"n": 1}]),
    ("SELECT COUNTIF(amount > 1) AS n FROM payment_transactions", [{"n": 1}]),
    ("SELECT count(*) AS n FROM range(10)", [{"n": 10}]),
    ("SELECT x FROM UNNEST([1, 2]) AS x ORDER BY x", [{"x": 1}, {"x": 2}]),
    ("SELECT count(*) AS n FROM payment_transactions WHERE transaction_id = @t", [{"n": 1}]),
]


@pytest.fixture
def warehouse_file(tmp_path, monkeypatch) -> Path:
    db = tmp_path / "w.duckdb"
    wh = DuckDBWarehouse(str(db))
    wh.ensure_schema()
    wh.con.execute("INSERT INTO payment_transactions (transaction_id, sender_account_id, receiver_account_id, "
                   "amount, currency, event_time, ingestion_time) VALUES (?, 'a1', 'a2', 42.5, 'EUR', now(), now())",
                   [TXN])
    wh.con.execute("INSERT INTO gdpr_erasures (request_id, pii_hash, mode, requested_at) "
                   "VALUES ('r1', 'h1', 'delete', now())")
    wh.close()
    monkeypatch.setenv("PAYFLOW_WAREHOUSE", f"duckdb:///{db}")
    return db


def _landed(db: Path) -> tuple:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return (con.execute("SELECT transaction_id, amount FROM payment_transactions").fetchall(),
                con.execute("SELECT request_id, pii_hash, mode FROM gdpr_erasures").fetchall())
    finally:
        con.close()


@pytest.mark.parametrize("sql", WRITES)
def test_no_write_by_any_spelling_on_a_file(warehouse_file, sql):
    before = _landed(warehouse_file)
    with pytest.raises(duck_shared.ReadOnlyViolation):
        query.run(sql)
    assert _landed(warehouse_file) == before


@pytest.mark.parametrize("sql", OUTSIDE)
def test_nothing_outside_the_warehouse_on_a_file(warehouse_file, sql):
    with pytest.raises(duck_shared.ReadOnlyViolation):
        query.run(sql)


@pytest.mark.parametrize("sql, rows", LEGITIMATE)
def test_legitimate_reads_still_answer(warehouse_file, sql, rows):
    got = query.run(sql, {"t": TXN} if "@t" in sql else None)
    if rows is not None:
        assert got == rows


def test_the_connection_refuses_even_what_the_check_would_miss(warehouse_file):
    """Behind the tree check: the connection a read runs on reads no file, changes no setting,
    and its transaction is rolled back whatever it did."""
    con = duckdb.connect(str(warehouse_file))
    duck_shared.harden(con, duck_shared.QueryBounds())
    cursor = con.cursor()
    with pytest.raises(duckdb.PermissionException):
        list(duck_shared.stream_rows(cursor, "SELECT * FROM read_text('/proc/self/environ')", None, duck_shared.QueryBounds()))
    with pytest.raises(duckdb.PermissionException):
        list(duck_shared.stream_rows(cursor, "SELECT * FROM read_csv_auto('/etc/passwd')", None, duck_shared.QueryBounds()))
    with pytest.raises(duckdb.Error, match="locked"):
        cursor.execute("SET enable_external_access = true")
    rows = list(duck_shared.stream_rows(cursor, "WITH d AS (DELETE FROM gdpr_erasures RETURNING *) SELECT * FROM d",
                                  None, duck_shared.QueryBounds()))
    assert rows and rows[0][0]["request_id"] == "r1"  # it ran (unchecked), and was rolled back:
    assert con.execute("SELECT count(*) FROM gdpr_erasures").fetchone() == (1,)
    con.close()


def test_a_read_is_stopped_at_its_time_bound(warehouse_file, monkeypatch):
    monkeypatch.setenv("PAYFLOW_QUERY_TIMEOUT_SECONDS", "1")
    started = time.monotonic()
    with pytest.raises(duck_shared.QueryBoundExceeded, match="PAYFLOW_QUERY_TIMEOUT_SECONDS"):
        query.run("SELECT sum(a.range * b.range) AS s FROM range(100000) AS a, range(100000) AS b")
    assert time.monotonic() - started < 10


def test_a_read_is_stopped_at_its_row_bound(warehouse_file, monkeypatch):
    monkeypatch.setenv("PAYFLOW_QUERY_MAX_ROWS", "5000")
    with pytest.raises(duck_shared.QueryBoundExceeded, match="more than 5000 rows.*PAYFLOW_QUERY_MAX_ROWS"):
        query.run("SELECT range AS n FROM range(10000000)")
    assert len(query.run("SELECT range AS n FROM range(5000)")) == 5000


def test_hmac_keys_from_a_file(tmp_path, monkeypatch):
    keys = "k-file:" + "ab" * 32
    path = tmp_path / "keys"
    path.write_text(keys + "\n")
    monkeypatch.delenv("PAYFLOW_HMAC_KEYS", raising=False)
    monkeypatch.setenv("PAYFLOW_HMAC_KEYS_FILE", str(path))
    assert Settings.from_env().hmac_keys == keys
    path.write_text("not-a-key")
    with pytest.raises(SystemExit, match="PAYFLOW_HMAC_KEYS_FILE is not valid") as refused:
        Settings.from_env()
    assert "not-a-key" not in str(refused.value)
    monkeypatch.setenv("PAYFLOW_HMAC_KEYS_FILE", str(tmp_path / "missing"))
    with pytest.raises(SystemExit, match="PAYFLOW_HMAC_KEYS_FILE=.*cannot be read"):
        Settings.from_env()


# -- the landing process, which answers reads for the worker ---------------------------------------
def _read(wh, sql: str, max_rows: int | None = None) -> tuple[int, object]:
    """A read through the landing process, page by page as the worker relays it."""
    status, body = wh.read_page({"sql": sql, "params": {}, "max_rows": max_rows}).result()
    rows: list = []
    while status == 200:
        page = duck_shared.loads(body)
        rows += page["rows"]
        if page["done"]:
            return status, rows
        status, body = wh.read_page({"cursor": page["cursor"]}).result()
    return status, json.loads(body)["error"]


@pytest.fixture
def landing_process(warehouse_file, monkeypatch):
    from payflow.warehouse.child import ChildProcessDuckDB

    monkeypatch.setenv("PAYFLOW_HMAC_KEYS", "k-env:" + "cd" * 32)
    monkeypatch.setenv("PAYFLOW_QUERY_TIMEOUT_SECONDS", "3")
    wh = ChildProcessDuckDB(str(warehouse_file), web_port=1, cache_mb=48,
                            bounds=duck_shared.QueryBounds.from_settings(Settings.from_env()))
    wh.ensure_schema()
    yield wh
    wh.close()


def test_the_landing_process_refuses_writes_and_outside_reads(landing_process, warehouse_file):
    for sql in WRITES + OUTSIDE:
        status, error = _read(landing_process, sql)
        assert status == 400 and "read-only" in error, (sql, error)
    for sql, rows in LEGITIMATE:
        if "@t" in sql:
            continue
        status, got = _read(landing_process, sql)
        assert status == 200, (sql, got)
        if rows is not None:
            assert got == rows
    assert landing_process.query("SELECT transaction_id, amount FROM payment_transactions") == [
        {"transaction_id": TXN, "amount": Decimal("42.500000000")}]
    assert len(landing_process.query("SELECT * FROM gdpr_erasures")) == 1


def test_the_landing_process_has_no_secrets_and_private_files(landing_process, warehouse_file):
    assert "PAYFLOW_HMAC_KEYS" in os.environ
    pid = landing_process._pool.submit(os.getpid).result()
    environment = Path(f"/proc/{pid}/environ").read_bytes()
    assert b"PAYFLOW_HMAC_KEYS" not in environment and b"cd" * 32 not in environment
    landing_process.erase([("k-env", "h-new")], "delete", "r-new")  # a write: the WAL exists meanwhile
    for path in (warehouse_file, Path(str(warehouse_file) + ".wal")):
        if path.exists():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_the_landing_process_bounds_reads_and_keeps_landing(landing_process):
    started = time.monotonic()
    status, error = _read(landing_process, "SELECT sum(a.range * b.range) AS s FROM range(100000) AS a, "
                                           "range(100000) AS b")
    assert status == 400 and "PAYFLOW_QUERY_TIMEOUT_SECONDS" in error
    assert time.monotonic() - started < 10
    status, error = _read(landing_process, "SELECT range AS n FROM range(10000000)", max_rows=20_000)
    assert status == 400 and "more than 20000 rows" in error
    # while a long read runs, a call behind it waits for one page at most
    slow = landing_process.read_page({"sql": "SELECT sum(a.range * b.range) AS s FROM range(100000) AS a, "
                                             "range(100000) AS b", "params": {}})
    waited = time.monotonic()
    assert landing_process.query("SELECT count(*) AS n FROM payment_transactions") == [{"n": 1}]
    assert time.monotonic() - waited < 2.0
    slow.result()
