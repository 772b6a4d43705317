"""A graceful stop (SIGTERM: a rolling deploy, a scale-in) with a BigQuery landing in flight:
the landing finishes and its offsets are in the worker's final commit, so the next owner of
its partitions finds no unfinished decision to seal and land again.

The worker stops itself (SIGSTOP, payflow.fault) when its third landing is decided and
before it writes; it gets SIGTERM while stopped, then SIGCONT: it resumes mid-landing with
the stop already asked for. Before the stop waited for its landing, the consumer's leaving
refused that landing's ownership check: the landing's decision stayed committed above the
offsets, and at every scale-in the survivor sealed the leaver's streams (6 per partition)
and landed those ranges again."""
from __future__ import annotations

import asyncio
import json
import os
import signal

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from payflow.warehouse.bq import BigQueryWarehouse
from payflow.warehouse.bq_streams import DECISION_PREFIX
from tests.fault.test_faults import assert_reconciled_and_clean
from tests.fault.test_zombie import paused_pair, stopped
from tests.helpers import BQ_GRPC, BQ_PROJECT, KAFKA, Worker, simulate, unique, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.fault]


def unfinished_decisions(group: str, topic: str) -> dict[int, tuple[int, int]]:
    """partition -> (committed offset, the end of the landing its metadata decided) where a
    decided landing's end is past the committed offset: a landing the next owner seals."""
    async def run() -> dict[int, tuple[int, int]]:
        admin = AIOKafkaAdminClient(bootstrap_servers=KAFKA)
        await admin.start()
        try:
            offsets = await admin.list_consumer_group_offsets(group)
        finally:
            await admin.close()
        out = {}
        for tp, committed in offsets.items():
            metadata = committed.metadata or ""
            if tp.topic == topic and metadata.startswith(DECISION_PREFIX):
                end = json.loads(metadata[len(DECISION_PREFIX):])["e"]
                if end > committed.offset:
                    out[tp.partition] = (committed.offset, end)
        return out
    return asyncio.run(run())


def bigquery_run(tag: str, tmp, bq_endpoint: str, *, seed: int, min_landing_seconds: int) -> tuple[str, str, str, dict]:
    """6,000 simulated payments on a topic of their own: (prefix, dataset, warehouse URL, the
    workers' environment: small landings of two batches)."""
    prefix = unique(tag + "-") + "-"
    simulate(prefix, tmp / "m.json", count=6_000, seed=seed)
    dataset = unique(tag + "_")
    env = {"PAYFLOW_BIGQUERY_ENDPOINT": bq_endpoint, "PAYFLOW_SINK_BATCH_SIZE": "500",
           "PAYFLOW_BQ_MIN_LANDING_SECONDS": str(min_landing_seconds), "PAYFLOW_BQ_LANDING_BATCHES": "2"}
    return prefix, dataset, f"bigquery://{BQ_PROJECT}/{dataset}", env


def group_members(group: str) -> int:
    """How many members the consumer group holds now."""
    async def run() -> int:
        admin = AIOKafkaAdminClient(bootstrap_servers=KAFKA)
        await admin.start()
        try:
            [response] = await admin.describe_consumer_groups([group])
        finally:
            await admin.close()
        return len(response.to_object()["groups"][0]["members"])
    return asyncio.run(run())


def test_sigterm_mid_landing_finishes_it_and_leaves_nothing_to_seal(kafka, bq_endpoint, tmp):
    prefix, dataset, url, env = bigquery_run("drain", tmp, bq_endpoint, seed=23, min_landing_seconds=1)
    worker = Worker(tmp, prefix=prefix, warehouse=url, extra_env={**env, "PAYFLOW_FAULT_PAUSE_LANDING": "before_write:3"})
    warehouse = BigQueryWarehouse(BQ_PROJECT, dataset, endpoint=bq_endpoint, grpc_endpoint=BQ_GRPC)
    try:
        worker.start()
        wait_until(lambda: stopped(worker) or not worker.alive(), 300, interval=0.2, what="the worker stopped mid-landing")
        assert worker.alive(), worker.log_tail()
        os.killpg(worker.proc.pid, signal.SIGTERM)  # pending until it runs again
        os.killpg(worker.proc.pid, signal.SIGCONT)
        assert worker.proc.wait(timeout=60) == 0, worker.log_tail()
        log = worker.log_path.read_text()
        assert "did not finish within" not in log and "refused landing" not in log, worker.log_tail()
        assert unfinished_decisions(worker.app_id, prefix + "payment-events") == {}

        worker.env.pop("PAYFLOW_FAULT_PAUSE_LANDING")
        worker.start()
        worker.wait_caught_up(timeout=600)
        assert worker.stop() == 0, worker.log_tail()
        assert "taken over from an unfinished landing" not in worker.log_path.read_text(), worker.log_tail()
        assert_reconciled_and_clean(worker, tmp / "m.json", warehouse)
    finally:
        worker.kill()
        if not os.environ.get("PAYFLOW_TEST_KEEP_DATASETS"):
            warehouse.client.delete_dataset(f"{BQ_PROJECT}.{dataset}", delete_contents=True, not_found_ok=True)
        warehouse.close()


@pytest.mark.alone
def test_a_stop_that_meets_a_rebalance_leaves_the_group_at_once(kafka, bq_endpoint, tmp):
    """A stopped mid-landing (SIGSTOP) past its session: B takes its partitions over. A gets
    SIGTERM as it resumes, and its return is a rebalance under way: Faust's handler for a
    rebalance during a stop "closed" the aiokafka consumer from the wrong event loop, so A's
    stop never left the group. A member that is gone but not left holds a share of the
    partitions, unread, until its session expires (and a stop could retry its last commit
    until the bound, exit 75)."""
    prefix, dataset, url, env = bigquery_run("leave", tmp, bq_endpoint, seed=29, min_landing_seconds=0)
    a, b = paused_pair(tmp, prefix, url, env, "before_write")
    warehouse = BigQueryWarehouse(BQ_PROJECT, dataset, endpoint=bq_endpoint, grpc_endpoint=BQ_GRPC)
    try:
        b.start()
        b.wait_caught_up(timeout=300)
        os.killpg(a.proc.pid, signal.SIGTERM)  # pending until it runs again
        os.killpg(a.proc.pid, signal.SIGCONT)
        assert a.proc.wait(timeout=60) == 0, a.log_tail()
        # a member that left is gone at once; one that did not stays until its session expires
        assert group_members(a.app_id) == 1, a.log_tail()
        b.wait_caught_up(timeout=120)
        assert b.stop() == 0, b.log_tail()
        assert_reconciled_and_clean(b, tmp / "m.json", warehouse, data_dir=tmp / "b" / "data")
    finally:
        a.kill()
        b.kill()
        if not os.environ.get("PAYFLOW_TEST_KEEP_DATASETS"):
            warehouse.client.delete_dataset(f"{BQ_PROJECT}.{dataset}", delete_contents=True, not_found_ok=True)
        warehouse.close()
