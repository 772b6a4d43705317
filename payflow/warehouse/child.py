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
file and serves reads and erasures on its web port (payflow/warehouse/duck_shared.py, payflow/web.py).
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import multiprocessing
import os
import pickle
import queue
import re
import secrets
import signal
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any, Iterator

from tenacity import retry, retry_if_exception_type, stop_after_delay, wait_fixed

from payflow.runtime.process import limit_malloc_retention, return_free_memory, tune_garbage_collector
from payflow.warehouse.base import ErasureReceipt, LandingBatch, TransientWarehouseError, Warehouse
from payflow.warehouse.duck_shared import QueryBounds

log = logging.getLogger("payflow.sink")
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


def _start(path: str, parent: int, bounds: QueryBounds, cache_bytes: int = 48 * 2**20, pinned_hint: int = 0) -> None:
    global _warehouse, _memory_limit, _room, _bounds
    # the worker decides when we stop: a Ctrl-C or a SIGTERM to the process group must not
    # kill a landing in flight (it stopped the sink and crashed a worker that was stopping
    # cleanly); if the worker dies, so do we (below)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _die_with_parent(parent)
    _keep_memory_small()
    # the DuckDB file, its WAL and spill files readable by this user only, like the owner file
    os.umask(0o077)
    for existing in (path, path + ".wal"):
        with contextlib.suppress(FileNotFoundError):
            os.chmod(existing, 0o600)
    from payflow.warehouse import schema
    schema.preload(_schema_snapshot())
    _warehouse = _open_duckdb(path)
    # one DuckDB thread: the process shares two cores with the worker and the broker, and
    # a second thread's buffers counted against the pod's memory for no faster landing
    _warehouse.con.execute("SET threads = 1")
    # before any read is answered: no files, URLs or extensions, a memory bound, and the
    # configuration locked (DuckDB's settings are the instance's, landings and reads share
    # them). The bound is fitted to the key index now, as it cannot change once locked: when
    # the index has grown into it, the worker starts a new landing process (_fitted_limit)
    from payflow.warehouse.duck_shared import harden
    _memory_limit, _room = _fitted_limit(_warehouse.con, cache_bytes, pinned_hint)
    _bounds = bounds
    harden(_warehouse.con, QueryBounds(bounds.seconds, bounds.max_rows, f"{_memory_limit // 2**20}MiB"))
    tune_garbage_collector()


# DuckDB's key index (ART) is memory it cannot evict, growing with its table (about 75 bytes a
# row with 24-character ids: docs/performance.md); a reopened file loads its index as
# landings touch it, so the limit is fitted to what the whole index will take
KEY_INDEX_BYTES_PER_ROW = 96
_LIMIT_STEP = 16 * 2**20
_memory_limit = 0  # bytes: this process's DuckDB memory limit
_room = 0  # bytes: what the limit left beyond the key index when the process started
_bounds = QueryBounds()  # what a read may take: the worker's settings, given at _start


def _fitted_limit(con: Any, cache_bytes: int, pinned_hint: int = 0) -> tuple[int, int]:
    """(the memory limit, its room beyond the key index): the index the keyed tables' rows
    need (or `pinned_hint`, what the last landing process found it needed, if more) plus
    `cache_bytes` or half the index, whichever is more (a large table is not replaced
    every few hundred thousand payments)."""
    need = max(_key_index_bytes(con), pinned_hint)
    limit = (need + max(cache_bytes, need // 2) + _LIMIT_STEP - 1) // _LIMIT_STEP * _LIMIT_STEP
    return limit, limit - need


def _key_index_bytes(con: Any) -> int:
    """What the keyed tables' indexes take in memory when whole: a checkpoint pins each
    index whole to write it out (duckdb/duckdb#24848), whatever part landings touched."""
    rows = con.execute("SELECT coalesce(sum(estimated_size), 0) FROM duckdb_tables() WHERE has_primary_key").fetchone()[0]
    return int(rows) * KEY_INDEX_BYTES_PER_ROW


def _pinned_bytes() -> int:
    """What DuckDB holds that it cannot evict (all but cached table blocks)."""
    assert _warehouse is not None
    return int(_warehouse.con.execute("SELECT coalesce(sum(memory_usage_bytes), 0) FROM duckdb_memory() "
                                      "WHERE tag <> 'BASE_TABLE'").fetchone()[0])


def _schema_snapshot() -> dict[str, Any]:
    """The parsed warehouse schema, from a short-lived process: parsing the DDL takes sqlglot,
    whose modules would stay in this process for good (~40 MB of its memory)."""
    import json
    import subprocess
    import sys
    done = subprocess.run([sys.executable, "-c", "import json, payflow.warehouse.schema as s; print(json.dumps(s.snapshot()))"],
                          capture_output=True, check=True)
    return json.loads(done.stdout)


def _keep_memory_small() -> None:
    """Return freed memory instead of keeping it for reuse: every landing allocates and
    frees a batch's rows and Arrow arrays, and the cached memory counted against the
    worker's 512 MB budget (peak RSS of this process 309 MB at 200k events, 277 MB with
    this, `make bench`)."""
    limit_malloc_retention()
    import pyarrow as pa
    pa.set_memory_pool(pa.system_memory_pool())  # not jemalloc's retaining pool


# what the landing process never needs and a read must never find in /proc/self/environ
_SECRET_NAMES = re.compile(r"PAYFLOW_HMAC_KEYS.*|.*(PASSWORD|SECRET|TOKEN|CREDENTIAL|PRIVATE_KEY).*", re.IGNORECASE)
_environment_lock = threading.Lock()


@contextlib.contextmanager
def _secrets_out_of_environment() -> Iterator[None]:
    """os.environ without the secret-bearing variables while the landing process is
    spawned (it inherits the environment as it is at that moment), then as it was."""
    with _environment_lock:
        removed = {name: os.environ.pop(name) for name in list(os.environ) if _SECRET_NAMES.fullmatch(name)}
        try:
            yield
        finally:
            os.environ.update(removed)


def _call(method: str, *args: Any) -> Any:
    assert _warehouse is not None
    return getattr(_warehouse, method)(*args)


# -- reads for other processes -------------------------------------------------------------------
# A read runs on a connection of its own in a thread of its own, beside the landings (DuckDB
# reads a snapshot and blocks no writer); the pool's single worker thread only starts it and
# hands out its pages, each call returning within PAGE_WAIT_SECONDS, so a landing queued
# behind a read waits at most that long.
PAGE_WAIT_SECONDS = 0.5
PAGE_BYTES = 1 << 20  # a page relayed through the worker: about this much JSON
MAX_RUNNING_READS = 2


class _Read:
    def __init__(self, duck_sql: str, params: dict[str, Any] | None, max_rows: int | None) -> None:
        assert _warehouse is not None
        self.id = secrets.token_urlsafe(12)
        configured = _bounds
        # the memory bound is this process's (fitted to its key index, _start)
        self.bounds = QueryBounds(configured.seconds, configured.max_rows, f"{_memory_limit // 2**20}MiB")
        self.deadline = time.monotonic() + self.bounds.seconds
        self.pages: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=1)  # one page ready ahead, no more
        self.cancelled = threading.Event()
        self.finished = threading.Event()
        self._cursor = _warehouse.con.cursor()  # type: ignore[attr-defined]
        self._sql, self._params, self._max_rows = duck_sql, params, max_rows
        threading.Thread(target=self._produce, name=f"read-{self.id}", daemon=True).start()

    def _produce(self) -> None:
        import duckdb

        from payflow.warehouse.duck_shared import QueryBoundExceeded, QueryError, encode, stream_rows
        rows = stream_rows(self._cursor, self._sql, self._params, self.bounds, self._max_rows)
        try:
            for page in _joined(rows, encode):
                if not self._put(("rows", page)):
                    if not self.cancelled.is_set():
                        self._put(("bound", f"the read and the fetching of its rows took longer than {self.bounds.seconds:g} s "
                                            "(PAYFLOW_QUERY_TIMEOUT_SECONDS) and was stopped"), final=True)
                    return
            self._put(("done", None), final=True)
        except QueryBoundExceeded as exc:
            self._put(("bound", str(exc)), final=True)
        except QueryError as exc:
            self._put(("error", str(exc)), final=True)
        except duckdb.Error as exc:
            if not self.cancelled.is_set():
                self._put(("error", " ".join(f"{type(exc).__name__}: {exc}".split())), final=True)
        finally:
            rows.close()  # the transaction rolled back, the timer stopped
            self._cursor.close()
            self.finished.set()

    def _put(self, item: tuple[str, Any], *, final: bool = False) -> bool:
        """Hand a page to the reader; False when the reader cancelled or did not come back
        for it before the time bound (a last answer gets a few seconds more)."""
        deadline = self.deadline + (5.0 if final else 0.0)
        while not self.cancelled.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            try:
                self.pages.put(item, timeout=min(left, 1.0))
                return True
            except queue.Full:
                continue
        return False

    def cancel(self) -> None:
        self.cancelled.set()
        self._cursor.interrupt()

    def stale(self) -> bool:
        return self.finished.is_set() and time.monotonic() > self.deadline + 5.0

    def next_answer(self) -> tuple[int, bytes]:
        try:
            kind, value = self.pages.get(timeout=PAGE_WAIT_SECONDS)
        except queue.Empty:  # nothing yet: the reader asks again
            if self.finished.is_set():
                self.forget()
                return 400, json.dumps({"error": "the read ended without an answer (cancelled or past its "
                                                 "time bound)"}).encode()
            return 200, _page(self.id, "[]", done=False)
        if kind == "rows":
            return 200, _page(self.id, value, done=False)
        self.forget()
        if kind == "done":
            return 200, _page(self.id, "[]", done=True)
        prefix = "bound: " if kind == "bound" else ""
        return 400, json.dumps({"error": prefix + value}).encode()

    def forget(self) -> None:
        with _reads_lock:
            _reads.pop(self.id, None)


def _joined(pages: Iterator[list[dict[str, Any]]], encode: Any) -> Iterator[str]:
    """Fetched pages as JSON arrays of about PAGE_BYTES each: fewer round trips through the worker."""
    parts: list[str] = []
    size = 0
    for page in pages:
        text = json.dumps(encode(page), separators=(",", ":"))
        parts.append(text[1:-1])
        size += len(text)
        if size >= PAGE_BYTES:
            yield "[" + ",".join(p for p in parts if p) + "]"
            parts, size = [], 0
    if parts:
        yield "[" + ",".join(p for p in parts if p) + "]"


_reads: dict[str, _Read] = {}
_reads_lock = threading.Lock()


def _close() -> None:
    """Stop every read (a connection cannot close while one of its cursors runs), then close."""
    assert _warehouse is not None
    with _reads_lock:
        reads = list(_reads.values())
        _reads.clear()
    for read in reads:
        read.cancel()
    for read in reads:
        read.finished.wait(timeout=10.0)
    _warehouse.close()


def _page(read_id: str, rows_json: str, *, done: bool) -> bytes:
    """{cursor, done, rows} in duck_shared's typed JSON (a mapping is tagged $map)."""
    return ('{"$map":[["cursor",%s],["done",%s],["rows",%s]]}' % (
        json.dumps(read_id), "true" if done else "false", rows_json)).encode()


def _read_page(request: dict[str, Any]) -> tuple[int, bytes]:
    """One answer to a read request from another process (payflow/web.py relays it as it is):
    {sql, params, max_rows} starts a read, {cursor} takes its next page, {cursor, cancel}
    stops it. A page: {"cursor", "done", "rows"}; a refusal: status 400 and {"error"}."""
    from payflow.warehouse.duck_shared import QueryError, checked_query, duckdb_single_select
    assert _warehouse is not None
    if "cursor" in request:
        with _reads_lock:
            read = _reads.get(str(request["cursor"]))
        if read is None:
            return 400, json.dumps({"error": "no such read (finished, cancelled or past its time bound)"}).encode()
        if request.get("cancel"):
            read.cancel()
            read.forget()
            return 200, _page(read.id, "[]", done=True)
        return read.next_answer()
    try:
        duck_sql = checked_query(str(request["sql"]))
        if not duckdb_single_select(_warehouse.con, duck_sql):  # type: ignore[attr-defined]
            raise QueryError("only one read-only statement (SELECT) is accepted through the worker")
    except QueryError as exc:
        return 400, json.dumps({"error": f"read-only: {exc}"}).encode()
    with _reads_lock:
        for stale in [r for r in _reads.values() if r.stale()]:  # answered by nobody who came back
            _reads.pop(stale.id, None)
        if len(_reads) >= MAX_RUNNING_READS:
            return 503, json.dumps({"error": f"{MAX_RUNNING_READS} reads are running in this worker already: "
                                             "try again when one has finished"}).encode()
        max_rows = request.get("max_rows")
        read = _Read(duck_sql, request.get("params") or {}, int(max_rows) if max_rows else None)
        _reads[read.id] = read
    return read.next_answer()


def _land_pickled(batch: bytes) -> tuple[dict[str, int] | None, int | None]:
    """(the landing's result, None), or (the result, the bytes DuckDB cannot evict) if the key
    index has grown into half of what the memory limit leaves beyond it, or (None, the memory limit) if
    the landing ran out of memory (rolled back): either way the worker replaces this process
    with one that has more room (ChildProcessDuckDB.land)."""
    from payflow.warehouse.duck import _out_of_memory
    assert _warehouse is not None
    try:
        landed = _warehouse.land(pickle.loads(batch))
    except Exception as exc:
        if not _out_of_memory(exc):
            raise
        return None, _memory_limit
    finally:
        return_free_memory()  # the batch's rows and Arrow arrays, freed: back to the kernel
    need = max(_key_index_bytes(_warehouse.con), _pinned_bytes())
    return landed, (need if need > _memory_limit - _room // 2 else None)


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

    def __init__(self, path: str, *, web_port: int, cache_mb: int, bounds: QueryBounds):
        """`web_port`: where other processes reach this worker (published in the owner file);
        `cache_mb`: the landing process's DuckDB cache; `bounds`: what a read may take."""
        self.path = path
        self.cache_bytes = cache_mb * 2**20
        self.bounds = bounds
        self.restarts = 0
        self._pool_lock = threading.RLock()  # a landing process replaced: callers wait for the new one
        self._pool = self._spawn(pinned_hint=0)
        # where other processes find us while we hold the file (duck_shared.py); the token
        # authenticates their requests on the web port
        self.owner_token: str | None = None
        if path != ":memory:":
            from payflow.warehouse.duck_shared import publish_owner
            self.owner_token = publish_owner(path, web_port)
            # the worker stops without closing its warehouse (the child dies with it): withdraw
            # at exit too; a file left by a killed worker is only read on a lock conflict
            import atexit

            from payflow.warehouse.duck_shared import withdraw_owner
            atexit.register(withdraw_owner, path)

    def _spawn(self, pinned_hint: int) -> ProcessPoolExecutor:
        # spawn, not fork: the worker has threads (DuckDB's, the event loop's executors)
        # started here, with an environment without secrets (multiprocessing's resource tracker too)
        with _secrets_out_of_environment():
            pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                                       initializer=_start, initargs=(self.path, os.getpid(), self.bounds,
                                                                     self.cache_bytes, pinned_hint))
            pool.submit(os.getpid).result()
        return pool

    def _submit(self, fn: Any, *args: Any) -> Future:
        with self._pool_lock:
            return self._pool.submit(fn, *args)

    def _run(self, method: str, *args: Any) -> Any:
        return self._submit(_call, method, *args).result()

    def ensure_schema(self) -> None:
        self._run("ensure_schema")

    def land(self, batch: LandingBatch) -> dict[str, int]:
        landed, pinned = self._submit(_land_pickled, _pickled_without_memo(batch)).result()
        if pinned is not None:
            self._replace_landing_process(pinned)
        if landed is None:
            raise TransientWarehouseError("the DuckDB landing process ran out of memory: replaced by one with "
                                          f"{self.cache_bytes // 2**20} MB more; the landing is tried again")
        return landed

    def _replace_landing_process(self, pinned: int) -> None:
        """The key index has grown into the landing process's memory limit (or a landing ran
        out of memory: `pinned` is then the whole limit), which cannot be raised once its
        configuration is locked: a new landing process, fitted to `pinned` plus the cache
        (reads under way in the old one are stopped; their callers see an error)."""
        with self._pool_lock:
            old = self._pool
            try:
                old.submit(_close).result()
            except Exception as exc:  # noqa: BLE001 - gone or broken: the new process opens the file all the same
                log.warning("stage sink: the DuckDB landing process did not close cleanly (%s); replacing it",
                            type(exc).__name__)
            finally:
                old.shutdown(wait=True)
            self._pool = self._spawn(pinned_hint=pinned)
            self.restarts += 1
        log.info("stage sink: DuckDB landing process replaced: its memory limit fitted to %d MB that DuckDB "
                 "cannot evict plus %d MB (PAYFLOW_DUCKDB_LANDING_CACHE_MB)", pinned // 2**20,
                 self.cache_bytes // 2**20)

    def query(self, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        return self._run("query", sql, params)

    def query_beside_landings(self, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Through read_page: the landing process's one thread only starts the read and hands
        out its pages, so a landing waits at most PAGE_WAIT_SECONDS behind it."""
        from payflow.warehouse.duck_shared import QueryError, loads
        request: dict[str, Any] = {"sql": sql, "params": params or {}}
        rows: list[dict[str, Any]] = []
        while True:
            status, body = self.read_page(request).result()
            answer = loads(body)
            if status != 200:
                raise QueryError(str(answer.get("error")))
            rows += answer["rows"]
            if answer["done"]:
                return rows
            request = {"cursor": answer["cursor"]}

    def read_page(self, request: dict[str, Any]) -> "Future[tuple[int, bytes]]":
        """A read request from another process (see _read_page), answered by the landing
        process within about PAGE_WAIT_SECONDS; the status and body to relay as they are."""
        return self._submit(_read_page, request)

    def erase(self, pii_hashes: list[tuple[str, str]], mode: str, request_id: str) -> ErasureReceipt:
        return self._run("erase", pii_hashes, mode, request_id)

    def land_labels(self, rows: list[dict[str, Any]]) -> int:
        return self._run("land_labels", rows)

    def string_columns(self) -> dict[str, list[str]]:
        return self._run("string_columns")

    def erased_subjects(self) -> list[tuple[str, str, str]]:
        return self._run("erased_subjects")

    def close(self) -> None:
        if self.owner_token is not None:
            from payflow.warehouse.duck_shared import withdraw_owner
            withdraw_owner(self.path)
        try:
            self._submit(_close).result()
        finally:
            self._pool.shutdown(wait=True)
