"""The query face (payflow/query.py, payflow/warehouse/duck_shared.py) without a worker: the typed JSON the worker answers in, the read-only
check, and direct reads that neither write nor create the file."""
from __future__ import annotations

from datetime import date, datetime, timezone
from decimal import Decimal

import duckdb
import pytest

from payflow import query
from payflow.warehouse import duck_shared
from payflow.settings import Settings


def test_values_cross_exactly():
    row = {"amount": Decimal("4532.100000000"), "at": datetime(2026, 11, 20, 8, 0, 1, 5, tzinfo=timezone.utc),
           "day": date(2026, 11, 20), "flags": ["velocity", None], "n": 3, "ok": True, "share": 0.25,
           "nested": {"k": Decimal("1.5")}}
    back = duck_shared.loads(duck_shared.dumps(row))
    assert back == row
    assert isinstance(back["amount"], Decimal) and back["at"].tzinfo is not None


@pytest.mark.parametrize("sql, ok", [
    ("SELECT 1", True),
    ("WITH t AS (SELECT 1 AS x) SELECT x FROM t", True),
    ("DELETE FROM t", False),
    ("SELECT 1; DROP TABLE t", False),
    ("INSERT INTO t VALUES (1)", False),
    ("COPY t TO '/tmp/x.csv'", False),
    ("ATTACH '/tmp/other.duckdb'", False),
    ("not sql at all", False),
])
def test_only_one_select_is_read_only(sql, ok):
    assert duck_shared.is_read_only(duckdb.connect(), sql) is ok


def test_direct_reads_refuse_writes_and_never_create_the_file(tmp_path, monkeypatch):
    from payflow.warehouse.duck import DuckDBWarehouse

    db = tmp_path / "w.duckdb"
    monkeypatch.setenv("PAYFLOW_WAREHOUSE", f"duckdb:///{db}")
    with pytest.raises(duck_shared.QueryError, match="does not exist"):
        query.run("SELECT 1 AS n")
    assert not db.exists()
    wh = DuckDBWarehouse(str(db))
    wh.ensure_schema()
    wh.close()
    assert query.run("SELECT count(*) AS n FROM payment_transactions", settings=Settings.from_env()) == [{"n": 0}]
    with pytest.raises(duck_shared.ReadOnlyViolation):
        query.run("DELETE FROM payment_transactions")
    with pytest.raises(duck_shared.ReadOnlyViolation):
        query.run("SELECT 1; DELETE FROM payment_transactions")
