"""A commit from the fetch loop cancelled by the fetcher's stop (a graceful stop, SIGTERM).

Faust's commit takes each partition's acked run off its lists when it computes the offset
(`_new_offset`), then awaits the producer's flush and the broker. The fetch loop commits
every `broker_commit_every` acks; cancelled in between (the stop cancels the fetcher right
after the last landing's acks), the commit never reached Faust's committed offsets and its
acks were gone: the stop's final commit had nothing to commit. Seen in CI: the last
landing's offsets stayed uncommitted, its BigQuery decision left for the next owner to seal.

Faust's own `Consumer.commit` runs here, with the state it reads; the broker's commit
(`_commit`) waits until the test lets it answer.
"""
from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
from faust.transport.consumer import Consumer

from payflow.runtime import fetch
from tests.unit.test_seek_race import RAW, Msg, RaceConsumer, fresh_runtime_state  # noqa: F401 - fixture


class SlowCommitConsumer(RaceConsumer):
    """The broker's commit answers only once `answer` is set; what it took is `committed`."""

    def __init__(self):
        super().__init__()
        self.loop = asyncio.get_running_loop()
        self._commit_fut = None
        self.in_transaction = False
        self.answer = asyncio.Event()
        self.asked = asyncio.Event()
        self.committed: dict = {}
        producer = SimpleNamespace(flush=self._flush)
        self.app.client_only = False
        self.app.producer = producer
        self.app.sensors = SimpleNamespace(on_commit_initiated=lambda consumer: None,
                                           on_commit_completed=lambda consumer, state: None)
        self.app.tables = SimpleNamespace(on_commit=lambda offsets: None)
        self.app.monitor.on_tp_commit = lambda offsets: None
        self.app._attachments = SimpleNamespace(publish_for_tp_offset=self._no_attachments)

    async def _flush(self):
        pass

    async def _no_attachments(self, tp, offset):
        return []

    async def _commit(self, offsets):
        self.asked.set()
        await self.answer.wait()
        self.committed.update(offsets)
        return True


async def test_a_fetch_loop_commit_cancelled_by_the_fetcher_stop_keeps_its_acks_committed():
    consumer = SlowCommitConsumer()
    consumer._committed_offset[RAW] = 0
    for offset in range(10):  # the last landing's acks
        Consumer.ack(consumer, Msg(RAW, offset))
    consumer._commit_every, consumer._n_acked = 5, 10

    loop_commit = asyncio.ensure_future(fetch._commit_if_due(consumer))
    await asyncio.wait_for(consumer.asked.wait(), 5)  # the commit is with the broker
    loop_commit.cancel()  # the fetcher stops
    with pytest.raises(asyncio.CancelledError):
        await loop_commit
    consumer.answer.set()
    # the stop's final commit (Faust's wait_empty, then the consumer's own stop)
    await asyncio.wait_for(Consumer.commit(consumer), 5)
    await asyncio.wait_for(Consumer.commit(consumer), 5)
    assert consumer.committed == {RAW: 10}  # cancelled unshielded: {} (acks taken, never committed)
    assert consumer._committed_offset[RAW] == 10


async def test_a_commit_the_landing_fence_stops_waiting_for_still_commits_its_acks():
    """The BigQuery landing's fence commits Faust's acks before it reads the group, bounded
    by a timeout (landing_fence, `_pending`): timed out, the commit runs on."""
    from payflow.runtime.commit_offsets import commit_whole
    consumer = SlowCommitConsumer()
    consumer._committed_offset[RAW] = 0
    for offset in range(10):
        Consumer.ack(consumer, Msg(RAW, offset))
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(commit_whole(consumer), 0.05)
    assert consumer.asked.is_set()
    consumer.answer.set()
    await asyncio.wait_for(Consumer.commit(consumer), 5)
    await asyncio.wait_for(Consumer.commit(consumer), 5)
    assert consumer.committed == {RAW: 10}


async def test_a_revocation_commits_what_is_acked_before_faust_forgets_it():
    """Faust's Consumer.on_partitions_revoked takes the revoked partitions' acks and committed
    positions off its lists, then the app's handler commits (wait_empty) while the landing in
    flight acks its messages. Run through Faust's own method, behind the seam."""
    import contextlib

    from payflow.runtime import commit_offsets
    consumer = SlowCommitConsumer()
    consumer.answer.set()
    consumer._committed_offset[RAW] = 0
    consumer._active_partitions = {RAW}
    consumer._paused_partitions = set()
    consumer.app._start_span_from_rebalancing = lambda name: contextlib.nullcontext()
    for offset in range(10):  # landed and acked since the last commit
        Consumer.ack(consumer, Msg(RAW, offset))

    async def app_handler(revoked):  # Faust's app: wait_empty, as the landing in flight lands
        for offset in range(10, 20):
            Consumer.ack(consumer, Msg(RAW, offset))
        await Consumer.commit(consumer)

    consumer._on_partitions_revoked = app_handler
    assert Consumer.on_partitions_revoked is commit_offsets.commit_before_revocation
    await asyncio.wait_for(Consumer.on_partitions_revoked(consumer, {RAW}), 5)
    # Faust's own: {} (the first ten forgot, the next ten not committable after them)
    assert consumer.committed == {RAW: 20}


def acked_from_3_to_9(consumer) -> None:
    """RAW assigned, committed at 3, offsets 3-9 landed and acked."""
    consumer._active_partitions = {RAW}
    consumer.assignment = lambda: {RAW}
    consumer._committed_offset[RAW] = 3
    for offset in range(3, 10):
        Consumer.ack(consumer, Msg(RAW, offset))


async def test_a_commit_the_broker_refused_leaves_the_committed_position_where_the_broker_holds_it():
    """Faust recorded the offsets it asked for even when the broker refused the commit
    ("already rebalanced": _commit returns False); the watermark log trimmed to that position
    then lost what the rejoin's replay from the broker's position needed."""
    from payflow.runtime import commit_offsets

    class RefusingConsumer(SlowCommitConsumer):
        async def _commit(self, offsets):
            return False

    assert Consumer._commit_offsets is commit_offsets.commit_offsets_as_the_broker_holds_them
    consumer = RefusingConsumer()
    acked_from_3_to_9(consumer)
    assert await asyncio.wait_for(Consumer.commit(consumer), 5) is False
    assert consumer._committed_offset[RAW] == 3  # Faust's own: 10
    consumer_ok = SlowCommitConsumer()
    consumer_ok.answer.set()
    acked_from_3_to_9(consumer_ok)
    assert await asyncio.wait_for(Consumer.commit(consumer_ok), 5) is True
    assert consumer_ok._committed_offset[RAW] == 10


async def test_a_seek_during_a_refused_commit_keeps_the_position_it_set():
    """Faust writes the asked offsets after the broker's answer, over what a seek set while
    the commit was out (read_again's read_from); after a refusal the seek's position wins."""
    from payflow.runtime import commit_offsets

    class SoughtMeanwhile(SlowCommitConsumer):
        async def _commit(self, offsets):
            commit_offsets.read_from(self, RAW, 5)
            return False

    consumer = SoughtMeanwhile()
    acked_from_3_to_9(consumer)
    assert await asyncio.wait_for(Consumer.commit(consumer), 5) is False
    assert consumer._committed_offset[RAW] == 5 == commit_offsets._positions[RAW]
