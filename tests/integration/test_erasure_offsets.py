"""The erasure agent commits its offsets once an erasure is durable: a rebalance or restart
does not read every request again from offset 0 (real broker, real worker)."""
from __future__ import annotations

import asyncio

import orjson
import pytest

from payflow.kafka_admin import group_lag
from payflow.keys import KeyRing
from tests.helpers import KAFKA, TEST_HMAC_KEYS, Worker, unique, wait_until
from tests.integration.test_erasure_rotation import EXPIRY, PAN, SENDER, produce, subject_payment, worker_log

pytestmark = pytest.mark.integration


def test_erasure_requests_are_committed_once_done(kafka, tmp_path):
    prefix = unique("ecommit-") + "-"
    requests = prefix + "payflow-erasure-requests"
    produce(prefix + "payment-events", [subject_payment("txn_erasedcommit", 0)])
    worker = Worker(tmp_path, prefix=prefix).start()
    try:
        worker.wait_caught_up(timeout=180)
        h = KeyRing.parse(TEST_HMAC_KEYS).hashes_for(PAN, EXPIRY)[0]
        good = {"request_id": "req-commit", "sender_account_id": SENDER, "pii_hashes": [h[1]],
                "pii_key_ids": [h[0]], "mode": "delete", "transaction_ids": ["txn_erasedcommit"]}
        produce(requests, [(SENDER.encode(), b"{not json"), (SENDER.encode(), orjson.dumps(good))])
        wait_until(lambda: "erasure req-commit removed" in worker_log(worker), 120, what="the erasure request")
        wait_until(lambda: sum(asyncio.run(group_lag(KAFKA, worker.app_id, requests)).values()) == 0, 60,
                   what="the erasure requests' offsets committed")
    finally:
        assert worker.stop() == 0, worker.log_tail()

    # a restart reads neither request again
    worker.start()
    try:
        worker.wait_caught_up(timeout=180)
        wait_until(lambda: "Worker ready" in worker.log_path.read_text(errors="replace").split("req-commit")[-1],
                   120, what="the restarted worker ready")
    finally:
        assert worker.stop() == 0, worker.log_tail()
    assert worker_log(worker).count("erasure req-commit removed") == 1
