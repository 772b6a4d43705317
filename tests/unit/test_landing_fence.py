"""The BigQuery landing's decision point (payflow.runtime.landing_fence): the Faust and
aiokafka internals it calls are there (canary), a refused landing's messages stop being
pending acks without being acked, and the decision's metadata names the streams."""
from __future__ import annotations

from types import SimpleNamespace

from payflow.runtime import landing_fence
from payflow.runtime.checkpoint import message_positions
from payflow.warehouse import bq_write


def test_what_the_fence_calls_is_on_the_installed_faust_and_aiokafka():
    landing_fence.require_seams()


class Message:
    acked = False


def test_a_refused_landing_s_messages_are_neither_pending_nor_acked():
    import asyncio

    async def run():
        loop = asyncio.get_running_loop()
        waiting = loop.create_future()
        a, b, other = (Message() for _ in range(3))
        consumer = SimpleNamespace(_unacked_messages={a, b, other}, _waiting_for_ack=waiting)
        landing_fence.forget(consumer, [a, b])
        assert consumer._unacked_messages == {other}
        assert not a.acked and not b.acked
        assert waiting.done()  # Faust's wait for acks wakes up and sees them gone
    asyncio.run(run())


def test_a_landing_s_positions_span_its_messages_per_partition():
    def msg(topic, partition, offset):
        return SimpleNamespace(tp=SimpleNamespace(topic=topic, partition=partition), offset=offset)
    positions = message_positions([msg("raw", 0, 7), msg("raw", 1, 3), msg("raw", 0, 5), msg("raw", 0, 9)])
    assert positions == {("raw", 0): (5, 10), ("raw", 1): (3, 4)}
    assert message_positions([SimpleNamespace(name="a stand-in")]) == {}


def test_the_decision_names_the_streams_and_nothing_else_is_read_as_one():
    streams = {"payment_transactions": "projects/p/datasets/d/tables/payment_transactions/streams/0a1b",
               "late_events": "projects/p/datasets/d/tables/late_events/streams/2c3d"}
    metadata = bq_write._decision(streams)
    assert len(metadata) < 4096  # the broker's default offset.metadata.max.bytes
    assert sorted(bq_write._decided_streams(metadata)) == sorted(streams.values())
    assert [bq_write._table_of(s) for s in sorted(streams.values())] == ["late_events", "payment_transactions"]
    assert bq_write._decided_streams("") == [] and bq_write._decided_streams("something else") == []


def test_a_stream_committed_already_counts_as_done_when_finishing_a_decision():
    from google.cloud.bigquery_storage_v1 import types
    codes = types.StorageError.StorageErrorCode
    assert bq_write._already_committed(types.StorageError(code=codes.STREAM_ALREADY_COMMITTED))
    assert bq_write._already_committed(types.StorageError(
        code=codes.INVALID_STREAM_STATE, error_message="Stream must be finalized before BatchCommit; state=COMMITTED"))
    assert not bq_write._already_committed(types.StorageError(code=codes.STREAM_NOT_FOUND))
