"""`payflow query`: SQL on the warehouse, also while a worker runs (BigQuery's dialect, as every
warehouse query; read-only unless write=True). On the embedded DuckDB the read is checked
and bounded as payflow.warehouse.duck_shared describes; on BigQuery it is one query with no
write anywhere in it.

    from payflow import query
    rows = query.run("SELECT count(*) AS n FROM payment_transactions")
"""
from __future__ import annotations

from typing import Any

from payflow.settings import Settings
from payflow.warehouse import open_warehouse
from payflow.warehouse.duck_shared import QueryBounds, QueryError, WorkerWarehouse, checked_query, read_duckdb

__all__ = ["QueryError", "run"]


def run(sql: str, params: dict[str, Any] | None = None, *, write: bool = False,
        settings: Settings | None = None, url: str | None = None) -> list[dict[str, Any]]:
    """Rows of `sql` (BigQuery dialect, as every warehouse query) with named `params`.
    write=False (the default) accepts one read-only query, checked and bounded (the module's
    docstring). write=True runs any statement, on a file no worker holds, or on BigQuery; a
    worker takes no ad-hoc writes (erasure goes through the warehouse's erase(), which
    open_warehouse() gives to gdpr erase)."""
    settings = settings or Settings.from_env()
    bounds = QueryBounds.from_settings(settings)
    wh = open_warehouse(settings, url, read_only=not write)
    try:
        if isinstance(wh, WorkerWarehouse):
            if write:
                raise QueryError(f"a worker holds {wh.path}: it takes reads only (`payflow gdpr erase` erases "
                                 "through it); stop the worker to write")
            return wh.query(sql, params, max_rows=bounds.max_rows)
        if write:
            return wh.query(sql, params)
        con = getattr(wh, "con", None)
        if con is None:  # BigQuery: one query with no write anywhere in it, by sqlglot's reading
            checked_query(sql, dialect="bigquery")
            return wh.query(sql, params)
        return read_duckdb(con, sql, params, bounds)
    finally:
        wh.close()
