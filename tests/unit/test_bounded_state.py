"""Bounded state per key, whatever the traffic: a sender's and a card's stored history has a
fixed size bound, the changelog record limit comes from the broker's limits, and a start
where a state change could not fit is refused."""
from __future__ import annotations

import statistics
import time
from collections import Counter
from datetime import datetime, timedelta

import orjson
import pytest

from payflow.stages import fraud
from payflow.stages import batch as batch_stage
from payflow.keys import KeyRing
from payflow.models import dumps
from payflow.stages.batch import BatchProcessor, RawItem, history_value_bound
from tests.fakes import dict_processor
from payflow.simulator.generator import EventStream, SimOptions
from payflow.tables.changelog import (
    RECORD_BATCH_OVERHEAD, SAFE_MARGIN, RecordLimitError, check_record_limit, configure_record_limits,
    entry_bytes, pack_changes, record_limit, unpack_changes,
)
from tests.unit.test_batching import ITEMS, NOW, OPTIONS
from tests.unit.test_bounded_state_events import START, heavy_sender_messages

RING = KeyRing.parse("t-1:" + "ab" * 32)


def _processor(tables: dict, **kw) -> BatchProcessor:
    return dict_processor(keyring=RING, now=lambda: NOW, **tables, **kw)


def _tables() -> dict:
    return dict(dedup_table={}, watermark_table={}, sender_table={}, card_table={})


def _decided(result) -> list:
    return ([("enriched", e.to_enriched_json()) for e in result.enriched]
            + [("duplicate", dumps(d)) for d in result.duplicates]
            + [("late", p.to_masked_json()) for p in result.late]
            + [("rejected", r.to_dlq_json(NOW)) for r in result.rejections])


# -- a heavy sender -----------------------------------------------------------------------

HEAVY = 100_000  # one account's payments within 30 minutes of event time
BATCH = 2_000


def test_a_sender_with_100k_payments_in_30_minutes_keeps_a_bounded_value_at_a_flat_cost():
    tables = _tables()
    processor = dict_processor(keyring=RING, now=lambda: START + timedelta(minutes=31), **tables)
    messages = heavy_sender_messages(HEAVY)
    sender = None
    bound = history_value_bound()
    costs, sizes = [], []
    offset = 0
    while True:
        batch = [RawItem(0, offset + i, m.value) for i, m in zip(range(BATCH), messages)]
        if not batch:
            break
        offset += len(batch)
        started = time.thread_time()  # this thread's CPU: other processes on the machine do not count
        result = processor.process(batch)
        costs.append(time.thread_time() - started)
        assert len(result.enriched) == len(batch)
        sender = sender or result.enriched[0].payment.sender_account_id
        value = tables["sender_table"][sender]
        sizes.append(len(value))
        assert len(value) <= bound, f"after {offset} payments the sender's value has {len(value)} bytes"
        assert all(len(v) <= bound for v in tables["card_table"].values())
        processor.expire(result.start_watermarks)
    assert offset == HEAVY and len(costs) == HEAVY // BATCH
    last = result.enriched[-1].fraud
    # saturated: the last hour holds RECENT_CAP payments, the burst is flagged
    assert last.velocity_5m == fraud.RECENT_CAP and "VELOCITY_5M" in last.risk_flags
    # the history stops growing once at the cap, and so does the cost of a batch (the whole
    # history in the window would be 50x the cap by the end)
    assert sizes[-1] == max(sizes) == sizes[len(sizes) // 2] <= bound
    first, final = statistics.median(costs[1:6]), statistics.median(costs[-5:])
    print(f"value {sizes[-1]} bytes; CPU per batch of {BATCH}: first {first * 1e3:.0f} ms, last {final * 1e3:.0f} ms")
    assert final < 2.0 * first, (first, final)


@pytest.mark.timeout(1800)  # ~40 µs a payment compiled (make install); several times that as Python
def test_a_sender_with_a_million_payments_keeps_a_bounded_state():
    """Every payment from a new device, region, receiver and card: the worst case for the
    first-seen sets; the profile, the sets and the last hour stay within their caps."""
    from tests.unit.test_fraud_scoring import payment

    state = fraud.new_state()
    bound = fraud.state_bound()
    regions = list(fraud.REGION_CENTROIDS)
    for n in range(1_000_000):
        p = payment(n, at=timedelta(seconds=600 * n), device=f"dev_{n}", region=regions[n % len(regions)],
                    receiver=f"acct_{n}", card=f"hash_{n}", amount=str(10 + n % 500))
        state = fraud.score(p, state).state
        if n % 50_000 == 0:
            assert len(fraud.pack_state(state)) <= bound
    sizes = [len(s) for s in state.profile.sets]
    assert sizes == list(fraud.SET_CAPS) and len(state.recent) <= fraud.RECENT_CAP, sizes
    assert state.profile.n == 1_000_000 - len(state.recent)
    assert len(fraud.pack_state(state)) <= bound


def test_values_of_older_formats_start_a_new_state():
    old = batch_stage._HISTORY_HEAD.pack(2, 0, 1.0) + bytes(56)
    assert batch_stage._sender_state(old).profile.n == 0
    assert batch_stage._sender_state(b'[0, [[1.0, "us-east", "dev", "txn"]]]').recent == []


MB = 1_048_588  # Kafka's default message.max.bytes


def test_the_record_limit_is_the_smaller_of_the_topics_and_the_producers_less_a_margin():
    assert record_limit(MB, 1_000_000) == 1_000_000 - RECORD_BATCH_OVERHEAD - SAFE_MARGIN
    assert record_limit(200_000, 1_000_000) == 200_000 - RECORD_BATCH_OVERHEAD - SAFE_MARGIN
    # the broker checks the compressed batch: room for incompressible bytes growing
    assert record_limit(MB, 1_000_000, "snappy") < record_limit(MB, 1_000_000, "lz4") < record_limit(MB, 1_000_000)


def test_no_record_is_larger_than_the_limit_and_one_change_always_fits():
    limit = record_limit(300_000, 1_000_000)
    bound = history_value_bound()
    changes = {f"acct_{i:05d}".encode(): b"v" * bound for i in range(100)}
    records = pack_changes(changes, limit)
    assert all(len(r) + RECORD_BATCH_OVERHEAD <= 300_000 for r in records)
    assert dict(kv for r in records for kv in unpack_changes(r)) == changes


def _check(limit: int, **kw) -> None:
    args = dict(max_key_bytes=65_529, max_value_bytes=history_value_bound(), max_batch_bytes=256 * 1024)
    args.update(kw)
    check_record_limit("t-changelog", limit, **args)


def test_the_defaults_fit_and_a_topic_too_small_for_one_change_is_refused():
    _check(record_limit(MB, 1_000_000))
    _check(record_limit(MB, 1_000_000), max_value_bytes=65_536)  # the watermark log's bound
    small = record_limit(90_000, 1_000_000)
    with pytest.raises(RecordLimitError, match=r"t-changelog.*PAYFLOW_MAX_MESSAGE_BYTES"):
        _check(small, max_batch_bytes=16_384)
    _check(small, max_batch_bytes=16_384, max_key_bytes=4_096)  # fits with a lower input limit
    with pytest.raises(RecordLimitError, match="producer_max_batch_size"):
        _check(small, max_key_bytes=4_096)  # several records in one batch could exceed the topic's limit
    with pytest.raises(RecordLimitError, match="65535"):
        _check(10**9, max_key_bytes=70_000)
    assert entry_bytes(65_529, history_value_bound()) < record_limit(MB, 1_000_000)


def test_configure_sets_each_tables_limit_from_its_topic_and_take_pending_keeps_to_it():
    import faust

    from payflow.tables.changelog import BatchLoggedTable
    app = faust.App("bounded-state-test", store="memory://", autodiscover=False)
    big = BatchLoggedTable(app, name="big", retention_seconds=60, partitions=1, key_type=bytes, value_type=bytes,
                           max_value_bytes=20_000)
    small = BatchLoggedTable(app, name="small", retention_seconds=60, partitions=1, key_type=bytes,
                             value_type=bytes, max_value_bytes=20_000)
    topics = {big.changelog_topic.get_topic_name(): MB, small.changelog_topic.get_topic_name(): 60_000}
    limits = configure_record_limits([big, small], topics, max_request_size=1_000_000, max_batch_bytes=16_384,
                                     max_key_bytes=1_000)
    assert (big.record_limit, small.record_limit) == (record_limit(MB, 1_000_000), record_limit(60_000, 1_000_000))
    assert sorted(limits.values()) == [small.record_limit, big.record_limit]
    for i in range(20):
        small.write(0, f"k{i}", b"x" * 20_000)
    records = small.take_pending()[0]
    assert len(records) > 1 and all(len(r) <= small.record_limit for r in records)
    with pytest.raises(RecordLimitError):
        configure_record_limits([small], topics, max_request_size=1_000_000, max_batch_bytes=16_384,
                                max_key_bytes=50_000)
