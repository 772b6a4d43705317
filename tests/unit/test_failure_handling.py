"""Failure handling without Kafka: the fail-stop, the shutdown watchdog, event-time skew judged
against the record's timestamp, and id conflicts told apart from replays."""
from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta, timezone

import orjson

from payflow import runtime
from payflow.runtime import worker
from payflow.keys import KeyRing
from payflow.models import Rejection
from payflow.stages.batch import BatchProcessor, RawItem
from tests.fakes import dict_processor
from payflow.warehouse.base import Landed, find_conflicts
from tests.unit.cards_fixtures import event

RING = KeyRing.parse("unit-1:" + "33" * 32)
T0 = datetime(2026, 11, 20, 10, 0, tzinfo=timezone.utc)


def _processor(now: datetime) -> BatchProcessor:
    return dict_processor(keyring=RING, dedup_table={}, watermark_table={}, sender_table={}, card_table={},
                          max_future_seconds=900, now=lambda: now)


def _raw(txn: str, event_time: datetime) -> bytes:
    return orjson.dumps(event(transaction_id=txn, event_time=event_time.isoformat().replace("+00:00", "Z")))


def test_event_time_skew_is_judged_against_the_record_timestamp_not_a_lagging_clock():
    # the record was written at T0; the worker reads it five minutes later (lag)
    late_reader = _processor(T0 + timedelta(minutes=5))
    ahead = _raw("txn_ahead", T0 + timedelta(minutes=16))  # 16 min ahead of its own write
    fine = _raw("txn_fine", T0 + timedelta(minutes=14))
    out = late_reader.process([RawItem(0, 0, ahead, T0.timestamp()),
                               RawItem(0, 1, fine, T0.timestamp())])
    assert [r.reason for r in out.rejections] == ["event_time_in_future"]
    assert [e.payment.transaction_id for e in out.enriched] == ["txn_fine"]


def test_a_record_timestamp_ahead_of_the_worker_clock_is_not_trusted():
    reader = _processor(T0)
    ahead = _raw("txn_ahead", T0 + timedelta(minutes=16))
    out = reader.process([RawItem(0, 0, ahead, (T0 + timedelta(hours=1)).timestamp())])
    assert [r.reason for r in out.rejections] == ["event_time_in_future"]


def test_fail_stop_names_the_error_and_exits_70(caplog):
    codes: list[int] = []
    try:
        raise OSError(28, "No space left on device")
    except OSError as exc:
        with caplog.at_level(logging.CRITICAL, logger="payflow.worker"):
            worker.fail_stop("the pipeline agent", exc, exit_=codes.append)
    try:
        assert codes == [worker.AGENT_FAILED_EXIT] == [70]
        assert "No space left on device" in worker.failure
        line = caplog.records[-1].getMessage()
        assert "the pipeline agent failed: OSError" in line and "exit 70" in line
    finally:
        worker.failure = None


def test_the_shutdown_watchdog_exits_75_after_its_bound():
    worker._watchdog_started.clear()
    exited = threading.Event()
    codes: list[int] = []

    def record(code: int) -> None:
        codes.append(code)
        exited.set()

    try:
        assert worker.start_shutdown_watchdog(0.2, exit_=record)
        assert not worker.start_shutdown_watchdog(0.2, exit_=record)  # once per process
        assert exited.wait(5)
        assert codes == [75]
    finally:
        worker._watchdog_started.clear()


def test_the_seams_are_installed_on_the_classes_faust_uses():
    import payflow.app  # noqa: F401 - installs the seams
    import faust.worker
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    assert getattr(AIOKafkaConsumerThread._create_worker_consumer, "_payflow_seam", False)
    assert getattr(faust.worker.Worker._on_sigterm, "_payflow_seam", False)
    assert getattr(faust.worker.Worker._on_sigint, "_payflow_seam", False)


def test_a_missing_seam_target_refuses_loudly():
    class Gone:
        pass

    try:
        runtime.replace(Gone, "_create_worker_consumer", worker.create_read_committed_consumer)
    except runtime.MissingSeam as exc:
        assert "re-audited" in str(exc)
    else:
        raise AssertionError("replacing a method Faust no longer has must fail")


def test_conflicts_are_ids_landed_from_another_position_not_replays_or_erasures():
    refused = {"txn_replay": [(0, 5)], "txn_other": [(1, 9)], "txn_erased": [(2, 3)],
               # a replay brought the other copy first: the landed one (0, 2) is no conflict
               "txn_twice": [(1, 4), (0, 2)]}
    landed = [("txn_replay", 0, 5), ("txn_other", 0, 7), ("txn_twice", 0, 2)]  # txn_erased has no row
    assert find_conflicts(refused, landed) == [("txn_other", 1, 9, 0, 7), ("txn_twice", 1, 4, 0, 2)]


def test_landed_keeps_counts_and_conflicts_across_the_landing_process():
    import pickle
    landed = Landed({"payment_transactions": 3}, conflicts=[("t", 1, 2, 0, 1)])
    back = pickle.loads(pickle.dumps(landed, protocol=pickle.HIGHEST_PROTOCOL))
    assert back == {"payment_transactions": 3} and back.conflicts == [("t", 1, 2, 0, 1)]


def test_an_id_conflict_dlq_record_carries_no_payment_data():
    from payflow.pipeline.outputs import landed_records
    from payflow.settings import Topics
    topics = Topics()
    pending = [("txn_a", 0, 1, b"acct", b'{"transaction_id":"txn_a"}'),
               ("txn_b", 1, 9, b"acct_b", b'{"transaction_id":"txn_b","ip_address":"1.2.3.4"}')]
    records = landed_records(pending, [("txn_b", 1, 9, 0, 4)], topics, T0)
    assert [(r[0], r[2]) for r in records] == [(topics.enriched, b"acct"), (topics.dlq, b"acct_b")]
    dlq = orjson.loads(records[1][3])
    assert dlq["reason"] == "id_conflict" and dlq["transaction_id"] == "txn_b"
    assert (dlq["source_partition"], dlq["source_offset"]) == (1, 9)
    assert "1.2.3.4" not in records[1][3].decode()
    assert isinstance(Rejection("id_conflict", "x", remains=None), Rejection)
