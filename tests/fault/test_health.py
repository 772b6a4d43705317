"""Health that tells the truth, and memory bounded under backpressure, on real worker
processes and the real broker: a frozen broker (a proxy that stops forwarding: sockets open,
no answers, as with a SIGSTOPped broker) and a frozen warehouse (the DuckDB landing process
SIGSTOPped) make /readyz 503 within their bounds and it is 200 again after; the outage is
logged when it starts; a worker whose warehouse hangs stops fetching at
PAYFLOW_MAX_BUFFERED_BYTES and loses nothing."""
from __future__ import annotations

import json
import signal
import time

import psutil
import pytest

from tests.fault.test_faults import assert_reconciled_and_clean, consumed
from tests.helpers import KAFKA, Worker, produce, simulate, unique, wait_until
from tests.kafka_proxy import FreezableKafkaProxy

pytestmark = [pytest.mark.integration, pytest.mark.fault]


def ready(worker: Worker) -> int | None:
    try:
        return worker.get("/readyz")[0]
    except OSError:
        return None


def log_lines(worker: Worker) -> list[dict]:
    out = []
    for line in worker.log_path.read_text(errors="replace").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            pass
    return out


def landing_processes(worker: Worker) -> list[psutil.Process]:
    """The worker's DuckDB landing process (not multiprocessing's resource tracker)."""
    return [c for c in psutil.Process(worker.proc.pid).children(recursive=True)
            if "resource_tracker" not in " ".join(c.cmdline())]


def seconds_until(predicate, timeout: float, what: str) -> float:
    started = time.monotonic()
    wait_until(predicate, timeout, interval=0.5, what=what)
    return time.monotonic() - started


@pytest.mark.alone
def test_a_frozen_broker_makes_the_worker_unready_within_15_s_and_ready_again_after(kafka, tmp):
    prefix = unique("frz-") + "-"
    simulate(prefix, tmp / "m.json", count=4_000, seed=61)
    host, port = KAFKA.split(",")[0].rsplit(":", 1)
    proxy = FreezableKafkaProxy(host, int(port))
    worker = Worker(tmp, prefix=prefix, extra_env={"PAYFLOW_KAFKA_BOOTSTRAP": f"127.0.0.1:{proxy.port}",
                                                   "PAYFLOW_SINK_BATCH_SIZE": "500"}).start()
    try:
        worker.wait_caught_up(timeout=300)
        wait_until(lambda: ready(worker) == 200, 60, what="/readyz 200 before the freeze")
        proxy.freeze()
        frozen_at = time.monotonic()
        took = seconds_until(lambda: ready(worker) == 503, 60, "/readyz 503 with the broker frozen")
        assert took <= 15, f"/readyz took {took:.0f} s to say the frozen broker is down"
        body = worker.get_json("/readyz")
        assert body["checks"]["broker"] is False, body
        # the outage is logged while it lasts, not only once the broker answers again
        wait_until(lambda: any(r["message"].startswith("Kafka broker outage started") for r in log_lines(worker)),
                   30, what="the outage logged during the freeze")
        time.sleep(max(0.0, 25 - (time.monotonic() - frozen_at)))
        assert ready(worker) == 503
        proxy.thaw()
        seconds_until(lambda: ready(worker) == 200, 90, "/readyz 200 after the broker answers again")
        assert worker.alive(), worker.log_tail()
        wait_until(lambda: any(r["message"].startswith("Kafka broker outage ended") for r in log_lines(worker)),
                   60, what="the outage's end logged")
    finally:
        proxy.thaw()
        assert worker.stop() == 0, worker.log_tail()
        proxy.stop()
    assert_reconciled_and_clean(worker, tmp / "m.json")


def start_with_frozen_warehouse(tmp, prefix: str, env: dict) -> tuple[Worker, list[psutil.Process]]:
    """A worker on an empty raw topic, ready, then its landing process frozen (SIGSTOP)."""
    produce(prefix + "payment-events", [], partitions=4)
    worker = Worker(tmp, prefix=prefix, extra_env={"PAYFLOW_SINK_BATCH_SIZE": "500", **env}).start()
    wait_until(lambda: ready(worker) == 200, 180, what="/readyz 200 before the freeze")
    frozen = landing_processes(worker)
    assert frozen, "no landing process found"
    for p in frozen:
        p.send_signal(signal.SIGSTOP)
    return worker, frozen


@pytest.mark.alone
def test_a_frozen_warehouse_makes_the_worker_unready_within_the_stall_bound_and_ready_again_after(kafka, tmp):
    prefix = unique("wfz-") + "-"
    worker, frozen = start_with_frozen_warehouse(tmp, prefix, {"PAYFLOW_READY_LANDING_STALL_SECONDS": "10"})
    try:
        simulate(prefix, tmp / "m.json", count=4_000, seed=62)  # a landing in flight, hanging
        took = seconds_until(lambda: ready(worker) == 503, 90, "/readyz 503 with the warehouse frozen")
        assert took <= 10 + 15, f"/readyz took {took:.0f} s to say the frozen warehouse is down"
        body = worker.get_json("/readyz")
        assert body["checks"]["warehouse"] is False, body
        assert worker.metrics()[("payflow_sink_up", ())] == 0
        wait_until(lambda: any(r["message"].startswith("warehouse outage started: a landing has not been")
                               for r in log_lines(worker)), 10, what="the outage logged when it starts")
        for p in frozen:
            p.send_signal(signal.SIGCONT)
        frozen = []
        seconds_until(lambda: ready(worker) == 200, 120, "/readyz 200 after the warehouse answers again")
        assert worker.metrics()[("payflow_sink_up", ())] == 1
        worker.wait_caught_up(timeout=300)
    finally:
        for p in frozen:
            p.send_signal(signal.SIGCONT)
        assert worker.stop() == 0, worker.log_tail()
    assert_reconciled_and_clean(worker, tmp / "m.json")


def test_a_worker_stops_fetching_at_the_buffered_bytes_bound_and_loses_nothing(kafka, tmp):
    prefix = unique("mem-") + "-"
    bound = 2 * 2**20
    # the landing limit in messages far above what the bytes bound lets through: the bytes decide
    worker, frozen = start_with_frozen_warehouse(tmp, prefix, {
        "PAYFLOW_SINK_LANDING_BATCHES": "1000", "PAYFLOW_MAX_BUFFERED_BYTES": str(bound),
        "PAYFLOW_SINK_MAX_RETRY_SECONDS": "600"})
    try:
        simulate(prefix, tmp / "m.json", count=30_000, seed=64)
        wait_until(lambda: worker.metrics().get(("payflow_buffer_full_total", ()), 0) >= 1, 120,
                   what="the buffered-bytes bound reached")
        time.sleep(5)
        stopped_at = consumed(worker)
        time.sleep(15)
        # consumption stops far short of the 30,000 waiting events, and stays stopped
        assert consumed(worker) == stopped_at, "the worker kept fetching past the bound"
        assert stopped_at < 5_000, f"{stopped_at:.0f} events consumed: the bound did not hold"
        held = worker.metrics()[("payflow_buffered_bytes", ())]
        assert held <= 2 * bound, f"{held / 2**20:.1f} MiB held (bound {bound / 2**20:.0f} MiB and one batch)"
        for p in frozen:
            p.send_signal(signal.SIGCONT)
        frozen = []
        worker.wait_caught_up(timeout=300)
    finally:
        for p in frozen:
            p.send_signal(signal.SIGCONT)
        assert worker.stop() == 0, worker.log_tail()
    assert_reconciled_and_clean(worker, tmp / "m.json")
