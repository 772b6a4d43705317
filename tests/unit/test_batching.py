"""A stream's outputs do not depend on how it is cut into batches.

BatchProcessor.process runs each stage over the whole batch before the next (decode and mask,
then dedup, then fraud), so the order in which state is read and written differs from one
event at a time. Every payment must still be judged as if it came alone: the same duplicates,
late events, rejections and fraud scores, in the same order.
"""
from __future__ import annotations

import random
from datetime import datetime, timezone

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from payflow.keys import KeyRing
from payflow.models import dumps
from payflow.stages.batch import BatchProcessor, RawItem
from tests.fakes import dict_processor
from payflow.simulator.generator import EventStream, SimOptions
from payflow.simulator.population import make_pan
from payflow.stages.validation import decode
from tests.unit.cards_fixtures import event

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
    processor = dict_processor(keyring=KeyRing.parse("t-1:" + "ab" * 32), dedup_table={}, watermark_table={},
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
    assert {"VELOCITY_5M", "IMPOSSIBLE_TRAVEL", "CARD_TESTING"} <= flags
    senders = [s["sender_account_id"] for s in scores]
    assert len(set(senders)) < len(senders) / 4


def test_one_batch_decides_as_one_event_at_a_time():
    assert _outputs([]) == ONE_AT_A_TIME


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=len(ITEMS) - 1), max_size=30))
def test_any_cut_into_batches_decides_as_one_event_at_a_time(cuts):
    assert _outputs(cuts) == ONE_AT_A_TIME


def test_a_message_the_stages_raise_on_goes_to_the_dlq_and_the_batch_goes_on(caplog):
    """decode and mask turn any bad input into a Rejection; should one raise all the same (a
    payflow bug: a compiled stage's type check, say), that message goes to the DLQ and the
    rest of its batch and partition is processed. Neither the DLQ record nor the log quote
    the exception's message, which may hold the card number."""
    pan, _ = make_pan(random.Random(5), "visa")
    poison = orjson.dumps(event(pan, transaction_id="txn_poison_0001"))

    def decode_with_a_bug(raw, **kwargs):
        if raw == poison:
            raise ValueError(f"cannot handle card {pan}")
        return decode(raw, **kwargs)

    processor = dict_processor(keyring=KeyRing.parse("t-1:" + "ab" * 32), dedup_table={}, watermark_table={},
                               sender_table={}, card_table={}, now=lambda: NOW, decoder=decode_with_a_bug)
    batch = ITEMS[:50] + [RawItem(0, 10_000, poison)] + ITEMS[50:100]
    result = processor.process(batch)

    assert [r.source_offset for r in result.rejections if r.reason == "internal_error"] == [10_000]
    poisoned = next(r for r in result.rejections if r.reason == "internal_error")
    assert "ValueError" in poisoned.detail
    dlq_record = poisoned.to_dlq_json(NOW).decode()
    assert "txn_poison_0001" in dlq_record  # the masked remains say which message it was
    assert pan not in dlq_record and pan not in caplog.text and "ValueError" in caplog.text
    alone = dict_processor(keyring=KeyRing.parse("t-1:" + "ab" * 32), dedup_table={}, watermark_table={},
                           sender_table={}, card_table={}, now=lambda: NOW).process(ITEMS[:100])
    assert [e.to_enriched_json() for e in result.enriched] == [e.to_enriched_json() for e in alone.enriched]
