"""The simulator against the real broker: idempotence proved, determinism, manifest truth."""
from __future__ import annotations

import asyncio
import hashlib
from collections import Counter
from datetime import datetime, timezone

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from payflow.stages.cards import find_pans
from payflow.kafka_admin import ensure_topics
from payflow.simulator.generator import EventStream, SimOptions
from tests.helpers import KAFKA, read_topic, simulate, unique
from tests.kafka_proxy import AckDroppingProxy

pytestmark = pytest.mark.integration


async def _produce_through_lossy_proxy(topic: str, idempotent: bool, n: int) -> int:
    host, port = KAFKA.rsplit(":", 1)
    await ensure_topics(KAFKA, [topic], 1)
    proxy = await AckDroppingProxy(host, int(port), drop_every=4, max_drops=8).start()
    producer = AIOKafkaProducer(bootstrap_servers=f"127.0.0.1:{proxy.port}", enable_idempotence=idempotent,
                                acks="all", retry_backoff_ms=100, request_timeout_ms=15000, linger_ms=5,
                                max_batch_size=4096)
    await producer.start()
    try:
        futures = []
        for i in range(n):
            futures.append(await producer.send(topic, f"payment-{i:06d}".encode(), key=b"k"))
            if i % 50 == 49:
                await asyncio.sleep(0.01)  # several produce requests, so several can lose their ack
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
        await proxy.stop()
    return proxy.dropped


@pytest.mark.parametrize("idempotent", [True, False], ids=["idempotence-on", "idempotence-off"])
def test_lost_acknowledgements_and_idempotence(kafka, idempotent):
    """Attack scenario 1: the broker got the batch, the ack was lost, the producer retried."""
    topic = unique("idem-")
    n = 2000
    dropped = asyncio.run(_produce_through_lossy_proxy(topic, idempotent, n))
    assert dropped >= 3, "the proxy must really have dropped acknowledgements"
    counts = Counter(r.value for r in read_topic(topic))
    assert set(counts) == {f"payment-{i:06d}".encode() for i in range(n)}, "every message must arrive"
    copies = sum(c - 1 for c in counts.values())
    if idempotent:
        assert copies == 0, f"{copies} duplicate copies with idempotence on"
    else:
        assert copies > 0, "without idempotence, retries after lost acks must duplicate (else the test proves nothing)"


def test_same_seed_same_bytes():
    opts = SimOptions(count=3000, seed=99, start_time=datetime(2026, 11, 1, tzinfo=timezone.utc))
    a = [(m.key, m.value) for m in EventStream(opts)]
    b = [(m.key, m.value) for m in EventStream(opts)]
    assert hashlib.sha256(repr(a).encode()).hexdigest() == hashlib.sha256(repr(b).encode()).hexdigest()
    c = [(m.key, m.value) for m in EventStream(SimOptions(count=3000, seed=100, start_time=opts.start_time))]
    assert a != c


def test_manifest_agrees_with_what_a_consumer_reads(kafka, tmp):
    prefix = unique("sim-") + "-"
    m = simulate(prefix, tmp / "m.json", count=5000, seed=11)
    records = read_topic(prefix + "payment-events")
    assert len(records) == m["messages_sent"] == 5000
    ids = Counter()
    for r in records:
        try:
            doc = orjson.loads(r.value)
        except orjson.JSONDecodeError:
            continue
        if isinstance(doc, dict) and isinstance(doc.get("transaction_id"), str):
            ids[doc["transaction_id"]] += 1
            # key = sender: every copy of a transaction lands in one partition
            if isinstance(doc.get("sender_account_id"), str):
                assert r.key == doc["sender_account_id"].encode()
    valid = set(m["transaction_ids"])
    assert valid <= set(ids)
    assert sum(ids[t] - 1 for t in valid) == m["expected_duplicates"]
    assert set(m["late_transaction_ids"]) <= set(ids)
    assert m["malformed"]["total"] == sum(m["malformed"]["by_kind"].values()) > 0
    assert len(m["malformed"]["by_kind"]) >= 15
    # no card data in the manifest
    assert not find_pans((tmp / "m.json").read_text())
    assert m["throughput"]["events_per_second"] > 0
