"""The BigQuery landing's decision point: a Kafka offset commit, fenced by the group generation.

Before a BigQuery landing writes anything it asks `decide`: commit its partitions' offsets
*where they are* (the committed offset, not advanced) with, per partition, what the landing
is about to write in the offset-commit metadata (payflow.warehouse.bq_streams: its streams,
row offsets and range), in one OffsetCommit request. The group coordinator accepts it only
from a current member that owns every partition of the landing (aiokafka raises
CommitFailedError on an old generation or an unknown member, IllegalStateError for a
partition not assigned): a worker evicted while paused before its decision writes nothing.
One evicted after it is refused by BigQuery: the next owner reads the decision (`pending`)
and finalizes the streams it names before its own landing. After the writes, the checkpoint
goes on as for any landing (outputs, changelog, acks); Faust's commit of the acks advances
the offsets, and carries what the landing asks it to (`with_carried_metadata`).

The decision does not move the offsets, so it can skip nothing, and everything the
checkpoint makes durable before an ack (the enriched payments, the state changelog) still
comes before the offsets move. `decide` is also an optimistic check on the committed offsets:
it refuses a landing if any of its partitions' committed offset changed since `pending` read
it (another member landed there meanwhile). Within one generation only the partition's owner
commits it, so the check and the commit cannot be separated by another member's commit.
`pending` commits Faust's acks first (the previous landing's), so Faust's own commit cannot
move the offsets in between.

The calls run on the consumer's own thread (Faust's AIOKafkaConsumerThread.call_thread), as
Faust's own commits do.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
from typing import Any, Callable, Mapping

from payflow.runtime import seams

log = logging.getLogger("payflow.sink")
CALL_TIMEOUT = 30.0
GROUP_ANSWER_SECONDS = 5.0


# (topic, partition) -> the metadata an offset commit there carries when it brings none
# (Faust's): set by the BigQuery landing (payflow.warehouse.bq_streams), whose decisions say
# how far each table holds the partition; a commit of Faust's below that would erase it
_carried: dict[tuple[str, int], Callable[[int], str]] = {}


def with_carried_metadata(offsets: Any) -> Any:
    """The offsets of a commit, those with empty metadata given what their partition
    carries (the worker's consumer passes every commit through this)."""
    if not offsets or not _carried:
        return offsets
    from aiokafka.structs import OffsetAndMetadata
    out = {}
    for tp, meta in offsets.items():
        carry = _carried.get((tp.topic, tp.partition))
        if carry is not None and isinstance(meta, OffsetAndMetadata) and not meta.metadata:
            meta = OffsetAndMetadata(meta.offset, carry(meta.offset))
        out[tp] = meta
    return out


def _decision_text(text: str, offset: int) -> str:
    return text


class Fenced(Exception):
    """This worker may not commit the landing's offsets (evicted, or the range moved on)."""


def require_seams() -> None:
    """Fail loudly (seams.MissingSeam) if what decide/pending call is gone."""
    from aiokafka.consumer.group_coordinator import GroupCoordinator
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
    seams.require(AIOKafkaConsumerThread, "call_thread", "_ensure_consumer")
    seams.require(GroupCoordinator, "fetch_committed_offsets", "commit_offsets")
    from faust.transport.consumer import Consumer
    seams.require(Consumer, "_waiting_for_ack", "wait_empty", "seek", "assignment", "earliest_offsets")


async def read_again(app: Any, messages: list) -> None:
    """A refused landing's messages, with everything processed after it (the checkpoint
    passes both): no longer pending acks (a rebalance or a stop waits for pending acks, and
    these are never acked) and not acked either (an ack would let Faust commit past them).
    Their partitions that this worker still owns are read again from the group's committed
    offset, or from the first offset dropped here if that is earlier; what was fetched of
    them and not yet taken is dropped. A partition it lost is read by its owner.

    Everything after the refused landing is dropped with it: processed past an offset that is
    not committed, a later landing of the same partitions would be refused in turn (its
    commit would pass the refused offsets), and one that re-sought the partition at each
    refusal while the next, already processed, was refused again looped (seen with three
    workers after a rebalance)."""
    from mode.utils.futures import notify

    from payflow.runtime import commit_offsets, fetch, stall_guard
    consumer = app.consumer
    unacked = consumer._unacked_messages  # noqa: SLF001 - Faust's pending acks
    first: dict[Any, int] = {}  # tp -> its first offset among the messages
    for message in messages:
        unacked.discard(message)
        first[message.tp] = min(message.offset, first.get(message.tp, message.offset))
    notify(consumer._waiting_for_ack)  # noqa: SLF001 - wakes Faust's wait for acks
    for topic in {tp.topic for tp in first}:
        fetch.drop_routed(topic, {tp.partition for tp in first if tp.topic == topic})
    assigned = consumer.assignment()
    owned = sorted(tp for tp in first if tp in assigned)
    if not owned:
        return
    committed = await _group_committed(app, owned)
    sought: dict[Any, int] = {}
    for tp in owned:
        position = committed.get(tp)
        if position is None:
            position = commit_offsets.known_position(consumer, tp)
        if position is None:
            # nothing committed and no position known: from the log's first offset, where the
            # assignment's seek reads such a partition from (a seek of its own may be under
            # way: the two agree). The first offset dropped is no position: the records
            # before it can be a fetch in flight dropped at the assignment's seek
            # (fetch.note_seek), and recorded as the committed position it made that seek
            # pass the partition over (not "uncommitted" any more): they were never read
            position = await _first_offset(consumer, tp)
        # never past what is dropped here: a committed offset beyond it that nothing landed
        # (a commit that went wrong) would otherwise turn into a loss; what the group did land
        # comes back as replays, which the landing's lookup skips
        position = min(position, first[tp])
        if tp not in consumer.assignment():
            continue  # revoked during the awaits above (a seek would raise): its owner reads it
        if not await stall_guard.seek_back(consumer, tp, position):  # a fetch in flight for tp is dropped
            continue  # revoked while the seek reached the consumer: its owner reads it
        commit_offsets.read_from(consumer, tp, position)
        sought[tp] = position
    log.info("stage sink: %d message(s) of the refused landing and after it are read again: %s", len(messages),
             ", ".join(f"{tp.topic}[{tp.partition}] from {offset} (the refused from {first[tp]})"
                       for tp, offset in sought.items()))


async def _first_offset(consumer: Any, tp: Any) -> int:
    """The partition's first offset in the log (0 if the broker does not answer in time:
    the consumer resets an offset below the log's start to the earliest)."""
    try:
        earliest = await asyncio.wait_for(consumer.earliest_offsets(tp), GROUP_ANSWER_SECONDS)
    except Exception as exc:  # noqa: BLE001 - 0 reads the same records, only slower to commit
        log.warning("stage sink: the first offset of %s[%d] not read (%r): reading it again from 0",
                    tp.topic, tp.partition, exc)
        return 0
    first = earliest.get(tp) or 0
    from payflow.runtime import commit_offsets
    commit_offsets.note_log_start(tp, first)
    return first


def accounted_from(app: Any, messages: list) -> dict[tuple[str, int], int]:
    """Per (topic, partition) of `messages`: the lowest offset L such that every offset from L
    to the last message is one of the messages, or one the consumer knows holds no record (a
    gap Faust filed, a run the fetcher stepped over, below the log's first offset): the same
    knowledge a commit is checked against (commit_offsets). A BigQuery landing may claim
    its partition's range only from L on (bq_streams): below it, an offset neither delivered
    nor known empty may still hold a payment, and a range claimed over it would make that
    payment a replay when it is read again."""
    from faust.types import TP

    from payflow.runtime import commit_offsets, fetch
    consumer = app.consumer
    offsets: dict[Any, set[int]] = {}
    for message in messages:
        tp = getattr(message, "tp", None)
        if tp is not None:
            offsets.setdefault(tp, set()).add(message.offset)
    out = {}
    for tp, present in offsets.items():
        key = TP(tp.topic, tp.partition)
        gaps = consumer._gap.get(key)  # noqa: SLF001 - Faust's filed gaps (IntervalTree)
        runs = fetch._skipped.get(key) or {}  # noqa: SLF001 - offsets the fetcher stepped over
        committed = commit_offsets.known_position(consumer, key)
        first_in_log = commit_offsets.log_start(key)
        low = max(present)
        while low > 0:
            below = low - 1
            if below in present:
                low = below
                continue
            if below < first_in_log:
                low = 0
                break
            stepped_over = [begin for begin, end in runs.items() if begin <= below < end]
            if stepped_over:
                low = min(stepped_over)
                continue
            covering = gaps.at(below) if gaps else ()
            if covering:
                low = min(i.begin for i in covering)
                continue
            if below == committed and gaps and gaps.at(low):
                low = below  # the broker's first record after a seek came later (as commits count it)
                continue
            break
        out[(tp.topic, tp.partition)] = low
    return out


async def _group_committed(app: Any, tps: list) -> dict:
    """tp -> the group's committed offset (nothing committed, or the group not answering
    within a few seconds: left out)."""
    from faust.types import TP
    try:
        held = await committed_offsets(app, [(tp.topic, tp.partition) for tp in tps])
    except Exception as exc:  # noqa: BLE001 - the positions known here are used instead
        log.warning("stage sink: the group's committed offsets not read (%r): reading again from the "
                    "positions this worker knows", exc)
        return {}
    return {TP(topic, partition): offset for (topic, partition), (offset, _) in held.items()}


async def committed_offsets(app: Any, partitions: list[tuple[str, int]]) -> dict[tuple[str, int], tuple[int, str]]:
    """(topic, partition) -> (committed offset, its commit metadata) the group holds; a
    partition with nothing committed is left out. Asked on the consumer's thread, bounded:
    asyncio.TimeoutError if the group does not answer within GROUP_ANSWER_SECONDS (a call
    into the consumer's thread can wait behind a rebalance)."""
    from aiokafka.structs import TopicPartition
    thread = app.consumer._thread  # noqa: SLF001 - Faust's AIOKafkaConsumerThread

    async def fetch() -> dict:
        coordinator = thread._ensure_consumer()._coordinator  # noqa: SLF001
        return await coordinator.fetch_committed_offsets([TopicPartition(t, p) for t, p in partitions])

    held = await asyncio.wait_for(thread.call_thread(fetch), GROUP_ANSWER_SECONDS)
    return {(tp.topic, tp.partition): (meta.offset, meta.metadata or "") for tp, meta in held.items()
            if meta is not None and meta.offset >= 0}


def rebalancing(app: Any) -> bool:
    """A rebalance is under way (Faust suspends its flow control from the revocation until the
    new assignment's recovery is done), or the new assignment is not yet sought to where it is
    read from (Faust resumes the flow before that seek): a landing is refused then, not
    decided. A revocation waits for the landing's messages to be acked or dropped, and a call
    into the consumer thread can wait behind it: a landing decided then hung the rejoin of a
    worker resumed after its eviction. Before the seek, a partition with nothing committed has
    no position to decide from, and one this worker knew from an earlier generation may be
    stale."""
    from payflow.runtime import commit_offsets
    return not app.flow_control.is_active() or not commit_offsets.assignment_sought(app)


class KafkaLandingFence:
    """decide / pending for the landing thread, run on the worker's event loop `loop`."""

    # a decision sent and not answered in time: the group may still take it later (aiokafka
    # retries a commit until it is answered), and a later landing's stream commit would then
    # be followed by this one's, named in the metadata it leaves. Until it is answered,
    # nothing more is decided (every landing is refused and read again)
    _unanswered: asyncio.Future | None = None

    def __init__(self, app: Any, loop: asyncio.AbstractEventLoop):
        require_seams()
        self.app = app
        self.loop = loop

    # -- called from the landing's thread ------------------------------------------------
    @staticmethod
    def carry(partition: tuple[str, int], metadata_at: Callable[[int], str]) -> None:
        """From now on a commit of `partition` with no metadata of its own carries
        `metadata_at(offset)`."""
        _carried[partition] = metadata_at

    def pending(self, partitions: list[tuple[str, int]]) -> dict[tuple[str, int], tuple[int, str]]:
        """(committed offset, its commit metadata) the group holds for these (topic,
        partition)s; a partition with nothing committed is left out."""
        return self._run(self._pending(partitions))

    def decide(self, seen: Mapping[tuple[str, int], int | None],
               metadata: str | Mapping[tuple[str, int], str]) -> None:
        """Commit each partition's offset where it is (`seen`: what `pending` returned before
        the landing read the warehouse; nothing committed: where this worker reads it from)
        with `metadata` (one for all, or per partition), in one request; Fenced if any
        committed offset moved since, if the group refuses this member, or if no position is
        known for a partition."""
        self._run(self._decide(dict(seen), metadata))

    def _run(self, coroutine: Any) -> Any:
        """`coroutine` on the worker's loop; no answer within CALL_TIMEOUT is a refusal (it
        is cancelled): nothing is committed on a decision not known to be taken, and one
        the group did take leaves its streams named in the metadata, for the next landing
        of those partitions to commit (`pending`)."""
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        try:
            return future.result(CALL_TIMEOUT)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise Fenced(f"no answer from the worker's loop within {CALL_TIMEOUT:.0f} s") from None

    # -- on the event loop -----------------------------------------------------------------
    async def still_owner(self, partitions: set[tuple[str, int]]) -> bool:
        """Is this worker still the owner of these partitions? Asked (on the event loop)
        after a landing and before its state changes and acks: each partition's committed
        offset and metadata committed again unchanged, which the group accepts only from a
        current member that owns them. False during a rebalance, while an earlier decision
        is unanswered, or without an answer in time."""
        from aiokafka.errors import CommitFailedError, IllegalStateError
        from aiokafka.structs import OffsetAndMetadata, TopicPartition
        if not partitions:
            return True
        try:
            self._check_answered()
        except Fenced:
            return False
        if rebalancing(self.app):
            return False
        thread = self._thread()
        tps = [TopicPartition(t, p) for t, p in sorted(partitions)]

        async def recommit() -> bool:
            consumer = thread._ensure_consumer()  # noqa: SLF001
            held = await consumer._coordinator.fetch_committed_offsets(tps)  # noqa: SLF001
            same = {tp: OffsetAndMetadata(meta.offset, meta.metadata) for tp, meta in held.items()
                    if meta is not None and meta.offset >= 0}
            if not same:
                return True  # nothing committed to confirm with (the decision commits first)
            try:
                await consumer.commit(same)
            except (CommitFailedError, IllegalStateError) as exc:
                log.warning("stage sink: this worker no longer owns partition(s) %s (%s): the landing's state "
                            "changes are not logged and its offsets are read again",
                            ", ".join(str(p) for _, p in sorted(partitions)), type(exc).__name__)
                return False
            return True

        answer = asyncio.ensure_future(thread.call_thread(recommit))
        try:  # two calls to the group, bounded as a decision is
            return await asyncio.wait_for(asyncio.shield(answer), GROUP_ANSWER_SECONDS * 2)
        except asyncio.TimeoutError:
            # it moves nothing and names what is there: taken late, it changes nothing
            answer.add_done_callback(lambda f: f.cancelled() or f.exception())
            return False

    def _check_answered(self) -> None:
        """Fenced while an earlier decision is unanswered: whatever its answer, the next
        landing must see it (`pending` reads the metadata it leaves)."""
        earlier = self._unanswered
        if earlier is None:
            return
        if not earlier.done():
            raise Fenced("an earlier decision is not answered yet: the landing is read again")
        self._unanswered = None
        if not earlier.cancelled() and earlier.exception() is not None:
            log.warning("stage sink: an earlier landing decision failed late (%r)", earlier.exception())

    def _thread(self) -> Any:
        return self.app.consumer._thread  # noqa: SLF001 - Faust's AIOKafkaConsumerThread

    async def _pending(self, partitions: list[tuple[str, int]]) -> dict[tuple[str, int], tuple[int, str]]:
        if rebalancing(self.app):
            raise Fenced("a rebalance is under way: the landing is read again after it")
        from payflow.runtime.commit_offsets import commit_whole
        self._check_answered()
        try:
            # Faust's acked offsets (the previous landing's) first; run whole if this times out
            await asyncio.wait_for(commit_whole(self.app.consumer), GROUP_ANSWER_SECONDS)
            return await committed_offsets(self.app, partitions)
        except asyncio.TimeoutError:
            raise Fenced("the group did not answer in time: the landing is read again") from None

    async def _decide(self, seen: dict[tuple[str, int], int | None],
                      metadata: str | Mapping[tuple[str, int], str]) -> None:
        from aiokafka.errors import CommitFailedError, IllegalStateError
        from aiokafka.structs import OffsetAndMetadata, TopicPartition
        from faust.types import TP

        from payflow.runtime import commit_offsets
        if rebalancing(self.app):
            log.warning("stage sink: landing of partition(s) %s not decided (a rebalance is under way); nothing "
                        "of it is written and its offsets are read again",
                        ", ".join(str(p) for _, p in sorted(seen)))
            raise Fenced("a rebalance is under way")
        thread = self._thread()
        tps = {key: TopicPartition(*key) for key in seen}
        # nothing committed: where this worker reads the partition from (commit_offsets)
        started = {key: commit_offsets.known_position(self.app.consumer, TP(*key)) for key in seen}

        async def commit() -> str:
            consumer = thread._ensure_consumer()  # noqa: SLF001
            coordinator = consumer._coordinator  # noqa: SLF001
            generation = coordinator.generation
            held = await coordinator.fetch_committed_offsets(list(tps.values()))
            now = {key: (held[tp].offset if tp in held and held[tp].offset >= 0 else None) for key, tp in tps.items()}
            moved = [f"partition {p} committed at {now[(t, p)]}, not {seen.get((t, p))}"
                     for (t, p) in sorted(tps) if now[(t, p)] != seen.get((t, p))]
            if moved:
                return "another member committed since this landing read the warehouse: " + "; ".join(moved)
            unknown = [f"partition {p}" for (t, p) in sorted(tps) if now[(t, p)] is None and started[(t, p)] is None]
            if unknown:
                return "no position known to commit from: " + ", ".join(unknown)
            if coordinator.generation != generation:
                return "the group rebalanced while the landing was decided"
            try:
                await consumer.commit({tp: OffsetAndMetadata(now[key] if now[key] is not None else started[key],
                                                             metadata if isinstance(metadata, str) else metadata[key])
                                       for key, tp in tps.items()})
            except (CommitFailedError, IllegalStateError) as exc:
                return f"{type(exc).__name__}: {exc}"
            return ""

        self._check_answered()
        decision = asyncio.ensure_future(thread.call_thread(commit))
        self._unanswered = decision  # until answered (a cancelled wait leaves it so too)
        try:
            refused = await asyncio.wait_for(asyncio.shield(decision), GROUP_ANSWER_SECONDS * 2)
        except asyncio.TimeoutError:
            # taken or not, the offsets did not move: taken (now or later), the metadata names
            # the streams for the next landing of these partitions to commit (`pending`),
            # which waits for this answer first
            refused = "the group did not answer in time"
        else:
            self._unanswered = None
        if refused:
            log.warning("stage sink: landing of partition(s) %s not decided (%s); nothing of it is written and "
                        "its offsets are read again",
                        ", ".join(str(p) for _, p in sorted(seen)), refused)
            raise Fenced(refused)
        # until the landing has appended (bq_streams then carries its floors), a commit of
        # Faust's carries the decision itself: a commit of the previous landing's acks that
        # Faust's own commit had not made yet (one in flight makes Consumer.commit return
        # without committing) erased the decision, and whoever took the partition over then
        # found nothing to seal (rows landed twice, a paused worker's appends not fenced)
        for key in seen:
            _carried[key] = functools.partial(_decision_text, metadata if isinstance(metadata, str) else metadata[key])
