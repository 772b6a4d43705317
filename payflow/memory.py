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
