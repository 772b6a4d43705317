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
from tests.fault.test_zombie import stopped
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


def test_sigterm_mid_landing_finishes_it_and_leaves_nothing_to_seal(kafka, bq_endpoint, tmp):
    prefix = unique("drain-") + "-"
    simulate(prefix, tmp / "m.json", count=6_000, seed=23)
    dataset = unique("drain_")
    env = {"PAYFLOW_BIGQUERY_ENDPOINT": bq_endpoint, "PAYFLOW_SINK_BATCH_SIZE": "500",
           "PAYFLOW_BQ_MIN_LANDING_SECONDS": "1", "PAYFLOW_BQ_LANDING_BATCHES": "2"}
    url = f"bigquery://{BQ_PROJECT}/{dataset}"
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
