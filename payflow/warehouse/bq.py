"""The BigQuery warehouse, through the official google-cloud-bigquery client.

The landing is the Storage Write API's, no DML: in a consumer group, COMMITTED streams per
table and raw partition decided through the group (bq_streams.py); alone, PENDING streams
committed per table (bq_write.py); docs/bigquery.md. The MERGE landing it replaced, whose ON clause reads every
partition of the target, lives on in the landing-cost benchmark for comparison
(payflow/bench/landing_cost.py). Not the legacy streaming API (tabledata.insertAll) either:
its insertId de-duplication is best effort, and rows in its streaming buffer cannot be
deleted or updated for a while, which would block GDPR erasure.
"""
from __future__ import annotations

import json
import threading
import time
import uuid
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import Any

from google.api_core.client_options import ClientOptions
from google.cloud import bigquery

from payflow.settings import grpc_endpoint_beside
from payflow.warehouse import schema
from payflow.warehouse.base import ErasureReceipt, LandingBatch, Landed, TransientWarehouseError, Warehouse



_LAND_RETRY = bigquery.DEFAULT_RETRY.with_deadline(10)
LABELS_ATTEMPT_SECONDS = 60.0
# BigQuery's refusals of a DML statement for other DML on the same table (queue full, a
# concurrent update): a later attempt succeeds
_DML_CONTENTION = ("Too many DML statements outstanding", "concurrent update", "Could not serialize access")


def emulator_ddl(statement: str) -> str:
    """The one change the tests make to the production DDL, applied only where the emulator
    rejects a statement: bqemulator 1.4.0 cannot parse `PRIMARY KEY (...) NOT ENFORCED` (in
    CREATE TABLE or ALTER TABLE), so the key clause is removed. Partitioning, clustering,
    types and NOT NULL stay as production has them. (The key is informational in BigQuery:
    NOT ENFORCED, nothing checks it; the landing keeps keys unique itself.)"""
    import sqlglot
    from sqlglot import exp
    tree = sqlglot.parse_one(statement, read="bigquery")
    for pk in list(tree.find_all(exp.PrimaryKey)):
        pk.pop()
    return tree.sql("bigquery")


class BigQueryWarehouse(Warehouse):
    name = "bigquery"

    def __init__(self, project: str, dataset: str, *, endpoint: str | None = None, client: Any = None,
                 write_client: Any = None, grpc_endpoint: str | None = None):
        """`endpoint`: the emulator's REST API (None: Google's); `grpc_endpoint`: its Storage
        Write API, HOST:PORT (None: beside the REST endpoint, settings.grpc_endpoint_beside)."""
        self.project = project
        self.dataset = dataset
        self.emulated = bool(endpoint)
        self.endpoint = endpoint
        self.grpc_endpoint = grpc_endpoint or (grpc_endpoint_beside(endpoint) if endpoint else None)
        self._landing_lock = threading.Lock()
        self.land_retry = _LAND_RETRY
        self._write_client = write_client
        self._storage: Any = None
        # the storage landing's decision point (payflow.runtime.landing_fence), set by the
        # worker; None: each landing commits its streams without one (tests, the bench)
        self.fence: Any = None
        if client is not None:
            self.client = client
        elif endpoint:
            from google.auth.credentials import AnonymousCredentials
            self.client = bigquery.Client(project=project, credentials=AnonymousCredentials(),
                                          client_options=ClientOptions(api_endpoint=endpoint))
        else:
            self.client = bigquery.Client(project=project)

    def _t(self, table: str) -> str:
        return f"`{self.project}.{self.dataset}.{table}`"

    def ensure_schema(self) -> None:
        """The production DDL; against the emulator, a statement it cannot parse is run once
        more through emulator_ddl() (and nothing else differs)."""
        from google.api_core.exceptions import BadRequest
        self.client.create_dataset(bigquery.Dataset(f"{self.project}.{self.dataset}"), exists_ok=True)
        for statement in schema.bigquery_statements(self.project, self.dataset):
            try:
                self.client.query(statement).result()
            except BadRequest as exc:
                if not (self.emulated and "ENFORCED" in str(exc)):
                    raise
                self.client.query(emulator_ddl(statement)).result()

    def storage_landing(self) -> Any:
        if self._storage is None:
            from payflow.warehouse.bq_write import StorageWriteLanding
            if self._write_client is None:
                from google.cloud import bigquery_storage_v1
                if self.emulated:
                    import grpc
                    from google.auth.credentials import AnonymousCredentials
                    from google.cloud.bigquery_storage_v1.services.big_query_write.transports import (
                        BigQueryWriteGrpcTransport)
                    channel = grpc.insecure_channel(self.grpc_endpoint)
                    self._write_client = bigquery_storage_v1.BigQueryWriteClient(
                        transport=BigQueryWriteGrpcTransport(channel=channel, credentials=AnonymousCredentials()))
                else:
                    self._write_client = bigquery_storage_v1.BigQueryWriteClient()
            self._storage = StorageWriteLanding(self, self._write_client)
        return self._storage

    # -- landing -------------------------------------------------------------------------
    def land(self, batch: LandingBatch) -> Landed:
        # one landing at a time per process: a timed-out attempt still running in its thread
        # and the sink's retry never interleave (each is idempotent, not each other's guard)
        with self._landing_lock:
            return self.storage_landing().land(batch)

    def land_labels(self, rows: list[dict[str, Any]]) -> int:
        """One MERGE on the labels' key (topic position and content): its ON clause reads the
        key columns of fraud_labels, a table that grows with the labels fed back, not with
        payments. BigQuery queues DML per table and refuses some concurrent ones: those
        refusals, and an attempt past LABELS_ATTEMPT_SECONDS, are transient (retried)."""
        from google.api_core.exceptions import BadRequest
        if not rows:
            return 0
        cols = schema.tables()["fraud_labels"]
        names = [c.name for c in cols]
        source = f"(SELECT {', '.join(f'r.{n} AS {n}' for n in names)} FROM UNNEST(@rows) AS r)"
        on = " AND ".join(f"t.{k} = s.{k}" for k in schema.primary_keys()["fraud_labels"])
        sql = (f"MERGE {self._t('fraud_labels')} AS t USING {source} AS s ON {on} "
               f"WHEN NOT MATCHED THEN INSERT ({', '.join(names)}) VALUES ({', '.join('s.' + n for n in names)})")
        structs = [bigquery.StructQueryParameter(None, *[
            bigquery.ScalarQueryParameter(c.name, c.bq_type, row[c.name]) for c in cols]) for row in rows]
        try:
            job = self.client.query(sql, job_config=bigquery.QueryJobConfig(
                query_parameters=[bigquery.ArrayQueryParameter("rows", "STRUCT", structs)]), retry=self.land_retry,
                timeout=LABELS_ATTEMPT_SECONDS)
            job.result(retry=self.land_retry, timeout=LABELS_ATTEMPT_SECONDS)
        except BadRequest as exc:
            if any(words in str(exc) for words in _DML_CONTENTION):
                raise TransientWarehouseError(f"BigQuery DML contention on fraud_labels: {exc}") from exc
            raise
        return int(job.num_dml_affected_rows or 0)

    # -- reading -------------------------------------------------------------------------
    def query(self, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        import sqlglot
        from sqlglot import exp

        tree = sqlglot.parse_one(sql, read="bigquery")
        for table in tree.find_all(exp.Table):
            if not table.args.get("db") and table.name in (*schema.tables(), *schema.views()):
                table.set("db", exp.to_identifier(self.dataset))
                table.set("catalog", exp.to_identifier(self.project))
        config = bigquery.QueryJobConfig(query_parameters=[
            bigquery.ScalarQueryParameter(k, _param_type(v), v) for k, v in (params or {}).items()])
        result = self.client.query(tree.sql("bigquery"), job_config=config).result()
        return [dict(row.items()) for row in result]

    def string_columns(self) -> dict[str, list[str]]:
        return {t: [c.name for c in cols if c.bq_type == "STRING"] for t, cols in schema.tables().items()}

    # -- GDPR erasure --------------------------------------------------------------------
    def apply_erasure(self, hashes: list[str], mode: str, now: datetime) -> dict[str, int]:
        """The erasure plan's DML for these subjects, without a ledger row (erase() writes it;
        the landing calls this for a subject erased while it landed)."""
        return _apply_erasure(self, hashes, mode, now)

    def erase(self, pii_hashes: list[tuple[str, str]], mode: str, request_id: str | None = None) -> ErasureReceipt:
        """The erasure plan (compliance.gdpr.erasure_plan), one DML job per step."""
        from payflow.compliance.gdpr import LEDGER_COMPLETE, LEDGER_INSERT, erasure_plan
        erasure_plan(mode)  # an unknown mode is refused before the ledger is written
        request_id = request_id or str(uuid.uuid4())
        started = time.perf_counter()
        hashes = [h for _, h in pii_hashes]
        now = datetime.now(timezone.utc)

        def run(sql: str, *params: Any) -> Any:
            job = self.client.query(schema.render_sql(sql, "bigquery", project=self.project, dataset=self.dataset),
                                    job_config=bigquery.QueryJobConfig(query_parameters=list(params)))
            rows = job.result()
            return job, rows

        for key_id, h in pii_hashes:
            run(LEDGER_INSERT, bigquery.ScalarQueryParameter("rid", "STRING", request_id),
                bigquery.ScalarQueryParameter("h", "STRING", h), bigquery.ScalarQueryParameter("kid", "STRING", key_id),
                bigquery.ScalarQueryParameter("mode", "STRING", mode),
                bigquery.ScalarQueryParameter("now", "TIMESTAMP", now))
        affected = self.apply_erasure(hashes, mode, now)
        run(LEDGER_COMPLETE, bigquery.ScalarQueryParameter("ra", "STRING", json.dumps(affected)),
            bigquery.ScalarQueryParameter("rid", "STRING", request_id))
        return ErasureReceipt(mode, hashes, affected, time.perf_counter() - started, request_id)


def _apply_erasure(wh: "BigQueryWarehouse", hashes: list[str], mode: str, now: datetime) -> dict[str, int]:
    """The erasure plan's DML for these subjects (their ledger rows are written by the caller)."""
    from payflow.compliance.gdpr import SUBJECT_TRANSACTIONS, erasure_plan

    def run(sql: str, *params: Any) -> Any:
        job = wh.client.query(schema.render_sql(sql, "bigquery", project=wh.project, dataset=wh.dataset),
                              job_config=bigquery.QueryJobConfig(query_parameters=list(params)))
        return job, job.result()

    hp = bigquery.ArrayQueryParameter("hashes", "STRING", hashes)
    ids = [r.transaction_id for r in run(SUBJECT_TRANSACTIONS, hp)[1]]
    params = {"hashes": hp, "ids": bigquery.ArrayQueryParameter("ids", "STRING", ids),
              "now": bigquery.ScalarQueryParameter("now", "TIMESTAMP", now)}
    affected: dict[str, int] = {}
    for table, sql in erasure_plan(mode):
        job, _ = run(sql, *(p for name, p in params.items() if f"@{name}" in sql))
        affected[table] = int(job.num_dml_affected_rows or 0)
    return affected


def _param_type(v: Any) -> str:
    if isinstance(v, bool):
        return "BOOL"
    if isinstance(v, int):
        return "INT64"
    if isinstance(v, Decimal):
        return "NUMERIC"
    if isinstance(v, datetime):
        return "TIMESTAMP"
    if isinstance(v, date):
        return "DATE"
    return "STRING"
