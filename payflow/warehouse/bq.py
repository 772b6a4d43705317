"""The BigQuery warehouse, through the official google-cloud-bigquery client.

Two landings, chosen by PAYFLOW_BQ_LANDING (docs/bigquery.md):
- "storage" (default): the Storage Write API, pending streams committed per table, no DML
  (bq_write.py); its cost is bounded by the batch, not the table.
- "merge": one MERGE per table and batch, from an array-of-struct query parameter,
  inserting only rows whose key is not there yet. Its ON clause reads every partition of
  the target, so its cost grows with the table; kept for comparison (`python -m
  payflow.bench.landing_cost`). Fields are projected one by one from UNNEST(@rows) (the
  emulator does not expand `SELECT *` over a struct array).
Neither uses the legacy streaming API (tabledata.insertAll): its insertId de-duplication is
best effort, and rows in its streaming buffer cannot be deleted or updated for a while,
which would block GDPR erasure.
"""
from __future__ import annotations

import json
import os
import threading
import time
import uuid
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from google.api_core.client_options import ClientOptions
from google.cloud import bigquery

from payflow.warehouse import schema
from payflow.warehouse.base import (
    ERASABLE, ERASED_AT, ERASED_FLAG, ID_CONFLICT, LANDING_ORDER, NULLED, ErasureReceipt, LandingBatch, Landed, Warehouse,
    anonymized,
    conflict_detail, find_conflicts,
)



_LAND_RETRY = bigquery.DEFAULT_RETRY.with_deadline(10)
LANDINGS = ("storage", "merge")


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


def grpc_endpoint(rest_endpoint: str) -> str:
    """host:port of the emulator's Storage API (gRPC) for its REST endpoint:
    PAYFLOW_BIGQUERY_GRPC_ENDPOINT, else the REST host on PAYFLOW_LOCAL_BQ_GRPC_PORT (9060,
    scripts/bqemulator.sh's default)."""
    explicit = os.environ.get("PAYFLOW_BIGQUERY_GRPC_ENDPOINT")
    if explicit:
        return explicit
    from urllib.parse import urlparse
    host = urlparse(rest_endpoint).hostname or "127.0.0.1"
    return f"{host}:{os.environ.get('PAYFLOW_LOCAL_BQ_GRPC_PORT', '9060')}"


class BigQueryWarehouse(Warehouse):
    name = "bigquery"

    def __init__(self, project: str, dataset: str, *, endpoint: str | None = None, client: Any = None,
                 landing: str | None = None, write_client: Any = None):
        self.project = project
        self.dataset = dataset
        self.emulated = bool(endpoint)
        self.endpoint = endpoint
        self.landing = landing or "storage"  # open_warehouse passes Settings.bq_landing
        self._landing_lock = threading.Lock()
        if self.landing not in LANDINGS:
            raise ValueError(f"PAYFLOW_BQ_LANDING must be one of {LANDINGS}, not {self.landing!r}")
        self.land_retry = _LAND_RETRY
        self.merge_timeout = 30.0  # the bench raises it: a MERGE on a big emulated table takes longer
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
        self._merge_sql: dict[str, str] = {}

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
                    channel = grpc.insecure_channel(grpc_endpoint(self.endpoint or ""))
                    self._write_client = bigquery_storage_v1.BigQueryWriteClient(
                        transport=BigQueryWriteGrpcTransport(channel=channel, credentials=AnonymousCredentials()))
                else:
                    self._write_client = bigquery_storage_v1.BigQueryWriteClient()
            self._storage = StorageWriteLanding(self, self._write_client)
        return self._storage

    # -- landing -------------------------------------------------------------------------
    def _merge_statement(self, table: str) -> str:
        if table in self._merge_sql:
            return self._merge_sql[table]
        cols = [c.name for c in schema.tables()[table]]
        keys = schema.primary_keys()[table]
        projected = ", ".join(f"r.{c} AS {c}" for c in cols)
        source = f"(SELECT {projected} FROM UNNEST(@rows) AS r)"
        if table in ERASABLE:
            rendered = {None: "s.{0} AS {0}", NULLED: "IF(e.mode IS NULL, s.{0}, NULL) AS {0}",
                        ERASED_AT: "IF(e.mode IS NULL, s.{0}, CURRENT_TIMESTAMP()) AS {0}",
                        ERASED_FLAG: "e.mode IS NOT NULL AS {0}"}
            select = [rendered[anonymized(table, c)].format(c) for c in cols]
            source = (f"(SELECT {', '.join(select)} FROM {source} AS s "
                      f"LEFT JOIN (SELECT pii_hash, MAX(mode) AS mode FROM {self._t('gdpr_erasures')} "
                      f"GROUP BY pii_hash) AS e ON e.pii_hash = s.pii_hash "
                      f"WHERE e.mode IS NULL OR e.mode = 'anonymize')")
        on = " AND ".join(f"t.{k} = s.{k}" for k in keys)
        sql = (f"MERGE {self._t(table)} AS t USING {source} AS s ON {on} "
               f"WHEN NOT MATCHED THEN INSERT ({', '.join(cols)}) VALUES ({', '.join('s.' + c for c in cols)})")
        self._merge_sql[table] = sql
        return sql

    def _rows_param(self, table: str, rows: list[dict[str, Any]]) -> bigquery.ArrayQueryParameter:
        cols = schema.tables()[table]
        structs = [bigquery.StructQueryParameter(None, *[
            bigquery.ScalarQueryParameter(c.name, c.bq_type, row[c.name]) for c in cols]) for row in rows]
        return bigquery.ArrayQueryParameter("rows", "STRUCT", structs)

    def land(self, batch: LandingBatch) -> Landed:
        # one landing at a time per process: a timed-out attempt still running in its thread
        # and the sink's retry never interleave (each is idempotent, not each other's guard)
        with self._landing_lock:
            if self.landing == "storage":
                return self.storage_landing().land(batch)
            return self.merge_land(batch)

    def merge_land(self, batch: LandingBatch) -> Landed:
        batch = batch.first_per_key()
        inserted = Landed()
        for table in LANDING_ORDER:
            rows = batch.rows(table)
            if table == "dead_letter_events" and inserted.conflicts:
                rows = rows + [{"source_partition": p, "source_offset": o, "reason": ID_CONFLICT,
                                "detail": conflict_detail(lp, lo), "transaction_id": txn,
                                "rejected_at": datetime.now(timezone.utc), "remains": None}
                               for txn, p, o, lp, lo in inserted.conflicts]
            if not rows:
                continue
            # short client-side retries: the sink's own retry loop (backoff, jitter, metrics,
            # logs) is the policy, so an outage is visible instead of hidden for ten minutes
            job = self.client.query(self._merge_statement(table), job_config=bigquery.QueryJobConfig(
                query_parameters=[self._rows_param(table, rows)]), retry=self.land_retry, job_retry=None,
                timeout=self.merge_timeout)
            job.result(retry=self.land_retry, timeout=self.merge_timeout / 2)
            inserted[table] = int(job.num_dml_affected_rows or 0)
            if table == "payment_transactions" and (inserted[table] < len(rows) or batch.repeated):
                inserted.conflicts = self._conflicts(rows, batch.repeated)
        return inserted

    def _conflicts(self, rows: list[dict[str, Any]],
                   repeated: dict[str, list[tuple[int, int]]]) -> list[tuple[str, int, int, int, int]]:
        """Some payments were not inserted (replays, erased subjects, id conflicts) or the
        batch has an id from several positions: which positions are not the one the table
        holds (Landed). Only then is the table read."""
        mine = {r["transaction_id"]: [(r["source_partition"], r["source_offset"])] for r in rows}
        mine.update(repeated)
        job = self.client.query(
            f"SELECT transaction_id, source_partition, source_offset FROM {self._t('payment_transactions')} "
            "WHERE transaction_id IN UNNEST(@ids)",
            job_config=bigquery.QueryJobConfig(query_parameters=[
                bigquery.ArrayQueryParameter("ids", "STRING", list(mine))]), retry=_LAND_RETRY, job_retry=None,
            timeout=30)
        landed = [(r["transaction_id"], r["source_partition"], r["source_offset"])
                  for r in job.result(retry=_LAND_RETRY, timeout=15)]
        return find_conflicts(mine, landed)

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
    return "STRING"
