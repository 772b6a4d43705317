"""Worker web endpoints on PAYFLOW_WEB_PORT: /metrics (Prometheus), /livez, /healthz, /readyz,
POST /warehouse/query and /warehouse/erase (the embedded warehouse for other processes while
this worker holds its file: payflow/warehouse/duck_shared.py), and a timer that keeps lag and commit-age
gauges current."""
from __future__ import annotations

import asyncio
import hmac
import time

from faust import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from payflow import metrics
from payflow.runtime import health, internals, worker
from payflow.app import app, settings


@app.page("/metrics")
async def metrics_page(self: web.View, request: web.Request) -> web.Response:
    runtime = app.pipeline_runtime
    if runtime is not None:  # payflow_sink_up: the same truth as /readyz's warehouse check
        metrics.SINK_UP.set(1 if health.process_health().warehouse_ready(runtime.sink, time.monotonic()) else 0)
    return self.bytes(generate_latest(), content_type=CONTENT_TYPE_LATEST.split(";")[0])


@app.page("/livez")
async def live_page(self: web.View, request: web.Request) -> web.Response:
    """Liveness: the worker's event loop answers. Nothing else: a warehouse or broker outage
    is readiness (/readyz), and restarting every worker would not end it."""
    return self.json({"live": True})


@app.page("/healthz")
async def health_page(self: web.View, request: web.Request) -> web.Response:
    runtime = app.pipeline_runtime
    sink_ok = runtime is None or runtime.sink.healthy
    agent_ok = worker.failure is None
    body = {"status": "ok" if sink_ok and agent_ok else "failed",
            "sink": "ok" if sink_ok else runtime.sink.failure,
            "pipeline": "ok" if agent_ok else worker.failure}
    return self.json(body, status=200 if sink_ok and agent_ok else 503)


@app.page("/readyz")
async def ready_page(self: web.View, request: web.Request) -> web.Response:
    """Ready: the pipeline runs, no landing has failed, hung or been refused by the group
    for longer than PAYFLOW_READY_LANDING_STALL_SECONDS, a broker answered the health probe within
    PAYFLOW_READY_BROKER_SECONDS (a frozen broker too, payflow.runtime.health), and the raw
    topic's partitions are assigned."""
    runtime = app.pipeline_runtime
    state, now = health.process_health(), time.monotonic()
    checks = {
        "pipeline_started": runtime is not None,
        "warehouse": bool(runtime and state.warehouse_ready(runtime.sink, now)),
        "broker": state.broker_ready(now),
        # the raw topic's, not a changelog's or the erasure topic's: a worker started before
        # payment-events exists has nothing to do yet
        "raw_partitions_assigned": _raw_partitions_assigned(),
    }
    ready = all(checks.values())
    return self.json({"ready": ready, "checks": checks}, status=200 if ready else 503)


class _WarehouseEndpoint(web.View):
    """Base of the two warehouse endpoints: token check, typed-JSON body, one-line errors."""

    def _authorised(self, request: web.Request):
        """(the warehouse, None) for a request carrying the owner file's token, else (None, a refusal)."""
        runtime = app.pipeline_runtime
        wh = runtime.sink.warehouse if runtime is not None else None
        token = getattr(wh, "owner_token", None)
        if token is None:
            return None, self._error(503, "this worker holds no embedded DuckDB warehouse (yet)")
        given = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if not hmac.compare_digest(given.encode(), token.encode()):
            return None, self._error(403, "bad or missing token (read it from the warehouse's owner file)")
        return wh, None

    async def _answer(self, request: web.Request, call) -> web.Response:
        from payflow.warehouse import duck_shared
        wh, refusal = self._authorised(request)
        if refusal is not None:
            return refusal
        try:
            body = duck_shared.loads(await self.read_request_content(request))
            result = await asyncio.to_thread(call, wh, body)
        except duck_shared.ReadOnlyViolation as exc:
            return self._error(400, f"read-only: {exc}")
        except Exception as exc:  # noqa: BLE001 - a bad query is the caller's error, reported to it
            return self._error(400, " ".join(f"{type(exc).__name__}: {exc}".split()))
        return self.bytes(duck_shared.dumps(result), content_type="application/json")

    def _error(self, status: int, message: str) -> web.Response:
        return self.json({"error": message}, status=status)


# one read request at a time waits in the landing process's queue, so a landing queued
# behind reads waits for one page at most (payflow/warehouse/child.py)
_read_turn = asyncio.Lock()


@app.page("/warehouse/query")
class WarehouseQuery(_WarehouseEndpoint):
    """A read, a page per request (payflow/warehouse/duck_shared.py: WorkerWarehouse.pages): the landing
    process checks, runs and bounds it, and its answer is relayed as it is, never decoded
    here, so a large result costs the event loop nothing but the copy."""

    async def post(self, request: web.Request) -> web.Response:
        from payflow.warehouse import duck_shared
        wh, refusal = self._authorised(request)
        if refusal is not None:
            return refusal
        try:
            body = duck_shared.loads(await self.read_request_content(request))
            if not isinstance(body, dict) or not ("sql" in body or "cursor" in body):
                return self._error(400, "expected {sql, params} or {cursor}")
            async with _read_turn:
                status, answer = await asyncio.wrap_future(wh.read_page(body))
        except Exception as exc:  # noqa: BLE001 - a bad request is the caller's error, reported to it
            return self._error(400, " ".join(f"{type(exc).__name__}: {exc}".split()))
        return self.bytes(answer, content_type="application/json", status=status)


@app.page("/warehouse/erase")
class WarehouseErase(_WarehouseEndpoint):
    async def post(self, request: web.Request) -> web.Response:
        def erase(wh, b):
            r = wh.erase([tuple(p) for p in b["pii_hashes"]], b["mode"], b["request_id"])
            return {"mode": r.mode, "pii_hashes": r.pii_hashes, "rows_affected": r.rows_affected,
                    "seconds": r.seconds, "request_id": r.request_id}
        return await self._answer(request, erase)


def _raw_partitions_assigned() -> bool:
    try:
        return any(tp.topic == settings.topics.raw for tp in app.consumer.assignment())
    except Exception:  # noqa: BLE001 - consumer not started yet: not ready
        return False


_behind_since: dict[int, float] = {}


@app.timer(interval=5.0)
async def refresh_gauges() -> None:
    runtime = app.pipeline_runtime
    if runtime is not None:
        metrics.LAST_COMMIT_AGE.set(time.monotonic() - runtime.sink.last_ack)
        now = time.time()
        for partition, wm in runtime.processor._watermarks.items():
            metrics.WATERMARK_LAG.labels(str(partition)).set(max(0.0, now - wm / 1e6))
    consumer = app.consumer
    try:
        committed = internals.committed_offsets(app)  # what Faust last committed per TP
        for tp in consumer.assignment():
            if tp.topic != settings.topics.raw:
                continue  # changelog and erasure partitions are not the pipeline's lag
            high = consumer.highwater(tp)
            if high is not None:
                lag = consumer_lag(high, committed.get(tp))
                metrics.CONSUMER_LAG.labels(str(tp.partition)).set(lag)
                since = _behind_since.setdefault(tp.partition, time.time()) if lag else _behind_since.pop(tp.partition, None)
                metrics.CONSUMER_LAG_SECONDS.labels(str(tp.partition)).set(time.time() - since if lag else 0.0)
    except Exception:  # noqa: BLE001 - gauges are best effort while rebalancing
        pass


def consumer_lag(highwater: int, committed: int | None) -> int:
    """Kafka's lag: the high-water mark (the next offset to be written) minus the committed
    position (the next offset to read); everything, when nothing is committed yet."""
    return max(0, highwater - (committed if committed is not None else 0))
