"""Fault injection for the zombie-writer tests: stop the whole worker at a named moment of
its Nth landing, as a GC pause, a frozen node or CPU throttling would.

PAYFLOW_FAULT_PAUSE_LANDING = "<moment>:<N>": when this process's Nth landing reaches
<moment>, it logs one line and sends SIGSTOP to its own process group (the worker and its
DuckDB landing process). The test sees the worker stopped, lets the group evict it and a
successor re-land its partitions, then sends SIGCONT: the landing goes on from exactly that
moment, as a zombie. Moments, in landing order:

- before_write: the landing has read what it needs and writes nothing yet;
- between_tables: the first table's rows are committed (BigQuery) or written in the open
  transaction (DuckDB), the others not yet;
- before_offset_commit: every table is committed, the landing's offsets are not
  (payflow.pipeline.checkpoint, where fault_exit_after_land exits).

Read from the environment, not Settings: the DuckDB landing process checks it too.
"""
from __future__ import annotations

import logging
import os
import signal

MOMENTS = ("before_write", "between_tables", "before_offset_commit")
ENV = "PAYFLOW_FAULT_PAUSE_LANDING"

log = logging.getLogger("payflow.fault")
_reached: dict[str, int] = {}


def parse(value: str) -> tuple[str, int] | None:
    """("moment", N) from "moment:N"; None for "" (no pause). ValueError for anything else."""
    if not value:
        return None
    moment, _, n = value.partition(":")
    if moment not in MOMENTS or not n.isdigit() or int(n) < 1:
        raise ValueError(f"{ENV} must be <moment>:<N> with moment one of {MOMENTS} and N >= 1, not {value!r}")
    return moment, int(n)


def pause_at(moment: str) -> None:
    """Stop this process group if the configured landing reaches `moment` now."""
    wanted = parse(os.environ.get(ENV, ""))
    if wanted is None or wanted[0] != moment:
        return
    _reached[moment] = _reached.get(moment, 0) + 1
    if _reached[moment] != wanted[1]:
        return
    log.warning("fault injection: landing %d stops (SIGSTOP) at %s", wanted[1], moment)
    for handler in logging.getLogger().handlers:
        handler.flush()
    os.killpg(os.getpgrp(), signal.SIGSTOP)
