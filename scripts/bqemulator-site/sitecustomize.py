"""Loaded by the emulator's interpreter only (scripts/bqemulator.sh puts this directory on
its PYTHONPATH): serializes bqemulator 1.4.0's use of its one DuckDB connection.

The emulator runs queries on its event-loop thread and Storage Write appends on gRPC
threads, both on one DuckDBPyConnection, which is not safe to use from two threads at once;
only writes take its (asyncio) write lock, and the gRPC path takes a threading lock of its
own. Under several workers appending to COMMITTED streams while others query, both threads
ended up waiting inside DuckDB for good (py-spy: the main thread in `fetch_arrow`, a gRPC
thread in `_flush_to_target`), and every later call timed out. One process-wide lock around
the engine's execute/fetch and the append's flush removes that; nothing else changes.
"""
import threading

try:
    from bqemulator.grpc_api import write_servicer as _write_servicer
    from bqemulator.storage import engine as _engine
except ImportError:  # another interpreter that happens to see this directory
    _engine = None

_CONNECTION_LOCK = threading.RLock()


def _serialized(method):
    def call(*args, **kwargs):
        with _CONNECTION_LOCK:
            return method(*args, **kwargs)
    call.__wrapped__ = method
    return call


if _engine is not None:
    for _cls, _name in ((_engine.DuckDBEngine, "execute"), (_engine.DuckDBEngine, "fetch_arrow"),
                        (_write_servicer.BigQueryWriteHandler, "_flush_to_target")):
        if not callable(getattr(_cls, _name, None)):
            raise SystemExit(f"bqemulator changed: {_cls.__name__}.{_name} is gone (scripts/bqemulator-site)")
        setattr(_cls, _name, _serialized(getattr(_cls, _name)))
