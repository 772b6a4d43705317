"""Seams in Faust's worker process: committed reads (whose commits carry what a BigQuery
landing needs kept, landing_fence.with_carried_metadata), a bounded shutdown, and a
rebalance during the stop left to aiokafka (`rebalance_while_stopping_left_to_aiokafka`).

read_committed: Faust's aiokafka driver reads with isolation_level=read_committed only
under processing_guarantee=exactly_once; otherwise a payment a producer wrote inside a
transaction it then aborted would be processed and land. The worker's consumer is made
read_committed whatever the guarantee (aiokafka skips aborted records and control
markers; the offsets they take are filed as gaps, which commits step over).

Bounded shutdown: a SIGTERM (or Ctrl-C) starts Faust's graceful stop and, beside it, a
watchdog thread. Faust's stop waits for the agents, and an agent may be waiting on a
landing that hangs (a wedged warehouse), and the interpreter joins executor threads at
exit: a stop could take for ever. After PAYFLOW_SHUTDOWN_SECONDS the watchdog logs one
line and ends the process with exit code 75. Nothing is lost by it: offsets are acked
only after their batch landed, so whatever was in flight is read again at the restart.
"""
from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
import time
from typing import Any, Awaitable, Callable

from payflow.runtime import seams

log = logging.getLogger("payflow.worker")

SHUTDOWN_TIMED_OUT_EXIT = 75  # EX_TEMPFAIL: the orchestrator restarts it
_shutdown_seconds = 30.0
_watchdog_started = threading.Event()


def create_read_committed_consumer(self: Any, transport: Any) -> Any:
    """AIOKafkaConsumerThread._create_worker_consumer, its consumer made read_committed."""
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
    consumer = seams.original(AIOKafkaConsumerThread, "_create_worker_consumer")(self, transport)
    # stored as given and handed to aiokafka's Fetcher at consumer.start()
    consumer._isolation_level = "read_committed"  # noqa: SLF001 - see module docstring
    # Faust commits with empty metadata: a BigQuery landing's floors ride on its commits
    from payflow.runtime.landing_fence import with_carried_metadata
    commit = consumer.commit

    async def commit_carrying(offsets: Any = None) -> Any:
        return await commit(with_carried_metadata(offsets))

    consumer.commit = commit_carrying
    return consumer


def start_shutdown_watchdog(seconds: float | None = None,
                            exit_: Callable[[int], None] = os._exit) -> bool:
    """Hard-exit after `seconds` unless the process ended first; once per process."""
    if _watchdog_started.is_set():
        return False
    _watchdog_started.set()
    limit = _shutdown_seconds if seconds is None else seconds

    def watch() -> None:
        time.sleep(limit)
        log.critical("shutdown did not finish within %.0f s (PAYFLOW_SHUTDOWN_SECONDS): exiting now; "
                     "unacknowledged batches are read again at the next start", limit)
        _flush_and_exit(SHUTDOWN_TIMED_OUT_EXIT, exit_)

    threading.Thread(target=watch, name="payflow-shutdown-watchdog", daemon=True).start()
    return True


def on_sigterm_with_watchdog(self: Any) -> None:
    import faust.worker
    start_shutdown_watchdog()
    seams.original(faust.worker.Worker, "_on_sigterm")(self)


def on_sigint_with_watchdog(self: Any) -> None:
    import faust.worker
    start_shutdown_watchdog()
    seams.original(faust.worker.Worker, "_on_sigint")(self)


def rebalance_while_stopping_left_to_aiokafka(self: Any) -> None:
    """App._on_rebalance_when_stopped, which Faust calls for a revocation or an assignment
    that arrives once the app is stopping: it "closed" the aiokafka consumer by running its
    group coordinator's and client's close on the app's event loop, while both live on the
    consumer thread's. The coordinator's close fails there (another loop's task) after
    marking it closing, and the consumer is marked closed, so the real stop later returns at
    once without leaving the group; the client's close fails requests in flight, and a
    closing coordinator never looks its group coordinator up again, so the stop's final
    commit retried for ever (the watchdog's exit 75) while the group waited for a member
    that would not rejoin. Nothing is done here: Faust's handler still returns at once, and
    aiokafka's own stop, on its own loop, commits and leaves the group."""
    return None


def install(shutdown_seconds: float) -> None:
    global _shutdown_seconds
    _shutdown_seconds = shutdown_seconds
    import faust
    import faust.worker
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    seams.replace(AIOKafkaConsumerThread, "_create_worker_consumer", create_read_committed_consumer)
    seams.replace(faust.App, "_on_rebalance_when_stopped", rebalance_while_stopping_left_to_aiokafka)
    seams.replace(faust.worker.Worker, "_on_sigterm", on_sigterm_with_watchdog)
    seams.replace(faust.worker.Worker, "_on_sigint", on_sigint_with_watchdog)


AGENT_FAILED_EXIT = 70  # EX_SOFTWARE
failure: str | None = None  # why the pipeline stopped, for /healthz in the moment before exit


def fail_stop(what: str, exc: BaseException, exit_: Callable[[int], None] = os._exit) -> None:
    """An agent failed: stop the process now, with one clear line and exit code 70.

    Not Faust's restart: a restarted agent came back beside the old one's leftovers (its
    DuckDB landing process still holding the file, its fetched messages still buffered) and
    looped, and while it looped offsets of messages nobody processed were committed. Called
    synchronously from the failing agent's except block, so no other coroutine (no commit)
    runs after the failure: what is committed is what landed, and the orchestrator's
    restart reads the rest again. The error is named by type and its (scrubbed) message.
    """
    global failure
    failure = f"{what}: {type(exc).__name__}: {exc}"
    log.critical("%s failed: %s: %s; stopping the worker (exit %d) without committing anything more; "
                 "the orchestrator restarts it and it resumes from the last landed batch",
                 what, type(exc).__name__, exc, AGENT_FAILED_EXIT, exc_info=exc)
    _flush_and_exit(AGENT_FAILED_EXIT, exit_)


async def run_or_fail_stop(what: str, body: Awaitable[None], stopping: Callable[[], bool]) -> None:
    """An agent's body, any failure of it a fail_stop: a cancellation too, unless
    `stopping()` says the worker or the agent is shutting down (then it goes on up)."""
    try:
        await body
    except asyncio.CancelledError:
        if stopping():
            raise
        fail_stop(what, asyncio.CancelledError("cancelled outside shutdown"))
    except Exception as exc:  # noqa: BLE001 - every failure stops the worker
        fail_stop(what, exc)


def _flush_and_exit(code: int, exit_: Callable[[int], None]) -> None:
    """Flush every log handler and the standard streams, then exit (os._exit: no cleanup)."""
    for handler in logging.getLogger().handlers:
        try:
            handler.flush()
        except Exception:  # noqa: BLE001 - exiting anyway
            pass
    sys.stdout.flush()
    sys.stderr.flush()
    exit_(code)
