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
    # saturated: velocity counts up to the cap (this one included), the spike is flagged
    assert last.velocity_5m == fraud.HISTORY_CAP + 1 and "VELOCITY_SPIKE" in last.risk_flags
    # the history stops growing once at the cap, and so does the cost of a batch (the whole
    # history in the window would be 50x the cap by the end)
    assert sizes[-1] == bound == max(sizes)
    first, final = statistics.median(costs[1:6]), statistics.median(costs[-5:])
    print(f"value {sizes[-1]} bytes; CPU per batch of {BATCH}: first {first * 1e3:.0f} ms, last {final * 1e3:.0f} ms")
    assert final < 2.0 * first, (first, final)


# -- ordinary traffic never reaches the cap: its verdicts are exact ---------------------------

def _max_in_window(times: list[float], window: float) -> int:
    times.sort()
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while t - times[lo] > window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


@pytest.mark.parametrize("options", [OPTIONS, SimOptions(count=20_000, seed=42, start_time=START)],
                         ids=["test_batching's dense stream", "the default simulation"])
def test_the_simulators_busiest_sender_and_card_stay_far_below_the_cap(options):
    per_sender: dict[str, list[float]] = {}
    per_card: dict[str, list[float]] = {}
    for m in EventStream(options):
        if m.kind != "valid":
            continue
        doc = orjson.loads(m.value)
        t = datetime.fromisoformat(doc["event_time"]).timestamp()
        per_sender.setdefault(doc["sender_account_id"], []).append(t)
        per_card.setdefault(doc["credit_card"], []).append(t)  # an upper bound of the small ones
    busiest = max(_max_in_window(ts, fraud.SENDER_HISTORY_S) for ts in per_sender.values())
    busiest_card = max(_max_in_window(ts, fraud.CARD_TEST_WINDOW_S) for ts in per_card.values())
    assert busiest * 4 < fraud.HISTORY_CAP and busiest_card * 4 < fraud.CARD_HISTORY_CAP, (busiest, busiest_card)


def test_the_cap_changes_no_verdict_on_the_simulators_stream():
    capped, uncapped = _processor(_tables()), _processor(_tables(), history_cap=10**9, card_history_cap=10**9)
    assert _decided(capped.process(ITEMS)) == _decided(uncapped.process(ITEMS))


# -- values written before digests and the cap ---------------------------------------------

def _legacy_values(enriched, usd_small=fraud.SMALL_AMOUNT_USD) -> tuple[dict, dict]:
    """What the previous processor stored for these payments: orjson [partition, entries] with
    the raw strings (older entries than the window are harmless: scoring skips them)."""
    senders: dict[str, list] = {}
    cards: dict[str, list] = {}
    owner: dict[str, int] = {}
    for e in enriched:
        p = e.payment
        ts = p.event_time.timestamp()
        senders.setdefault(p.sender_account_id, []).append([ts, p.geo_region, p.device_id, p.transaction_id])
        owner[p.sender_account_id] = owner[p.pii_hash] = p.source_partition
        if fraud.to_usd(p.amount, p.currency) < usd_small:
            cards.setdefault(p.pii_hash, []).append([ts, p.transaction_id])
    return ({k: orjson.dumps([owner[k], v]) for k, v in senders.items()},
            {k: orjson.dumps([owner[k], v]) for k, v in cards.items()})


def test_values_in_the_previous_format_are_read_and_rewritten_on_the_next_touch():
    half = len(ITEMS) // 2
    # the reference: one processor (new format) over the whole stream
    reference = _processor(_tables())
    first = reference.process(ITEMS[:half])
    expected = _decided(reference.process(ITEMS[half:]))

    # an upgrade: the first half's sender and card state as the previous version stored it
    old_senders, old_cards = _legacy_values(first.enriched)
    tables = _tables()
    new = _processor(tables)
    new.process(ITEMS[:half])  # the dedup and watermark state of the first half
    tables["sender_table"].clear()
    tables["card_table"].clear()
    tables["sender_table"].update(old_senders)
    tables["card_table"].update(old_cards)
    upgraded = _processor(tables)  # a restarted worker: loads its indexes from the tables
    assert _decided(upgraded.process(ITEMS[half:])) == expected
    flags = Counter(f for kind, v in expected if kind == "enriched" for f in orjson.loads(v)["risk_flags"])
    assert flags["VELOCITY_SPIKE"] and flags["IMPOSSIBLE_TRAVEL"] and flags["DEVICE_ANOMALY"], flags
    # keys touched since are in the new format; the others are still read (index, expiry)
    formats = Counter(v[:1] == b"[" for v in tables["sender_table"].values())
    assert formats[False] > 0
    for value in [*tables["sender_table"].values(), *tables["card_table"].values()]:
        assert batch_stage._history_partition(value) in range(3) and batch_stage._history_ts(value) > 0


def test_a_previous_format_value_of_raw_strings_reads_as_digests():
    big = "r" * 60_000
    legacy = orjson.dumps([2, [[1.5, big, "dev_a", "txn_1"], [2.5, "us-east", big, "txn_2"]]])
    assert batch_stage._sender_history(legacy) == [(1.5, fraud.digest(big), fraud.digest("dev_a"), fraud.digest("txn_1")),
                                                (2.5, fraud.digest("us-east"), fraud.digest(big), fraud.digest("txn_2"))]
    assert batch_stage._card_history(orjson.dumps([1, [[3.0, "txn_3"]]])) == [(3.0, fraud.digest("txn_3"))]
    assert (batch_stage._history_partition(legacy), batch_stage._history_ts(legacy)) == (2, 2.5)


# -- the changelog record limit ---------------------------------------------------------------

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
