"""The BigQuery landing's decision point (payflow.runtime.landing_fence): the Faust and
aiokafka internals it calls are there (canary), a refused landing's messages stop being
pending acks without being acked, and the decision's metadata names the streams."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from payflow.runtime import commit_offsets, landing_fence
from payflow.pipeline.checkpoint import message_partitions, message_range
from payflow.warehouse import bq_streams, bq_write


def test_what_the_fence_calls_is_on_the_installed_faust_and_aiokafka():
    landing_fence.require_seams()


FLOWING = SimpleNamespace(is_active=lambda: True)  # Faust's flow control, no rebalance under way
REBALANCING = SimpleNamespace(is_active=lambda: False)


class Message:
    acked = False

    def __init__(self, partition: int, offset: int):
        from faust.types import TP
        self.tp, self.offset = TP("raw", partition), offset


def test_a_refused_landing_s_partitions_are_read_again_from_the_committed_offset_and_nothing_is_acked():
    """Its messages are no longer pending acks and not acked; what the fetch loop buffered of
    their partitions is dropped; each partition still assigned is sought back to the group's
    committed offset (here the group does not answer: the position this worker knows), and
    its acks and Faust's gaps above it are forgotten; a partition it lost is left alone."""
    import asyncio

    from faust.types import TP
    from intervaltree import IntervalTree

    from payflow.runtime import commit_offsets, fetch
    from payflow.runtime.take import BatchBuffer

    async def run():
        loop = asyncio.get_running_loop()
        waiting = loop.create_future()
        refused = [Message(0, 10), Message(0, 11), Message(1, 4), Message(2, 7)]
        other = Message(3, 1)
        sought = []

        async def seek(tp, offset):
            sought.append((tp.partition, offset))

        async def call_thread(coroutine_fn):
            raise asyncio.TimeoutError("the group coordinator does not answer")

        p0, p1 = TP("raw", 0), TP("raw", 1)
        consumer = SimpleNamespace(
            _unacked_messages={*refused, other}, _waiting_for_ack=waiting, seek=seek,
            assignment=lambda: {p0, p1, TP("raw", 3)}, _thread=SimpleNamespace(call_thread=call_thread),
            _committed_offset={p0: 10}, _acked={p0: [8, 9, 12], p1: []}, _acked_index={p0: {8, 9, 12}, p1: set()},
            _gap={p0: IntervalTree.from_tuples([(13, 14)])})
        commit_offsets._positions[p1] = 3  # Faust forgot p1's committed offset (revoked meanwhile)
        buffer = BatchBuffer(10, loop)
        buffer.put_many([Message(0, 12), Message(3, 2), Message(1, 5)])
        fetch.route("raw", buffer)
        try:
            await landing_fence.read_again(SimpleNamespace(consumer=consumer, flow_control=FLOWING), refused)
        finally:
            fetch.unroute("raw", buffer)
            commit_offsets._positions.pop(p1, None)
        assert consumer._unacked_messages == {other} and not any(m.acked for m in refused)
        assert waiting.done()  # Faust's wait for acks wakes up and sees them gone
        assert [(m.tp.partition, m.offset) for m in buffer.messages] == [(3, 2)]
        assert sorted(sought) == [(0, 10), (1, 3)]  # partition 2 is no longer this worker's
        assert consumer._committed_offset == {p0: 10, p1: 3}  # Faust commits on from there
        assert consumer._acked[p0] == [8, 9] and not consumer._gap[p0]
    asyncio.run(run())


def _sought_by_read_again(committed: dict, known: dict, refused: list, log_start: int = 0) -> list:
    """The seeks read_again makes for `refused` messages: the group holds `committed`
    (partition -> offset), this worker knows `known` (Faust's committed offsets), and owns
    every partition of them, whose logs start at `log_start`."""
    import asyncio

    from aiokafka.structs import OffsetAndMetadata, TopicPartition
    from faust.types import TP

    commit_offsets._positions.clear()  # noqa: SLF001 - positions this worker knew in earlier tests

    async def run():
        sought = []

        async def seek(tp, offset):
            sought.append((tp.partition, offset))

        async def call_thread(fn):
            return await fn()

        async def earliest_offsets(*tps):
            return {tp: log_start for tp in tps}

        class Coordinator:
            async def fetch_committed_offsets(self, tps):
                return {TopicPartition("raw", p): OffsetAndMetadata(o, "") for p, o in committed.items()}

        consumer = SimpleNamespace(
            _unacked_messages=set(), _waiting_for_ack=asyncio.get_running_loop().create_future(), seek=seek,
            assignment=lambda: {m.tp for m in refused}, _committed_offset={TP("raw", p): o for p, o in known.items()},
            _thread=SimpleNamespace(call_thread=call_thread,
                                    _ensure_consumer=lambda: SimpleNamespace(_coordinator=Coordinator())),
            _acked={}, _acked_index={}, _gap={}, earliest_offsets=earliest_offsets)
        await landing_fence.read_again(SimpleNamespace(consumer=consumer, flow_control=FLOWING), refused)
        return sorted(sought)
    return asyncio.run(run())


def test_a_refused_landing_is_read_again_from_its_first_offset_when_the_group_committed_past_it():
    """A committed offset beyond what the refused landing held, with nothing of it landed (a
    commit that went wrong), must not become a loss: the partition is read again from the
    landing's first offset; what the group did land comes back as replays."""
    assert _sought_by_read_again({0: 766, 1: 40}, {0: 0, 1: 0}, [Message(0, 0), Message(1, 45)]) == [(0, 0), (1, 40)]


def test_a_refused_landing_with_no_position_known_is_read_again_from_the_partition_s_beginning():
    """Nothing committed in the group and no position known here: the first offset dropped is
    no position to read again from (CI lost a partition's offsets 0-343: a successor's refused
    landing started at 344, and it was read again from there)."""
    assert _sought_by_read_again({1: 40}, {}, [Message(1, 45), Message(2, 344)]) == [(1, 40), (2, 0)]


def test_with_no_position_known_a_partition_is_read_again_from_its_log_s_first_offset():
    """Where the assignment's seek reads a partition with nothing committed from (which may
    run at the same time): a position below the log's start made every later commit wait
    for offsets that no longer exist (the acks start at the first offset kept)."""
    assert _sought_by_read_again({}, {}, [Message(2, 344)], log_start=120) == [(2, 120)]


def test_a_landing_is_decided_on_the_partitions_of_its_messages():
    def msg(topic, partition, offset):
        return SimpleNamespace(tp=SimpleNamespace(topic=topic, partition=partition), offset=offset)
    assert message_partitions([msg("raw", 0, 7), msg("raw", 1, 3), msg("raw", 0, 5), msg("other", 0, 9)]) == \
        {("raw", 0), ("raw", 1), ("other", 0)}
    assert message_partitions([SimpleNamespace(name="a stand-in")]) == set()
    assert message_range([msg("raw", 0, 7), msg("raw", 1, 3), msg("raw", 0, 5)]) == \
        ({("raw", 0): 5, ("raw", 1): 3}, {("raw", 0): 8, ("raw", 1): 4})


def test_a_decision_of_the_previous_format_names_its_pending_streams_and_nothing_else_is_read_as_one():
    streams = ["projects/p/datasets/d/tables/late_events/streams/2c3d",
               "projects/p/datasets/d/tables/payment_transactions/streams/0a1b"]
    metadata = bq_write.PENDING_DECISION_PREFIX + json.dumps(streams)
    assert bq_write.decided_pending_streams(metadata) == streams
    assert [bq_write.table_of(s) for s in streams] == ["late_events", "payment_transactions"]
    assert bq_write.decided_pending_streams("") == [] and bq_write.decided_pending_streams("something else") == []
    assert bq_write.decided_pending_streams(bq_streams.DECISION_PREFIX + "{}") == []


def test_what_a_decided_landing_reached_is_read_from_its_streams_row_counts():
    """A decision of partition p's range [100, 160): payment_transactions' 40 rows at row 10
    of its stream (two chunks: 25 rows through offset 131, then the rest), late_events' 3 at
    row 0; dead_letter_events held p through 170 before it (an earlier landing went further),
    the other tables had nothing to append."""
    decision = {"e": 160, "f": {"dead_letter_events": 170},
                "t": {"payment_transactions": ["s1", 10, [[25, 131], [40, 160]]], "late_events": ["s2", 0, [[3, 160]]]}}
    every = bq_streams._landed_through(decision, 100, None)  # seen complete by its own worker
    assert every["payment_transactions"] == every["late_events"] == 160
    assert every["dead_letter_events"] == 170
    assert every["pii_masking_audit"] == 160  # nothing to append: held through the range
    # sealed after payment_transactions' first chunk, before late_events' append
    part = bq_streams._landed_through(decision, 100, {"payment_transactions": 35, "late_events": 0})
    assert part["payment_transactions"] == 131 and part["late_events"] == 100
    assert part["dead_letter_events"] == 170 and part["payment_transactions_fraud"] == 160
    nothing = bq_streams._landed_through(decision, 100, {"payment_transactions": 10, "late_events": 0})
    assert nothing["payment_transactions"] == nothing["late_events"] == 100


def test_rows_below_their_table_s_floor_are_replays_and_are_not_appended():
    columns = {"source_partition": [0, 0, 1, 1, 2], "source_offset": [5, 9, 3, 8, 1], "v": list("abcde")}
    kept = bq_write._above_floors(columns, "source_partition", "source_offset", {0: 9, 1: 4})
    assert kept["v"] == ["b", "d", "e"]


def test_a_stream_committed_already_counts_as_done_when_finishing_a_decision():
    from google.cloud.bigquery_storage_v1 import types
    codes = types.StorageError.StorageErrorCode
    assert bq_write._already_committed(types.StorageError(code=codes.STREAM_ALREADY_COMMITTED))
    assert bq_write._already_committed(types.StorageError(
        code=codes.INVALID_STREAM_STATE, error_message="Stream must be finalized before BatchCommit; state=COMMITTED"))
    assert not bq_write._already_committed(types.StorageError(code=codes.STREAM_NOT_FOUND))


def test_a_decided_stream_that_is_gone_is_passed_over_when_finishing_a_decision():
    """BigQuery drops a stream left uncommitted for a day: a decision whose worker stopped
    and whose partitions nobody landed for that long must not stall them for good (every
    owner retrying a commit that can never succeed). Its rows are in the table or nowhere;
    the landing's lookup sees which. A stream of the landing's own is never passed over."""
    from google.api_core import exceptions
    from google.cloud.bigquery_storage_v1 import types
    codes = types.StorageError.StorageErrorCode

    class Write:
        def __init__(self, outcome):
            self.outcome = outcome

        def batch_commit_write_streams(self, request, retry, timeout):
            if isinstance(self.outcome, Exception):
                raise self.outcome
            return types.BatchCommitWriteStreamsResponse(stream_errors=[self.outcome])

    writer = object.__new__(bq_write.StorageWriteLanding)
    writer.rpc_timeout = 5
    name = "projects/p/datasets/d/tables/payment_transactions/streams/0a1b"
    for outcome in (types.StorageError(code=codes.STREAM_NOT_FOUND, entity=name), exceptions.NotFound("table gone")):
        writer.write = Write(outcome)
        writer.commit_stream("payment_transactions", name, finishing=True, gone_ok=True)  # passed over
        # the landing's own decided stream (finishing: a successor may have committed it):
        # gone, its rows are nowhere and its lookup has run, so the landing fails
        for own in ({"finishing": True}, {}):
            with pytest.raises((bq_write.AppendError, exceptions.NotFound)):
                writer.commit_stream("payment_transactions", name, **own)


class Coordinator:
    """aiokafka's group coordinator as the decision sees it: committed offsets, a generation."""

    def __init__(self, committed: dict, refuse: Exception | None = None):
        self.committed = committed  # TopicPartition -> OffsetAndMetadata
        self.generation = 7
        self.refuse = refuse
        self.commits: list[dict] = []

    async def fetch_committed_offsets(self, tps):
        return {tp: self.committed[tp] for tp in tps if tp in self.committed}


def _fence(coordinator: Coordinator, known: dict | None = None):
    """A fence over a consumer whose commits go to `coordinator`; `known`: Faust's committed
    offsets (where this worker reads each partition from)."""
    from faust.types import TP

    class KafkaConsumer:
        _coordinator = coordinator

        async def commit(self, offsets):
            if coordinator.refuse is not None:
                raise coordinator.refuse
            coordinator.commits.append(dict(offsets))

    async def call_thread(fn):
        return await fn()

    async def faust_commit():
        coordinator.commits.append("faust")

    consumer = SimpleNamespace(commit=faust_commit, _committed_offset={TP(*k): v for k, v in (known or {}).items()},
                               _thread=SimpleNamespace(call_thread=call_thread,
                                                       _ensure_consumer=lambda: KafkaConsumer()))
    fence = object.__new__(landing_fence.KafkaLandingFence)
    fence.app = SimpleNamespace(consumer=consumer, flow_control=FLOWING, consumer_generation_id=7)
    commit_offsets.note_sought(7)  # the assignment's seek is done
    return fence


def test_the_decision_commits_the_offsets_where_they_are_with_the_streams_named():
    """The decision never moves an offset (it can skip nothing): each partition is committed
    at its committed offset, or, with nothing committed, where this worker reads it from."""
    import asyncio

    from aiokafka.structs import OffsetAndMetadata, TopicPartition
    coordinator = Coordinator({TopicPartition("raw", 0): OffsetAndMetadata(40, "")})
    fence = _fence(coordinator, known={("raw", 1): 0})
    asyncio.run(fence._decide({("raw", 0): 40, ("raw", 1): None}, "payflow-landing/1 [\"s\"]"))
    assert coordinator.commits == [{TopicPartition("raw", 0): OffsetAndMetadata(40, "payflow-landing/1 [\"s\"]"),
                                    TopicPartition("raw", 1): OffsetAndMetadata(0, "payflow-landing/1 [\"s\"]")}]
    # one metadata per partition: each names its own streams and range
    coordinator.commits.clear()
    asyncio.run(fence._decide({("raw", 0): 40, ("raw", 1): None}, {("raw", 0): "d0", ("raw", 1): "d1"}))
    assert coordinator.commits == [{TopicPartition("raw", 0): OffsetAndMetadata(40, "d0"),
                                    TopicPartition("raw", 1): OffsetAndMetadata(0, "d1")}]


def test_the_decision_is_refused_to_an_evicted_member_after_another_s_commit_and_without_a_position():
    import asyncio

    import pytest
    from aiokafka.errors import CommitFailedError
    from aiokafka.structs import OffsetAndMetadata, TopicPartition
    tp = TopicPartition("raw", 0)
    cases = [
        (Coordinator({tp: OffsetAndMetadata(40, "")}, refuse=CommitFailedError("generation 6 is stale")),
         {("raw", 0): 40}, {}, "CommitFailedError"),
        (Coordinator({tp: OffsetAndMetadata(55, "")}), {("raw", 0): 40}, {}, "committed at 55, not 40"),
        (Coordinator({}), {("never-read", 0): None}, {}, "no position known"),
    ]
    for coordinator, seen, known, why in cases:
        fence = _fence(coordinator, known)
        with pytest.raises(landing_fence.Fenced, match=why):
            asyncio.run(fence._decide(seen, "payflow-landing/1 []"))
        assert coordinator.commits == []


def test_during_a_rebalance_a_landing_is_refused_without_calling_the_group():
    """A revocation waits for the landing's messages; a call into the consumer thread can wait
    behind that revocation (a resumed zombie's rejoin hung so in CI). So: refused at once,
    before any call to the group."""
    import asyncio

    import pytest
    from aiokafka.structs import OffsetAndMetadata, TopicPartition
    coordinator = Coordinator({TopicPartition("raw", 0): OffsetAndMetadata(40, "")})
    fence = _fence(coordinator)
    fence.app.flow_control = REBALANCING
    with pytest.raises(landing_fence.Fenced, match="rebalance"):
        asyncio.run(fence._decide({("raw", 0): 40}, "payflow-landing/1 []"))
    with pytest.raises(landing_fence.Fenced, match="rebalance"):
        asyncio.run(fence._pending([("raw", 0)]))
    assert coordinator.commits == []  # neither Faust's commit nor the decision ran


def test_before_the_assignment_is_sought_a_landing_is_refused_without_calling_the_group():
    """Faust resumes the flow before it seeks a new assignment: a landing made then has no
    position for a partition with nothing committed, and one known from an earlier generation
    may be stale. Refused like a landing during the rebalance; decided once the seek is done."""
    import asyncio

    import pytest
    from aiokafka.structs import OffsetAndMetadata, TopicPartition
    coordinator = Coordinator({TopicPartition("raw", 0): OffsetAndMetadata(40, "")})
    fence = _fence(coordinator)
    fence.app.consumer_generation_id = 8  # assigned anew; its seek has not finished
    with pytest.raises(landing_fence.Fenced, match="rebalance"):
        asyncio.run(fence._decide({("raw", 0): 40}, "payflow-landing/1 []"))
    with pytest.raises(landing_fence.Fenced, match="rebalance"):
        asyncio.run(fence._pending([("raw", 0)]))
    assert coordinator.commits == []
    commit_offsets.note_sought(8)
    asyncio.run(fence._decide({("raw", 0): 40}, "payflow-landing/1 []"))
    assert coordinator.commits == [{TopicPartition("raw", 0): OffsetAndMetadata(40, "payflow-landing/1 []")}]


def test_a_group_that_does_not_answer_refuses_the_landing_within_a_bound(monkeypatch):
    """A call into the consumer's thread that waits (behind a rebalance, a broker that does
    not answer) is a refusal after GROUP_ANSWER_SECONDS, not a landing that neither finishes
    nor is refused while a revocation waits for its messages' acks."""
    import asyncio
    import time

    import pytest
    from aiokafka.structs import OffsetAndMetadata, TopicPartition
    monkeypatch.setattr(landing_fence, "GROUP_ANSWER_SECONDS", 0.2)
    coordinator = Coordinator({TopicPartition("raw", 0): OffsetAndMetadata(40, "")})

    async def never(*args, **kwargs):
        await asyncio.Event().wait()

    for call in ("_pending", "_decide"):
        fence = _fence(coordinator)
        fence.app.consumer._thread.call_thread = never
        began = time.monotonic()
        with pytest.raises(landing_fence.Fenced, match="did not answer"):
            if call == "_pending":
                asyncio.run(fence._pending([("raw", 0)]))
            else:
                asyncio.run(fence._decide({("raw", 0): 40}, "payflow-landing/1 []"))
        assert time.monotonic() - began < 2
    assert coordinator.commits == ["faust"]  # Faust's commit of the acks only; no decision


def test_a_decision_not_answered_in_time_holds_every_later_landing_until_it_is_answered(monkeypatch):
    """aiokafka retries a commit until the group answers: a decision reported refused after
    its timeout can still be taken later, naming its streams in the metadata. Had a later
    landing decided and committed its own streams meanwhile, the next `pending` would commit
    the late one's streams too: rows twice. So nothing more is decided (or read from the
    group) until it is answered; then the next landing sees what it left."""
    import asyncio

    import pytest
    from aiokafka.structs import OffsetAndMetadata, TopicPartition
    monkeypatch.setattr(landing_fence, "GROUP_ANSWER_SECONDS", 0.1)
    tp = TopicPartition("raw", 0)
    coordinator = Coordinator({tp: OffsetAndMetadata(40, "")})
    fence = _fence(coordinator)
    answer = asyncio.Event()
    kafka_consumer = fence.app.consumer._thread._ensure_consumer()
    cls = type(kafka_consumer)

    async def slow_commit(self, offsets):
        await answer.wait()  # the group takes it, late
        coordinator.committed.update(offsets)
        coordinator.commits.append(dict(offsets))

    monkeypatch.setattr(cls, "commit", slow_commit)

    async def scenario():
        with pytest.raises(landing_fence.Fenced, match="did not answer"):
            await fence._decide({("raw", 0): 40}, "payflow-landing/1 [\"s1\"]")
        for call in (lambda: fence._pending([("raw", 0)]),
                     lambda: fence._decide({("raw", 0): 40}, "payflow-landing/1 [\"s2\"]")):
            with pytest.raises(landing_fence.Fenced, match="earlier decision is not answered"):
                await call()
        answer.set()
        await asyncio.sleep(0.05)
        held = await fence._pending([("raw", 0)])  # answered: the late decision's streams are seen
        assert held == {("raw", 0): (40, "payflow-landing/1 [\"s1\"]")}

    asyncio.run(scenario())
    assert [c for c in coordinator.commits if c != "faust"] == [{tp: OffsetAndMetadata(40, "payflow-landing/1 [\"s1\"]")}]


def test_still_owner_recommits_what_the_group_holds_and_is_refused_to_an_evicted_member():
    """The check after a landing, before its state changes and acks: each partition's
    committed offset and metadata committed again, unchanged (it moves nothing, and a
    decision's stream names stay for whoever finishes it); an evicted member is refused."""
    import asyncio

    from aiokafka.errors import CommitFailedError
    from aiokafka.structs import OffsetAndMetadata, TopicPartition
    tp = TopicPartition("raw", 0)
    held = {tp: OffsetAndMetadata(40, "payflow-landing/1 [\"s\"]")}
    coordinator = Coordinator(dict(held))
    fence = _fence(coordinator)
    assert asyncio.run(fence.still_owner({("raw", 0)})) is True
    assert coordinator.commits == [held]
    evicted = Coordinator(dict(held), refuse=CommitFailedError("generation 6 is stale"))
    assert asyncio.run(_fence(evicted).still_owner({("raw", 0)})) is False
    rebalancing = _fence(coordinator)
    rebalancing.app.flow_control = REBALANCING
    assert asyncio.run(rebalancing.still_owner({("raw", 0)})) is False
    assert coordinator.commits == [held]  # nothing asked of the group during a rebalance


def test_a_partition_revoked_while_read_again_awaits_is_left_to_its_new_owner():
    """read_again awaits the group's committed offsets before it seeks: a partition revoked
    meanwhile (a rebalance) is not sought (aiokafka raises on a seek of a partition not
    assigned, and the worker would stop); its new owner reads it from the committed offset."""
    import asyncio

    from faust.types import TP

    async def run():
        sought = []
        revoked = set()

        async def seek(tp, offset):
            if tp in revoked:
                raise AssertionError(f"sought a revoked partition {tp}")
            sought.append((tp.partition, offset))

        async def call_thread(fn):
            revoked.add(TP("raw", 2))  # the rebalance revokes partition 2 while the group answers
            return {}

        refused = [Message(1, 45), Message(2, 344)]
        consumer = SimpleNamespace(
            _unacked_messages=set(), _waiting_for_ack=asyncio.get_running_loop().create_future(), seek=seek,
            assignment=lambda: {m.tp for m in refused} - revoked, _committed_offset={TP("raw", 1): 40, TP("raw", 2): 300},
            _thread=SimpleNamespace(call_thread=call_thread), _acked={}, _acked_index={}, _gap={})
        await landing_fence.read_again(SimpleNamespace(consumer=consumer, flow_control=FLOWING), refused)
        return sought
    assert asyncio.run(run()) == [(1, 40)]


def test_a_partition_revoked_while_its_seek_reaches_the_consumer_is_left_to_its_new_owner():
    """The assignment still lists the partition when read_again looks, but the rebalance
    revokes it before the seek reaches aiokafka, which raises IllegalStateError (an outside
    fleet test: the worker stopped with exit 70). It is left to its new owner; the others
    are read again."""
    import asyncio

    from aiokafka.errors import IllegalStateError
    from faust.types import TP

    async def run():
        sought = []

        async def seek(tp, offset):
            if tp == TP("raw", 2):
                raise IllegalStateError(f"No current assignment for partition {tp}")
            sought.append((tp.partition, offset))

        async def call_thread(fn):
            return {}

        refused = [Message(1, 45), Message(2, 344)]
        consumer = SimpleNamespace(
            _unacked_messages=set(), _waiting_for_ack=asyncio.get_running_loop().create_future(), seek=seek,
            assignment=lambda: {m.tp for m in refused}, _committed_offset={TP("raw", 1): 40, TP("raw", 2): 300},
            _thread=SimpleNamespace(call_thread=call_thread), _acked={}, _acked_index={}, _gap={})
        await landing_fence.read_again(SimpleNamespace(consumer=consumer, flow_control=FLOWING), refused)
        return sought
    assert asyncio.run(run()) == [(1, 40)]


def test_a_landing_that_leaves_out_an_offset_past_a_floor_is_refused_every_time():
    """A partition whose landing leaves out offsets between where a table holds it and its
    messages (not delivered, not known to hold no record) is refused, however often it comes
    back the same: a gap seen twice was once taken for an empty one, and a batch buffer still
    holding stale messages after a seek showed the same gap twice (952 payments lost).
    Offsets the consumer knows hold no record (accounted_from) let it land."""
    from payflow.warehouse.base import LANDING_ORDER, LandingBatch
    landing = object.__new__(bq_streams.GroupLanding)
    p, r = ("raw", 0), ("raw", 1)
    floors = {t: {0: 10, 1: 20} for t in LANDING_ORDER}
    past = LandingBatch(starts={p: 12, r: 22}, accounted_from={p: 12, r: 20})
    assert landing._past_a_gap(floors, past, [p, r])  # p: 10-11 unaccounted
    assert landing._past_a_gap(floors, past, [p, r])  # and again: never taken for empty
    assert not landing._past_a_gap(floors, LandingBatch(starts={p: 12, r: 22}, accounted_from={p: 10, r: 20}),
                                   [p, r])  # 10-11 known to hold no record (a marker run)
    assert not landing._past_a_gap(floors, LandingBatch(starts={p: 10, r: 5}), [p, r])  # at or below: lands
    assert landing._past_a_gap(floors, LandingBatch(starts={p: 10}, accounted_from={p: 40}), [p])  # a hole inside


def test_until_the_landing_has_appended_a_commit_of_faust_s_carries_the_decision():
    """Faust's commit of the previous landing's acks can come after this landing's decision
    (a commit in flight makes Consumer.commit return without committing, so `pending` did not
    make it). It moved the offset with empty metadata and erased the decision: the next owner
    found no streams to seal, landed the range again (rows twice) and a paused worker's
    appends went on. Until the landing appends, such a commit carries the decision."""
    import asyncio

    from aiokafka.structs import OffsetAndMetadata, TopicPartition
    coordinator = Coordinator({TopicPartition("raw", 0): OffsetAndMetadata(40, "")})
    fence = _fence(coordinator)
    landing_fence._carried.clear()
    try:
        asyncio.run(fence._decide({("raw", 0): 40}, {("raw", 0): "payflow-landing/2 {\"e\":90}"}))
        faust_s = landing_fence.with_carried_metadata({TopicPartition("raw", 0): OffsetAndMetadata(55, "")})
        assert faust_s == {TopicPartition("raw", 0): OffsetAndMetadata(55, "payflow-landing/2 {\"e\":90}")}
        # once the landing appended, bq_streams carries its floors instead (GroupLanding.land)
        landing_fence.KafkaLandingFence.carry(("raw", 0), lambda offset: "")
        assert landing_fence.with_carried_metadata({TopicPartition("raw", 0): OffsetAndMetadata(90, "")}) == {
            TopicPartition("raw", 0): OffsetAndMetadata(90, "")}
    finally:
        landing_fence._carried.clear()
