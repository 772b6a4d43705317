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


# -- issue 26, finding 9: one truth for the decoder and the schema --------------------------
def _digits_in(zero: str) -> str:
    return "".join(chr(ord(zero) + i) for i in range(10))


# ASCII "12.50" written in the digits of other scripts: JSON Schema's [0-9] refuses them all
OTHER_DIGITS = {"Arabic-Indic": "\u0660", "Extended Arabic-Indic": "\u06f0", "fullwidth": "\uff10",
                "Thai": "\u0e50", "Bengali": "\u09e6", "Devanagari": "\u0966", "mathematical bold": "\U0001d7ce"}
CONTRACT_CASES = [
    # (field, value, valid by the contract)
    *[("amount", "12.50".translate(str.maketrans("0123456789", _digits_in(z))), False) for z in OTHER_DIGITS.values()],
    ("amount", "1\u0662.50", False), ("amount", "12.50", True), ("amount", "0012.50", True),
    ("card_expiry", "0\u0668/29", False), ("cvv", "\uff11\uff12\uff13", False),
    # ISO 8601 forms that RFC 3339 does not have
    ("event_time", "2026-W47-5T10:00:00Z", False), ("event_time", "20261120T100000Z", False),
    ("event_time", "2026-11-20T10:00:00+0000", False), ("event_time", "2026-11-20T10:00:00+00:00:30", False),
    ("event_time", "2026-11-20T10:00:00", False), ("event_time", "2026-11-20T10:00Z", False),
    ("event_time", "2026-324T10:00:00Z", False), ("event_time", "2026-11-20T10:00:00.Z", False),
    ("event_time", "2026-11-20T10:00:00.1234567890Z", False), ("event_time", "2026-11-20T24:00:00Z", False),
    ("event_time", "2026-11-20T10:00:00,5Z", False), ("event_time", "\u0662026-11-20T10:00:00Z", False),
    # RFC 3339: T and Z in either case, a space (its note), any offset, 1 to 9 fraction digits
    ("event_time", "2026-11-20t10:00:00z", True), ("event_time", "2026-11-20T10:00:00z", True),
    ("event_time", "2026-11-20 10:00:00Z", True), ("event_time", "2026-11-20T11:30:00+01:30", True),
    ("event_time", "2026-11-20T10:00:00-00:00", True), ("event_time", "2026-11-20T10:00:00.123456789Z", True),
    ("event_time", "2026-11-20T10:00:00.1Z", True),
    # lengths
    ("ip_address", "1" * 129, False), ("geo_region", "r" * 128, True), ("device_id", " ", False),
    ("merchant_id", "m" * 129, False), ("user_email", "a" * 245 + "@ex.org", True),
    ("user_email", "a" * 250 + "@ex.org", False),
]


@pytest.mark.parametrize("field, value, valid", CONTRACT_CASES)
def test_the_decoder_and_the_schema_agree(messages, field, value, valid):
    doc = orjson.loads(next(m for m in messages if m.kind == "valid").value)
    doc[field] = value
    raw = orjson.dumps(doc)
    result = decode(raw, now=START + timedelta(days=1))
    assert (schema_errors(raw) == []) is valid, schema_errors(raw)
    assert isinstance(result, ValidatedPayment) is valid, getattr(result, "detail", result)


def test_the_schema_holds_the_decoders_time_pattern():
    from payflow.stages.validation import MAX_EMAIL_LENGTH, MAX_ID_LENGTH, RFC3339

    props = SCHEMA["properties"]
    assert props["event_time"]["pattern"] == "^" + RFC3339.pattern + "$"
    assert props["user_email"]["maxLength"] == MAX_EMAIL_LENGTH
    for f in ("transaction_id", "sender_account_id", "receiver_account_id", "ip_address", "geo_region", "device_id",
              "merchant_id"):
        assert props[f]["maxLength"] == MAX_ID_LENGTH, f


def test_nine_fraction_digits_keep_the_microseconds():
    from tests.unit.cards_fixtures import event

    doc = event(event_time="2026-11-20t10:00:00.123456789z")
    result = decode(orjson.dumps(doc), now=START + timedelta(days=1))
    assert isinstance(result, ValidatedPayment)
    assert result.event_time == datetime(2026, 11, 20, 10, 0, 0, 123456, tzinfo=timezone.utc)
