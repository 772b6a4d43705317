"""SQL on the embedded DuckDB warehouse, also while a worker runs.

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
Statements sent with write=False must be one read-only statement (SELECT); writes over the
wire are only the warehouse's own erase(), which gdpr erase calls.

    from payflow import query
    rows = query.run("SELECT count(*) AS n FROM payment_transactions")
    wh = query.connect(settings)   # a Warehouse: direct, or through the worker
"""
from __future__ import annotations

import base64
import datetime as dt
import json
import os
import secrets
import urllib.error
import urllib.request
from decimal import Decimal
from pathlib import Path
from typing import Any

from payflow.settings import Settings
from payflow.warehouse.base import ErasureReceipt, LandingBatch, Landed, Warehouse


class QueryError(Exception):
    """A query that could not run; the message is one line for the user."""


class ReadOnlyViolation(QueryError):
    """A statement that would change the warehouse, sent as a read."""


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


def is_read_only(con: Any, sql: str) -> bool:
    """One statement, and a SELECT (DuckDB's own parser decides; DuckDB dialect)."""
    import duckdb
    try:
        statements = con.extract_statements(sql)
    except duckdb.Error:
        return False
    return len(statements) == 1 and statements[0].type == duckdb.StatementType.SELECT


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
            raise QueryError(f"the worker at {self.url} refused: {message}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise QueryError(f"the DuckDB file {self.path} is held by a worker, but its web server at {self.url} "
                             f"(PAYFLOW_WEB_PORT) does not answer: {reason}") from None

    def ensure_schema(self) -> None:
        pass  # the worker ensured it when it opened the file

    def land(self, batch: LandingBatch) -> Landed:
        raise QueryError("landing goes through the worker's pipeline, not through its web server")

    def query(self, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        return self._post("/warehouse/query", {"sql": sql, "params": params or {}})["rows"]

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


def _db_path(settings: Settings, url: str | None) -> str | None:
    url = url or settings.warehouse_url
    if not url.startswith("duckdb://"):
        return None
    return url[len("duckdb://"):] or ":memory:"


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


def connect(settings: Settings | None = None, url: str | None = None, *, read_only: bool = False) -> Warehouse:
    """The warehouse at `url` (default PAYFLOW_WAREHOUSE), usable while a worker runs: an
    embedded DuckDB opened directly or reached through its worker; BigQuery as usual."""
    settings = settings or Settings.from_env()
    path = _db_path(settings, url)
    if path is None:
        from payflow.warehouse import open_warehouse
        return open_warehouse(settings, url)
    return open_duckdb(path, read_only=read_only)


def run(sql: str, params: dict[str, Any] | None = None, *, write: bool = False,
        settings: Settings | None = None, url: str | None = None) -> list[dict[str, Any]]:
    """Rows of `sql` (BigQuery dialect, as every warehouse query) with named `params`.
    write=False (the default) accepts one read-only statement. write=True runs any statement,
    on a file no worker holds, or on BigQuery; a worker takes no ad-hoc writes (erasure goes
    through the warehouse's erase(), which connect() gives to gdpr erase)."""
    settings = settings or Settings.from_env()
    wh = connect(settings, url, read_only=not write)
    try:
        if isinstance(wh, WorkerWarehouse):
            if write:
                raise QueryError(f"a worker holds {wh.path}: it takes reads only (`payflow gdpr erase` erases "
                                 "through it); stop the worker to write")
            return wh.query(sql, params)
        if not write:
            _check_read_only(wh, sql)
        return wh.query(sql, params)
    finally:
        wh.close()


def _check_read_only(wh: Warehouse, sql: str) -> None:
    import sqlglot
    from sqlglot import exp

    con = getattr(wh, "con", None)
    if con is not None:  # DuckDB: its own parser decides
        ok = is_read_only(con, ";".join(sqlglot.transpile(sql, read="bigquery", write="duckdb")))
    else:  # BigQuery: one query (SELECT, UNION, WITH ... SELECT) by sqlglot's reading
        statements = [s for s in sqlglot.parse(sql, read="bigquery") if s is not None]
        ok = len(statements) == 1 and isinstance(statements[0], exp.Query)
    if not ok:
        raise ReadOnlyViolation("only one read-only statement (SELECT) is accepted: payflow query is for reading")
