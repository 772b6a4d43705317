"""Two workers start, then the raw topic appears (issue 25): the rebalance that assigns the raw
partitions seeks them to their first offset while the simulator is already writing. One such
start in 27 lost a partition's first offsets (a seek racing a fetch in flight). Each start
here: two workers in one group on BigQuery (the emulator) report "Worker ready", the
simulator creates `payment-events` and sends its stream, and the warehouse must then hold
exactly the manifest; no commit may have been refused on the way
(payflow_commit_refused_total: a race caught at the point of commit).

`make test` runs PAYFLOW_TEST_START_RACE_RUNS starts (2 by default); `make chaos` runs 20."""
from __future__ import annotations

import os
import time

import pytest

from payflow.reconcile import reconcile
from payflow.simulator.manifest import load
from payflow.warehouse.bq import BigQueryWarehouse
from tests.fault.test_scale_out import where_missing
from tests.helpers import BQ_GRPC, BQ_PROJECT, Worker, simulate, unique, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.fault]
RUNS = int(os.environ.get("PAYFLOW_TEST_START_RACE_RUNS", "2"))
EVENTS = int(os.environ.get("PAYFLOW_TEST_START_RACE_EVENTS", "3000"))
REFUSED = "payflow_commit_refused_total"


def ready(worker: Worker) -> bool:
    assert worker.alive(), worker.log_tail()
    try:
        return b"Worker ready" in worker.log_path.read_bytes()
    except FileNotFoundError:
        return False


def refused_commits(worker: Worker) -> float:
    samples = {labels: v for (name, labels), v in worker.metrics().items() if name == REFUSED}
    assert samples, f"{REFUSED} is not exposed"
    return sum(samples.values())


@pytest.mark.parametrize("run", range(RUNS))
def test_two_workers_then_the_raw_topic_every_payment_lands_once(kafka, bq_endpoint, tmp, run):
    prefix = unique("start-") + "-"
    dataset = unique("start_")
    env = {"PAYFLOW_BIGQUERY_ENDPOINT": bq_endpoint, "PAYFLOW_PARTITIONS": "4", "PAYFLOW_SINK_BATCH_SIZE": "500"}

    def worker(name: str) -> Worker:
        (tmp / name).mkdir()
        return Worker(tmp / name, prefix=prefix, app_id=prefix + "app",
                      warehouse=f"bigquery://{BQ_PROJECT}/{dataset}", extra_env=env)

    a, b = worker("a"), worker("b")
    started = time.monotonic()
    bq = BigQueryWarehouse(BQ_PROJECT, dataset, endpoint=bq_endpoint, grpc_endpoint=BQ_GRPC)
    try:
        try:
            a.start()
            b.start()
            for w in (a, b):
                wait_until(lambda: ready(w), 300, interval=0.5, what="both workers ready before the raw topic exists")
            simulate(prefix, tmp / "m.json", count=EVENTS, seed=100 + run, partitions=4)
            a.wait_caught_up(timeout=600)
            assert b.alive(), b.log_tail()
            refused = {name: refused_commits(w) for name, w in (("a", a), ("b", b))}
        finally:
            codes = {name: w.stop() for name, w in (("a", a), ("b", b))}
        assert codes == {"a": 0, "b": 0}, a.log_tail() + "\n" + b.log_tail()
        print(f"start {run}: {EVENTS} events, {time.monotonic() - started:.0f} s")
        result = reconcile(bq, load(tmp / "m.json"))
        assert result.ok, result.report() + "\n" + where_missing(prefix + "payment-events", set(result.missing))
        assert refused == {"a": 0, "b": 0}, f"commits refused (a race caught at the point of commit): {refused}"
    finally:
        bq.client.delete_dataset(f"{BQ_PROJECT}.{dataset}", delete_contents=True, not_found_ok=True)
        bq.close()
