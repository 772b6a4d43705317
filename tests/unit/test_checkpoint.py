"""The checkpoint's ordering rules (payflow.pipeline.checkpoint), without Kafka or a warehouse:
its collaborators are doubles (tests/fakes.py) that write what happens, in order, to a journal."""
from __future__ import annotations

import asyncio

import pytest

from payflow.pipeline.sink import SinkStopped
from payflow.pipeline.checkpoint import Checkpoint
from tests.fakes import CheckpointParts


async def settle() -> None:
    """Let every task run as far as it can."""
    for _ in range(20):
        await asyncio.sleep(0)


async def drive(parts: CheckpointParts, awaitable) -> None:
    """Run `awaitable`, completing every output and changelog future as it appears."""
    task = asyncio.ensure_future(awaitable)
    for _ in range(50):
        parts.release_all()
        await asyncio.sleep(0)
        if task.done():
            return task.result()
    raise AssertionError("the checkpoint did not finish")


def position(parts: CheckpointParts, entry: tuple) -> int:
    return parts.journal.index(entry)


async def test_no_ack_before_the_warehouse_acknowledged():
    parts = CheckpointParts()
    checkpoint = parts.checkpoint(max_pending=1)
    checkpoint.add(parts.landing("a"))
    await checkpoint.advance()  # a in flight
    checkpoint.add(parts.landing("b"))  # b at the bound: the next advance waits for a
    parts.outputs.hold = parts.outputs.publisher.hold = False
    parts.outputs.release()
    waiting = asyncio.ensure_future(checkpoint.advance())
    await settle()
    assert not waiting.done() and parts.acked() == []
    await checkpoint.commit_landed()  # a is not landed: nothing to commit
    assert parts.acked() == []
    parts.sink.ack(0)
    await drive(parts, waiting)
    assert parts.acked() == [["a0"]]
    assert position(parts, ("warehouse ack", "a")) < position(parts, ("ack", ["a0"]))


async def test_no_ack_before_the_outputs_futures_completed():
    parts = CheckpointParts()
    parts.outputs.publisher.hold = False  # the changelog is acknowledged at once
    checkpoint = parts.checkpoint()
    checkpoint.add(parts.landing("a"))
    await checkpoint.advance()
    parts.sink.ack(0)
    committing = asyncio.ensure_future(checkpoint.commit_landed())
    await settle()
    # processing's outputs and the landed enriched payments are still on their way
    assert ("publish enriched", ["a"]) in parts.journal
    assert parts.outputs.unfinished() == 2
    assert not committing.done() and parts.acked() == []
    parts.outputs.release()
    await committing
    assert parts.acked() == [["a0"]]


async def test_no_ack_before_the_changelog_futures_completed():
    parts = CheckpointParts()
    parts.outputs.hold = False  # outputs are acknowledged at once
    checkpoint = parts.checkpoint()
    checkpoint.add(parts.landing("a"))
    await checkpoint.advance()
    parts.sink.ack(0)
    committing = asyncio.ensure_future(checkpoint.commit_landed())
    await settle()
    assert ("changelog sent", 1) in parts.journal and parts.outputs.publisher.unfinished() == 1
    assert not committing.done() and parts.acked() == []
    parts.outputs.publisher.release()
    await committing
    assert parts.acked() == [["a0"]]
    assert position(parts, ("changelog logged", "dedup")) < position(parts, ("ack", ["a0"]))


async def test_a_failed_landing_acks_nothing_and_expires_nothing():
    parts = CheckpointParts()
    checkpoint = parts.checkpoint()
    checkpoint.add(parts.landing("a", start_watermarks={0: 100}))
    await checkpoint.advance()
    parts.release_all()
    parts.sink.fail(0)
    with pytest.raises(SinkStopped):
        await checkpoint.commit_landed()
    assert parts.acked() == [] and parts.expired() == []
    assert not any(entry[0] in ("publish enriched", "changelog sent") for entry in parts.journal)


async def test_a_refused_landing_and_all_processed_after_it_are_read_again_and_nothing_is_acked():
    """A landing the group refused (payflow.runtime.landing_fence): its messages and those
    processed after it are read again, none acked, nothing expired; the worker goes on with
    what it takes next. Kept, the later ones were refused in turn (their commit would pass the
    refused offsets), each refusal seeking the partitions back while the next was refused."""
    parts = CheckpointParts()
    checkpoint = parts.checkpoint()
    checkpoint.add(parts.landing("a", start_watermarks={0: 100}))
    await checkpoint.advance()  # a in flight: b and c wait
    checkpoint.add(parts.landing("b"))
    checkpoint.add(parts.landing("c", messages=2))
    await checkpoint.advance()
    parts.sink.refuse(0)
    await drive(parts, checkpoint.commit_landed())
    assert ("read again", ["a0", "b0", "c0", "c1"]) in parts.journal
    assert parts.acked() == [] and parts.expired() == []
    assert checkpoint.pending is None and checkpoint.in_flight is None and checkpoint.buffered_bytes == 0
    await checkpoint.advance()
    assert [e for e in parts.journal if e[0] == "land"] == [("land", "a")]  # b+c are not landed
    checkpoint.add(parts.landing("a", start_watermarks={0: 100}))  # read again
    await checkpoint.advance()
    parts.sink.ack(1)
    await drive(parts, checkpoint.commit_landed())
    assert parts.acked() == [["a0"]]


async def test_a_batch_taken_before_a_refusal_was_seen_is_read_again_with_it_not_processed():
    """The agent takes a batch, then finds the landing in flight refused: that batch came
    after the refused messages and before their seek back. Processed, its messages stayed
    pending acks that no landing could ever ack (refused in turn), and a rebalance's wait for
    acks waited for them until the shutdown bound (CI: a resumed zombie worker)."""
    from tests.fakes import FakeMessage
    parts = CheckpointParts()
    checkpoint = parts.checkpoint()
    checkpoint.add(parts.landing("a"))
    await checkpoint.advance()
    checkpoint.add(parts.landing("b"))
    parts.sink.refuse(0)
    await settle()
    taken = [FakeMessage("t0"), FakeMessage("t1")]
    assert await drive(parts, checkpoint.commit_landed(taken)) == []
    assert ("read again", ["a0", "b0", "t0", "t1"]) in parts.journal
    assert checkpoint.pending is None and parts.acked() == []
    # landed, the landing in flight hands the taken batch back to be processed
    checkpoint.add(parts.landing("c"))
    await checkpoint.advance()
    parts.sink.ack(1)
    await settle()
    assert await drive(parts, checkpoint.commit_landed(taken)) == taken
    assert parts.acked() == [["c0"]]


async def test_a_worker_no_longer_owner_after_its_landing_logs_no_state_change_and_reads_it_again():
    """BigQuery with the fence: a worker paused past its session after its decision (its rows
    are in) resumes as a zombie. Its partitions' changelogs are another worker's now: written
    late, its state changes followed the owner's and were taken as logged. So the group is
    asked first; refused, nothing is expired, logged or acked, the unsent changes are dropped
    and the landing with everything after it is read again."""
    parts = CheckpointParts()
    owner = {"answer": False}

    async def confirm(partitions):
        parts.journal.append(("confirm", sorted(partitions)))
        return owner["answer"]

    checkpoint = parts.checkpoint(confirm=confirm)
    checkpoint.add(parts.landing("a", start_watermarks={0: 100}))
    await checkpoint.advance()
    checkpoint.add(parts.landing("b"))
    parts.sink.ack(0)
    assert await drive(parts, checkpoint.commit_landed()) == []
    assert ("read again", ["a0", "b0"]) in parts.journal
    assert ("changes discarded", "dedup") in parts.journal
    assert parts.acked() == [] and parts.expired() == []
    assert not [e for e in parts.journal if e[0] in ("changelog", "changelog logged")]
    # still the owner: the landing is made durable as before, confirmed first
    owner["answer"] = True
    checkpoint.add(parts.landing("a", start_watermarks={0: 100}))
    await checkpoint.advance()
    parts.sink.ack(1)
    await drive(parts, checkpoint.commit_landed())
    assert parts.acked() == [["a0"]]
    assert position(parts, ("confirm", [])) < position(parts, ("changelog logged", "dedup"))


async def test_merged_landings_expire_no_further_than_the_earliest_allows():
    parts = CheckpointParts()
    checkpoint = parts.checkpoint()
    checkpoint.add(parts.landing("a", start_watermarks={0: 100, 1: 50}))
    await checkpoint.advance()  # a in flight: b and c wait and merge
    checkpoint.add(parts.landing("b", start_watermarks={0: 80, 1: 70, 2: 5}))
    checkpoint.add(parts.landing("c", start_watermarks={0: 90, 1: 60}))
    await checkpoint.advance()
    parts.sink.ack(0)
    await drive(parts, checkpoint.commit_landed())
    await checkpoint.advance()
    assert ("land", "b+c") in parts.journal
    parts.sink.ack(1)
    await drive(parts, checkpoint.commit_landed())
    assert parts.expired() == [{0: 100, 1: 50}, {0: 80, 1: 60, 2: 5}]
    assert parts.acked() == [["a0"], ["b0", "c0"]]


async def test_the_landing_in_flight_is_committed_before_the_next_launches():
    parts = CheckpointParts()
    checkpoint = parts.checkpoint()
    checkpoint.add(parts.landing("a"))
    await checkpoint.advance()
    checkpoint.add(parts.landing("b"))
    await checkpoint.advance()
    assert parts.sink.in_flight() == 1 and [e for e in parts.journal if e[0] == "land"] == [("land", "a")]
    assert not checkpoint.landed.is_set()
    parts.sink.ack(0)
    await settle()
    assert checkpoint.landed.is_set()  # wakes the batch loop
    await drive(parts, checkpoint.commit_landed())
    await checkpoint.advance()
    assert position(parts, ("ack", ["a0"])) < position(parts, ("land", "b"))
    assert not checkpoint.landed.is_set()  # b is in flight, not done: no stale wake-up


async def test_pending_is_bounded_the_worker_waits_for_the_landing_in_flight():
    parts = CheckpointParts()
    checkpoint = parts.checkpoint(max_pending=3)
    checkpoint.add(parts.landing("a"))
    await checkpoint.advance()
    checkpoint.add(parts.landing("b", messages=2))
    await checkpoint.advance()  # 2 pending: below the bound, returns at once
    checkpoint.add(parts.landing("c", messages=1))
    waiting = asyncio.ensure_future(checkpoint.advance())  # 3 pending: waits for a
    await settle()
    assert not waiting.done()
    parts.sink.ack(0)
    await drive(parts, waiting)
    assert parts.acked() == [["a0"]] and ("land", "b+c") in parts.journal


async def test_the_fault_hook_exits_after_the_nth_landing_before_its_state_and_ack():
    parts = CheckpointParts()
    checkpoint = parts.checkpoint(fault_exit_after_land=2)
    for index, name in enumerate(("a", "b")):
        checkpoint.add(parts.landing(name, start_watermarks={0: 1}))
        await checkpoint.advance()
        parts.sink.ack(index)
        await drive(parts, checkpoint.commit_landed())
    exit_at = position(parts, ("exit", 86))
    assert parts.journal.count(("exit", 86)) == 1
    assert position(parts, ("ack", ["a0"])) < position(parts, ("publish enriched", ["b"])) < exit_at
    assert exit_at < position(parts, ("ack", ["b0"]))
    assert exit_at < [i for i, e in enumerate(parts.journal) if e[0] == "expire"][1]


def test_the_landing_limit_halves_after_a_slow_landing_and_grows_back_after_fast_ones():
    from payflow.pipeline.checkpoint import next_landing_limit

    assert next_landing_limit(6000, 25.0, 10.0, 2000, 6000) == 3000
    assert next_landing_limit(3000, 25.0, 10.0, 2000, 6000) == 2000  # never below one batch
    assert next_landing_limit(2000, 5.0, 10.0, 2000, 6000) == 2000  # neither slow nor fast
    assert next_landing_limit(2000, 1.0, 10.0, 2000, 6000) == 4000
    assert next_landing_limit(4000, 1.0, 10.0, 2000, 6000) == 6000  # never above the bound


async def test_after_a_slow_landing_the_worker_waits_with_less_pending():
    parts = CheckpointParts()
    checkpoint = Checkpoint(sink=parts.sink, outputs=parts.outputs, processor=parts.processor, tables=parts.tables,
                            ack=parts.ack, max_pending=4, min_pending=1, target_landing_seconds=0.05)
    checkpoint.add(parts.landing("a"))
    await checkpoint.advance()
    await asyncio.sleep(0.1)  # the warehouse is slow: a takes longer than the target
    parts.sink.ack(0)
    await drive(parts, checkpoint.commit_landed())
    assert checkpoint.landing_limit == 2
    checkpoint.add(parts.landing("b"))
    await checkpoint.advance()  # b in flight
    checkpoint.add(parts.landing("c", messages=2))
    waiting = asyncio.ensure_future(checkpoint.advance())  # 2 pending: the halved limit, waits for b
    await settle()
    assert not waiting.done()
    parts.sink.ack(1)
    await drive(parts, waiting)
    assert ("land", "c") in parts.journal


async def test_a_landing_starts_at_most_every_min_landing_seconds_and_at_the_limit_the_worker_waits():
    parts = CheckpointParts()
    checkpoint = Checkpoint(sink=parts.sink, outputs=parts.outputs, processor=parts.processor, tables=parts.tables,
                            ack=parts.ack, max_pending=3, min_landing_seconds=0.3)
    checkpoint.add(parts.landing("a"))
    await checkpoint.advance()  # the first lands at once
    parts.sink.ack(0)
    await drive(parts, checkpoint.commit_landed())
    checkpoint.add(parts.landing("b"))
    await checkpoint.advance()  # within the interval and below the limit: b waits, not launched
    assert checkpoint.in_flight is None and ("land", "b") not in parts.journal
    checkpoint.add(parts.landing("c", messages=2))  # 3 pending: the limit
    started = asyncio.get_running_loop().time()
    await checkpoint.advance()  # waits out the interval, then lands b and c together
    assert asyncio.get_running_loop().time() - started > 0.1
    assert ("land", "b+c") in parts.journal


async def test_the_worker_waits_for_the_landing_in_flight_once_the_buffered_bytes_reach_the_bound():
    parts = CheckpointParts()
    checkpoint = Checkpoint(sink=parts.sink, outputs=parts.outputs, processor=parts.processor, tables=parts.tables,
                            ack=parts.ack, max_pending=1_000_000, max_buffered_bytes=3_000)
    a = parts.landing("a")
    a.size = 1_000
    checkpoint.add(a)
    await checkpoint.advance()  # a in flight
    b = parts.landing("b")
    b.size = 1_500
    checkpoint.add(b)
    assert checkpoint.buffered_bytes == 2_500
    await checkpoint.advance()  # under the bound: goes on without waiting for a
    c = parts.landing("c")
    c.size = 600
    checkpoint.add(c)  # 3,100 bytes held: the next advance waits for a (the agent takes no batch meanwhile)
    parts.outputs.hold = parts.outputs.publisher.hold = False
    parts.outputs.release()
    waiting = asyncio.ensure_future(checkpoint.advance())
    await settle()
    assert not waiting.done() and parts.acked() == []
    parts.sink.ack(0)
    await drive(parts, waiting)
    assert parts.acked() == [["a0"]]
    assert checkpoint.buffered_bytes == 2_100  # b and c, now in flight together


def test_held_bytes_follows_what_a_processed_batch_really_holds():
    """The estimate against tracemalloc for a real batch: its messages (values freed), its
    warehouse rows and its enriched payments' JSON, ~2 KB an event."""
    import gc
    import tracemalloc
    from datetime import datetime, timezone

    from faust.types import TP, Message

    from payflow.keys import KeyRing
    from payflow.pipeline.outputs import enriched_records
    from payflow.pipeline.checkpoint import Landing, held_bytes
    from payflow.simulator.generator import EventStream, SimOptions
    from payflow.stages.batch import RawItem
    from payflow.warehouse.base import build_batch
    from tests.fakes import dict_processor

    n = 2_000
    now = datetime(2026, 11, 20, 12, 0, tzinfo=timezone.utc)
    events = list(EventStream(SimOptions(count=n, seed=3, start_time=datetime(2026, 11, 20, 11, 0,
                                                                                 tzinfo=timezone.utc))))[:n]
    processor = dict_processor(keyring=KeyRing.parse("t-1:" + "ab" * 32), dedup_table={}, watermark_table={},
                               sender_table={}, card_table={}, now=lambda: now)
    tp = TP("raw", 0)
    gc.collect()
    tracemalloc.start()
    try:
        messages = [Message("raw", 0, i, now.timestamp(), 0, [], e.key, e.value, None, tp=tp, generation_id=1)
                    for i, e in enumerate(events)]
        result = processor.process([RawItem(m.partition, m.offset, m.value, m.timestamp) for m in messages])
        for m in messages:
            m.value = None
        landing = Landing(build_batch(result.enriched, result.duplicates, result.rejections, result.late,
                                      result.watermarks, now), messages, result.start_watermarks, [],
                          enriched_records(result))
        assert len(landing.enriched) > n * 0.9
        del result, messages
        gc.collect()
        held = tracemalloc.get_traced_memory()[0]
        del landing.batch, landing.messages, landing.enriched
        gc.collect()
        held -= tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    landing = Landing(build_batch([]), [], {}, [], [])
    assert held / n < 3_000, f"{held / n:.0f} bytes an event held until the landing commits"
    # estimated on a fresh copy of the same batch
    processor = dict_processor(keyring=KeyRing.parse("t-1:" + "ab" * 32), dedup_table={}, watermark_table={},
                               sender_table={}, card_table={}, now=lambda: now)
    messages = [Message("raw", 0, i, now.timestamp(), 0, [], e.key, None, None, tp=tp, generation_id=1)
                for i, e in enumerate(events)]
    result = processor.process([RawItem(0, i, e.value, now.timestamp()) for i, e in enumerate(events)])
    landing = Landing(build_batch(result.enriched, result.duplicates, result.rejections, result.late,
                                  result.watermarks, now), messages, result.start_watermarks, [],
                      enriched_records(result))
    estimate = held_bytes(landing)
    assert 0.9 * held <= estimate <= 1.6 * held, (estimate / n, held / n)


async def test_a_graceful_stop_lets_the_landing_in_flight_commit_and_releases_what_waits():
    parts = CheckpointParts()
    parts.outputs.hold = parts.outputs.publisher.hold = False
    checkpoint = parts.checkpoint()
    checkpoint.add(parts.landing("a"))
    await checkpoint.advance()  # a in flight
    checkpoint.add(parts.landing("b"))  # b processed, waiting for the next landing
    closing = asyncio.ensure_future(checkpoint.close(timeout=5, poll=0.01))
    await settle()
    assert not closing.done()  # a is not landed yet: the stop waits for it
    parts.outputs.release()
    parts.sink.ack(0)
    await drive(parts, checkpoint.commit_landed())  # the batch loop commits a
    await checkpoint.advance()  # and, closing, launches nothing: b is released
    assert await closing is True
    assert parts.acked() == [["a0"]]
    assert ("release", ["b0"]) in parts.journal and ("land", "b") not in parts.journal
    assert position(parts, ("ack", ["a0"])) < position(parts, ("release", ["b0"]))


async def test_a_graceful_stop_gives_up_on_a_landing_that_does_not_finish_in_time():
    parts = CheckpointParts()
    checkpoint = parts.checkpoint()
    checkpoint.add(parts.landing("a"))
    await checkpoint.advance()  # a in flight; the warehouse never answers
    assert await checkpoint.close(timeout=0.1, poll=0.01) is False
    assert parts.acked() == []


async def test_a_stop_during_the_landing_cadence_wait_launches_nothing():
    parts = CheckpointParts()
    checkpoint = Checkpoint(sink=parts.sink, outputs=parts.outputs, processor=parts.processor, tables=parts.tables,
                            ack=parts.ack, max_pending=1, min_landing_seconds=0.3, release=parts.release)
    checkpoint.add(parts.landing("a"))
    await checkpoint.advance()  # the first lands at once
    parts.sink.ack(0)
    await drive(parts, checkpoint.commit_landed())
    checkpoint.add(parts.landing("b"))  # at the limit, within the interval: advance waits it out
    waiting = asyncio.ensure_future(checkpoint.advance())
    await settle()
    assert await checkpoint.close(timeout=5, poll=0.01) is True
    await waiting
    assert ("land", "b") not in parts.journal and ("release", ["b0"]) in parts.journal
