"""The pipeline agent under Faust's test context (memory tables, recorded outputs, DuckDB)."""
from __future__ import annotations

import asyncio
import os
from datetime import datetime, timedelta, timezone

import orjson
import pytest
from faust.types import TP

os.environ.setdefault("PAYFLOW_HMAC_KEYS", "unit-1:" + "33" * 32)

from payflow.app import app  # noqa: E402
import payflow.agents.pipeline as pipeline  # noqa: E402
from payflow.keys import KeyRing  # noqa: E402
from payflow.stages.batch import BatchProcessor  # noqa: E402
from payflow.pipeline.sink import WarehouseSink  # noqa: E402
from payflow.tables.changelog import unpack_changes  # noqa: E402
from payflow.warehouse.duck import DuckDBWarehouse  # noqa: E402
from payflow.tables.definitions import card_table, dedup_table, sender_table, watermark_table  # noqa: E402
from tests.fakes import RecordingOutputs, agent_runtime  # noqa: E402
from tests.unit.cards_fixtures import event  # noqa: E402

T0 = datetime(2026, 11, 20, 10, 0, tzinfo=timezone.utc)


@pytest.fixture
def runtime(monkeypatch):
    app.finalize()
    app.conf.store = "memory://"
    app.flow_control.resume()
    warehouse = DuckDBWarehouse(":memory:")
    warehouse.ensure_schema()
    outputs = RecordingOutputs()
    rt = agent_runtime(
        BatchProcessor(keyring=KeyRing.parse(os.environ["PAYFLOW_HMAC_KEYS"]), dedup_table=dedup_table,
                       watermark_table=watermark_table, sender_table=sender_table, card_table=card_table),
        outputs, WarehouseSink(warehouse))
    monkeypatch.setattr(app, "pipeline_runtime", rt)  # the agent runs with it
    for table in (dedup_table, watermark_table, sender_table, card_table):
        table.data.data.clear()  # memory store: each test starts from empty state
    yield rt
    warehouse.close()


def raw(txn: str, minutes: float = 0, **kw) -> bytes:
    t = (T0 + timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")
    return orjson.dumps(event(transaction_id=txn, event_time=t, **kw))


async def feed(messages):
    """Put (value, partition[, offset]) messages through the real agent, then let its batch flush."""
    async with pipeline.process_payments.test_context() as agent:
        for value, partition, *offset in messages:
            if offset:
                agent.sent_offset = offset[0]  # a re-delivery of the same (partition, offset)
            await agent.put(value, key=b"acct_sender", partition=partition, wait=False)
        # the agent batches with a time bound (PAYFLOW_SINK_BATCH_SECONDS); let the batch close
        await asyncio.sleep(pipeline.settings.batch_seconds + 1.0)


async def test_agent_masks_dedups_audits_and_lands(runtime):
    pan = "4111111111111111"
    await feed([(raw("txn_aaaa"), 0), (raw("txn_bbbb", 1), 0), (raw("txn_aaaa", 2), 0),
                (b"{not json " + pan.encode(), 0), (raw("txn_late", -120), 0)])
    out = runtime.outputs.published
    assert [e["transaction_id"] for e in out["enriched"]] == ["txn_aaaa", "txn_bbbb"]
    assert [d["transaction_id"] for d in out["dedup_audit"]] == ["txn_aaaa"]
    assert out["dedup_audit"][0]["first_offset"] != out["dedup_audit"][0]["duplicate_offset"]
    assert [d["reason"] for d in out["dlq"]] == ["invalid_json"]
    assert [x["transaction_id"] for x in out["late"]] == ["txn_late"]
    assert pan not in orjson.dumps({k: v for k, v in out.items() if k != "state"}).decode()
    rows = runtime.sink.warehouse.query("SELECT transaction_id FROM payment_transactions ORDER BY 1")
    assert [r["transaction_id"] for r in rows] == ["txn_aaaa", "txn_bbbb"]
    assert dedup_table.read(0, "txn_aaaa") is not None
    # state changes travel as one changelog record per table and partition per batch, PAN-free
    state = out["state"]
    # (no card-activity record: the card table keeps small payments only, these are not)
    topics = {table.changelog_topic.get_topic_name(): table.name
              for table in (dedup_table, watermark_table, sender_table, card_table)}
    assert sorted(topics[topic] for topic, _, _ in state) == ["dedup", "sender-activity", "watermarks"]
    assert all(partition == 0 for _, partition, _ in state)
    dedup_record = next(chunk for topic, _, chunk in state if topics[topic] == "dedup")
    assert sorted(k for k, _ in unpack_changes(dedup_record)) == [b"txn_aaaa", b"txn_bbbb"]
    assert not any(pan.encode() in chunk for _, _, chunk in state)


async def test_replay_at_the_same_offset_passes_through_once(runtime):
    # the same message read again after a crash (same partition and offset) passes through;
    # the idempotent warehouse keeps one row. The same id at another offset is a duplicate.
    value = raw("txn_replay")
    await feed([(value, 1, 500), (value, 1, 500), (value, 1, 501)])
    out = runtime.outputs.published
    assert [e["transaction_id"] for e in out["enriched"]] == ["txn_replay", "txn_replay"]
    assert len(out["dedup_audit"]) == 1 and out["dedup_audit"][0]["duplicate_offset"] == 501
    rows = runtime.sink.warehouse.query("SELECT COUNT(*) AS n FROM payment_transactions")
    assert rows[0]["n"] == 1


class SlowOutputs(RecordingOutputs):
    """Outputs whose send yields to the loop for a while, as a real producer does."""

    async def send(self, result, keys, now):
        await asyncio.sleep(0.05)
        return await super().send(result, keys, now)


class ScriptedSink(WarehouseSink):
    """The first landing is done the moment it starts; later ones wait for `release`."""

    def __init__(self, warehouse):
        super().__init__(warehouse)
        self.starts = 0
        self.release = asyncio.Event()

    def start(self, batch):
        self.starts += 1
        if self.starts == 1:
            done = asyncio.get_running_loop().create_future()
            done.set_result(self.warehouse.land(batch))
            return done
        return asyncio.ensure_future(self._held(batch))

    async def _held(self, batch):
        await self.release.wait()
        return self.warehouse.land(batch)


@pytest.mark.timeout(20)
async def test_a_landing_finished_before_its_wakeup_ran_does_not_spin_the_agent(runtime, monkeypatch):
    """A landing seen done and finished before its done-callback ran left the wake-up set
    for the next landing: take_batches then yielded [] without awaiting, forever, and the
    worker spun (found by `make bench` latency runs). Fails by timeout on that code."""
    sink = ScriptedSink(runtime.sink.warehouse)
    monkeypatch.setattr(app, "pipeline_runtime", agent_runtime(runtime.processor, SlowOutputs(), sink))
    async with pipeline.process_payments.test_context() as agent:
        await agent.put(raw("txn_first"), key=b"acct_sender", partition=0, wait=False)
        await asyncio.sleep(0.035)  # the first batch is taken (20 ms linger); the next arrives while it is processed
        await agent.put(raw("txn_second", 1), key=b"acct_sender", partition=0, wait=False)
        for _ in range(100):
            if sink.starts >= 2:
                break
            await asyncio.sleep(0.02)
        assert sink.starts == 2, "the second batch never reached the warehouse"
        await asyncio.sleep(0.3)  # the loop must still be ours: a spinning agent never gives it back
        sink.release.set()
        await asyncio.sleep(pipeline.settings.batch_seconds + 0.5)
    rows = sink.warehouse.query("SELECT transaction_id FROM payment_transactions ORDER BY 1")
    assert [r["transaction_id"] for r in rows] == ["txn_first", "txn_second"]


async def test_a_rebalance_signal_makes_the_processor_reload_a_raw_partition_that_came_back(runtime, monkeypatch):
    """Faust's on_partitions_assigned reaches the processor (raw topic only, with the group
    generation the rebalance completed)."""
    raw_topic = pipeline.settings.topics.raw

    async def rebalance(generation: int, assigned: set) -> None:
        monkeypatch.setattr(app, "consumer_generation_id", generation, raising=False)
        await app.on_partitions_assigned.send(assigned)

    await rebalance(1, {TP(raw_topic, 0), TP(raw_topic, 1)})
    await feed([(raw("txn_before_rebalance"), 0), (raw("txn_other_partition", 1), 1)])
    assert {0, 1} <= runtime.processor._loaded
    await rebalance(2, {TP(raw_topic, 1), TP("some-other-topic", 0)})  # 0 goes away
    await rebalance(3, {TP(raw_topic, 0), TP(raw_topic, 1)})  # and comes back
    assert 0 not in runtime.processor._loaded and 1 in runtime.processor._loaded


async def test_processed_messages_no_longer_hold_the_raw_bytes(runtime):
    """A processed batch waits for up to two landings before its messages are acked; the
    raw bytes they held (the card data) are freed when processing ends, not after that."""
    from faust.types.tuples import ConsumerMessage

    pan = "4111111111111111"
    messages = [ConsumerMessage("raw", 0, offset, 0.0, 0, None, b"acct_sender", raw(f"txn_{offset}", pan=pan), None,
                                tp=TP("raw", 0), generation_id=1) for offset in range(3)]
    landing = await runtime.process(messages)
    assert [m.value for m in landing.messages] == [None, None, None]
    assert [m.offset for m in landing.messages] == [0, 1, 2]  # what the ack needs is kept
    assert len(landing.enriched) == 3  # published once the landing took them
    assert runtime.outputs.published["enriched"] == []
