"""A stream's outputs do not depend on how it is cut into batches.

BatchProcessor.process runs each stage over the whole batch before the next (decode and mask,
then dedup, then fraud), so the order in which state is read and written differs from one
event at a time. Every payment must still be judged as if it came alone: the same duplicates,
late events, rejections and fraud scores, in the same order.
"""
from __future__ import annotations

from datetime import datetime, timezone

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from payflow.keys import KeyRing
from payflow.models import dumps
from payflow.pipeline import BatchProcessor, RawItem
from payflow.simulator.generator import EventStream, SimOptions

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=timezone.utc)
# a small population, with more fraud, duplicates and bad input than usual: senders and
# cards repeat within a batch, and every kind of outcome is in the stream
OPTIONS = SimOptions(count=600, seed=11, start_time=datetime(2026, 11, 20, 11, 0, tzinfo=timezone.utc),
                     accounts=40, business_tps=0.5, duplicate_ratio=0.1, late_ratio=0.03,
                     malformed_ratio=0.05, fraud_ratio=0.05)
PARTITIONS = 3


def _stream() -> list[RawItem]:
    messages = list(EventStream(OPTIONS))[:OPTIONS.count]
    # key order within a partition, as Kafka delivers it; a partition per sender, as the raw topic's key makes it
    offsets = [0] * PARTITIONS
    items = []
    for m in messages:
        partition = sum(m.key or b"") % PARTITIONS
        items.append(RawItem(partition, offsets[partition], m.value))
        offsets[partition] += 1
    return items


ITEMS = _stream()


def _outputs(cuts: list[int]) -> list[tuple]:
    """Everything the processor decides about each event, batch by batch along `cuts`."""
    processor = BatchProcessor(keyring=KeyRing.parse("t-1:" + "ab" * 32), dedup_table={}, watermark_table={},
                               sender_table={}, card_table={}, now=lambda: NOW)
    decided = []
    bounds = [0, *sorted(set(cuts)), len(ITEMS)]
    for start, end in zip(bounds, bounds[1:]):
        result = processor.process(ITEMS[start:end])
        decided += [("enriched", e.to_enriched_json()) for e in result.enriched]
        decided += [("duplicate", dumps(d)) for d in result.duplicates]
        decided += [("late", p.to_masked_json()) for p in result.late]
        decided += [("rejected", r.to_dlq_json(NOW)) for r in result.rejections]
    return sorted(decided)


ONE_AT_A_TIME = _outputs(list(range(1, len(ITEMS))))


def test_the_stream_has_every_kind_of_outcome_and_repeated_senders():
    kinds = {kind for kind, _ in ONE_AT_A_TIME}
    assert kinds == {"enriched", "duplicate", "late", "rejected"}
    scores = [orjson.loads(v) for kind, v in ONE_AT_A_TIME if kind == "enriched"]
    # signals that need the sender's and card's earlier payments: state carried across events
    flags = {f for s in scores for f in s["risk_flags"]}
    assert {"VELOCITY_SPIKE", "DEVICE_ANOMALY", "IMPOSSIBLE_TRAVEL", "CARD_TESTING"} <= flags
    senders = [s["sender_account_id"] for s in scores]
    assert len(set(senders)) < len(senders) / 4


def test_one_batch_decides_as_one_event_at_a_time():
    assert _outputs([]) == ONE_AT_A_TIME


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=len(ITEMS) - 1), max_size=30))
def test_any_cut_into_batches_decides_as_one_event_at_a_time(cuts):
    assert _outputs(cuts) == ONE_AT_A_TIME
