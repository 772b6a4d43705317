"""The BigQuery landing's decision point: a Kafka offset commit, fenced by the group generation.

A BigQuery landing writes its rows into PENDING write streams (invisible until committed),
then asks `decide`: commit the landing's raw offsets *with the names of those streams in the
offset-commit metadata*, in one OffsetCommit request. The group coordinator accepts it only
from a current member that owns every partition of the landing (aiokafka raises
CommitFailedError on an old generation or an unknown member, IllegalStateError for a
partition not assigned): a worker evicted while paused mid-landing is refused here, and its
streams are never committed. Only after a decision does the landing commit its streams
(BatchCommitWriteStreams, per table). A landing that decided and then stopped (a crash, a
SIGSTOP between two tables' commits) is finished by whoever reads those partitions next:
`pending` returns the metadata the last commit left, and the landing commits the streams it
names first (committing a stream twice is refused by BigQuery as already committed, which
counts as done). Faust's own later commit of the same partitions (metadata "") clears it.

`decide` is also an optimistic check on the committed offsets: it refuses a landing if any of
its partitions' committed offset changed since `pending` read it, before the landing read the
warehouse (another member landed there meanwhile: a worker that lost a partition and got it
back in a later generation, with a landing of the old generation still in flight). Within
one generation only the partition's owner commits it, so the check and the commit cannot be
separated by another member's commit.

The calls run on the consumer's own thread (Faust's AIOKafkaConsumerThread.call_thread), as
Faust's own commits do; Faust's pending commit (the previous landing's acks) is made first,
so no older commit of Faust's lands after the decision.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any, Mapping

from payflow.runtime import seams

log = logging.getLogger("payflow.sink")
CALL_TIMEOUT = 30.0


class Fenced(Exception):
    """This worker may not commit the landing's offsets (evicted, or the range moved on)."""


def require_seams() -> None:
    """Fail loudly (seams.MissingSeam) if what decide/pending call is gone."""
    from aiokafka.consumer.group_coordinator import GroupCoordinator
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
    seams.require(AIOKafkaConsumerThread, "call_thread", "_ensure_consumer")
    seams.require(GroupCoordinator, "fetch_committed_offsets", "commit_offsets")
    from faust.transport.consumer import Consumer
    seams.require(Consumer, "_waiting_for_ack", "wait_empty", "seek", "assignment")


def forget(consumer: Any, messages: list) -> None:
    """A refused landing's messages: no longer pending acks (a rebalance or a stop waits for
    pending acks, and these are never acked), and not acked either (an ack would let Faust
    commit past them). Whoever owns their partitions reads them again from the committed
    offset (an assignment seeks there)."""
    from mode.utils.futures import notify
    unacked = consumer._unacked_messages  # noqa: SLF001 - Faust's pending acks
    for message in messages:
        unacked.discard(message)
    notify(consumer._waiting_for_ack)  # noqa: SLF001 - wakes Faust's wait for acks


class KafkaLandingFence:
    """decide / pending for the landing thread, run on the worker's event loop `loop`."""

    def __init__(self, app: Any, loop: asyncio.AbstractEventLoop):
        require_seams()
        self.app = app
        self.loop = loop

    # -- called from the landing's thread ------------------------------------------------
    def pending(self, partitions: list[tuple[str, int]]) -> dict[tuple[str, int], tuple[int, str]]:
        """(committed offset, its commit metadata) the group holds for these (topic,
        partition)s; a partition with nothing committed is left out."""
        return self._run(self._pending(partitions))

    def decide(self, seen: Mapping[tuple[str, int], int | None], first: Mapping[tuple[str, int], int],
               next_: Mapping[tuple[str, int], int], metadata: str,
               offsets: Mapping[tuple[str, int], list[int]]) -> None:
        """Commit `next_` (partition -> offset after the landing's last message) with
        `metadata`, in one request, if every partition's committed offset is still `seen`
        (what `pending` returned before the landing read the warehouse); Fenced if another
        member committed since, or if the group refuses this member, or if the commit would
        pass an offset that was not processed: every offset from where the partition is read
        from (its committed offset, else the first offset the consumer was set to) up to
        `next_` must be one of the landing's `offsets`, acked, in a gap Faust filed, or
        stepped over by the fetcher (the rule of Faust's own commits,
        payflow.runtime.commit_offsets). A partition already committed at or past its `next_`
        (the landing re-read a landed range) is left as it is. `first`: the landing's first
        offset per partition."""
        self._run(self._decide(dict(seen), dict(first), dict(next_), metadata,
                               {key: list(value) for key, value in offsets.items()}))

    def _run(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(CALL_TIMEOUT)

    # -- on the event loop -----------------------------------------------------------------
    def _thread(self) -> Any:
        return self.app.consumer._thread  # noqa: SLF001 - Faust's AIOKafkaConsumerThread

    async def _pending(self, partitions: list[tuple[str, int]]) -> dict[tuple[str, int], tuple[int, str]]:
        from aiokafka.structs import TopicPartition
        thread = self._thread()

        async def fetch() -> dict:
            coordinator = thread._ensure_consumer()._coordinator  # noqa: SLF001
            return await coordinator.fetch_committed_offsets([TopicPartition(t, p) for t, p in partitions])

        committed = await thread.call_thread(fetch)
        return {(tp.topic, tp.partition): (meta.offset, meta.metadata or "") for tp, meta in committed.items()
                if meta is not None and meta.offset >= 0}

    async def _decide(self, seen: dict[tuple[str, int], int | None], first: dict[tuple[str, int], int],
                      next_: dict[tuple[str, int], int], metadata: str,
                      offsets: dict[tuple[str, int], list[int]]) -> None:
        from aiokafka.errors import CommitFailedError, IllegalStateError
        from aiokafka.structs import OffsetAndMetadata, TopicPartition
        from faust.types import TP
        await self.app.consumer.commit()  # Faust's acked offsets (the previous landing's) first
        thread = self._thread()
        tps = {key: TopicPartition(*key) for key in next_}
        # where each partition is read from when nothing is committed (payflow.runtime.commit_offsets)
        started = {key: self.app.consumer._committed_offset.get(TP(*key)) for key in next_}  # noqa: SLF001

        rewind: dict[tuple[str, int], int] = {}
        # checked here, on the loop that owns Faust's acks and gaps; the commit below is made
        # only if each partition's committed offset is still `seen`, the base checked from
        unprocessed = [f"partition {key[1]}: {hole}" for key in sorted(next_)
                       if (hole := self._first_unprocessed(key, seen[key], started[key], next_[key],
                                                           offsets.get(key, ()))) is not None]

        async def commit() -> str:
            consumer = thread._ensure_consumer()  # noqa: SLF001
            coordinator = consumer._coordinator  # noqa: SLF001
            generation = coordinator.generation
            held = await coordinator.fetch_committed_offsets(list(tps.values()))
            now = {key: (held[tp].offset if tp in held and held[tp].offset >= 0 else None) for key, tp in tps.items()}
            for key in tps:  # where a refused landing's partitions are read again from
                base = now[key] if now[key] is not None else started[key]
                if base is not None:
                    rewind[key] = base
            moved = [f"partition {p} committed at {now[(t, p)]}, not {seen.get((t, p))}"
                     for (t, p) in sorted(tps) if now[(t, p)] != seen.get((t, p))]
            if moved:
                return "another member committed since this landing read the warehouse: " + "; ".join(moved)
            if unprocessed:
                return "the commit would pass offsets that were not processed: " + "; ".join(unprocessed)
            if coordinator.generation != generation:
                return "the group rebalanced while the landing was decided"
            commits = {tp: OffsetAndMetadata(next_[key], metadata) for key, tp in tps.items()
                       if now[key] is None or next_[key] > now[key]}
            if not commits:
                return ""
            try:
                await consumer.commit(commits)
            except (CommitFailedError, IllegalStateError) as exc:
                return f"{type(exc).__name__}: {exc}"
            return ""

        refused = await thread.call_thread(commit)
        if refused:
            log.warning("stage sink: landing not committed (%s); its rows stay in uncommitted write streams "
                        "and its offsets are read again", refused)
            await self._read_again(rewind)
            raise Fenced(refused)

    def _first_unprocessed(self, key: tuple[str, int], seen: int | None, started: int | None, next_: int,
                           offsets: Any) -> str | None:
        """Why committing `next_` for partition `key` would pass an unprocessed offset, or
        None: payflow.runtime.commit_offsets' check of Faust's commits, with the landing's
        own offsets counted as acked (they are acked once the landing is decided)."""
        from faust.types import TP

        from payflow.runtime import commit_offsets
        base = seen if seen is not None else started
        if base is None:
            return "no position known to commit from"
        if next_ <= base:
            return None
        tp = TP(*key)
        processed = commit_offsets._Snapshot.of(self.app.consumer, tp, tp)  # noqa: SLF001 - its check, reused
        processed.acked = processed.acked + list(offsets)
        hole = processed.first_unaccounted(base, next_)
        return None if hole is None else f"offset {hole} (reading from {base}) was not processed"

    async def _read_again(self, positions: dict[tuple[str, int], int]) -> None:
        """A refused landing's partitions that this worker still owns are read again from
        where the group's committed offset says (a partition it lost is read by its owner)."""
        from faust.types import TP

        from payflow.runtime import commit_offsets
        consumer = self.app.consumer
        assigned = consumer.assignment()
        for key, offset in sorted(positions.items()):
            tp = TP(*key)
            if tp in assigned:
                await consumer.seek(tp, offset)  # counted: a fetch in flight for tp is dropped
                consumer._committed_offset[tp] = offset  # noqa: SLF001 - Faust commits on from there
                commit_offsets._positions[tp] = offset  # noqa: SLF001 - and so does its check
