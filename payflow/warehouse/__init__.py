"""The warehouse (DuckDB embedded by default, BigQuery in production)."""
from __future__ import annotations

from payflow.settings import Settings, WarehouseURL
from payflow.warehouse.base import Warehouse


def open_warehouse(settings: Settings, url: str | WarehouseURL | None = None, *,
                   child_process: bool = False) -> Warehouse:
    """The warehouse at `url` (default PAYFLOW_WAREHOUSE). `child_process`: run an embedded
    DuckDB in a process of its own (the worker does, see warehouse/child.py)."""
    where = WarehouseURL.of(url) if url else settings.warehouse
    if where.is_duckdb:
        if child_process:
            from payflow.warehouse.child import ChildProcessDuckDB
            return ChildProcessDuckDB(where.path)
        # directly, or through the running worker that holds the file (payflow/query.py)
        from payflow.query import open_duckdb
        return open_duckdb(where.path)
    from payflow.warehouse.bq import BigQueryWarehouse
    return BigQueryWarehouse(where.project, where.dataset, endpoint=settings.bigquery_endpoint or None,
                             landing=settings.bq_landing)
