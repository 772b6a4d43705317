"""Fault tests: each run ends in an exact reconciliation against the simulator's manifest
(0 missing, 0 extra, sums equal per currency) and a clean PCI scan. Real broker, real
worker processes, real emulator; the faults are real (SIGKILL, broker restart, a network
outage in front of the warehouse)."""
from __future__ import annotations

import random
import subprocess
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlparse

import psutil
import pytest

from payflow.compliance.pci import scan_all
from payflow.reconcile import reconcile
from payflow.settings import ROOT
from payflow.simulator import malformed
from payflow.simulator.manifest import load
from payflow.warehouse.bq import BigQueryWarehouse
from payflow.warehouse.duck import DuckDBWarehouse
from tests.helpers import BQ_GRPC, BQ_PROJECT, KAFKA, Worker, dlq_records, list_topics, simulate, unique, wait_until
from tests.outage_proxy import OutageProxy

pytestmark = [pytest.mark.integration, pytest.mark.fault]
DECODED = ("payflow_stage_events_in_total", (("stage", "decode"),))


def consumed(worker: Worker) -> float:
    return worker.metrics().get(DECODED, 0)


def assert_reconciled_and_clean(worker: Worker, manifest_path: Path, warehouse=None, data_dir: Path | None = None) -> None:
    own = warehouse is None
    warehouse = warehouse or DuckDBWarehouse(worker.warehouse[len("duckdb:///"):])
    try:
        result = reconcile(warehouse, load(manifest_path))
        assert result.ok, result.report()
        topics = [t for t in list_topics() if (t.startswith(worker.prefix) and not t.endswith("payment-events"))
                  or t.startswith(worker.app_id + "-")]
        scan = scan_all(warehouse, log_files=[(data_dir or worker.tmp / "data") / "logs" / "worker.log", worker.log_path],
                        bootstrap=KAFKA, topics=topics)
        assert scan.ok, scan.summary()
        assert sum(scan.scanned.values()) > 0, scan.summary()
    finally:
        if own:
            warehouse.close()


@pytest.mark.parametrize("backend", ["duckdb", "bigquery"])
def test_worker_sigkilled_three_times_during_a_run(kafka, tmp, request, backend):
    prefix = unique("kill-") + "-"
    # long enough for every kill to land mid-stream (the emulator lands slower than DuckDB)
    m = simulate(prefix, tmp / "m.json", count=30_000 if backend == "duckdb" else 20_000, seed=31)
    env = {"PAYFLOW_SINK_BATCH_SIZE": "1000"}
    warehouse = dataset = None
    if backend == "bigquery":
        endpoint = request.getfixturevalue("bq_endpoint")
        dataset = unique("kill_")
        env["PAYFLOW_BIGQUERY_ENDPOINT"] = endpoint
        warehouse = BigQueryWarehouse(BQ_PROJECT, dataset, endpoint=endpoint, grpc_endpoint=BQ_GRPC)
    worker = Worker(tmp, prefix=prefix, extra_env=env,
                    warehouse=f"bigquery://{BQ_PROJECT}/{dataset}" if dataset else None).start()
    rng = random.Random(31)
    kills = []
    try:
        for fraction in sorted(rng.uniform(0.1, 0.85) for _ in range(3)):
            # kill at a random moment: once a random share of the run has been consumed,
            # after a random extra delay (mid-batch, mid-land or mid-commit alike)
            target = fraction * m["messages_sent"]
            wait_until(lambda: worker.alive() and consumed(worker) >= target, 300, interval=0.1,
                       what=f"{target:.0f} events consumed before kill {len(kills) + 1}")
            time.sleep(rng.uniform(0, 0.5))
            kills.append(consumed(worker))
            worker.kill()
            worker.start()
        worker.wait_caught_up(timeout=600)
    finally:
        assert worker.stop() == 0, worker.log_tail()
    assert len(kills) == 3 and worker.starts == 4
    try:
        assert_reconciled_and_clean(worker, tmp / "m.json", warehouse)
    finally:
        if warehouse is not None:
            warehouse.client.delete_dataset(f"{BQ_PROJECT}.{dataset}", delete_contents=True, not_found_ok=True)
            warehouse.close()


@pytest.mark.alone
def test_broker_restarted_mid_run(kafka, tmp):
    prefix = unique("brk-") + "-"
    m = simulate(prefix, tmp / "m.json", count=20_000, seed=32)
    worker = Worker(tmp, prefix=prefix, extra_env={"PAYFLOW_SINK_BATCH_SIZE": "1000"}).start()
    try:
        wait_until(lambda: consumed(worker) >= m["messages_sent"] * 0.3, 300, interval=0.1, what="30% consumed")
        pidfile = ROOT / "var" / "run" / "kafka" / "broker.pid"
        assert pidfile.exists(), "this test restarts the local broker that make test started"
        broker_before = pidfile.read_text().strip()
        restart = subprocess.run([str(ROOT / "scripts" / "kafka.sh"), "restart"], capture_output=True, text=True,
                                 timeout=180)
        assert restart.returncode == 0, restart.stderr
        assert pidfile.read_text().strip() != broker_before, "the broker was not restarted"
        # the worker rides out the outage (the clients reconnect); if Faust gave up it would have exited
        worker.wait_caught_up(timeout=600)
        assert worker.alive(), worker.log_tail()
    finally:
        assert worker.stop() == 0, worker.log_tail()
    assert_reconciled_and_clean(worker, tmp / "m.json")


def test_warehouse_unreachable_for_30_seconds(kafka, bq_endpoint, tmp):
    prefix = unique("wh-") + "-"
    m = simulate(prefix, tmp / "m.json", count=8_000, seed=33)
    emulator = urlparse(bq_endpoint)
    proxy = OutageProxy(emulator.hostname, emulator.port).up()
    dataset = unique("outage_")
    worker = Worker(tmp, prefix=prefix, warehouse=f"bigquery://{BQ_PROJECT}/{dataset}",
                    extra_env={"PAYFLOW_BIGQUERY_ENDPOINT": f"http://127.0.0.1:{proxy.port}",
                               "PAYFLOW_SINK_BATCH_SIZE": "1000",
                               "PAYFLOW_READY_LANDING_STALL_SECONDS": "10"}).start()
    peak_rss = 0
    try:
        wait_until(lambda: consumed(worker) >= 2000, 300, interval=0.2, what="2,000 events consumed")
        proxy.down()
        outage_end = time.monotonic() + 30
        lag_during = []
        while time.monotonic() < outage_end:
            assert worker.alive(), worker.log_tail()
            peak_rss = max(peak_rss, psutil.Process(worker.proc.pid).memory_info().rss)
            lag_during.append(worker.lag())
            time.sleep(1)
        metrics = worker.metrics()
        proxy.up()
        worker.wait_caught_up(timeout=600)
        after = worker.metrics()
    finally:
        assert worker.stop() == 0, worker.log_tail()
        proxy.stop()
    # the sink backed off and retried; the consumer stopped at the bounded batch in flight
    assert metrics[("payflow_sink_retries_total", ())] > 0
    # the sink tells the truth: down while a landing has hung past the stall bound, up after
    assert metrics[("payflow_sink_up", ())] == 0
    assert after[("payflow_sink_up", ())] == 1
    assert min(lag_during) > 0, "offsets were committed while the warehouse was unreachable"
    assert lag_during[-1] == lag_during[len(lag_during) // 2], "consumption went on without the warehouse"
    assert peak_rss < 512 * 2**20
    warehouse = BigQueryWarehouse(BQ_PROJECT, dataset, endpoint=bq_endpoint, grpc_endpoint=BQ_GRPC)
    try:
        assert_reconciled_and_clean(worker, tmp / "m.json", warehouse)
    finally:
        warehouse.client.delete_dataset(f"{BQ_PROJECT}.{dataset}", delete_contents=True, not_found_ok=True)
        warehouse.close()


def test_1500_malformed_messages_of_every_kind_mixed_into_traffic(kafka, tmp):
    prefix = unique("bad-") + "-"
    m = simulate(prefix, tmp / "m.json", count=30_000, seed=34, malformed_ratio=0.05)
    assert m["malformed"]["total"] >= 1000
    assert set(m["malformed"]["by_kind"]) == set(malformed.KINDS) and min(m["malformed"]["by_kind"].values()) >= 50
    worker = Worker(tmp, prefix=prefix).start()
    try:
        worker.wait_caught_up(timeout=600)  # every partition committed to its end: none stalled
        assert worker.alive() and worker.starts == 1
    finally:
        assert worker.stop() == 0, worker.log_tail()
    dlq = dlq_records(prefix + "payment-events-dlq")
    expected = Counter()
    for kind, n in m["malformed"]["by_kind"].items():
        expected[malformed.EXPECTED_REASON[kind]] += n
    assert Counter(d["reason"] for d in dlq) == expected
    assert all(d["reason"] and d["detail"] for d in dlq)
    assert_reconciled_and_clean(worker, tmp / "m.json")
