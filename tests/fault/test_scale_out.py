"""Scale-out: three workers in one consumer group share a 12-partition raw topic and land in
one BigQuery dataset (the emulator, through the official client). Every membership change
happens mid-stream: A alone, B and C join, B is SIGKILLed, C leaves with SIGTERM, A
finishes. The warehouse must then hold exactly the manifest (one row per transaction_id,
sums per currency) and no card data."""
from __future__ import annotations

import os
import random
import re
import time
from collections import defaultdict

import pytest

from payflow.reconcile import reconcile
from payflow.simulator.manifest import load
from payflow.warehouse.bq import BigQueryWarehouse
from tests.fault.test_faults import assert_reconciled_and_clean, consumed
from tests.helpers import BQ_GRPC, BQ_PROJECT, Worker, read_topic, simulate, unique, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.fault]
EVENTS = int(os.environ.get("PAYFLOW_TEST_SCALE_OUT_EVENTS", "20000"))
# the timing of the membership changes (share of the run committed at each), varied by seed
TIMING = random.Random(int(os.environ.get("PAYFLOW_TEST_SCALE_OUT_SEED", "41")))


def test_three_workers_join_are_killed_and_leave_mid_stream(kafka, bq_endpoint, tmp):
    prefix = unique("scale-") + "-"
    m = simulate(prefix, tmp / "m.json", count=EVENTS, seed=41, partitions=12)
    sent = m["messages_sent"]
    dataset = unique("scale_")
    warehouse_url = f"bigquery://{BQ_PROJECT}/{dataset}"
    # small, frequent landings: commits advance steadily, so each change lands mid-stream
    env = {"PAYFLOW_BIGQUERY_ENDPOINT": bq_endpoint, "PAYFLOW_PARTITIONS": "12", "PAYFLOW_SINK_BATCH_SIZE": "500",
           "PAYFLOW_BQ_MIN_LANDING_SECONDS": "1", "PAYFLOW_BQ_LANDING_BATCHES": "2"}

    def worker(name: str) -> Worker:
        (tmp / name).mkdir()
        return Worker(tmp / name, prefix=prefix, app_id=prefix + "app", warehouse=warehouse_url, extra_env=env)

    a, b, c = worker("a"), worker("b"), worker("c")
    done_at: dict[str, float] = {}

    def committed() -> int:
        live = next(w for w in (a, b, c) if w.alive())
        return sent - live.lag()

    def reach(share: float, what: str) -> None:
        # progress is what the group committed, so a change happens with work still ahead
        wait_until(lambda: committed() >= share * sent, 600, interval=0.5, what=f"{what} ({share:.0%} committed)")
        done_at[what] = committed() / sent
        assert committed() < sent, f"the stream ended before {what}: the change would not be mid-stream"

    started = time.monotonic()
    try:
        a.start()
        reach(TIMING.uniform(0.05, 0.15), "B and C join")
        b.start()
        c.start()
        # B and C have joined: each consumed part of the stream (a slow start on a busy machine
        # would otherwise leave them out of it, and C's SIGTERM would hit a process still importing)
        for joined in (b, c):
            wait_until(lambda: not joined.alive() or consumed(joined) > 0 or committed() >= sent, 600,
                       interval=0.5, what="B and C consuming")
            assert joined.alive() and consumed(joined) > 0, "B or C never took part: " + joined.log_tail()
        reach(TIMING.uniform(0.30, 0.40), "B is killed")
        b.kill()
        reach(TIMING.uniform(0.50, 0.65), "C leaves")
        assert c.stop() == 0, c.log_tail()
        a.wait_caught_up(timeout=900)
        assert a.alive(), a.log_tail()
    finally:
        codes = {name: w.stop() for name, w in (("a", a), ("c", c))}
        b.kill()
    assert codes["a"] == 0, a.log_tail()
    print(f"scale-out: {sent} events, changes at {done_at}, {time.monotonic() - started:.0f} s")

    bq = BigQueryWarehouse(BQ_PROJECT, dataset, endpoint=bq_endpoint, grpc_endpoint=BQ_GRPC)
    try:
        result = reconcile(bq, load(tmp / "m.json"))
        assert result.ok, result.report() + "\n" + where_missing(prefix + "payment-events", set(result.missing))
        assert_reconciled_and_clean(a, tmp / "m.json", bq, data_dir=tmp / "a" / "data")
    finally:
        bq.client.delete_dataset(f"{BQ_PROJECT}.{dataset}", delete_contents=True, not_found_ok=True)
        bq.close()


def where_missing(topic: str, missing: set[str]) -> str:
    """The raw partitions and offset ranges of the missing payments (what a loss looks like)."""
    by_partition: dict[int, list[int]] = defaultdict(list)
    for record in read_topic(topic):
        found = re.search(rb'"transaction_id"\s*:\s*"([^"]+)"', record.value or b"")
        if found and found.group(1).decode() in missing:
            by_partition[record.partition].append(record.offset)
    return "missing by raw partition: " + "; ".join(
        f"p{p} offsets {min(o)}-{max(o)} ({len(o)})" for p, o in sorted(by_partition.items()))
