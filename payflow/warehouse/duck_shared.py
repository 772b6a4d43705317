"""The embedded DuckDB warehouse shared with other processes, also while a worker runs.

DuckDB lets one process open a file for writing, and then no other process may open it at
all, not even read-only. The worker's landing child (warehouse/child.py) is that process
while it runs. So a reader or an erasure goes one of two ways:

- no worker holds the file: open it directly (read-only for `payflow query`);
- a worker holds it: send the request to the worker's web server (PAYFLOW_WEB_PORT), which
  hands it to the child that owns the file, between two landings. The worker leaves an
  owner file next to the DuckDB file (PATH.owner.json, readable by its user only) with its
  web port and a random token; the token authenticates the request, so whoever can read the
  warehouse's folder can query it, and nobody else who reaches the port.

Values cross as typed JSON (Decimal, timestamps, dates kept exactly), never pickled.

A read cannot write or reach outside the warehouse, on either path (docs/operations.md,
"The query face"): the statement is parsed and its whole tree checked (one query; no write,
DDL or command anywhere, data-modifying CTEs included; only the warehouse's tables and
views and the range/generate_series/unnest table functions; no file, URL or settings
function), and it runs on a connection with external access, extension loading and
configuration changes off, inside a transaction that is always rolled back, interrupted
after PAYFLOW_QUERY_TIMEOUT_SECONDS, stopped past PAYFLOW_QUERY_MAX_ROWS, its rows fetched
a page at a time. Writes over the wire are only the warehouse's own erase() (the fixed
erasure plan, no caller SQL), which gdpr erase calls.

    wh = open_duckdb(path)   # a Warehouse: direct, or through the worker that holds the file

payflow/query.py, the face `payflow query` runs, reads through it.
"""
from __future__ import annotations

import base64
import datetime as dt
import json
import os
import re
import secrets
import threading
import urllib.error
import urllib.request
from decimal import Decimal
from pathlib import Path
from dataclasses import dataclass
from typing import Any, Iterator

from payflow.settings import Settings
from payflow.warehouse.base import ErasureReceipt, LandingBatch, Landed, Warehouse


class QueryError(Exception):
    """A query that could not run; the message is one line for the user."""


class ReadOnlyViolation(QueryError):
    """A statement that would change the warehouse or reach outside it, sent as a read."""


class QueryBoundExceeded(QueryError):
    """A query stopped at its time or row bound."""


@dataclass(frozen=True)
class QueryBounds:
    """What one read may take: wall time, rows, and DuckDB's memory."""
    seconds: float = 60.0
    max_rows: int = 1_000_000
    memory_limit: str = "256MB"

    @classmethod
    def from_settings(cls, settings: Settings) -> "QueryBounds":
        return cls(settings.query_timeout_seconds, settings.query_max_rows, settings.duckdb_memory_limit)


# -- typed JSON ----------------------------------------------------------------------------
def encode(value: Any) -> Any:
    if isinstance(value, Decimal):
        return {"$decimal": str(value)}
    if isinstance(value, dt.datetime):
        return {"$datetime": value.isoformat()}
    if isinstance(value, dt.date):
        return {"$date": value.isoformat()}
    if isinstance(value, dt.time):
        return {"$time": value.isoformat()}
    if isinstance(value, (bytes, bytearray)):
        return {"$bytes": base64.b64encode(bytes(value)).decode()}
    if isinstance(value, dict):
        return {"$map": [[encode(k), encode(v)] for k, v in value.items()]}
    if isinstance(value, (list, tuple)):
        return [encode(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)  # UUIDs, intervals: their text


def decode(value: Any) -> Any:
    if isinstance(value, list):
        return [decode(v) for v in value]
    if isinstance(value, dict):
        (tag, inner), = value.items()
        if tag == "$decimal":
            return Decimal(inner)
        if tag == "$datetime":
            return dt.datetime.fromisoformat(inner)
        if tag == "$date":
            return dt.date.fromisoformat(inner)
        if tag == "$time":
            return dt.time.fromisoformat(inner)
        if tag == "$bytes":
            return base64.b64decode(inner)
        if tag == "$map":
            return {decode(k): decode(v) for k, v in inner}
        raise ValueError(f"unknown tag {tag!r}")
    return value


def dumps(value: Any) -> bytes:
    return json.dumps(encode(value), separators=(",", ":")).encode()


def loads(data: bytes) -> Any:
    return decode(json.loads(data))


# -- the owner file ----------------------------------------------------------------------------
def owner_file(db_path: str | Path) -> Path:
    return Path(str(db_path) + ".owner.json")


def publish_owner(db_path: str, web_port: int) -> str:
    """Written by the worker that opens `db_path`: how to reach it, and the token it accepts."""
    token = secrets.token_urlsafe(24)  # letters mostly: no card-number-shaped digit runs
    path = owner_file(db_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"pid": os.getpid(), "web_port": web_port, "token": token}, f)
    os.replace(tmp, path)
    return token


def withdraw_owner(db_path: str) -> None:
    path = owner_file(db_path)
    try:
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()
    except (OSError, ValueError):
        pass


# -- the read-only check ------------------------------------------------------------------------
_TABLE_FUNCTIONS = {"range", "generate_series"}  # rows made up in place, nothing read
# functions that read files, URLs, other databases, the environment or the configuration,
# or run SQL given as text; DuckDB's own refusal (enable_external_access off) stands behind this
_FORBIDDEN_FUNCTION = re.compile(
    r"(read_.*|.*_scan|glob|query|query_table|getenv|current_setting|duckdb_.*|pragma_.*|sniff_csv|"
    r"parquet_.*|iceberg_.*|delta_.*|st_read.*|http_.*|load.*|install.*|.*checkpoint|which_secret|"
    r"json_execute_serialized_sql|sql_auto_complete|test_.*|enable_.*|disable_.*|set_.*|"
    r"export_.*|import_.*|attach|detach)", re.IGNORECASE)


def _write_nodes() -> tuple[type, ...]:
    from sqlglot import exp
    names = ("DML", "DDL", "Insert", "Update", "Delete", "Merge", "Create", "Drop", "Alter", "TruncateTable",
             "Command", "Copy", "Set", "Pragma", "Attach", "Detach", "Use", "Transaction", "Commit", "Rollback",
             "Into", "LoadData", "Install", "Describe", "Analyze", "Cache", "Uncache", "Refresh", "Grant",
             "Revoke", "Export", "Summarize", "Kill", "Show", "Execute", "Declare", "Lock")
    return tuple(getattr(exp, n) for n in names if isinstance(getattr(exp, n, None), type))


def checked_query(sql: str, *, dialect: str = "duckdb") -> str:
    """`sql` (BigQuery dialect) as one read-only query in `dialect`, or ReadOnlyViolation.

    The whole parse tree is checked: exactly one query (SELECT, UNION, WITH ... SELECT), no
    write, DDL or command node anywhere (a data-modifying CTE included), and for DuckDB every
    table it names is one of the warehouse's tables or views or a CTE of the statement, every
    table function range/generate_series/unnest, and no function that reads files, URLs, the
    environment or the configuration."""
    import sqlglot
    from sqlglot import exp

    try:
        statements = [s for s in sqlglot.parse(sql, read="bigquery") if s is not None]
    except sqlglot.errors.SqlglotError as exc:
        raise ReadOnlyViolation(f"not one read-only query: {' '.join(str(exc).split())[:300]}") from None
    if len(statements) != 1 or not isinstance(statements[0], exp.Query):
        raise ReadOnlyViolation("only one read-only statement (SELECT) is accepted: payflow query is for reading")
    tree = statements[0]
    write_nodes = _write_nodes()
    ctes = {cte.alias_or_name.lower() for cte in tree.find_all(exp.CTE)}
    allowed_tables = _warehouse_relations() | ctes
    for node in tree.walk():
        if isinstance(node, write_nodes):
            raise ReadOnlyViolation(f"a {type(node).__name__.upper()} inside a query is not accepted: "
                                    "payflow query is for reading")
        if isinstance(node, exp.Func):
            name = node.name if isinstance(node, exp.Anonymous) else node.sql_name()
            if _FORBIDDEN_FUNCTION.fullmatch(name or "") or type(node).__name__.startswith("Read"):
                raise ReadOnlyViolation(f"the function {name.lower()} is not accepted: a query reads the "
                                        "warehouse's tables only")
        if isinstance(node, exp.Table) and dialect == "duckdb":
            _check_table(node, allowed_tables)
    return tree.sql(dialect=dialect)


def _check_table(node: Any, allowed: set[str]) -> None:
    from sqlglot import exp

    target = node.this
    if isinstance(target, exp.Func):
        name = (target.name if isinstance(target, exp.Anonymous) else target.sql_name()).lower()
        if name not in _TABLE_FUNCTIONS:
            raise ReadOnlyViolation(f"the table function {name} is not accepted: a query reads the warehouse's "
                                    "tables and views (and range, generate_series, unnest)")
        return
    name = node.name.lower()
    if node.args.get("db") or node.args.get("catalog") or name not in allowed:
        raise ReadOnlyViolation(f"{node.sql(dialect='bigquery')[:80]} is not one of the warehouse's tables or "
                                "views: a query reads those only")


def _warehouse_relations() -> set[str]:
    from payflow.warehouse import schema
    return {t.lower() for t in schema.tables()} | {v.lower() for v in schema.views()}


def duckdb_single_select(con: Any, duck_sql: str) -> bool:
    """DuckDB's own parser agrees: one statement, typed SELECT (a second opinion only: DuckDB
    types a data-modifying CTE as SELECT too)."""
    import duckdb
    try:
        statements = con.extract_statements(duck_sql)
    except duckdb.Error:
        return False
    return len(statements) == 1 and statements[0].type == duckdb.StatementType.SELECT


def is_read_only(con: Any, sql: str) -> bool:
    """One read-only query by the tree check, and DuckDB's parser agrees (DuckDB dialect in)."""
    import sqlglot
    try:
        bigquery_sql = ";".join(sqlglot.transpile(sql, read="duckdb", write="bigquery"))
        return duckdb_single_select(con, checked_query(bigquery_sql))
    except (QueryError, sqlglot.errors.SqlglotError):
        return False


# -- running a read ---------------------------------------------------------------------------------
PAGE_ROWS = 1000  # rows fetched, encoded and sent at a time

# set on every connection a read runs on, before the read: no files, URLs or extensions, and
# no way back (lock_configuration); memory_limit is DuckDB's bound on the whole instance
def hardening_statements(bounds: QueryBounds) -> list[str]:
    if not re.fullmatch(r"\s*\d+(\.\d+)?\s*[KMGT]i?B\s*", bounds.memory_limit, re.IGNORECASE):
        raise QueryError(f"PAYFLOW_DUCKDB_MEMORY_LIMIT={bounds.memory_limit!r}: expected a size like 512MB")
    return ["SET enable_external_access = false", "SET autoinstall_known_extensions = false",
            "SET autoload_known_extensions = false", f"SET memory_limit = '{bounds.memory_limit.strip()}'",
            "SET lock_configuration = true"]


def harden(con: Any, bounds: QueryBounds) -> None:
    for statement in hardening_statements(bounds):
        con.execute(statement)


def stream_rows(cursor: Any, duck_sql: str, params: dict[str, Any] | None, bounds: QueryBounds,
                max_rows: int | None = None) -> Iterator[list[dict[str, Any]]]:
    """The rows of a checked query, a page at a time, on `cursor` (a connection of its own,
    hardened): in a transaction always rolled back, interrupted at the time bound, stopped
    past the row bound. Closing the iterator early ends the transaction too."""
    import duckdb

    limit = min(max_rows or bounds.max_rows, bounds.max_rows)
    timed_out = threading.Event()

    def interrupt() -> None:
        timed_out.set()
        cursor.interrupt()

    timer = threading.Timer(bounds.seconds, interrupt)
    timer.daemon = True
    cursor.execute("BEGIN TRANSACTION")
    timer.start()
    try:
        result = cursor.execute(duck_sql, params or {})
        names = [d[0] for d in result.description]
        count = 0
        while True:
            chunk = result.fetchmany(PAGE_ROWS)
            if not chunk:
                return
            count += len(chunk)
            if count > limit:
                raise QueryBoundExceeded(f"the result has more than {limit} rows (PAYFLOW_QUERY_MAX_ROWS): "
                                         "add a LIMIT, a WHERE or an aggregate")
            yield [dict(zip(names, row)) for row in chunk]
    except duckdb.InterruptException:
        if timed_out.is_set():
            raise QueryBoundExceeded(f"the query ran longer than {bounds.seconds:g} s "
                                     "(PAYFLOW_QUERY_TIMEOUT_SECONDS) and was stopped") from None
        raise
    except duckdb.OutOfMemoryException:
        raise QueryBoundExceeded(f"the query needs more memory than {bounds.memory_limit} "
                                 "(PAYFLOW_DUCKDB_MEMORY_LIMIT on a file, PAYFLOW_DUCKDB_LANDING_CACHE_MB through "
                                 "the worker): add a WHERE, a LIMIT or aggregate") from None
    finally:
        timer.cancel()
        try:
            cursor.execute("ROLLBACK")
        except duckdb.Error:
            pass  # interrupted or already ended: the cursor is closed by its owner


# -- the client ----------------------------------------------------------------------------------
def _is_lock_conflict(exc: BaseException) -> bool:
    text = str(exc)
    return "lock" in text.lower() and ("Conflicting" in text or "Could not set lock" in text)


class WorkerWarehouse(Warehouse):
    """The embedded warehouse reached through the worker that owns its file."""
    name = "duckdb (through the running worker)"

    def __init__(self, db_path: str, owner: dict[str, Any], timeout: float = 300.0):
        self.path = db_path
        self.url = f"http://127.0.0.1:{int(owner['web_port'])}"
        self._token = str(owner["token"])
        self._timeout = timeout

    def _post(self, endpoint: str, body: dict[str, Any]) -> Any:
        request = urllib.request.Request(
            self.url + endpoint, data=dumps(body), method="POST",
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {self._token}"})
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as response:
                return loads(response.read())
        except urllib.error.HTTPError as exc:
            try:
                message = json.loads(exc.read()).get("error", exc.reason)
            except ValueError:
                message = exc.reason
            if exc.code == 400 and "read-only" in str(message):
                raise ReadOnlyViolation(message) from None
            if exc.code == 400 and "bound:" in str(message):
                raise QueryBoundExceeded(str(message).split("bound: ", 1)[1]) from None
            raise QueryError(f"the worker at {self.url} refused: {message}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise QueryError(f"the DuckDB file {self.path} is held by a worker, but its web server at {self.url} "
                             f"(PAYFLOW_WEB_PORT) does not answer: {reason}") from None

    def ensure_schema(self) -> None:
        pass  # the worker ensured it when it opened the file

    def land(self, batch: LandingBatch) -> Landed:
        raise QueryError("landing goes through the worker's pipeline, not through its web server")

    def query(self, sql: str, params: dict[str, Any] | None = None,
              max_rows: int | None = None) -> list[dict[str, Any]]:
        """The rows, fetched a page at a time: the worker answers each request within about a
        second (a landing waits for no read longer), and stops the read at its bounds."""
        rows: list[dict[str, Any]] = []
        for page in self.pages(sql, params, max_rows):
            rows.extend(page)
        return rows

    def pages(self, sql: str, params: dict[str, Any] | None = None,
              max_rows: int | None = None) -> Iterator[list[dict[str, Any]]]:
        answer = self._post("/warehouse/query", {"sql": sql, "params": params or {}, "max_rows": max_rows})
        cursor = answer.get("cursor")
        try:
            while True:
                if answer["rows"]:
                    yield answer["rows"]
                if answer["done"]:
                    cursor = None
                    return
                answer = self._post("/warehouse/query", {"cursor": cursor})
        finally:
            if cursor is not None:  # left early: stop the read in the worker now, not at its time bound
                try:
                    self._post("/warehouse/query", {"cursor": cursor, "cancel": True})
                except QueryError:
                    pass

    def erase(self, pii_hashes: list[tuple[str, str]], mode: str, request_id: str) -> ErasureReceipt:
        r = self._post("/warehouse/erase", {"pii_hashes": [list(p) for p in pii_hashes], "mode": mode,
                                            "request_id": request_id})
        return ErasureReceipt(r["mode"], r["pii_hashes"], r["rows_affected"], r["seconds"], r["request_id"])

    def erased_subjects(self) -> list[tuple[str, str, str]]:
        rows = self.query("SELECT pii_key_id, pii_hash, mode FROM gdpr_erasures")
        return [(r["pii_key_id"], r["pii_hash"], r["mode"]) for r in rows]

    def string_columns(self) -> dict[str, list[str]]:
        from payflow.warehouse import schema
        return {t: [c.name for c in cols if c.bq_type == "STRING"] for t, cols in schema.tables().items()}

    def close(self) -> None:
        pass


def open_duckdb(path: str, *, read_only: bool = False) -> Warehouse:
    """The DuckDB file at `path`: opened here when no other process holds it, else through
    the worker that does (its owner file says where)."""
    from payflow.warehouse.base import TransientWarehouseError
    from payflow.warehouse.duck import DuckDBWarehouse

    if read_only and path != ":memory:" and not Path(path).is_file():
        raise QueryError(f"DuckDB file {path} does not exist (PAYFLOW_WAREHOUSE)")
    try:
        return DuckDBWarehouse(path, read_only=read_only)
    except TransientWarehouseError as exc:
        if not _is_lock_conflict(exc):
            raise
        conflict = exc
    try:
        owner = json.loads(owner_file(path).read_text())
    except (OSError, ValueError):
        raise QueryError(f"the DuckDB file {path} is locked by another process and no payflow worker serves "
                         f"it ({owner_file(path)} missing): {' '.join(str(conflict).split())}") from None
    return WorkerWarehouse(path, owner)


def read_duckdb(con: Any, sql: str, params: dict[str, Any] | None, bounds: QueryBounds,
                max_rows: int | None = None) -> list[dict[str, Any]]:
    """A read on a DuckDB connection this process owns (`payflow query` on a file): hardened
    first, then checked and run as stream_rows runs it."""
    duck_sql = checked_query(sql)
    if not duckdb_single_select(con, duck_sql):
        raise ReadOnlyViolation("only one read-only statement (SELECT) is accepted: payflow query is for reading")
    harden(con, bounds)
    cursor = con.cursor()
    try:
        rows: list[dict[str, Any]] = []
        for page in stream_rows(cursor, duck_sql, params, bounds, max_rows):
            rows.extend(page)
        return rows
    finally:
        cursor.close()
