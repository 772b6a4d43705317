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


def _fence_over(acked=(), gaps=(), skipped=None):
    """A fence whose consumer holds Faust's acks and gaps for ('raw', 0), and the runs the
    fetcher stepped over."""
    from faust.types import TP
    from intervaltree import IntervalTree

    from payflow.runtime import fetch
    tp = TP("raw", 0)
    tree = IntervalTree()
    for begin, end in gaps:
        tree.addi(begin, end)
    fetch._skipped.pop(tp, None)
    if skipped:
        fetch._skipped[tp] = dict(skipped)
    fence = object.__new__(landing_fence.KafkaLandingFence)
    fence.app = SimpleNamespace(consumer=SimpleNamespace(_acked={tp: list(acked)}, _acked_index={tp: set(acked)},
                                                         _gap={tp: tree}))
    return fence


def test_the_decision_never_commits_past_an_offset_that_was_not_processed():
    """The decision follows the rule of Faust's commits (payflow.runtime.commit_offsets): from
    where the partition is read, every offset up to the one committed is the landing's own,
    acked, in a gap Faust filed, or stepped over by the fetcher."""
    key = ("raw", 0)
    whole = list(range(10, 20))
    try:
        assert _fence_over()._first_unprocessed(key, 10, None, 20, whole) is None
        holed = [o for o in whole if o != 15]
        assert "offset 15" in _fence_over()._first_unprocessed(key, 10, None, 20, holed)
        assert _fence_over(gaps=[(15, 16)])._first_unprocessed(key, 10, None, 20, holed) is None
        assert _fence_over(skipped={15: 16})._first_unprocessed(key, 10, None, 20, holed) is None
        # a landing that starts after the committed offset: 10 and 11 were never processed
        assert "offset 10" in _fence_over()._first_unprocessed(key, 10, None, 20, whole[2:])
        # nothing committed: from where the consumer started the partition
        assert _fence_over()._first_unprocessed(key, None, 10, 20, whole) is None
        assert "offset 8" in _fence_over()._first_unprocessed(key, None, 8, 20, whole)
        assert "no position" in _fence_over()._first_unprocessed(key, None, None, 20, whole)
        # a range committed already is left as it is
        assert _fence_over()._first_unprocessed(key, 25, None, 20, whole) is None
    finally:
        _fence_over()


def test_a_landing_s_offsets_are_listed_per_partition():
    from payflow.runtime.checkpoint import message_offsets

    def msg(topic, partition, offset):
        return SimpleNamespace(tp=SimpleNamespace(topic=topic, partition=partition), offset=offset)
    assert message_offsets([msg("raw", 0, 7), msg("raw", 1, 3), msg("raw", 0, 5), msg("raw", 0, 7)]) == \
        {("raw", 0): [5, 7], ("raw", 1): [3]}
