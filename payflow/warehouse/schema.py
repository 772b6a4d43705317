"""The warehouse schema from sql/*.sql (BigQuery dialect), rendered per backend with sqlglot.

DuckDB: NOT ENFORCED is dropped (DuckDB enforces the key, which insert-or-ignore relies on),
except on the tables in DUCKDB_KEYED_BY_PAYMENT, which carry no key of their own; and
PARTITION BY / CLUSTER BY are dropped (DuckDB has no such storage options).
BigQuery: every table is qualified with project.dataset; against the emulator, which rejects
PRIMARY KEY ... NOT ENFORCED, the key clause is left out.

sqlglot is imported where a statement is parsed or rendered, not with this module: the DuckDB
landing process takes the parsed schema as a snapshot (snapshot(), preload()) made by a
short-lived process, and so does without sqlglot's ~40 MB until a query or an erasure needs it.
"""
from __future__ import annotations

import os
from dataclasses import astuple, dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from payflow.settings import ROOT, resolve_path

if TYPE_CHECKING:
    from sqlglot import exp


def sql_dir() -> Path:
    """PAYFLOW_SQL_DIR when set; else the DDL the package ships (payflow/sql in an installed
    wheel), or the checkout's sql/ (an editable install)."""
    configured = os.environ.get("PAYFLOW_SQL_DIR")
    if configured:
        return resolve_path(configured)
    packaged = Path(__file__).resolve().parents[1] / "sql"
    return packaged if packaged.is_dir() else ROOT / "sql"


@lru_cache(maxsize=1)
def parsed() -> tuple["exp.Expression", ...]:
    import sqlglot
    out = []
    for path in sorted(sql_dir().glob("*.sql")):
        for statement in sqlglot.parse(path.read_text(), read="bigquery"):
            if statement is not None:
                statement.comments = None
                out.append(statement)
    return tuple(out)


@dataclass(frozen=True)
class Column:
    name: str
    bq_type: str  # STRING, NUMERIC, TIMESTAMP, INT64, BOOL
    nullable: bool


_BQ_TYPE = {"TEXT": "STRING", "DECIMAL": "NUMERIC", "TIMESTAMPTZ": "TIMESTAMP", "BIGINT": "INT64",
            "BOOLEAN": "BOOL"}  # sqlglot's DataType.Type names

# the schema as a snapshot (preload): what this process uses instead of parsing the DDL
_preloaded: dict[str, Any] | None = None


def snapshot() -> dict[str, Any]:
    """The parsed schema as plain JSON-able data: what the DuckDB landing process needs."""
    return {"tables": {t: [astuple(c) for c in cols] for t, cols in tables().items()},
            "primary_keys": primary_keys(), "views": views(), "duckdb_statements": duckdb_statements()}


def preload(data: dict[str, Any]) -> None:
    """Use a snapshot() (made by another process) instead of parsing the DDL here."""
    global _preloaded
    _preloaded = {**data, "tables": {t: [Column(*c) for c in cols] for t, cols in data["tables"].items()}}
    tables.cache_clear()
    primary_keys.cache_clear()


@lru_cache(maxsize=1)
def tables() -> dict[str, list[Column]]:
    """Table name -> columns, in DDL order."""
    if _preloaded is not None:
        return _preloaded["tables"]
    from sqlglot import exp
    out: dict[str, list[Column]] = {}
    for statement in parsed():
        if isinstance(statement, exp.Create) and statement.kind == "TABLE":
            name = statement.this.this.name
            cols = []
            for col in statement.this.expressions:
                if isinstance(col, exp.ColumnDef):
                    not_null = any(isinstance(c.kind, exp.NotNullColumnConstraint) for c in col.constraints or [])
                    cols.append(Column(col.name, _BQ_TYPE[col.kind.this.name], not not_null))
            out[name] = cols
    return out


@lru_cache(maxsize=1)
def primary_keys() -> dict[str, list[str]]:
    if _preloaded is not None:
        return _preloaded["primary_keys"]
    from sqlglot import exp
    out = {}
    for statement in parsed():
        if isinstance(statement, exp.Create) and statement.kind == "TABLE":
            for e in statement.this.expressions:
                if isinstance(e, exp.PrimaryKey):
                    out[statement.this.this.name] = [i.name for i in e.expressions]
    return out


def views() -> list[str]:
    if _preloaded is not None:
        return list(_preloaded["views"])
    from sqlglot import exp
    return [s.this.name for s in parsed() if isinstance(s, exp.Create) and s.kind == "VIEW"]


# One row per payment, like payment_transactions: DuckDB lands a payment's rows here only in
# the transaction that inserts its payment_transactions row, so that table's key on
# transaction_id guards these too. A key each would cost more than it guards: every DuckDB
# checkpoint rewrites each key's whole index (duckdb/duckdb#24848), and three indexes on
# transaction_id made landing time grow with the table (measured in docs/performance.md).
DUCKDB_KEYED_BY_PAYMENT = ("payment_transactions_fraud", "pii_masking_audit")


def duckdb_statements() -> list[str]:
    if _preloaded is not None:
        return list(_preloaded["duckdb_statements"])
    from sqlglot import exp
    out = []
    for statement in parsed():
        s = statement.copy()
        unkeyed = isinstance(s, exp.Create) and s.kind == "TABLE" and s.this.this.name in DUCKDB_KEYED_BY_PAYMENT
        for pk in list(s.find_all(exp.PrimaryKey)):
            if unkeyed:
                pk.pop()
            else:
                pk.set("options", None)
        props = s.args.get("properties")
        if props is not None:
            kept = [p for p in props.expressions
                    if not isinstance(p, (exp.PartitionedByProperty, exp.ClusterProperty))]
            s.set("properties", exp.Properties(expressions=kept) if kept else None)
        out.append(s.sql("duckdb"))
    return out


def bigquery_statements(project: str, dataset: str, *, primary_keys: bool = True) -> list[str]:
    from sqlglot import exp
    out = []
    for statement in parsed():
        s = statement.copy()
        for table in s.find_all(exp.Table):
            if not table.args.get("db"):
                table.set("db", exp.to_identifier(dataset))
                table.set("catalog", exp.to_identifier(project))
        if not primary_keys:
            for pk in list(s.find_all(exp.PrimaryKey)):
                pk.pop()
        out.append(s.sql("bigquery"))
    return out


def render_sql(sql: str, dialect: str, *, project: str | None = None, dataset: str | None = None,
               ignore_existing: bool = False) -> str:
    """A statement written in BigQuery's dialect (named parameters @name) for a backend:
    "bigquery" with the schema's tables qualified by project.dataset, or "duckdb" (named
    parameters $name; `ignore_existing` makes an INSERT an INSERT OR IGNORE, for a table
    DuckDB keys)."""
    import sqlglot
    from sqlglot import exp
    tree = sqlglot.parse_one(sql, read="bigquery")
    if dialect == "bigquery":
        names = {*tables(), *views()}
        for table in tree.find_all(exp.Table):
            if not table.args.get("db") and table.name in names:
                table.set("db", exp.to_identifier(dataset))
                table.set("catalog", exp.to_identifier(project))
    elif ignore_existing and isinstance(tree, exp.Insert):
        tree.set("alternative", "IGNORE")
    return tree.sql(dialect)
