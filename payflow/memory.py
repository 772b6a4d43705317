"""Keeping the worker's processes within their memory budget (512 MB RSS for the worker and
its landing process, `make bench`)."""
from __future__ import annotations


def limit_malloc_arenas(arenas: int = 2) -> None:
    """Cap glibc's malloc arenas (M_ARENA_MAX). By default every thread that allocates may
    get an arena of its own (up to 8 per core), each keeping freed memory for reuse; the
    worker's executor and RocksDB threads and DuckDB's threads allocate a batch's worth at
    a time. Takes effect for arenas created from now on."""
    try:
        import ctypes
        ctypes.CDLL(None).mallopt(-8, arenas)  # M_ARENA_MAX
    except (OSError, AttributeError):  # pragma: no cover - not glibc
        pass


def tune_garbage_collector(first_generation: int = 50_000) -> None:
    """Run the cyclic garbage collector less often, and never over what exists now.

    A batch allocates hundreds of thousands of container objects (decoded documents, rows,
    records), nearly all freed by reference counting, yet each 700 net allocations started a
    collection that walked the young objects, and the older generations walked every long-lived
    object of Faust, aiokafka and the tables: ~30% of the stages' CPU (offline profile of
    BatchProcessor.process, 69 -> 49 µs/event). `gc.freeze()` moves what is alive at start-up
    (modules, the app) out of the collector's sight; the larger first threshold lets a batch's
    short-lived objects die by reference count before a collection looks at them. Cyclic
    garbage is still collected, only in bigger steps."""
    import gc
    gc.freeze()
    _, second, third = gc.get_threshold()
    gc.set_threshold(first_generation, second, third)
