"""Process concerns of a worker: its memory budget (malloc's arenas, thresholds and trim, the
garbage collector) and the compiled per-event stages (mypyc, setup.py): which are in use,
and that none is stale.

A compiled module shadows its .py (Python imports the extension first), so one built
before its source last changed would run the old code without a word, and one whose source
is gone (a module merged or renamed) would still import under its old name.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

# the compiled stages (setup.py compiles every module of this folder)
STAGES_DIR = Path(__file__).parent.parent / "stages"
# a wheel's files are written one after another at install time: not a change of source
_INSTALL_SLACK_SECONDS = 2.0


class StaleCompiledModule(ImportError):
    pass


def compiled_modules(package_dir: Path = STAGES_DIR) -> dict[str, Path]:
    """module name -> its compiled extension, for the package's modules that have one built
    for this interpreter (venvs of several Python versions may share a checkout)."""
    from importlib.machinery import EXTENSION_SUFFIXES
    found = {}
    for so in sorted(package_dir.glob("*.so")):
        name = so.name.split(".", 1)[0]
        if so.name[len(name):] in EXTENSION_SUFFIXES:
            found[name] = so
    return found


def refuse_stale(package_dir: Path = STAGES_DIR) -> None:
    for name, extension in compiled_modules(package_dir).items():
        source = package_dir / f"{name}.py"
        if not source.exists():
            raise StaleCompiledModule(
                f"{extension.name} has no source {source.name} (a module merged or renamed since it was compiled): "
                "run `make install` to compile the stages again (or delete the .so files to run them as Python)")
        if source.stat().st_mtime > extension.stat().st_mtime + _INSTALL_SLACK_SECONDS:
            raise StaleCompiledModule(
                f"{source} changed after it was compiled to {extension.name}, which would run instead: "
                "run `make install` to compile it again (or delete the .so files to run the stages as Python)")


def limit_malloc_retention(arenas: int = 2, mmap_threshold: int = 256 * 1024) -> None:
    """Cap what glibc's malloc keeps of freed memory.

    M_ARENA_MAX: by default every thread that allocates may get an arena of its own (up to 8
    per core), each keeping freed memory for reuse; the worker's executor and RocksDB
    threads and DuckDB's threads allocate a batch's worth at a time. Takes effect for arenas
    created from now on.

    M_MMAP_THRESHOLD: by default glibc raises it to the size of every mmapped block freed
    (up to 32 MB), so after the first landing a batch's large arrays (Arrow buffers, list
    storage, pickled rows) come from the heap and stay there when freed; fixed, a block
    of 256 KiB or more is mapped on its own and handed back to the kernel when freed."""
    mallopt = _libc_function("mallopt")
    if mallopt is not None:
        mallopt(-8, arenas)  # M_ARENA_MAX
        mallopt(-3, mmap_threshold)  # M_MMAP_THRESHOLD (fixed: no dynamic raise)


def return_free_memory() -> None:
    """Hand the free pages inside malloc's heaps back to the kernel (glibc's malloc_trim):
    what a landing freed stays in the process's RSS otherwise, counted against the pod's
    memory until the next landing reuses it. Called after a landing and on a timer, not
    per event."""
    if _malloc_trim is not None:
        _malloc_trim(0)


def _libc_function(name: str) -> Any:
    try:
        import ctypes
        return getattr(ctypes.CDLL(None), name)
    except (OSError, AttributeError):  # pragma: no cover - not glibc
        return None


_malloc_trim = _libc_function("malloc_trim")


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
