"""The BigQuery warehouse, through the official google-cloud-bigquery client.

Landing is pure DML: one MERGE per table and batch, from an array-of-struct query
parameter, inserting only rows whose key is not there yet. Why not the streaming API:
its insertId de-duplication is best effort (about a minute), and rows in its streaming
buffer cannot be deleted or updated for a while, which would block GDPR erasure. DML rows
are exactly-once per key and erasable at once. Fields are projected one by one from
UNNEST(@rows) (the emulator does not expand `SELECT *` over a struct array).
"""
from __future__ import annotations

import json
import time
import uuid
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from google.api_core.client_options import ClientOptions
from google.cloud import bigquery

from payflow.warehouse import schema
from payflow.warehouse.base import (
    ERASABLE, ID_CONFLICT, LANDING_ORDER, LINK_COLUMNS, ErasureReceipt, LandingBatch, Landed, Warehouse,
    conflict_detail, find_conflicts,
)

ERASURE_MODES = ("delete", "anonymize")


_LAND_RETRY = bigquery.DEFAULT_RETRY.with_deadline(10)


class BigQueryWarehouse(Warehouse):
    name = "bigquery"

    def __init__(self, project: str, dataset: str, *, endpoint: str | None = None, client: Any = None):
        self.project = project
        self.dataset = dataset
        self.emulated = bool(endpoint)
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
        self.client.create_dataset(bigquery.Dataset(f"{self.project}.{self.dataset}"), exists_ok=True)
        for statement in schema.bigquery_statements(self.project, self.dataset, primary_keys=not self.emulated):
            self.client.query(statement).result()

    # -- landing -------------------------------------------------------------------------
    def _merge_statement(self, table: str) -> str:
        if table in self._merge_sql:
            return self._merge_sql[table]
        cols = [c.name for c in schema.tables()[table]]
        keys = schema.primary_keys()[table]
        projected = ", ".join(f"r.{c} AS {c}" for c in cols)
        source = f"(SELECT {projected} FROM UNNEST(@rows) AS r)"
        if table in ERASABLE:
            links = set(LINK_COLUMNS[table])
            select = []
            for c in cols:
                if c in links:
                    select.append(f"IF(e.mode IS NULL, s.{c}, NULL) AS {c}")
                elif c in ("anonymized_at", "erasure_timestamp"):
                    select.append(f"IF(e.mode IS NULL, s.{c}, CURRENT_TIMESTAMP()) AS {c}")
                elif c == "erasure_requested":
                    select.append(f"e.mode IS NOT NULL AS {c}")
                else:
                    select.append(f"s.{c} AS {c}")
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
            bigquery.ScalarQueryParameter(c.name, c.bq_type, _bq_value(row[c.name])) for c in cols]) for row in rows]
        return bigquery.ArrayQueryParameter("rows", "STRUCT", structs)

    def land(self, batch: LandingBatch) -> Landed:
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
                query_parameters=[self._rows_param(table, rows)]), retry=_LAND_RETRY, job_retry=None, timeout=30)
            job.result(retry=_LAND_RETRY, timeout=15)
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
    def erase(self, pii_hashes: list[tuple[str, str]], mode: str, request_id: str | None = None) -> ErasureReceipt:
        if mode not in ERASURE_MODES:
            raise ValueError(f"erasure mode must be one of {ERASURE_MODES}")
        request_id = request_id or str(uuid.uuid4())
        started = time.perf_counter()
        hashes = [h for _, h in pii_hashes]
        now = datetime.now(timezone.utc)
        hp = bigquery.ArrayQueryParameter("hashes", "STRING", hashes)

        def dml(sql: str, *extra: Any) -> int:
            job = self.client.query(sql, job_config=bigquery.QueryJobConfig(query_parameters=[hp, *extra]))
            job.result()
            return int(job.num_dml_affected_rows or 0)

        for key_id, h in pii_hashes:
            self.client.query(
                f"INSERT INTO {self._t('gdpr_erasures')} (request_id, pii_hash, pii_key_id, mode, requested_at) "
                f"VALUES (@rid, @h, @kid, @mode, @now)",
                job_config=bigquery.QueryJobConfig(query_parameters=[
                    bigquery.ScalarQueryParameter("rid", "STRING", request_id),
                    bigquery.ScalarQueryParameter("h", "STRING", h),
                    bigquery.ScalarQueryParameter("kid", "STRING", key_id),
                    bigquery.ScalarQueryParameter("mode", "STRING", mode),
                    bigquery.ScalarQueryParameter("now", "TIMESTAMP", now)])).result()
        ids_rows = self.client.query(
            f"SELECT transaction_id FROM {self._t('pii_masking_audit')} WHERE pii_hash IN UNNEST(@hashes) "
            f"UNION DISTINCT SELECT transaction_id FROM {self._t('payment_transactions')} WHERE pii_hash IN UNNEST(@hashes)",
            job_config=bigquery.QueryJobConfig(query_parameters=[hp])).result()
        ids = [r.transaction_id for r in ids_rows]
        ip = bigquery.ArrayQueryParameter("ids", "STRING", ids)
        ts = bigquery.ScalarQueryParameter("now", "TIMESTAMP", now)
        affected: dict[str, int] = {}
        for table in ("payment_transactions", "payment_transactions_fraud"):
            if mode == "delete":
                affected[table] = dml(f"DELETE FROM {self._t(table)} WHERE transaction_id IN UNNEST(@ids)", ip)
            else:
                sets = ", ".join(f"{c} = NULL" for c in LINK_COLUMNS[table])
                affected[table] = dml(f"UPDATE {self._t(table)} SET {sets}, anonymized_at = @now "
                                      f"WHERE transaction_id IN UNNEST(@ids)", ip, ts)
        if mode == "delete":
            affected["deduplication_audit"] = dml(
                f"DELETE FROM {self._t('deduplication_audit')} WHERE transaction_id IN UNNEST(@ids)", ip)
            affected["late_events"] = dml(f"DELETE FROM {self._t('late_events')} WHERE pii_hash IN UNNEST(@hashes)")
        else:
            affected["late_events"] = dml(
                f"UPDATE {self._t('late_events')} SET pii_hash = NULL WHERE pii_hash IN UNNEST(@hashes)")
        affected["pii_masking_audit"] = dml(
            f"UPDATE {self._t('pii_masking_audit')} SET pii_hash = NULL, pii_key_id = NULL, user_email = NULL, "
            f"erasure_requested = TRUE, erasure_timestamp = @now WHERE transaction_id IN UNNEST(@ids)", ip, ts)
        self.client.query(
            f"UPDATE {self._t('gdpr_erasures')} SET completed_at = CURRENT_TIMESTAMP(), rows_affected = @ra "
            f"WHERE request_id = @rid",
            job_config=bigquery.QueryJobConfig(query_parameters=[
                bigquery.ScalarQueryParameter("ra", "STRING", json.dumps(affected)),
                bigquery.ScalarQueryParameter("rid", "STRING", request_id)])).result()
        return ErasureReceipt(mode, hashes, affected, time.perf_counter() - started, request_id)


def _bq_value(v: Any) -> Any:
    if isinstance(v, Decimal):
        return v  # the client sends NUMERIC parameters as exact decimal strings
    return v


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
