"""docs/payment-event.schema.json is the event contract the worker enforces: every valid event
the simulator makes validates against it, and every malformed kind gets its DLQ reason from
the real decode stage and fails the schema wherever a JSON Schema can express the rule."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import orjson
import pytest
from jsonschema import Draft202012Validator

from payflow.settings import ROOT
from payflow.simulator.generator import EventStream, SimOptions
from payflow.simulator.malformed import EXPECTED_REASON, KINDS
from payflow.stages.currencies import CURRENCIES
from payflow.stages.validation import REQUIRED_STRINGS, ValidatedPayment, decode

SCHEMA = json.loads((ROOT / "docs" / "payment-event.schema.json").read_text())
VALIDATOR = Draft202012Validator(SCHEMA)
START = datetime(2026, 11, 20, 8, 0, tzinfo=timezone.utc)
# what a JSON Schema cannot say: a checksum, a bound relative to the clock, a byte size
NOT_EXPRESSIBLE = {"luhn_invalid_pan", "far_future_event_time", "oversized_payload"}


def schema_errors(raw: bytes) -> list[str]:
    """Why the message is not a valid event by the schema; bytes that are not JSON fail too."""
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return ["not UTF-8 JSON"]
    return [e.message for e in VALIDATOR.iter_errors(doc)]


@pytest.fixture(scope="module")
def messages():
    options = SimOptions(count=4000, seed=7, start_time=START, accounts=500, merchants=50, malformed_ratio=0.1,
                         late_ratio=0.02, duplicate_ratio=0.05)
    return list(EventStream(options))


def test_the_schema_is_a_valid_draft_2020_12_schema():
    Draft202012Validator.check_schema(SCHEMA)
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_the_schema_agrees_with_the_code_on_fields_and_currencies():
    assert set(SCHEMA["required"]) == {"schema_version", *REQUIRED_STRINGS}
    assert set(SCHEMA["properties"]["currency"]["enum"]) == set(CURRENCIES)


def test_every_simulated_valid_event_validates(messages):
    valid = [m for m in messages if m.kind != "malformed"]
    assert len(valid) > 3000 and {m.kind for m in valid} >= {"valid", "duplicate", "late"}
    for m in valid:
        assert schema_errors(m.value) == [], m.transaction_id


def test_every_malformed_kind_gets_its_dlq_reason_and_fails_the_schema(messages):
    now = START + timedelta(days=2)  # after the whole stream: only the far-future kind is ahead
    seen: dict[str, int] = {}
    for m in messages:
        if m.kind != "malformed":
            continue
        seen[m.malformed_kind] = seen.get(m.malformed_kind, 0) + 1
        result = decode(m.value, now=now, max_bytes=65536, max_future=timedelta(seconds=900))
        assert not isinstance(result, ValidatedPayment), m.malformed_kind
        assert result.reason == EXPECTED_REASON[m.malformed_kind], (m.malformed_kind, result.detail)
        errors = schema_errors(m.value)
        if m.malformed_kind in NOT_EXPRESSIBLE:
            assert errors == [], (m.malformed_kind, errors)
        else:
            assert errors, f"{m.malformed_kind} passes the schema"
    assert set(seen) == set(KINDS), set(KINDS) - set(seen)


@pytest.mark.parametrize("currency, amount, ok", [
    ("USD", "12.50", True), ("USD", "12.505", False), ("JPY", "1250", True), ("JPY", "12.5", False),
    ("KWD", "1.125", True), ("KWD", "1.1255", False), ("USD", "0.00", False), ("USD", "0.01", True),
    ("USD", "1e3", False), ("USD", "12.", False),
])
def test_amount_scale_per_currency(messages, currency, amount, ok):
    doc = orjson.loads(next(m for m in messages if m.kind == "valid").value)
    doc.update(currency=currency, amount=amount)
    raw = orjson.dumps(doc)
    assert (schema_errors(raw) == []) is ok
    assert isinstance(decode(raw, now=START + timedelta(days=1)), ValidatedPayment) is ok
