"""Test setup. Integration tests need the real broker and emulator that `make test` starts;
when they are missing the tests fail (with how to fix it), they are never skipped."""
from __future__ import annotations

import importlib.util
import os
import urllib.request
from pathlib import Path

import pytest

from payflow.settings import ROOT
from tests.helpers import BQ_GRPC, BQ_ENDPOINT, BQ_PROJECT, KAFKA

os.environ.setdefault("PAYFLOW_LOG_FORMAT", "text")


def _kafka_ready() -> bool:
    spec = importlib.util.spec_from_file_location("wait_for_kafka", ROOT / "scripts" / "wait_for_kafka.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    host, port = KAFKA.split(",")[0].rsplit(":", 1)
    try:
        return mod.metadata_ready(host, int(port))
    except OSError:
        return False


@pytest.fixture(scope="session")
def kafka() -> str:
    if not _kafka_ready():
        pytest.fail(f"no Kafka broker answers at {KAFKA}: run the tests with `make test` (it starts one)")
    return KAFKA


@pytest.fixture(scope="session")
def bq_endpoint() -> str:
    try:
        urllib.request.urlopen(f"{BQ_ENDPOINT}/bigquery/v2/projects/{BQ_PROJECT}/datasets", timeout=5)
    except OSError as exc:
        pytest.fail(f"no BigQuery emulator at {BQ_ENDPOINT} ({exc}): run the tests with `make test`")
    return BQ_ENDPOINT


@pytest.fixture
def bq_client(bq_endpoint):
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery

    return bigquery.Client(project=BQ_PROJECT, credentials=AnonymousCredentials(),
                           client_options=ClientOptions(api_endpoint=bq_endpoint))


@pytest.fixture
def tmp(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture(params=["duckdb", "bigquery"])
def warehouse(request, tmp):
    """A fresh warehouse on each backend: DuckDB file, or a BigQuery dataset on the emulator."""
    from payflow.warehouse.bq import BigQueryWarehouse
    from payflow.warehouse.duck import DuckDBWarehouse
    from tests.helpers import unique

    if request.param == "duckdb":
        w = DuckDBWarehouse(str(tmp / "w.duckdb"))
    else:
        endpoint = request.getfixturevalue("bq_endpoint")
        w = BigQueryWarehouse(BQ_PROJECT, unique("wh_"), endpoint=endpoint, grpc_endpoint=BQ_GRPC)
    w.ensure_schema()
    yield w
    if isinstance(w, BigQueryWarehouse):
        w.client.delete_dataset(f"{w.project}.{w.dataset}", delete_contents=True, not_found_ok=True)
    w.close()
