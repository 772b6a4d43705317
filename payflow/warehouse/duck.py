"""The embedded DuckDB warehouse (default for `make demo`)."""
from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

import duckdb
import pyarrow as pa

from payflow import fault
from payflow.warehouse import schema
from payflow.warehouse.base import (
    ERASABLE, ERASED_AT, ERASED_FLAG, ID_CONFLICT, LANDING_ORDER, NULLED, ErasureReceipt, LandingBatch, Landed,
    anonymized,
    TransientWarehouseError, Warehouse, conflict_detail, find_conflicts, same_payment,
)

_DUCK_TYPE = {"STRING": "VARCHAR", "NUMERIC": "DECIMAL(38,9)", "TIMESTAMP": "TIMESTAMPTZ",
              "INT64": "BIGINT", "BOOL": "BOOLEAN"}
_AMOUNT_AS_TEXT = {"NUMERIC"}  # amounts travel as decimal strings and are cast exactly, never via float
_ARROW_TYPE = {"STRING": pa.string(), "NUMERIC": pa.string(), "TIMESTAMP": pa.timestamp("us", tz="UTC"),
               "INT64": pa.int64(), "BOOL": pa.bool_()}


def _arrow_table(table: str, columns: dict[str, list]) -> pa.Table:
    """A batch's columns as a typed Arrow table: converted in C, scanned by DuckDB without copying."""
    return pa.table({c.name: pa.array(columns[c.name], type=_ARROW_TYPE[c.bq_type]) for c in schema.tables()[table]})


class DuckDBWarehouse(Warehouse):
    name = "duckdb"

    def __init__(self, path: str, *, read_only: bool = False):
        self.path = path
        if path != ":memory:" and not read_only:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        try:
            self.con = duckdb.connect(path, read_only=read_only)
        except duckdb.IOException as exc:
            raise TransientWarehouseError(f"cannot open DuckDB file {path}: {exc}") from exc
        self.con.execute("SET TimeZone = 'UTC'")
        self._lock = threading.Lock()
        self._insert_sql: dict[str, str] = {}
        self._keyed: set[str] | None = None  # tables with a key in this file
        self._cache_bytes: int | None = None  # limit_cache(): table blocks kept beyond the pinned memory
        self._memory_limit: int | None = None

    def ensure_schema(self) -> None:
        with self._lock:
            for statement in schema.duckdb_statements():
                self.con.execute(statement)
            self._insert_sql.clear()
            self._keyed = None

    def _has_key(self, table: str) -> bool:
        # a file written before DUCKDB_KEYED_BY_PAYMENT still has keys on those tables
        if self._keyed is None:
            self._keyed = {row[0] for row in self.con.execute(
                "SELECT DISTINCT table_name FROM duckdb_constraints() WHERE constraint_type = 'PRIMARY KEY'").fetchall()}
        return table in self._keyed

    # -- landing -------------------------------------------------------------------------
    def _insert_statement(self, table: str) -> str:
        if table in self._insert_sql:
            return self._insert_sql[table]
        cols = schema.tables()[table]
        names = [c.name for c in cols]
        insert = "INSERT OR IGNORE" if self._has_key(table) else "INSERT"
        # the batch arrives as an Arrow table registered as `landing` (zero-copy scan)
        unnest = ", ".join(
            f"CAST({c.name} AS DECIMAL(38,9)) AS {c.name}" if c.bq_type in _AMOUNT_AS_TEXT else c.name
            for c in cols) + " FROM landing"
        if table in ERASABLE:
            rendered = {None: "s.{0}", NULLED: "CASE WHEN e.mode IS NULL THEN s.{0} END AS {0}",
                        ERASED_AT: "CASE WHEN e.mode IS NULL THEN s.{0} ELSE now() END AS {0}",
                        ERASED_FLAG: "(e.mode IS NOT NULL) AS {0}"}
            select = [rendered[anonymized(table, n)].format(n) for n in names]
            sql = (f"{insert} INTO {table} ({', '.join(names)}) SELECT {', '.join(select)} "
                   f"FROM (SELECT {unnest}) AS s "
                   f"LEFT JOIN (SELECT pii_hash, max(mode) AS mode FROM gdpr_erasures GROUP BY pii_hash) AS e "
                   f"ON e.pii_hash = s.pii_hash "
                   f"WHERE e.mode IS NULL OR e.mode = 'anonymize'")
        else:
            sql = f"{insert} INTO {table} ({', '.join(names)}) SELECT {unnest}"
        self._insert_sql[table] = sql
        return sql

    # -- memory -------------------------------------------------------------------------
    def limit_cache(self, cache_mb: int) -> None:
        """Keep at most `cache_mb` of table blocks cached beyond the memory DuckDB cannot evict.

        DuckDB's buffer manager otherwise keeps every block it wrote (up to 80% of the
        machine's memory); those are reread from the file when needed. Its key index cannot be
        evicted and grows with the table, so no fixed memory_limit is safe: the limit follows
        the pinned memory, re-measured after each landing (_fit_memory_limit)."""
        self._cache_bytes = cache_mb * 2**20
        with self._lock:
            self._fit_memory_limit()

    def _fit_memory_limit(self) -> None:
        if self._cache_bytes is None:
            return
        pinned = self.con.execute("SELECT coalesce(sum(memory_usage_bytes), 0) FROM duckdb_memory() "
                                  "WHERE tag <> 'BASE_TABLE'").fetchone()[0]
        step = 16 * 2**20  # set again only when the pinned memory moved by a step
        limit = (int(pinned) + self._cache_bytes + step - 1) // step * step
        if limit != self._memory_limit:
            self.con.execute(f"SET memory_limit = '{limit}B'")
            self._memory_limit = limit

    def land(self, batch: LandingBatch) -> Landed:
        try:
            return self._land(batch)
        except Exception as exc:
            # the landing needed more than the cache left it: more room, and the sink retries
            if self._cache_bytes is None or not _out_of_memory(exc):
                raise
            self._cache_bytes *= 2
            with self._lock:
                self._fit_memory_limit()
            raise TransientWarehouseError(f"{type(exc).__name__}: {exc}") from exc

    def _land(self, batch: LandingBatch) -> Landed:
        inserted = Landed()
        with self._lock, self._transaction(then=self._fit_memory_limit):
            # which of the batch's payments the key table took (None: every one): the
            # tables keyed by it take those rows only
            taken: list[int] | None = None
            repeated = batch.hashes_of_repeated_ids()
            batch = batch.first_per_key(deleted=self._deleted(repeated) if repeated else ())
            fault.pause_at("before_write")
            for table in LANDING_ORDER:
                if not batch.count(table):
                    continue
                if len(inserted) == 1:  # one table written, the others not yet
                    fault.pause_at("between_tables")
                columns = batch.columns(table)
                rows = _arrow_table(table, columns)
                if table == "payment_transactions":
                    inserted[table], taken = self._land_payments(rows, columns["transaction_id"])
                    inserted.conflicts, inserted.duplicates = self._record_conflicts(
                        columns, taken, batch.repeated, batch.copies)
                    continue
                if table in schema.DUCKDB_KEYED_BY_PAYMENT and taken is not None:
                    rows = rows.take(pa.array(taken, type=pa.int64()))
                inserted[table] = self._insert(table, rows, returning=False) if rows.num_rows else 0
        return inserted

    def _deleted(self, hashes: set[str]) -> set[str]:
        """Which of these subjects the ledger erased by delete."""
        self.con.register("asked", pa.table({"pii_hash": pa.array(sorted(hashes), type=pa.string())}))
        try:
            rows = self.con.execute("SELECT DISTINCT e.pii_hash FROM gdpr_erasures AS e JOIN asked AS a "
                                    "ON e.pii_hash = a.pii_hash WHERE e.mode = 'delete'").fetchall()
        finally:
            self.con.unregister("asked")
        return {row[0] for row in rows}

    @contextlib.contextmanager
    def _transaction(self, then: Callable[[], None] | None = None) -> Iterator[None]:
        """One transaction, committed at the end of the block (then `then`) or rolled back; a
        conflict, a lock, a full or read-only disk become TransientWarehouseError (the caller
        retries)."""
        try:
            self.con.execute("BEGIN TRANSACTION")
            yield
            self.con.execute("COMMIT")
            if then is not None:
                then()
        except (duckdb.TransactionException, duckdb.IOException) as exc:
            self._rollback_quietly()
            raise TransientWarehouseError(f"{type(exc).__name__}: {exc}") from exc
        except BaseException:
            self._rollback_quietly()
            raise

    def _rollback_quietly(self) -> None:
        """End the failed transaction, if one is still open: a COMMIT that failed has ended it
        already, and the ROLLBACK's own error ("no transaction is active") must not replace
        the real one."""
        try:
            self.con.execute("ROLLBACK")
        except duckdb.Error:
            pass

    def _land_payments(self, rows: pa.Table, ids: list[str]) -> tuple[int, list[int] | None]:
        """Insert the payments whose transaction_id is new (the batch has each id once);
        return how many, and which of the batch's rows they are (None: all of them)."""
        new_ids = self._insert("payment_transactions", rows, returning=True)
        if len(new_ids) == len(ids):
            return len(new_ids), None
        new = set(new_ids)
        return len(new_ids), [i for i, t in enumerate(ids) if t in new]

    def _record_conflicts(self, columns: dict[str, list], taken: list[int] | None,
                          repeated: dict[str, list[tuple[int, int]]],
                          copies_in_batch: dict[tuple[int, int], tuple[str, int]]) -> tuple[list, list]:
        """The batch's payments whose id landed from another raw position (already in the
        table, or from another position of this batch), and which of them are copies of the
        landed payment (same sender): the copies recorded in deduplication_audit, the others
        in dead_letter_events (Landed explains); in the landing's transaction."""
        positions = dict(repeated)
        if taken is not None:
            taken_set = set(taken)
            for i, (txn, p, o) in enumerate(zip(
                    columns["transaction_id"], columns["source_partition"], columns["source_offset"])):
                if i not in taken_set:
                    positions.setdefault(txn, [(p, o)])
        if not positions:
            return [], []
        self.con.register("checked", pa.table({"transaction_id": pa.array(list(positions), type=pa.string())}))
        try:
            landed = self.con.execute(
                "SELECT t.transaction_id, t.source_partition, t.source_offset, t.sender_account_id, "
                "epoch_us(t.event_time) FROM payment_transactions AS t "
                "JOIN checked AS c ON t.transaction_id = c.transaction_id").fetchall()
        finally:
            self.con.unregister("checked")
        conflicts = find_conflicts(positions, [row[:3] for row in landed])
        if not conflicts:
            return [], []
        copies = dict(zip(zip(columns["source_partition"], columns["source_offset"]),
                          zip(columns["sender_account_id"], columns["event_time"])))
        copies.update(copies_in_batch)
        duplicates = same_payment(conflicts, copies, {row[0]: (row[3], row[4]) for row in landed})
        copied = {d[:3] for d in duplicates}
        refused = [c for c in conflicts if c[:3] not in copied]
        if refused:
            self.con.executemany(
                "INSERT OR IGNORE INTO dead_letter_events (source_partition, source_offset, reason, detail, "
                "transaction_id, rejected_at, remains) VALUES (?, ?, ?, ?, ?, now(), NULL)",
                [(p, o, ID_CONFLICT, conflict_detail(lp, lo), txn) for txn, p, o, lp, lo in refused])
        if duplicates:
            self.con.executemany(
                f"{'INSERT OR IGNORE' if self._has_key('deduplication_audit') else 'INSERT'} INTO deduplication_audit "
                "(transaction_id, first_partition, first_offset, first_event_time, duplicate_partition, "
                "duplicate_offset, duplicate_event_time, detected_at) "
                "VALUES (?, ?, ?, make_timestamptz(?), ?, ?, make_timestamptz(?), now())",
                [(txn, lp, lo, first_us, p, o, copy_us) for txn, p, o, lp, lo, first_us, copy_us in duplicates])
        return conflicts, duplicates

    def _insert(self, table: str, rows: pa.Table, *, returning: bool) -> Any:
        """INSERT the rows (an Arrow table, scanned in place); the count inserted, or with
        `returning` the transaction_ids inserted."""
        sql = self._insert_statement(table)
        self.con.register("landing", rows)
        try:
            if returning:
                return [row[0] for row in self.con.execute(sql + " RETURNING transaction_id").fetchall()]
            return _count(self.con.execute(sql))
        finally:
            self.con.unregister("landing")

    def land_labels(self, rows: list[dict[str, Any]]) -> int:
        if not rows:
            return 0
        columns = {c.name: [row[c.name] for row in rows] for c in schema.tables()["fraud_labels"]}
        with self._lock, self._transaction():  # (BEGIN also ends a result a landing left unread)
            # insert-or-ignore on the key (label_partition, label_offset)
            return self._insert("fraud_labels", _arrow_table("fraud_labels", columns), returning=False)

    # -- reading -------------------------------------------------------------------------
    def query(self, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        import sqlglot  # here, not at import: the landing process goes without it until a query
        duck_sql = sqlglot.transpile(sql, read="bigquery", write="duckdb")[0]
        with self._lock:
            cur = self.con.execute(duck_sql, params or {})
            names = [d[0] for d in cur.description]
            return [dict(zip(names, row)) for row in cur.fetchall()]

    def erased_subjects(self) -> list[tuple[str, str, str]]:
        # the ledger's query reads the same in both dialects: run as it is, without sqlglot
        with self._lock:
            rows = self.con.execute("SELECT DISTINCT pii_key_id, pii_hash, mode FROM gdpr_erasures").fetchall()
        return [(key_id or "", h, mode) for key_id, h, mode in rows]

    def string_columns(self) -> dict[str, list[str]]:
        return {t: [c.name for c in cols if c.bq_type == "STRING"] for t, cols in schema.tables().items()}

    # -- GDPR erasure --------------------------------------------------------------------
    def erase(self, pii_hashes: list[tuple[str, str]], mode: str, request_id: str | None = None) -> ErasureReceipt:
        """The erasure plan (compliance.gdpr.erasure_plan) in one transaction."""
        from payflow.compliance.gdpr import LEDGER_COMPLETE, LEDGER_INSERT, SUBJECT_TRANSACTIONS, erasure_plan
        plan = erasure_plan(mode)
        request_id = request_id or str(uuid.uuid4())
        started = time.perf_counter()
        hashes = [h for _, h in pii_hashes]
        now = datetime.now(timezone.utc)
        affected: dict[str, int] = {}
        with self._lock:
            c = self.con
            c.execute("BEGIN TRANSACTION")
            try:
                insert = schema.render_sql(LEDGER_INSERT, "duckdb", ignore_existing=True)
                for key_id, h in pii_hashes:
                    c.execute(insert, {"rid": request_id, "h": h, "kid": key_id, "mode": mode, "now": now})
                ids = [r[0] for r in c.execute(schema.render_sql(SUBJECT_TRANSACTIONS, "duckdb"),
                                               {"hashes": hashes}).fetchall()]
                params = {"hashes": hashes, "ids": ids, "now": now}
                for table, sql in plan:
                    duck_sql = schema.render_sql(sql, "duckdb")
                    # DuckDB refuses a named parameter the statement does not use
                    affected[table] = _count(c.execute(duck_sql, {k: v for k, v in params.items() if f"${k}" in duck_sql}))
                c.execute(schema.render_sql(LEDGER_COMPLETE, "duckdb"), {"ra": json.dumps(affected), "rid": request_id})
                c.execute("COMMIT")
            except Exception:
                c.execute("ROLLBACK")
                raise
        return ErasureReceipt(mode, hashes, affected, time.perf_counter() - started, request_id)

    def close(self) -> None:
        with self._lock:
            self.con.close()


def _out_of_memory(exc: BaseException | None) -> bool:
    """DuckDB ran out of memory somewhere in this exception's chain (a later statement in the
    failed transaction reports only that the transaction is aborted)."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, duckdb.OutOfMemoryException):
            return True
        if isinstance(exc, duckdb.FatalException) and "pin block" in str(exc):
            return True  # a checkpoint could not pin an index whole: the database is invalidated
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def _count(cursor: Any) -> int:
    row = cursor.fetchone()
    return int(row[0]) if row else 0
