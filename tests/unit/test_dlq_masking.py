"""What a DLQ record (topic and dead_letter_events) keeps of a rejected message: top-level
fields masked by the card-number detector, card data masked by field name, and no personal
data (email, IP, device) that a GDPR erasure could not reach (issue 17)."""
from __future__ import annotations

import re
from datetime import datetime, timezone

import orjson
import pytest

from payflow.stages.cards import find_pans
from payflow.stages.redact import REMOVED, masked_remains
from payflow.models import Rejection
from payflow.stages.validation import decode
from payflow.warehouse.base import build_batch
from tests.unit.cards_fixtures import event

NOW = datetime(2026, 11, 20, 10, 30, tzinfo=timezone.utc)
PAN = "4111111111111111"
EMAIL, IP, DEVICE = "jane.roe@example.org", "81.2.69.160", "dev_janesphone"


def digits_only_view(text: str) -> str:
    return re.sub(r"[ .\-]", "", text)


def dlq_texts(result: Rejection) -> list[str]:
    """The DLQ topic record and the dead_letter_events row of a rejection."""
    rows = build_batch([], rejections=[result], now=NOW).rows("dead_letter_events")
    return [result.to_dlq_json(NOW).decode(), orjson.dumps(rows, default=str).decode()]


@pytest.mark.parametrize("txn", ["4111.1111.1111.1111", "txn-1.4111111111111111", "41-1111 1111.1111-11",
                                 "id 4111 1111-1111.1111 x"])
# a payment rejected for another reason (a valid one lands, its id tokenized: test_pan_detector)
@pytest.mark.parametrize("broken", [{"cvv": "12"}, {"schema_version": 7}, {"amount": "-1"}])
def test_a_pan_in_transaction_id_is_masked_in_the_top_level_field_and_the_table(txn, broken):
    result = decode(orjson.dumps(event(PAN, transaction_id=txn, **broken)), now=NOW)
    assert isinstance(result, Rejection)
    assert result.transaction_id is not None and result.transaction_id.endswith(("1111", "1111 x"))
    for text in dlq_texts(result):
        assert PAN not in digits_only_view(text) and not find_pans(text), text


def test_rejections_built_elsewhere_are_masked_too():
    """pipeline (internal_error), outputs (id_conflict) and masking (erased_subject) build
    Rejections themselves: the constructor masks."""
    r = Rejection("internal_error", f"failed on 4111 1111.1111-1111 ({PAN})", remains="",
                  transaction_id="pay.4111.1111.1111.1111")
    assert r.transaction_id == "pay.XXXXXXXXXXXX1111"
    for text in dlq_texts(r):
        assert PAN not in digits_only_view(text) and not find_pans(text), text
    assert Rejection("x", "d", "", transaction_id="txn_abc-123.456").transaction_id == "txn_abc-123.456"


@pytest.mark.parametrize("fields", [
    {"cid": "1234", "exp_month": "08", "exp_year": "2029", "pin": "4321"},
    {"CVV2": "987", "securityCode": "876", "card_cvc": "765", "csc": "654"},
    {"track1": "%B4111111111111111^ROE/JANE^29081010000000000000?", "track2": ";4111111111111111=2908101?",
     "trackdata": "4111111111111111=29081", "Track2Data": "4111111111111111=2908"},
    {"pan": "4111 1111 1111 1111", "cardNumber": "4111111111111111", "card_holder": "JANE ROE",
     "expiry_date": "2029-08", "expMonth": 8, "expYear": 2029, "pin_block": "0425A2FFFFFF"},
])
def test_fields_named_like_card_data_are_masked(fields):
    doc = event(PAN, cvv="abc")  # a bad cvv: rejected
    doc.update(fields)
    result = decode(orjson.dumps(doc), now=NOW)
    assert isinstance(result, Rejection) and result.reason == "invalid_cvv"
    remains = result.remains
    for name, value in fields.items():
        assert remains[name] in ("XXX", "MM/XX", "XXXX", "XXXX-XXXX-XXXX-1111"), (name, remains[name])
        dumped = orjson.dumps(remains[name]).decode()
        assert str(value) not in dumped or str(value) in ("XXX",), (name, dumped)
    for text in dlq_texts(result):
        assert PAN not in digits_only_view(text)
        assert "JANE" not in text and "2029" not in text and "4321" not in text and "1234" not in text


@pytest.mark.parametrize("extra", [{}, {"email": EMAIL, "emailAddress": EMAIL, "client_ip": IP, "deviceId": DEVICE}])
def test_personal_data_is_not_kept_in_the_dlq(extra):
    doc = event(PAN, user_email=EMAIL, ip_address=IP, device_id=DEVICE, amount="-5", **extra)
    result = decode(orjson.dumps(doc), now=NOW)
    assert isinstance(result, Rejection) and result.reason == "amount_not_positive"
    for key in ("user_email", "ip_address", "device_id", *extra):
        assert result.remains[key] == REMOVED
    # what helps find the message stays
    assert result.remains["transaction_id"] == doc["transaction_id"]
    assert result.remains["sender_account_id"] == "acct_sender" and result.remains["amount"] == "-5"
    for text in dlq_texts(result):
        assert EMAIL not in text and IP not in text and DEVICE not in text, text


@pytest.mark.parametrize("cut", [60, 200, 320, 380, 420, None])
def test_personal_data_is_not_kept_in_free_text_remains(cut):
    """A truncated or garbled message keeps its remains as text: the same data goes."""
    raw = orjson.dumps(event(PAN, user_email=EMAIL, ip_address=IP, device_id=DEVICE))
    raw = raw[:cut] if cut else b"garbage " + raw.replace(b'"', b"'") + f" from {IP}, mail {EMAIL}".encode()
    result = decode(raw, now=NOW)
    assert isinstance(result, Rejection) and result.reason == "invalid_json"
    for text in dlq_texts(result):
        assert EMAIL not in text and IP not in text and DEVICE not in text, text
        assert PAN not in digits_only_view(text)


def test_free_text_keeps_times_and_amounts():
    text = masked_remains('{"event_time":"2026-11-20T10:00:00.000Z","amount":"125.50","at 10:00:00","v1.2.3"')
    assert "2026-11-20T10:00:00.000Z" in text and "125.50" in text and "10:00:00" in text and "v1.2.3" in text


@pytest.mark.parametrize("name", ["shipping", "company", "zip", "expected_amount", "transaction_id", "merchant_id",
                                  "decided", "spin"])
def test_ordinary_field_names_are_kept(name):
    assert masked_remains({name: "abc"}) == {name: "abc"}


def test_a_float_holding_a_card_number_is_masked_in_the_remains():
    # found by test_fuzz: a float's digits joined by its dot hold a Luhn-valid Maestro window
    result = decode(orjson.dumps(event(PAN, schema_version=1.0625828633219088e-305)), now=NOW)
    assert isinstance(result, Rejection) and result.reason == "wrong_type"
    assert masked_remains({"v": 0.5}) == {"v": 0.5}
    for text in dlq_texts(result):
        assert not find_pans(text), text
