"""A heavy sender's stream, for tests/unit/test_bounded_state.py and tests/fault/test_heavy_sender.py:
one account's valid payments, all within 30 minutes of event time, made by the simulator's
own event builder (contract events, generated Luhn-valid test PANs)."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Iterator

import orjson

from payflow.simulator.generator import EventStream, Message, SimOptions
from payflow.stages.validation import ValidatedPayment, decode

START = datetime(2026, 11, 20, 9, 0, tzinfo=timezone.utc)


def heavy_sender_messages(count: int, start: datetime = START, span_seconds: float = 1800.0,
                          seed: int = 77) -> Iterator[Message]:
    """`count` valid payments of one sender, evenly spread over `span_seconds` of event time
    from `start`, in event-time order (Message.kind "valid": a manifest counts them)."""
    stream = EventStream(SimOptions(count=count, seed=seed, start_time=start, accounts=20, merchants=20))
    # the account with the most devices and cards (deterministic): every signal has material
    account = max(stream.pop.accounts, key=lambda a: (len(a.devices), len(a.cards), a.account_id))
    step = span_seconds / count
    for i in range(count):
        yield stream._valid(stream._event(account, start + timedelta(seconds=i * step)))


def test_the_heavy_sender_stream_is_valid_contract_events_of_one_sender_within_30_minutes():
    messages = list(heavy_sender_messages(3_000))
    now = START + timedelta(hours=1)
    decoded = [decode(m.value, now=now, max_bytes=65536, max_future=timedelta(minutes=15)) for m in messages]
    assert all(isinstance(d, ValidatedPayment) for d in decoded), next(d for d in decoded
                                                                        if not isinstance(d, ValidatedPayment))
    assert {m.key for m in messages} == {messages[0].key} and {m.kind for m in messages} == {"valid"}
    assert len({m.transaction_id for m in messages}) == len(messages)
    times = [orjson.loads(m.value)["event_time"] for m in messages]
    assert times == sorted(times) and times[0].startswith("2026-11-20T09:00") and times[-1] < "2026-11-20T09:30"
