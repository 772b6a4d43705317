"""The warehouse sink: lands one batch, off the event loop, with retries.

Blocking warehouse calls run in a worker thread, each attempt bounded by a timeout. Transient
errors (a timed-out attempt included) are retried with
exponential backoff and jitter (tenacity) for up to PAYFLOW_SINK_MAX_RETRY_SECONDS; a
permanent error, or retries running out, stops the sink loudly: it never returns, so the
batch is never acknowledged and its offsets are never committed. Nothing is dropped.

A timed-out call cannot be stopped (it runs in a thread) and holds what it serialised for
the warehouse; at most `max_calls` calls of one landing run at once: beyond that an attempt
waits for one of them instead of starting another, and an abandoned call that succeeds
late is the landing's answer (landing is idempotent).

The sink also knows how long its oldest unacknowledged landing has been running
(`landing_seconds`): readiness and the health watch call a landing that fails or hangs for
longer than PAYFLOW_READY_LANDING_STALL_SECONDS a warehouse outage, long before the
retries run out.
"""
from __future__ import annotations

import asyncio
import logging
import time

from tenacity import AsyncRetrying, retry_if_exception, stop_after_delay, wait_exponential_jitter

from payflow import metrics
from payflow.warehouse.base import LandingBatch, TransientWarehouseError, Warehouse

log = logging.getLogger("payflow.sink")  # the name health.py watches for warehouse outages


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


def retrying(max_retry_seconds: float, *, initial_backoff: float = 0.2, max_backoff: float = 10.0,
             before_sleep=None) -> AsyncRetrying:
    """The warehouse retry policy: transient errors retried with exponential backoff and
    jitter for up to `max_retry_seconds`, then the last error raised."""
    return AsyncRetrying(retry=retry_if_exception(is_transient),
                         wait=wait_exponential_jitter(initial=initial_backoff, max=max_backoff),
                         stop=stop_after_delay(max_retry_seconds), before_sleep=before_sleep, reraise=True)


class SinkStopped(RuntimeError):
    pass


# refusals further apart than this are not one streak (a refused landing is read again at once)
REFUSAL_STREAK_GAP_SECONDS = 30.0


class WarehouseSink:
    def __init__(self, warehouse: Warehouse, *, max_retry_seconds: float = 300.0,
                 initial_backoff: float = 0.2, max_backoff: float = 10.0, attempt_timeout: float = 60.0,
                 max_calls: int = 2):
        self.warehouse = warehouse
        self.attempt_timeout = attempt_timeout
        self.max_calls = max(1, max_calls)
        self._landings: dict[object, float] = {}  # landings not yet acknowledged -> their start
        self.max_retry_seconds = max_retry_seconds
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self.healthy = True
        self.last_ack = time.monotonic()
        self.failure: str | None = None
        # since when every landing has come back refused by the group (BigQuery's fence: the
        # decision unanswered or refused), None after one that landed: each returns at once,
        # so no landing looks stalled while nothing is committed
        self.refused_since: float | None = None
        self.last_refused = 0.0  # and the last refusal (monotonic)

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

    def landing_seconds(self, now: float | None = None) -> float:
        """How long the oldest landing not yet acknowledged has been running (0: none)."""
        if not self._landings:
            return 0.0
        return max(0.0, (time.monotonic() if now is None else now) - min(self._landings.values()))

    def refused_seconds(self, now: float | None = None) -> float:
        """How long every landing has been refused by the group (0: the last one landed)."""
        if self.refused_since is None:
            return 0.0
        return max(0.0, (time.monotonic() if now is None else now) - self.refused_since)

    def up(self, stall_seconds: float, now: float | None = None) -> bool:
        """Not stopped, and no landing failing or hanging for longer than `stall_seconds`, nor
        every landing refused for longer while refusals go on (one refused landing with none
        after it, its partitions gone at a rebalance, is no outage)."""
        now = time.monotonic() if now is None else now
        refusing = self.refused_since is not None and now - self.last_refused <= stall_seconds
        return (self.healthy and self.landing_seconds(now) <= stall_seconds
                and not (refusing and self.refused_seconds(now) > stall_seconds))

    async def land(self, batch: LandingBatch, first_attempt: asyncio.Future | None = None) -> dict[str, int]:
        if not self.healthy:
            raise SinkStopped(self.failure or "sink stopped")
        started = time.perf_counter()
        token = object()
        self._landings[token] = time.monotonic()
        calls: list[asyncio.Future] = [first_attempt] if first_attempt is not None else []
        try:
            async for attempt in retrying(self.max_retry_seconds, initial_backoff=self.initial_backoff,
                                          max_backoff=self.max_backoff, before_sleep=self._before_retry):
                with attempt:
                    inserted = await self._attempt(batch, calls, fresh=first_attempt is None)
                first_attempt = None
        except Exception as exc:
            self.healthy = False
            self.failure = f"{type(exc).__name__}: {exc}"
            metrics.SINK_UP.set(0)
            log.critical("warehouse sink stopped: %s; the batch stays unacknowledged and its offsets "
                         "uncommitted; fix the warehouse and restart the worker", self.failure)
            raise SinkStopped(self.failure) from exc
        finally:
            del self._landings[token]
            for call in calls:  # abandoned calls: their late outcome is moot
                call.add_done_callback(_consume_outcome)
        if getattr(inserted, "fenced", False):
            now = time.monotonic()
            if self.refused_since is None or now - self.last_refused > REFUSAL_STREAK_GAP_SECONDS:
                self.refused_since = now  # a new streak: the last refusal is long past
            self.last_refused = now
        else:
            self.refused_since = None
        metrics.SINK_FLUSH.observe(time.perf_counter() - started)
        metrics.SINK_BATCH.observe(len(batch))
        for table, n in inserted.items():
            metrics.ROWS_LANDED.labels(table).inc(n)
        self.last_ack = time.monotonic()
        metrics.LAST_ACK_TIME.set(time.time())
        return inserted

    async def _attempt(self, batch: LandingBatch, calls: list[asyncio.Future], fresh: bool) -> dict[str, int]:
        """One attempt: a new call (unless `max_calls` still run), then wait for the first
        of the landing's calls to finish. A call that hangs counts as a transient failure,
        so the retry policy and its logs stay in charge."""
        for call in [c for c in calls if c.done()]:  # finished between two attempts
            calls.remove(call)
            if not call.cancelled() and call.exception() is None:
                return call.result()  # an abandoned call landed after all
        if fresh and len(calls) < self.max_calls:
            calls.append(asyncio.get_running_loop().run_in_executor(None, self.warehouse.land, batch))
        done, _ = await asyncio.wait(calls, timeout=self.attempt_timeout, return_when=asyncio.FIRST_COMPLETED)
        if not done:
            raise TimeoutError(f"no answer from the warehouse within {self.attempt_timeout:.0f} s")
        for call in done:
            calls.remove(call)
        landed = [c for c in done if not c.cancelled() and c.exception() is None]
        if landed:
            return landed[0].result()
        failed = next(iter(done))
        raise failed.exception() if not failed.cancelled() else asyncio.CancelledError()

    @staticmethod
    def _before_retry(state) -> None:
        metrics.SINK_RETRIES.inc()
        exc = state.outcome.exception() if state.outcome else None
        log.warning("warehouse unavailable (%s), retry %d", type(exc).__name__ if exc else "?", state.attempt_number)


def _consume_outcome(call: asyncio.Future) -> None:
    if not call.cancelled():
        call.exception()  # retrieved: asyncio logs no "exception was never retrieved"
