"""The warehouse (DuckDB embedded by default, BigQuery in production)."""
from __future__ import annotations

from payflow.settings import Settings
from payflow.warehouse.base import Warehouse


def open_warehouse(settings: Settings, url: str | None = None, *, child_process: bool = False) -> Warehouse:
    """The warehouse at `url` (default PAYFLOW_WAREHOUSE). `child_process`: run an embedded
    DuckDB in a process of its own (the worker does, see warehouse/child.py)."""
    url = url or settings.warehouse_url
    if url.startswith("duckdb://"):
        path = url[len("duckdb://"):] or ":memory:"
        if child_process:
            from payflow.warehouse.child import ChildProcessDuckDB
            return ChildProcessDuckDB(path)
        # directly, or through the running worker that holds the file (payflow/query.py)
        from payflow.query import open_duckdb
        return open_duckdb(path)
    if url.startswith("bigquery://"):
        from payflow.warehouse.bq import BigQueryWarehouse
        project, _, dataset = url[len("bigquery://"):].partition("/")
        if not project or not dataset:
            raise ValueError("PAYFLOW_WAREHOUSE for BigQuery must look like bigquery://PROJECT/DATASET")
        return BigQueryWarehouse(project, dataset, endpoint=settings.bigquery_endpoint or None,
                                 landing=settings.bq_landing)
    raise ValueError(f"PAYFLOW_WAREHOUSE {url!r}: expected duckdb:///PATH or bigquery://PROJECT/DATASET")
