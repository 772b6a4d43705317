"""Decode and validate one raw message of the event contract (docs/event-contract.md).

Pure: bytes in, a ValidatedPayment or a Rejection out; never raises on bad input.
A ValidatedPayment still holds the raw card fields: mask.mask() must be the next call,
and it never leaves the mask step's memory. Rejection details name fields, never values.
"""
from __future__ import annotations

import operator
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import orjson

from payflow.stages import currencies
from payflow.stages.cards import find_pans, luhn_valid, may_hold_pan
from payflow.stages.redact import masked_remains
from payflow.models import Rejection

SCHEMA_VERSION = 1

REQUIRED_STRINGS = (
    "transaction_id", "event_time", "sender_account_id", "receiver_account_id", "amount",
    "currency", "credit_card", "cvv", "card_expiry", "ip_address", "geo_region", "device_id",
    "merchant_id",
)

# the reason for a message the stages raised on (a payflow bug, not bad input): see pipeline.py
UNDECODABLE = "internal_error"
# Every reason code a Rejection can carry (the DLQ's vocabulary; metrics label by it).
REASONS = (
    "empty_message", "oversized_payload", "invalid_utf8", "invalid_json", "not_an_object",
    "missing_field", "wrong_type", "unknown_schema_version", "invalid_field",
    "invalid_pan_length", "pan_luhn_failed", "invalid_cvv", "invalid_expiry",
    "invalid_amount", "amount_not_positive", "amount_not_finite", "amount_over_scale",
    "unknown_currency", "invalid_event_time", "event_time_in_future", "card_data_in_field",
    UNDECODABLE, "erased_subject",
)
# Card data in a field where none belongs (docs/compliance.md, "Card-like digits outside
# credit_card"). In the text fields that land as they are, ids above all, a card-like digit
# run is replaced by a keyed token at masking and the payment lands flagged: an identifier
# (a numeric id, an order number, a GTIN) can hold a Luhn-valid window by chance, and its
# payment must not be lost. The amount lands as a number: a card number there is refused.
# event_time and currency are parsed or enumerated, their text never lands.
TOKENIZED_FIELDS = ("transaction_id", "sender_account_id", "receiver_account_id", "merchant_id", "device_id",
                    "ip_address", "geo_region", "user_email")
_REFUSED_FIELDS = ("amount",)
# the id-like fields: 1 to MAX_ID_LENGTH characters, not all white space
_ID_FIELDS = ("transaction_id", "sender_account_id", "receiver_account_id", "ip_address", "geo_region", "device_id",
              "merchant_id")

_EXPIRY = re.compile(r"(0[1-9]|1[0-2])/([0-9]{2})")
# ASCII digits only, as the JSON Schema says (\d would take Arabic-Indic or fullwidth digits)
_AMOUNT = re.compile(r"-?[0-9]+(\.[0-9]+)?")
# RFC 3339 date-time (section 5.6; "T" and "Z" in either case, or a space as its note allows),
# with up to nine fraction digits (nanoseconds; datetime keeps six): docs/payment-event.schema.json
# has the same pattern, and tests/unit/test_event_schema.py drives both with the same cases
RFC3339 = re.compile(r"[0-9]{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])[Tt ](?:[01][0-9]|2[0-3]):[0-5][0-9]"
                     r":[0-5][0-9](?:\.[0-9]{1,9})?(?:[Zz]|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])")
_AMOUNT_LIMIT = Decimal(10) ** 20
# no payment is older than the Unix epoch; the stages count time in µs since it (watermarks,
# dedup), and an event time near datetime.min or .max would overflow their arithmetic
EARLIEST_EVENT_TIME = datetime(1970, 1, 1, tzinfo=timezone.utc)
_EARLIEST_EVENT_TIME_TEXT = "1970-01-01T00:00:00Z"
MAX_ID_LENGTH = 128
# RFC 5321's limit on an address (a path of 256 less its angle brackets)
MAX_EMAIL_LENGTH = 254
_NOT_FINITE = frozenset({"nan", "-nan", "+nan", "inf", "-inf", "+inf", "infinity", "-infinity", "+infinity"})
_REQUIRED = operator.itemgetter(*REQUIRED_STRINGS)
_CHECKED_FIELDS = TOKENIZED_FIELDS + _REFUSED_FIELDS
CHECKED_TEXT_FIELDS = operator.itemgetter(*(f for f in REQUIRED_STRINGS if f in _CHECKED_FIELDS))


@dataclass(slots=True)
class ValidatedPayment:
    transaction_id: str
    event_time: datetime
    sender_account_id: str
    receiver_account_id: str
    amount: Decimal
    currency: str
    ip_address: str
    geo_region: str
    device_id: str
    merchant_id: str
    user_email: str | None
    pan: str = field(repr=False)
    cvv: str = field(repr=False)
    expiry: str = field(repr=False)
    # TOKENIZED_FIELDS holding a card-like digit run: mask() replaces those runs by keyed tokens
    card_like: tuple[str, ...] = ()


class _Reject(Exception):
    def __init__(self, reason: str, detail: str):
        self.reason = reason
        self.detail = detail


def decode(raw: bytes | None, *, now: datetime, max_bytes: int = 65536,
           max_future: timedelta = timedelta(minutes=15)) -> ValidatedPayment | Rejection:
    if not raw:
        return Rejection("empty_message", "the message has no bytes", remains="")
    if len(raw) > max_bytes:
        return Rejection("oversized_payload", f"the message has {len(raw)} bytes; the limit is {max_bytes}",
                         remains=masked_remains(raw, max_chars=512))
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Rejection("invalid_utf8", f"the message is not UTF-8 (bad byte at position {exc.start})",
                         remains=masked_remains(raw))
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError:
        return Rejection("invalid_json", "the message is not valid JSON", remains=masked_remains(text))
    if not isinstance(doc, dict):
        return Rejection("not_an_object", f"the message is a JSON {type(doc).__name__}, not an object",
                         remains=masked_remains(doc))
    try:
        return _validate(doc, now, max_future)
    except _Reject as rej:
        txn = doc.get("transaction_id")
        # Rejection masks a card number in it (the DLQ keeps the rest of the id)
        keep_txn = isinstance(txn, str) and len(txn) <= MAX_ID_LENGTH
        return Rejection(rej.reason, rej.detail, remains=masked_remains(doc), transaction_id=txn if keep_txn else None)


def _validate(doc: dict[str, Any], now: datetime, max_future: timedelta) -> ValidatedPayment:
    version = doc.get("schema_version")
    if version is None:
        raise _Reject("missing_field", "schema_version is missing")
    if type(version) is not int:
        raise _Reject("wrong_type", "schema_version must be an integer")
    if version != SCHEMA_VERSION:
        raise _Reject("unknown_schema_version", f"schema_version {version} is not supported (expected {SCHEMA_VERSION})")
    try:
        values = _REQUIRED(doc)
    except KeyError:
        values = None
    email = doc.get("user_email")
    # the usual case in one C-level check; bad input takes the slow path for its reason
    if values is None or set(map(type, values)) != {str} or (email is not None and type(email) is not str):
        _reject_fields(doc)
    for f in _ID_FIELDS:
        if len(doc[f]) > MAX_ID_LENGTH or not doc[f].strip():
            raise _Reject("invalid_field", f"{f} must be 1 to {MAX_ID_LENGTH} characters")
    if email is not None and len(email) > MAX_EMAIL_LENGTH:
        raise _Reject("invalid_field", f"user_email must be at most {MAX_EMAIL_LENGTH} characters")

    # one pre-check over all fields (NUL-separated, so no digit run spans two fields);
    # the per-field scan runs only when something card-shaped is there
    texts = CHECKED_TEXT_FIELDS(doc)
    card_like: tuple[str, ...] = ()
    if may_hold_pan("\x00".join((*texts, email) if email is not None else texts)):
        refused = [f for f in _REFUSED_FIELDS if find_pans(doc[f])]
        if refused:
            raise _Reject("card_data_in_field", "a card number where none belongs: " + ", ".join(refused))
        card_like = tuple(f for f in TOKENIZED_FIELDS if isinstance(doc.get(f), str) and find_pans(doc[f]))

    pan = doc["credit_card"].replace(" ", "").replace("-", "")
    if not pan.isdigit() or not pan.isascii():
        raise _Reject("invalid_pan_length", "credit_card must be 13 to 19 digits")
    if not 13 <= len(pan) <= 19:
        raise _Reject("invalid_pan_length", f"credit_card has {len(pan)} digits; a PAN has 13 to 19")
    if not luhn_valid(pan):
        raise _Reject("pan_luhn_failed", "credit_card fails the Luhn check")
    cvv = doc["cvv"]
    if not (cvv.isascii() and cvv.isdigit() and len(cvv) in (3, 4)):
        raise _Reject("invalid_cvv", "cvv must be 3 or 4 digits")
    expiry = doc["card_expiry"]
    if not _EXPIRY.fullmatch(expiry):
        raise _Reject("invalid_expiry", "card_expiry must be MM/YY")

    amount = parse_amount(doc["amount"], doc["currency"])
    event_time = parse_event_time(doc["event_time"], now, max_future)
    return ValidatedPayment(
        transaction_id=doc["transaction_id"], event_time=event_time,
        sender_account_id=doc["sender_account_id"], receiver_account_id=doc["receiver_account_id"],
        amount=amount, currency=doc["currency"], ip_address=doc["ip_address"],
        geo_region=doc["geo_region"], device_id=doc["device_id"], merchant_id=doc["merchant_id"],
        user_email=email, pan=pan, cvv=cvv, expiry=expiry, card_like=card_like,
    )


def _reject_fields(doc: dict[str, Any]) -> None:
    """The precise reason a document's fields are missing or of the wrong type."""
    missing = [f for f in REQUIRED_STRINGS if doc.get(f) is None]
    if missing:
        raise _Reject("missing_field", "missing field(s): " + ", ".join(missing))
    wrong = [f for f in REQUIRED_STRINGS if not isinstance(doc[f], str)]
    email = doc.get("user_email")
    if email is not None and not isinstance(email, str):
        wrong.append("user_email")
    raise _Reject("wrong_type", "must be strings: " + ", ".join(wrong))


def parse_amount(text: str, currency: str) -> Decimal:
    scale = currencies.minor_units(currency)
    if scale is None:
        raise _Reject("unknown_currency", "currency is not a supported ISO 4217 code")
    plain = _AMOUNT.fullmatch(text)
    if plain is None:
        if text.strip().lower() in _NOT_FINITE:
            raise _Reject("amount_not_finite", "amount must be a finite decimal")
        raise _Reject("invalid_amount", "amount must be a plain decimal string such as 12.50")
    # a plain decimal (the regex) is always finite and parses; its places are what follows the dot
    amount = Decimal(text)
    if amount <= 0:
        raise _Reject("amount_not_positive", "amount must be greater than zero")
    fraction = plain.group(1)
    if fraction is not None and len(fraction) - 1 > scale:
        raise _Reject("amount_over_scale", f"amount has more than {scale} decimal places for {currency}")
    if amount >= _AMOUNT_LIMIT:
        raise _Reject("invalid_amount", "amount is too large for NUMERIC(38, 9)")
    return amount


def parse_event_time(text: str, now: datetime, max_future: timedelta) -> datetime:
    if RFC3339.fullmatch(text) is None:
        raise _Reject("invalid_event_time", "event_time must be RFC 3339 with a UTC offset")
    if "t" in text or "z" in text:
        text = text.upper()
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:  # a day the month does not have (02-30)
        raise _Reject("invalid_event_time", "event_time must be RFC 3339 with a UTC offset") from None
    try:
        # year 1 with a positive offset, or 9999 with a negative one, is outside datetime's range in UTC
        parsed = parsed.astimezone(timezone.utc)
    except (OverflowError, ValueError):
        raise _Reject("invalid_event_time", f"event_time is out of range ({_EARLIEST_EVENT_TIME_TEXT} to now)") from None
    if parsed < EARLIEST_EVENT_TIME:
        raise _Reject("invalid_event_time", f"event_time is before {_EARLIEST_EVENT_TIME_TEXT}")
    if parsed - now > max_future:
        raise _Reject("event_time_in_future", "event_time is further in the future than the allowed clock skew")
    return parsed
