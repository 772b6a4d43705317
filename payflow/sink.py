"""The warehouse sink: lands one batch, off the event loop, with retries.

Blocking warehouse calls run in a worker thread, each attempt bounded by a timeout. Transient
errors (a timed-out attempt included) are retried with
exponential backoff and jitter (tenacity) for up to PAYFLOW_SINK_MAX_RETRY_SECONDS; a
permanent error, or retries running out, stops the sink loudly: it never returns, so the
batch is never acknowledged and its offsets are never committed. Nothing is dropped.
"""
from __future__ import annotations

import asyncio
import logging
import time

from tenacity import AsyncRetrying, retry_if_exception, stop_after_delay, wait_exponential_jitter

from payflow import metrics
from payflow.warehouse.base import LandingBatch, TransientWarehouseError, Warehouse

log = logging.getLogger(__name__)


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, (TransientWarehouseError, ConnectionError, TimeoutError)):
        return True
    try:
        import requests
        from google.api_core import exceptions as gexc
        return isinstance(exc, (gexc.ServerError, gexc.TooManyRequests, gexc.RetryError,
                                requests.ConnectionError, requests.Timeout))
    except ImportError:  # pragma: no cover
        return False


class SinkStopped(RuntimeError):
    pass


class WarehouseSink:
    def __init__(self, warehouse: Warehouse, *, max_retry_seconds: float = 300.0,
                 initial_backoff: float = 0.2, max_backoff: float = 10.0, attempt_timeout: float = 60.0):
        self.warehouse = warehouse
        self.attempt_timeout = attempt_timeout
        self.max_retry_seconds = max_retry_seconds
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self.healthy = True
        self.last_ack = time.monotonic()
        self.failure: str | None = None

    def start(self, batch: LandingBatch) -> asyncio.Task:
        """Land `batch` in the background, its first attempt handed to a thread right now.

        The caller's next batch holds the event loop for a few hundred ms; started through
        the loop (a task, wait_for's inner task, to_thread), the landing only reached its
        thread after that, and the worker then waited for it (~0.1 s per 2,000-event batch,
        `make bench`)."""
        started = time.perf_counter()
        first = asyncio.get_running_loop().run_in_executor(None, self.warehouse.land, batch) \
            if self.healthy else None
        task = asyncio.ensure_future(self.land(batch, first_attempt=first))
        # the "sink" stage's seconds: from the start to the warehouse's ack (or failure)
        task.add_done_callback(lambda _: metrics.STAGE_SECONDS.labels("sink").inc(time.perf_counter() - started))
        return task

    async def land(self, batch: LandingBatch, first_attempt: asyncio.Future | None = None) -> dict[str, int]:
        if not self.healthy:
            raise SinkStopped(self.failure or "sink stopped")
        started = time.perf_counter()
        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception(is_transient),
                wait=wait_exponential_jitter(initial=self.initial_backoff, max=self.max_backoff),
                stop=stop_after_delay(self.max_retry_seconds),
                before_sleep=self._before_retry,
                reraise=True,
            ):
                with attempt:
                    # a call that hangs counts as a transient failure, so the retry policy and
                    # its logs stay in charge; the abandoned call is harmless if it ever
                    # finishes, landing is idempotent
                    call, first_attempt = first_attempt, None
                    if call is None:
                        call = asyncio.to_thread(self.warehouse.land, batch)
                    inserted = await asyncio.wait_for(call, self.attempt_timeout)
        except Exception as exc:
            self.healthy = False
            self.failure = f"{type(exc).__name__}: {exc}"
            metrics.SINK_UP.set(0)
            log.critical("warehouse sink stopped: %s; the batch stays unacknowledged and its offsets "
                         "uncommitted; fix the warehouse and restart the worker", self.failure)
            raise SinkStopped(self.failure) from exc
        metrics.SINK_FLUSH.observe(time.perf_counter() - started)
        metrics.SINK_BATCH.observe(len(batch))
        for table, n in inserted.items():
            metrics.ROWS_LANDED.labels(table).inc(n)
        self.last_ack = time.monotonic()
        metrics.LAST_ACK_TIME.set(time.time())
        return inserted

    @staticmethod
    def _before_retry(state) -> None:
        metrics.SINK_RETRIES.inc()
        exc = state.outcome.exception() if state.outcome else None
        log.warning("warehouse unavailable (%s), retry %d", type(exc).__name__ if exc else "?", state.attempt_number)
