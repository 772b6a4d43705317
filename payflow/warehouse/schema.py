"""The warehouse schema from sql/*.sql (BigQuery dialect), rendered per backend with sqlglot.

DuckDB: NOT ENFORCED is dropped (DuckDB enforces the key, which insert-or-ignore relies on),
except on the tables in DUCKDB_KEYED_BY_PAYMENT, which carry no key of their own; and
PARTITION BY / CLUSTER BY are dropped (DuckDB has no such storage options).
BigQuery: every table is qualified with project.dataset; against the emulator, which rejects
PRIMARY KEY ... NOT ENFORCED, the key clause is left out.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import sqlglot
from sqlglot import exp

from payflow.settings import ROOT, resolve_path


def sql_dir() -> Path:
    """PAYFLOW_SQL_DIR when set; else the DDL the package ships (payflow/sql in an installed
    wheel), or the checkout's sql/ (an editable install)."""
    configured = os.environ.get("PAYFLOW_SQL_DIR")
    if configured:
        return resolve_path(configured)
    packaged = Path(__file__).resolve().parents[1] / "sql"
    return packaged if packaged.is_dir() else ROOT / "sql"


@lru_cache(maxsize=1)
def parsed() -> tuple[exp.Expression, ...]:
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


_BQ_TYPE = {
    exp.DataType.Type.TEXT: "STRING", exp.DataType.Type.DECIMAL: "NUMERIC",
    exp.DataType.Type.TIMESTAMPTZ: "TIMESTAMP", exp.DataType.Type.BIGINT: "INT64",
    exp.DataType.Type.BOOLEAN: "BOOL",
}


@lru_cache(maxsize=1)
def tables() -> dict[str, list[Column]]:
    """Table name -> columns, in DDL order."""
    out: dict[str, list[Column]] = {}
    for statement in parsed():
        if isinstance(statement, exp.Create) and statement.kind == "TABLE":
            name = statement.this.this.name
            cols = []
            for col in statement.this.expressions:
                if isinstance(col, exp.ColumnDef):
                    not_null = any(isinstance(c.kind, exp.NotNullColumnConstraint) for c in col.constraints or [])
                    cols.append(Column(col.name, _BQ_TYPE[col.kind.this], not not_null))
            out[name] = cols
    return out


@lru_cache(maxsize=1)
def primary_keys() -> dict[str, list[str]]:
    out = {}
    for statement in parsed():
        if isinstance(statement, exp.Create) and statement.kind == "TABLE":
            for e in statement.this.expressions:
                if isinstance(e, exp.PrimaryKey):
                    out[statement.this.this.name] = [i.name for i in e.expressions]
    return out


def views() -> list[str]:
    return [s.this.name for s in parsed() if isinstance(s, exp.Create) and s.kind == "VIEW"]


# One row per payment, like payment_transactions: DuckDB lands a payment's rows here only in
# the transaction that inserts its payment_transactions row, so that table's key on
# transaction_id guards these too. A key each would cost more than it guards: every DuckDB
# checkpoint rewrites each key's whole index (duckdb/duckdb#24848), and three indexes on
# transaction_id made landing time grow with the table (200,000 payments: 11.8 s of landing,
# longest 1.3 s; with one index 8.1 s, longest 0.8 s; index memory 42 -> 16 MB).
DUCKDB_KEYED_BY_PAYMENT = ("payment_transactions_fraud", "pii_masking_audit")


def duckdb_statements() -> list[str]:
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
