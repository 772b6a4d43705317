"""BigQuery landing through the Storage Write API: what a landing appends, and a landing alone.

`plan` decides what a batch appends to each table. Given the floors of a landing in a
consumer group (payflow.warehouse.bq_streams: per table and raw partition, the offset below
which the table holds its rows), rows below them are replays, and only payment_transactions
is read, for id conflicts. Without them (a landing alone: tests, tools, no group), every
table is read for what it holds of the batch, in one query:

- the three payment tables: the batch's transaction_ids, pruned to the DATE(event_time)
  partitions the batch can touch (its event times +- `window_days`); a row whose id is
  already there is not appended (a replay), or, from another raw position, is an id
  conflict (base.Landed);
- dead_letter_events, late_events, deduplication_audit, keyed by raw position: which of the
  batch's (partition, offset) positions each holds, pruned to the replay window of their
  landing-time partitions;
- the erasure ledger (gdpr_erasures, clustered by pii_hash) for the batch's hashes, in both
  cases: delete-mode subjects are not appended, anonymize-mode ones without links.

A landing alone then writes one PENDING stream per table (CreateWriteStream, AppendRows
with offsets, FinalizeWriteStream) and commits each (BatchCommitWriteStreams): BigQuery
commits pending streams atomically only within one parent table, so each table is
idempotent on its own. Committed rows are ordinary table rows: DML (GDPR erasure) works on
them at once, unlike the legacy streaming buffer.
"""
from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta, timezone
from typing import Any, NamedTuple

import pyarrow as pa

from payflow import fault
from payflow.metrics import BQ_APPENDS, BQ_STREAMS_CREATED
from payflow.warehouse import schema
from payflow.warehouse.base import (
    ERASABLE, ERASED_AT, ERASED_FLAG, ID_CONFLICT, LANDING_ORDER, NULLED, PAYMENT_TABLES, LandingBatch, Landed,
    TransientWarehouseError, anonymized, conflict_detail, find_conflicts, same_payment, to_us,
)

log = logging.getLogger("payflow.sink")

# Arrow types sent for each BigQuery type (NUMERIC(38, 9) as decimal128: exact, no float)
_ARROW = {"STRING": pa.string(), "NUMERIC": pa.decimal128(38, 9), "TIMESTAMP": pa.timestamp("us", tz="UTC"),
          "INT64": pa.int64(), "BOOL": pa.bool_()}
# tables keyed by raw position: (partition column, offset column, time column they are partitioned by)
POSITIONED = {"dead_letter_events": ("source_partition", "source_offset", "rejected_at"),
              "late_events": ("source_partition", "source_offset", "received_at"),
              "deduplication_audit": ("duplicate_partition", "duplicate_offset", "detected_at")}
# one AppendRows request stays under BigQuery's 10 MB request limit
MAX_REQUEST_BYTES = 8 * 1024 * 1024
# table -> raw partition -> the offset below which the table holds that partition's rows
Floors = dict[str, dict[int, int]]


class Rows(NamedTuple):
    """A table's rows to append, and the raw position (partition, offset) each comes from."""
    columns: dict[str, list]
    partitions: list[int]
    offsets: list[int]


def _above_floors(columns: dict[str, list], pcol: str, ocol: str, floors: dict[int, int]) -> dict[str, list]:
    """The rows at or past their partition's floor (the others are replays)."""
    if not floors:
        return columns
    keep = [i for i, (p, o) in enumerate(zip(columns[pcol], columns[ocol])) if o >= floors.get(p, 0)]
    return _take(columns, keep)


class StorageWriteLanding:
    """Lands LandingBatches for a BigQueryWarehouse (its query client, dataset and table
    names) through a BigQueryWriteClient."""

    def __init__(self, warehouse: Any, write_client: Any, *, window_days: int = 1,
                 replay_window_days: int = 8, rpc_timeout: float = 15.0):
        self.wh = warehouse
        self.write = write_client
        self.window = timedelta(days=window_days)
        self.replay_window = timedelta(days=replay_window_days)
        self.rpc_timeout = rpc_timeout
        self._lock = threading.Lock()  # an abandoned attempt and its retry never interleave
        self.last_streams = 0  # streams created (a landing alone: by the last one; for quota accounting)
        self._group: Any = None  # the landing in a consumer group (bq_streams.GroupLanding)

    # -- landing -------------------------------------------------------------------------
    def land(self, batch: LandingBatch) -> Landed:
        with self._lock:
            fence = getattr(self.wh, "fence", None)
            if fence is not None and batch.partitions:
                if self._group is None:
                    from payflow.warehouse.bq_streams import GroupLanding
                    self._group = GroupLanding(self, fence)
                return self._group.land(batch)
            return self._land_alone(batch)

    def _land_alone(self, batch: LandingBatch) -> Landed:
        """A landing with no consumer group to decide it (tests, tools, the fence off): what
        each table holds is read from it, and one PENDING stream per table is committed."""
        landed, appends, hashes, erasures, now = self.plan(batch)
        fault.pause_at("before_write")
        streams = {table: self._write_pending(table, _arrow(table, rows.columns)) for table, rows in appends.items()}
        self.last_streams = len(streams)
        for i, (table, stream) in enumerate(streams.items()):  # one atomic commit per table (BigQuery's unit)
            if i == 1:
                fault.pause_at("between_tables")
            self.commit_stream(table, stream)
        if streams and hashes:
            self.erase_what_was_erased_meanwhile(hashes, erasures, now)
        return landed

    def plan(self, batch: LandingBatch, floors: Floors | None = None
             ) -> tuple[Landed, dict[str, Rows], set[str], dict[str, str], datetime]:
        """What a landing appends: (Landed, table -> its new rows, the batch's
        pii_hashes, the ledger's erasure modes for them, now). `batch` as built: one row
        per key is chosen here, once the ledger's erasures are known (a second decision gets
        the same batch again).

        `floors` None: what each table holds of the batch is read from it (its ids, its raw
        positions). Given: table -> raw partition -> the offset below which that table holds
        every row of that partition already (the group's decision says so,
        payflow.warehouse.bq_streams); rows below it are replays and are not appended, and
        only payment_transactions is read, for the batch's ids landed from another position
        (id conflicts)."""
        now = datetime.now(timezone.utc)
        landed = Landed()
        payments = batch.sources.get("payments")
        found: dict[str, set[str]] = {t: set() for t in PAYMENT_TABLES}
        positions_in_table: list[tuple[str, int | None, int | None]] = []
        erasures: dict[str, str] = {}
        hashes = set()
        for name in ("payments", "late_events"):
            if name in batch.sources:
                hashes.update(h for h in batch.sources[name]["pii_hash"] if h)
        positional = {table: batch.columns(table) for table in POSITIONED if batch.count(table)}
        there: dict[str, set[tuple[int, int]]] = {table: set() for table in POSITIONED}
        landed_senders: dict[str, tuple[str, int]] = {}
        if payments or hashes or positional:
            found, positions_in_table, erasures, there, landed_senders = self._lookup(
                payments, sorted(hashes), {} if floors is not None else positional,
                PAYMENT_TABLES[:1] if floors is not None else PAYMENT_TABLES)
        # one row per key, chosen knowing the erasures (base.LandingBatch.first_per_key)
        batch = batch.first_per_key(deleted={h for h, mode in erasures.items() if mode == "delete"})
        payments = batch.sources.get("payments")

        # conflicts: the batch's payment ids held from another raw position
        conflicts: list[tuple[str, int, int, int, int]] = []
        duplicates: list[tuple[str, int, int, int, int, int, int]] = []
        keep_payment: list[int] = []
        if payments:
            ids, parts, offs = payments["transaction_id"], payments["source_partition"], payments["source_offset"]
            mine = {t: [(p, o)] for t, p, o in zip(ids, parts, offs)}
            mine.update(batch.repeated)
            held = list(positions_in_table)
            held_ids = {t for t, _, _ in held}
            copies = dict(zip(zip(parts, offs), zip(payments["sender_account_id"], payments["event_time"])))
            copies.update(batch.copies)
            for i, (t, p, o) in enumerate(zip(ids, parts, offs)):
                if t not in held_ids and erasures.get(payments["pii_hash"][i]) != "delete":
                    held.append((t, p, o))  # lands now: the batch's other copies are conflicts
                    landed_senders[t] = copies[(p, o)]
            conflicts = find_conflicts(mine, held)
            duplicates = same_payment(conflicts, copies, landed_senders)
            refused = {c[:3] for c in conflicts}  # a refused copy lands in none of the tables
            keep_payment = [i for i, tpo in enumerate(zip(ids, parts, offs)) if tpo not in refused]
        landed.conflicts = conflicts
        landed.duplicates = duplicates
        copied = {d[:3] for d in duplicates}
        id_conflicts = [c for c in conflicts if c[:3] not in copied]

        # rows to append, per table
        appends: dict[str, Rows] = {}
        for table in LANDING_ORDER:
            columns = batch.columns(table) if batch.count(table) else None
            if table in PAYMENT_TABLES:
                if not columns:
                    continue
                rows = [i for i in keep_payment if columns["transaction_id"][i] not in found[table]]
                rows = [i for i in rows if erasures.get(payments["pii_hash"][i]) != "delete"]
                if floors is not None:
                    floor = floors.get(table, {})
                    rows = [i for i in rows if offs[i] >= floor.get(parts[i], 0)]
                columns = _take(columns, rows)
                where = ([parts[i] for i in rows], [offs[i] for i in rows])
            elif table in POSITIONED:
                if table == "deduplication_audit" and duplicates:
                    extra = _duplicate_rows(duplicates, now)
                    if floors is None:
                        there[table] |= self._held_positions(table, extra)
                    columns = extra if columns is None else {c: columns[c] + extra[c] for c in columns}
                if table == "dead_letter_events" and id_conflicts:
                    extra = _conflict_rows(id_conflicts, now)
                    # the conflicts' positions were not in the lookup (known only after it)
                    if floors is None:
                        there[table] |= self._held_positions(table, extra)
                    columns = extra if columns is None else {c: columns[c] + extra[c] for c in columns}
                if not columns:
                    continue
                pcol, ocol, _ = POSITIONED[table]
                # a position already there is a replay (an id conflict recorded at a position a
                # replay brings again included)
                rows = [i for i, (p, o) in enumerate(zip(columns[pcol], columns[ocol])) if (p, o) not in there[table]]
                columns = _take(columns, rows)
                if floors is not None:
                    columns = _above_floors(columns, pcol, ocol, floors.get(table, {}))
                if table == "late_events":
                    columns = _without_erased(table, columns, erasures, now)
                where = (columns[pcol], columns[ocol])
            if columns and table in PAYMENT_TABLES:
                columns = _without_erased(table, columns, erasures, now)  # anonymizes (deletes are out)
            n = len(next(iter(columns.values()))) if columns else 0
            landed[table] = n
            if n:
                appends[table] = Rows(columns, *where)
        return landed, appends, hashes, erasures, now

    def erase_what_was_erased_meanwhile(self, hashes: set[str], known: dict[str, str], now: datetime) -> None:
        """An erasure that reached the ledger after this landing's lookup may have run its DML
        before these rows were committed: read the ledger again for the batch's subjects and
        apply the erasure plan to any erased since (its ledger row is already there). Any
        erasure later than this read runs its DML after the commit, on the landed rows."""
        from google.cloud import bigquery
        job = self.wh.client.query(
            f"SELECT pii_hash, MAX(mode) AS mode FROM {self.wh._t('gdpr_erasures')} "
            "WHERE requested_at >= @since AND pii_hash IN UNNEST(@hashes) GROUP BY pii_hash",
            job_config=bigquery.QueryJobConfig(query_parameters=[
                bigquery.ScalarQueryParameter("since", "TIMESTAMP", now - timedelta(days=1)),
                bigquery.ArrayQueryParameter("hashes", "STRING", sorted(hashes))]),
            retry=self.wh.land_retry, job_retry=None, timeout=self.rpc_timeout)
        late: dict[str, list[str]] = {}
        for row in job.result(retry=self.wh.land_retry, timeout=self.rpc_timeout):
            if row["pii_hash"] not in known:
                late.setdefault(row["mode"], []).append(row["pii_hash"])
        for mode, subjects in late.items():
            self.wh.apply_erasure(subjects, mode, now)

    def _lookup(self, payments: dict[str, list] | None, hashes: list[str], positional: dict[str, dict[str, list]],
                payment_tables: tuple[str, ...] = PAYMENT_TABLES):
        """One query: which of the batch's payment ids each of `payment_tables` holds (pruned
        to the batch's event dates +- the window) with the positions payment_transactions
        holds them at, the erasure ledger's mode for the batch's hashes, and which of the
        batch's raw positions each position-keyed table in `positional` holds (pruned to the
        replay window)."""
        from google.cloud import bigquery
        parts, params = [], [bigquery.ArrayQueryParameter("hashes", "STRING", hashes)]
        if payments:
            times = payments["event_time"]
            lo = datetime.fromtimestamp(min(times) / 1e6, timezone.utc) - self.window
            hi = datetime.fromtimestamp(max(times) / 1e6, timezone.utc) + self.window
            params += [bigquery.ArrayQueryParameter("ids", "STRING", list(payments["transaction_id"])),
                       bigquery.ScalarQueryParameter("lo", "TIMESTAMP", lo),
                       bigquery.ScalarQueryParameter("hi", "TIMESTAMP", hi)]
            for table in payment_tables:
                # payment_transactions: where each id landed from, and its sender and event time
                # (a refused copy from the same sender is a duplicate: base.same_payment)
                pos = ("source_partition, source_offset, CAST(NULL AS STRING) AS mode, sender_account_id AS sender, "
                       "UNIX_MICROS(event_time) AS us") if table == "payment_transactions" \
                    else "CAST(NULL AS INT64), CAST(NULL AS INT64), CAST(NULL AS STRING), CAST(NULL AS STRING), " \
                         "CAST(NULL AS INT64)"
                parts.append(f"SELECT '{table}' AS t, transaction_id AS k, {pos} "
                             f"FROM {self.wh._t(table)} WHERE event_time >= @lo AND event_time <= @hi "
                             f"AND transaction_id IN UNNEST(@ids)")
        for table, columns in positional.items():
            pcol, ocol, tcol = POSITIONED[table]
            name = table.split("_")[0]
            params += [bigquery.ArrayQueryParameter(f"{name}_parts", "INT64", sorted(set(columns[pcol]))),
                       bigquery.ScalarQueryParameter(f"{name}_lo", "INT64", min(columns[ocol])),
                       bigquery.ScalarQueryParameter(f"{name}_hi", "INT64", max(columns[ocol]))]
            parts.append(f"SELECT '{table}', CAST(NULL AS STRING), {pcol}, {ocol}, CAST(NULL AS STRING), "
                         f"CAST(NULL AS STRING), CAST(NULL AS INT64) FROM {self.wh._t(table)} WHERE {tcol} >= @since AND {pcol} IN UNNEST(@{name}_parts) "
                         f"AND {ocol} BETWEEN @{name}_lo AND @{name}_hi")
        if positional:
            params.append(bigquery.ScalarQueryParameter("since", "TIMESTAMP",
                                                        datetime.now(timezone.utc) - self.replay_window))
        if hashes:
            parts.append(f"SELECT 'gdpr_erasures', pii_hash, CAST(NULL AS INT64), CAST(NULL AS INT64), MAX(mode), "
                         f"CAST(NULL AS STRING), CAST(NULL AS INT64) FROM {self.wh._t('gdpr_erasures')} WHERE pii_hash IN UNNEST(@hashes) GROUP BY pii_hash")
        found: dict[str, set[str]] = {t: set() for t in PAYMENT_TABLES}
        held: list[tuple[str, int | None, int | None]] = []
        erasures: dict[str, str] = {}
        there: dict[str, set[tuple[int, int]]] = {table: set() for table in POSITIONED}
        senders: dict[str, tuple[str, int]] = {}
        if not parts:
            return found, held, erasures, there, senders
        job = self.wh.client.query(" UNION ALL ".join(parts), job_config=bigquery.QueryJobConfig(
            query_parameters=params), retry=self.wh.land_retry, job_retry=None, timeout=self.rpc_timeout)
        for t, k, p, o, mode, sender, us in job.result(retry=self.wh.land_retry, timeout=self.rpc_timeout):
            if t == "gdpr_erasures":
                erasures[k] = mode
            elif t in POSITIONED:
                there[t].add((p, o))
            else:
                found[t].add(k)
                if t == "payment_transactions":
                    held.append((k, p, o))
                    senders[k] = (sender, us)
        return found, held, erasures, there, senders

    def _held_positions(self, table: str, columns: dict[str, list]) -> set[tuple[int, int]]:
        """Which of these raw positions `table` holds (pruned to the replay window)."""
        from google.cloud import bigquery
        pcol, ocol, tcol = POSITIONED[table]
        job = self.wh.client.query(
            f"SELECT {pcol}, {ocol} FROM {self.wh._t(table)} WHERE {tcol} >= @since "
            f"AND {pcol} IN UNNEST(@parts) AND {ocol} BETWEEN @lo AND @hi",
            job_config=bigquery.QueryJobConfig(query_parameters=[
                bigquery.ScalarQueryParameter("since", "TIMESTAMP", datetime.now(timezone.utc) - self.replay_window),
                bigquery.ArrayQueryParameter("parts", "INT64", sorted(set(columns[pcol]))),
                bigquery.ScalarQueryParameter("lo", "INT64", min(columns[ocol])),
                bigquery.ScalarQueryParameter("hi", "INT64", max(columns[ocol]))]),
            retry=self.wh.land_retry, job_retry=None, timeout=self.rpc_timeout)
        return {(r[0], r[1]) for r in job.result(retry=self.wh.land_retry, timeout=self.rpc_timeout)}

    # -- the Storage Write API ---------------------------------------------------------
    def _write_pending(self, table: str, rows: pa.Table) -> str:
        """A finalized PENDING stream holding `rows` (not visible until committed)."""
        from google.cloud.bigquery_storage_v1 import types
        parent = f"projects/{self.wh.project}/datasets/{self.wh.dataset}/tables/{table}"
        stream = self.write.create_write_stream(
            parent=parent, write_stream=types.WriteStream(type_=types.WriteStream.Type.PENDING),
            retry=None, timeout=self.rpc_timeout)
        BQ_STREAMS_CREATED.inc()
        requests = []
        schema_bytes = rows.schema.serialize().to_pybytes()
        offset = 0
        for chunk in _chunks(rows):
            request = types.AppendRowsRequest(
                write_stream=stream.name, offset=offset,
                arrow_rows=types.AppendRowsRequest.ArrowData(
                    rows=types.ArrowRecordBatch(serialized_record_batch=chunk.serialize().to_pybytes())))
            if not requests:  # the writer schema rides on the connection's first request
                request.arrow_rows.writer_schema = types.ArrowSchema(serialized_schema=schema_bytes)
            requests.append(request)
            offset += chunk.num_rows
        BQ_APPENDS.inc(len(requests))
        responses = self.write.append_rows(iter(requests), retry=None, timeout=self.rpc_timeout)
        got = 0
        for response in responses:
            if response.error and response.error.code:
                raise AppendError(f"AppendRows to {table} failed: {response.error.message}")
            got += 1
            if got == len(requests):
                break
        if got != len(requests):
            raise AppendError(f"AppendRows to {table}: {got} of {len(requests)} requests acknowledged")
        self.write.finalize_write_stream(name=stream.name, retry=None, timeout=self.rpc_timeout)
        return stream.name

    def create_committed(self, table: str) -> str:
        """A new COMMITTED stream on `table`: each append is visible at once, at the row
        offset it names, and BigQuery refuses an append at an offset already written
        (ALREADY_EXISTS), past the end (OUT_OF_RANGE) or after FinalizeWriteStream."""
        from google.cloud.bigquery_storage_v1 import types
        parent = f"projects/{self.wh.project}/datasets/{self.wh.dataset}/tables/{table}"
        stream = self.write.create_write_stream(
            parent=parent, write_stream=types.WriteStream(type_=types.WriteStream.Type.COMMITTED),
            retry=None, timeout=self.rpc_timeout)
        self.last_streams += 1
        BQ_STREAMS_CREATED.inc()
        return stream.name

    def append_at(self, table: str, stream: str, offset: int, rows: pa.Table) -> None:
        """`rows` appended to a COMMITTED stream from row `offset` on: one request per chunk,
        each answered before the next is sent, so a refused chunk stops the rest."""
        from google.api_core import exceptions
        from google.cloud.bigquery_storage_v1 import types
        schema_bytes = rows.schema.serialize().to_pybytes()
        for chunk in _chunks(rows):
            request = types.AppendRowsRequest(
                write_stream=stream, offset=offset,
                arrow_rows=types.AppendRowsRequest.ArrowData(
                    writer_schema=types.ArrowSchema(serialized_schema=schema_bytes),
                    rows=types.ArrowRecordBatch(serialized_record_batch=chunk.serialize().to_pybytes())))
            answered = False
            BQ_APPENDS.inc()
            # read to the end: the call closes when the server has answered the one request
            # (one left open holds a server thread until it times out)
            try:
                for response in self.write.append_rows(iter([request]), retry=None, timeout=self.rpc_timeout):
                    if response.error and response.error.code:
                        error = StreamRefused if response.error.code in STREAM_REFUSALS else AppendError
                        raise error(f"AppendRows to {table} at row offset {offset} refused: {response.error.message}")
                    answered = True
            except (exceptions.NotFound, exceptions.FailedPrecondition, exceptions.AlreadyExists,
                    exceptions.OutOfRange) as exc:
                # a stream finalized by another worker, one BigQuery no longer knows, or a row
                # offset already written: the landing is decided again, and finds out which
                raise StreamRefused(f"AppendRows to {table} refused: {exc}") from exc
            if not answered:
                raise AppendError(f"AppendRows to {table} at row offset {offset}: no answer")
            offset += chunk.num_rows

    def finalize(self, stream: str) -> int | None:
        """Seal a stream against any further append (whoever holds it); its row count, or
        None if BigQuery does not know the stream."""
        from google.api_core import exceptions
        try:
            response = self.write.finalize_write_stream(name=stream, retry=None, timeout=self.rpc_timeout)
        except exceptions.NotFound:
            return None
        return int(response.row_count)

    def commit_stream(self, table: str, stream: str, *, finishing: bool = False, gone_ok: bool = False) -> None:
        """Commit one finalized stream. `finishing` a decided stream (this landing's, or
        another attempt's or worker's): one committed already is done (BigQuery:
        STREAM_ALREADY_COMMITTED; the emulator: INVALID_STREAM_STATE, state COMMITTED).
        `gone_ok`, only for a decision found in the group's metadata, before this landing's
        lookup: one that is gone (BigQuery drops a stream left uncommitted for a day; a
        table dropped since) is passed over, as its rows are in the table or nowhere and
        the lookup sees which. This landing's own stream gone is an error: its lookup ran."""
        from google.api_core import exceptions
        from google.cloud.bigquery_storage_v1 import types
        parent = stream.split("/streams/")[0]
        try:
            response = self.write.batch_commit_write_streams(
                request=types.BatchCommitWriteStreamsRequest(parent=parent, write_streams=[stream]),
                retry=None, timeout=self.rpc_timeout)
        except exceptions.NotFound:
            if not gone_ok:
                raise
            log.warning("stage sink: a decided write stream of %s is gone; its range is landed again", table)
            return
        errors = [e for e in response.stream_errors
                  if not ((finishing and _already_committed(e)) or (gone_ok and _gone(e)))]
        if errors:
            raise AppendError(f"BatchCommitWriteStreams on {table}: " + "; ".join(e.error_message for e in errors))


# the offset-commit metadata of a decided landing of the previous format: the names of its
# PENDING streams (a worker upgraded mid-landing leaves one; bq_streams finishes it)
PENDING_DECISION_PREFIX = "payflow-landing/1 "


def decided_pending_streams(metadata: str) -> list[str]:
    import json
    if not metadata.startswith(PENDING_DECISION_PREFIX):
        return []  # Faust's own commits (""), or anything else
    return list(json.loads(metadata[len(PENDING_DECISION_PREFIX):]))


def table_of(stream: str) -> str:
    return stream.split("/tables/")[1].split("/")[0]


def _already_committed(error: Any) -> bool:
    from google.cloud.bigquery_storage_v1 import types
    codes = types.StorageError.StorageErrorCode
    return error.code == codes.STREAM_ALREADY_COMMITTED or (
        error.code == codes.INVALID_STREAM_STATE and "COMMITTED" in error.error_message)


def _gone(error: Any) -> bool:
    from google.cloud.bigquery_storage_v1 import types
    return error.code == types.StorageError.StorageErrorCode.STREAM_NOT_FOUND


class AppendError(TransientWarehouseError):
    """The Storage Write API refused rows or a commit. The sink retries the landing whole,
    which is safe: every table skips what an earlier attempt committed."""


class StreamRefused(AppendError):
    """An append refused for the stream's state, not the service's: finalized (sealed by
    another worker), unknown, or the row offset already written. A worker keeps its streams
    of a partition it lost, and one that got it back found them sealed by the owner in
    between: the landing is decided again at once (bq_streams), not retried as an outage."""


# google.rpc codes of an AppendRows answer that refuse the stream: NOT_FOUND, ALREADY_EXISTS,
# FAILED_PRECONDITION, OUT_OF_RANGE
STREAM_REFUSALS = frozenset({5, 6, 9, 11})


def _take(columns: dict[str, list], rows: list[int]) -> dict[str, list]:
    n = len(next(iter(columns.values()))) if columns else 0
    if len(rows) == n:
        return columns
    return {c: [v[i] for i in rows] for c, v in columns.items()}


def _duplicate_rows(duplicates: list[tuple[str, int, int, int, int, int, int]], now: datetime) -> dict[str, list]:
    """deduplication_audit rows for refused copies of a landed payment (base.same_payment)."""
    return {"transaction_id": [d[0] for d in duplicates], "first_partition": [d[3] for d in duplicates],
            "first_offset": [d[4] for d in duplicates], "first_event_time": [d[5] for d in duplicates],
            "duplicate_partition": [d[1] for d in duplicates], "duplicate_offset": [d[2] for d in duplicates],
            "duplicate_event_time": [d[6] for d in duplicates], "detected_at": [to_us(now)] * len(duplicates)}


def _conflict_rows(conflicts: list[tuple[str, int, int, int, int]], now: datetime) -> dict[str, list]:
    n = len(conflicts)
    return {"source_partition": [c[1] for c in conflicts], "source_offset": [c[2] for c in conflicts],
            "reason": [ID_CONFLICT] * n, "detail": [conflict_detail(c[3], c[4]) for c in conflicts],
            "transaction_id": [c[0] for c in conflicts], "rejected_at": [to_us(now)] * n, "remains": [None] * n}


def _without_erased(table: str, columns: dict[str, list], erasures: dict[str, str], now: datetime) -> dict[str, list]:
    """Rows of erased subjects: dropped (delete) or without their link columns (anonymize),
    as the MERGE landing does."""
    if table not in ERASABLE or not erasures or not columns:
        return columns
    hashes = columns["pii_hash"]
    modes = [erasures.get(h) if h else None for h in hashes]
    if not any(modes):
        return columns
    keep = [i for i, m in enumerate(modes) if m != "delete"]
    columns = {c: list(v) for c, v in _take(columns, keep).items()}
    modes = [modes[i] for i in keep]
    value = {NULLED: None, ERASED_AT: to_us(now), ERASED_FLAG: True}
    marked = [(c, value[rule]) for c in columns if (rule := anonymized(table, c)) is not None]
    for i, mode in enumerate(modes):
        if mode != "anonymize":
            continue
        for c, v in marked:
            columns[c][i] = v
    return columns


def _arrow(table: str, columns: dict[str, list]) -> pa.Table:
    from decimal import Decimal
    arrays = {}
    for c in schema.tables()[table]:
        values = columns[c.name]
        if c.bq_type == "NUMERIC":
            values = [None if v is None else Decimal(v) for v in values]
        elif c.bq_type == "TIMESTAMP":
            arrays[c.name] = pa.array(values, type=pa.int64()).cast(_ARROW["TIMESTAMP"])
            continue
        arrays[c.name] = pa.array(values, type=_ARROW[c.bq_type])
    return pa.table(arrays)


def _chunks(rows: pa.Table) -> list[pa.RecordBatch]:
    """Record batches of at most MAX_REQUEST_BYTES each (split in halves until they fit)."""
    out, todo = [], [rows.combine_chunks()]
    while todo:
        t = todo.pop()
        if t.nbytes > MAX_REQUEST_BYTES and t.num_rows > 1:
            half = t.num_rows // 2
            todo += [t.slice(half), t.slice(0, half)]
        else:
            out.extend(t.to_batches() or [pa.RecordBatch.from_pylist([], schema=t.schema)])
    return out

