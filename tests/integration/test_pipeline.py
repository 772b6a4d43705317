"""The pipeline through the real broker: a real Faust worker (agent + RocksDB tables)."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import orjson
import pytest

from payflow.stages.cards import find_pans
from payflow.simulator import malformed
from tests.helpers import Worker, dlq_records, list_topics, read_topic, simulate, unique, wait_until

pytestmark = pytest.mark.integration


def test_10k_events_land_exactly_where_they_belong_and_no_topic_holds_a_pan(kafka, tmp: Path):
    prefix = unique("pipe-") + "-"
    m = simulate(prefix, tmp / "manifest.json", count=10_000, seed=7, duplicate_ratio=0.05,
                 late_ratio=0.01, malformed_ratio=0.01, fraud_ratio=0.005)
    worker = Worker(tmp, prefix=prefix).start()
    try:
        mid_run = wait_until(lambda: worker.metrics().get(("payflow_stage_events_in_total", (("stage", "decode"),)), 0),
                             120, interval=0.2, what="the first events to be counted")
        worker.wait_caught_up(timeout=240)
        # the lag gauges refresh every 5 s: they must come down to 0 for every partition
        scraped = wait_until(lambda: (lambda s: s if [v for (n, _), v in s.items()
                                                      if n == "payflow_consumer_lag_messages"] == [0.0] * 4 else None)(
            worker.metrics()), 30, what="the consumer-lag gauges to show 0 on all 4 partitions")
        health = worker.get_json("/healthz")
        ready = worker.get_json("/readyz")
    finally:
        assert worker.stop() == 0, worker.log_tail()
    assert_metrics_match_the_run(scraped, m, mid_run)
    assert health["status"] == "ok" and ready["ready"] and all(ready["checks"].values())

    enriched = read_topic(prefix + "payments-enriched")
    ids = [orjson.loads(r.value)["transaction_id"] for r in enriched]
    assert len(ids) == len(set(ids)), "a payment was published twice"
    assert set(ids) == set(m["transaction_ids"])
    assert len(ids) == m["unique_valid_on_time"]

    audit = [orjson.loads(r.value) for r in read_topic(prefix + "payflow-dedup-audit")]
    assert len(audit) == m["expected_duplicates"]
    assert all(a["first_offset"] != a["duplicate_offset"] for a in audit)

    late = [orjson.loads(r.value) for r in read_topic(prefix + "payment-events-late")]
    assert {x["transaction_id"] for x in late} == set(m["late_transaction_ids"])

    dlq = dlq_records(prefix + "payment-events-dlq")
    assert len(dlq) == m["malformed"]["total"]
    expected_reasons = Counter()
    for kind, n in m["malformed"]["by_kind"].items():
        expected_reasons[malformed.EXPECTED_REASON[kind]] += n
    assert Counter(d["reason"] for d in dlq) == expected_reasons
    assert all(d["detail"] for d in dlq)

    # invariant 3: no PAN in any topic payflow writes (outputs, DLQ, audit, changelogs)
    written = [t for t in list_topics() if t.startswith(prefix) and t != prefix + "payment-events"]
    written += [t for t in list_topics() if t.startswith(worker.app_id + "-")]
    assert any(t.endswith("-changelog") for t in written)
    scanned = 0
    for topic in written:
        for record in read_topic(topic):
            for blob in (record.key, record.value):
                if blob:
                    text = blob.decode("utf-8", "replace")
                    assert not find_pans(text), f"PAN-like value in {topic}"
                    scanned += 1
    assert scanned > 10_000

    # the state really is in RocksDB (rocksdict) on disk
    state = tmp / "data" / "state"
    assert list(state.rglob("*.sst")) or list(state.rglob("CURRENT")), "no RocksDB files under the state dir"
    # no PAN in the worker's log file either
    log_text = (tmp / "data" / "logs" / "worker.log").read_text() + worker.log_path.read_text()
    assert not find_pans(log_text)


def assert_metrics_match_the_run(scraped: dict, m: dict, mid_run: float) -> None:
    """The worker's Prometheus counters equal what the simulator sent (issue 7)."""
    def value(name, **labels):
        return scraped.get((name, tuple(sorted(labels.items()))), 0)

    assert 0 < mid_run <= m["messages_sent"]
    assert value("payflow_stage_events_in_total", stage="decode") == m["messages_sent"]
    assert value("payflow_stage_events_out_total", stage="dedup") == m["unique_valid_on_time"]
    assert value("payflow_duplicates_dropped_total") == m["expected_duplicates"]
    assert value("payflow_late_events_total") == len(m["late_transaction_ids"])
    expected_reasons = Counter()
    for kind, n in m["malformed"]["by_kind"].items():
        expected_reasons[malformed.EXPECTED_REASON[kind]] += n
    dlq = {dict(labels)["reason"]: v for (name, labels), v in scraped.items() if name == "payflow_dlq_events_total"}
    assert {r: v for r, v in dlq.items() if v} == dict(expected_reasons)
    assert value("payflow_warehouse_rows_landed_total", table="payment_transactions") == m["unique_valid_on_time"]
    assert value("payflow_unmasked_pan_detections_total") == 0
    assert value("payflow_high_risk_payments_total") > 0
    assert 0 < value("payflow_high_risk_share") < 0.2
    assert value("payflow_sink_flush_seconds_count") > 0
    assert value("payflow_dedup_table_keys") > 0
    assert all(v == 0 for (name, _), v in scraped.items() if name == "payflow_consumer_lag_seconds")
