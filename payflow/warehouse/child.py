"""The embedded DuckDB warehouse, driven from a child process (how the worker lands batches).

DuckDB's Python client takes the GIL between execution steps (it checks for Ctrl-C). In
the worker, whose event loop holds the GIL nearly all the time, every step waited out the
interpreter's switch interval: a batch that lands at ~70 µs/event alone took 300-400
µs/event beside the pipeline, and the contention slowed the pipeline's own thread ~1.6x
(`make bench`). In a child process DuckDB has an interpreter of its own and the second
core; the worker only pickles the batch's rows across.

The child is the only process with the DuckDB file open (DuckDB allows one writer), and
it dies with its parent, so a restarted worker can open the file again. While it runs, other
processes read the file through it: the worker publishes an owner file next to the DuckDB
file and serves reads and erasures on its web port (payflow/query.py, payflow/web.py).
"""
from __future__ import annotations

import io
import multiprocessing
import os
import pickle
import signal
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from tenacity import retry, retry_if_exception_type, stop_after_delay, wait_fixed

from payflow.runtime.process import limit_malloc_arenas, tune_garbage_collector
from payflow.warehouse.base import ErasureReceipt, LandingBatch, TransientWarehouseError, Warehouse

_warehouse: Warehouse | None = None


def _die_with_parent(parent: int) -> None:
    try:  # Linux: the kernel kills us the moment the parent dies (even by SIGKILL)
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # pragma: no cover - other platforms
        pass

    def watch() -> None:  # and everywhere: notice being orphaned within a second
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


@retry(retry=retry_if_exception_type(TransientWarehouseError), stop=stop_after_delay(30), wait=wait_fixed(0.5),
       reraise=True)
def _open_duckdb(path: str) -> Warehouse:
    # a crashed predecessor's child may hold the file for a moment longer
    from payflow.warehouse.duck import DuckDBWarehouse
    return DuckDBWarehouse(path)


def _start(path: str, parent: int, memory_mb: int | None = None) -> None:
    global _warehouse
    # the worker decides when we stop: a Ctrl-C or a SIGTERM to the process group must not
    # kill a landing in flight (it stopped the sink and crashed a worker that was stopping
    # cleanly); if the worker dies, so do we (below)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _die_with_parent(parent)
    _keep_memory_small()
    _warehouse = _open_duckdb(path)
    # one DuckDB thread: the process shares two cores with the worker and the broker, and
    # a second thread's buffers counted against the pod's memory for no faster landing
    _warehouse.con.execute("SET threads = 1")
    if memory_mb:
        # DuckDB's buffer pool keeps the blocks landings wrote up to its limit (80% of the
        # machine's memory by default): bounded, persisted blocks are evicted and read back
        _warehouse.con.execute(f"SET memory_limit = '{int(memory_mb)}MB'")
    tune_garbage_collector()


def _keep_memory_small() -> None:
    """Return freed memory instead of keeping it for reuse: every landing allocates and
    frees a batch's rows and Arrow arrays, and the cached memory counted against the
    worker's 512 MB budget (peak RSS of this process 309 MB at 200k events, 277 MB with
    this, `make bench`)."""
    limit_malloc_arenas()
    import pyarrow as pa
    pa.set_memory_pool(pa.system_memory_pool())  # not jemalloc's retaining pool


def _call(method: str, *args: Any) -> Any:
    assert _warehouse is not None
    return getattr(_warehouse, method)(*args)


def _query_read_only(sql: str, params: dict[str, Any] | None) -> list[dict[str, Any]]:
    """A query sent by another process through the worker: one read-only statement only."""
    import sqlglot

    from payflow.query import ReadOnlyViolation, is_read_only
    assert _warehouse is not None
    try:
        duck_sql = ";".join(sqlglot.transpile(sql, read="bigquery", write="duckdb"))
    except sqlglot.errors.SqlglotError as exc:
        raise ValueError(" ".join(str(exc).split())) from None
    if not is_read_only(_warehouse.con, duck_sql):  # type: ignore[attr-defined]
        raise ReadOnlyViolation("only one read-only statement (SELECT) is accepted through the worker")
    return _warehouse.query(sql, params)


def _land_pickled(batch: bytes) -> dict[str, int]:
    assert _warehouse is not None
    return _warehouse.land(pickle.loads(batch))


def _pickled_without_memo(batch: LandingBatch) -> bytes:
    """The batch pickled without pickle's memo: a batch is lists of small strings and ints
    with no shared structure worth keeping, and the memo (an entry per string) was ~70% of
    pickling it (0.74 -> 0.20 µs per row, ~15% more bytes)."""
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL)
    pickler.fast = True  # no memo: fine for data without cycles
    pickler.dump(batch)
    return buffer.getvalue()


class ChildProcessDuckDB(Warehouse):
    name = "duckdb"

    def __init__(self, path: str, web_port: int | None = None, memory_mb: int | None = None):
        self.path = path
        # spawn, not fork: the worker has threads (DuckDB's, the event loop's executors)
        self._pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                                         initializer=_start, initargs=(path, os.getpid(), memory_mb))
        # where other processes find us while we hold the file (payflow/query.py); the token
        # authenticates their requests on the web port
        self.owner_token: str | None = None
        if path != ":memory:":
            from payflow.query import publish_owner
            from payflow.settings import Settings
            self.owner_token = publish_owner(path, web_port if web_port is not None else Settings.from_env().web_port)
            # the worker stops without closing its warehouse (the child dies with it): withdraw
            # at exit too; a file left by a killed worker is only read on a lock conflict
            import atexit

            from payflow.query import withdraw_owner
            atexit.register(withdraw_owner, path)

    def _run(self, method: str, *args: Any) -> Any:
        return self._pool.submit(_call, method, *args).result()

    def ensure_schema(self) -> None:
        self._run("ensure_schema")

    def land(self, batch: LandingBatch) -> dict[str, int]:
        return self._pool.submit(_land_pickled, _pickled_without_memo(batch)).result()

    def query(self, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        return self._run("query", sql, params)

    def query_read_only(self, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        return self._pool.submit(_query_read_only, sql, params).result()

    def erase(self, pii_hashes: list[tuple[str, str]], mode: str, request_id: str) -> ErasureReceipt:
        return self._run("erase", pii_hashes, mode, request_id)

    def string_columns(self) -> dict[str, list[str]]:
        return self._run("string_columns")

    def close(self) -> None:
        if self.owner_token is not None:
            from payflow.query import withdraw_owner
            withdraw_owner(self.path)
        try:
            self._run("close")
        finally:
            self._pool.shutdown(wait=True)
