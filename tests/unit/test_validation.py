"""Decoding and validation: every malformed kind the simulator makes gets its DLQ reason,
nothing raises, and no rejection carries card data."""
from __future__ import annotations

import random
from datetime import datetime, timezone
from decimal import Decimal

import orjson
import pytest

from payflow.stages.cards import find_pans
from payflow.models import Rejection
from payflow.simulator import malformed
from payflow.stages.validation import REASONS, ValidatedPayment, decode
from tests.unit.cards_fixtures import event

NOW = datetime(2026, 11, 20, 10, 5, tzinfo=timezone.utc)
PAN = "4111111111111111"


@pytest.mark.parametrize("kind", malformed.KINDS)
def test_each_malformed_kind_gets_its_reason_and_masked_remains(kind):
    for seed in range(20):
        raw = malformed.corrupt(kind, event(PAN), random.Random(seed))
        result = decode(raw, now=NOW)
        assert isinstance(result, Rejection), kind
        assert result.reason == malformed.EXPECTED_REASON[kind]
        assert result.reason in REASONS and result.detail
        dumped = result.to_dlq_json(NOW).decode()
        assert PAN not in dumped and not find_pans(dumped)
        assert '"cvv":"123"' not in dumped.replace(" ", "")
        assert "08/29" not in dumped


def test_at_least_fifteen_malformed_kinds():
    assert len(malformed.KINDS) >= 15


def test_valid_event_decodes_with_decimal_and_utc():
    result = decode(orjson.dumps(event(PAN, event_time="2026-11-20T11:00:00+01:00")), now=NOW)
    assert isinstance(result, ValidatedPayment)
    assert str(result.amount) == "125.50" and result.event_time.tzinfo == timezone.utc
    assert result.event_time.hour == 10
    assert PAN not in repr(result)


@pytest.mark.parametrize("currency,amount,ok", [
    ("JPY", "1500", True), ("JPY", "1500.5", False), ("KWD", "12.345", True), ("KWD", "12.3456", False),
    ("USD", "0.01", True), ("USD", "1e3", False), ("USD", "12,50", False),
])
def test_amount_scale_follows_iso_4217(currency, amount, ok):
    result = decode(orjson.dumps(event(PAN, currency=currency, amount=amount)), now=NOW)
    assert isinstance(result, ValidatedPayment) == ok


@pytest.mark.parametrize("currency,amount,reason", [
    ("USD", "1.500", "amount_over_scale"), ("JPY", "5.0", "amount_over_scale"), ("USD", "0.00", "amount_not_positive"),
    ("USD", "-3.10", "amount_not_positive"), ("USD", "NaN", "amount_not_finite"), ("USD", "-inf", "amount_not_finite"),
    ("USD", "1" + "0" * 20, "invalid_amount"), ("USD", "12.", "invalid_amount"), ("XXX", "1.00", "unknown_currency"),
])
def test_each_bad_amount_gets_its_reason(currency, amount, reason):
    result = decode(orjson.dumps(event(PAN, currency=currency, amount=amount)), now=NOW)
    assert isinstance(result, Rejection) and result.reason == reason


def test_amounts_keep_their_exact_decimal_value():
    for text in ("0.01", "99999999999999999999"[:-1] + ".99"):
        result = decode(orjson.dumps(event(PAN, amount=text)), now=NOW)
        assert isinstance(result, ValidatedPayment) and result.amount == Decimal(text)


def test_naive_event_time_is_rejected():
    result = decode(orjson.dumps(event(PAN, event_time="2026-11-20T10:00:00")), now=NOW)
    assert isinstance(result, Rejection) and result.reason == "invalid_event_time"


def test_garbage_with_card_shaped_digits_is_masked_in_the_dlq():
    raw = f"not json but card {PAN} and 4111 1111 1111 1111 cvv=123 exp 08/29".encode()
    result = decode(raw, now=NOW)
    assert result.reason == "invalid_json"
    text = orjson.dumps(result.remains).decode()
    assert "1111" in text and not find_pans(text) and "123" not in text and "08/29" not in text


@pytest.mark.parametrize("field", ["transaction_id", "device_id", "user_email", "merchant_id"])
def test_a_card_number_outside_the_card_field_is_tokenized_and_never_written(field):
    # found by the hypothesis fuzz test: a PAN in transaction_id used to land in the warehouse;
    # issue 26: the payment lands with the run replaced by a keyed token, flagged
    from payflow.keys import HmacKey
    from payflow.stages.mask import CARD_LIKE_FLAG, mask

    dashed = "-".join(PAN[i:i + 4] for i in range(0, len(PAN), 4))
    result = decode(orjson.dumps(event(PAN, **{field: f"x {dashed}"})), now=NOW)
    assert not isinstance(result, Rejection) and result.card_like == (field,)
    masked = mask(result, HmacKey("k", b"s" * 32), NOW)
    assert masked.masking_reason.endswith(CARD_LIKE_FLAG + field)
    dumped = masked.to_masked_json().decode() + str(masked.user_email)
    assert PAN not in dumped and dashed not in dumped and not find_pans(dumped)
    assert getattr(masked, field).startswith("x tok_")
