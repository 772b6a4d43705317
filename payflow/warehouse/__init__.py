"""The warehouse (DuckDB embedded by default, BigQuery in production)."""
from __future__ import annotations

from payflow.settings import Settings, WarehouseURL
from payflow.warehouse.base import Warehouse


def open_warehouse(settings: Settings, url: str | WarehouseURL | None = None, *,
                   child_process: bool = False, read_only: bool = False) -> Warehouse:
    """The warehouse at `url` (default PAYFLOW_WAREHOUSE), the one way to open one.
    `child_process`: run an embedded DuckDB in a process of its own (the worker does, see
    warehouse/child.py); else an embedded DuckDB is opened here, or reached through the
    running worker that holds its file (warehouse/duck_shared.py). `read_only`: DuckDB
    opened read-only (BigQuery's reads are checked by the caller, payflow/query.py)."""
    where = WarehouseURL.of(url) if url else settings.warehouse
    if where.is_duckdb:
        if child_process:
            from payflow.warehouse.child import ChildProcessDuckDB
            from payflow.warehouse.duck_shared import QueryBounds
            return ChildProcessDuckDB(where.path, web_port=settings.web_port, cache_mb=settings.duckdb_landing_cache_mb,
                                      bounds=QueryBounds.from_settings(settings))
        from payflow.warehouse.duck_shared import open_duckdb
        return open_duckdb(where.path, read_only=read_only)
    from payflow.warehouse.bq import BigQueryWarehouse
    return BigQueryWarehouse(where.project, where.dataset, endpoint=settings.bigquery_endpoint or None,
                             grpc_endpoint=settings.bigquery_grpc_endpoint or None)
