"""The malformed kinds the simulator injects, and the DLQ reason each must produce."""
from __future__ import annotations

import random
from datetime import timedelta
from typing import Any, Callable

import orjson

from payflow.stages.validation import REQUIRED_STRINGS

# kind -> reason code the pipeline must put on it in the DLQ
EXPECTED_REASON: dict[str, str] = {
    "invalid_json": "invalid_json",
    "non_utf8": "invalid_utf8",
    "not_an_object": "not_an_object",
    "missing_field": "missing_field",
    "wrong_type": "wrong_type",
    "unknown_schema_version": "unknown_schema_version",
    "luhn_invalid_pan": "pan_luhn_failed",
    "wrong_pan_length": "invalid_pan_length",
    "invalid_cvv": "invalid_cvv",
    "invalid_expiry": "invalid_expiry",
    "negative_amount": "amount_not_positive",
    "zero_amount": "amount_not_positive",
    "nan_amount": "amount_not_finite",
    "over_scaled_amount": "amount_over_scale",
    "unknown_currency": "unknown_currency",
    "unparsable_event_time": "invalid_event_time",
    "far_future_event_time": "event_time_in_future",
    "oversized_payload": "oversized_payload",
    "empty_message": "empty_message",
}
KINDS = tuple(EXPECTED_REASON)
OVERSIZED_BYTES = 70_000


def corrupt(kind: str, event: dict[str, Any], rng: random.Random) -> bytes:
    """Turn a valid event (dict) into the bytes of a malformed message of this kind."""
    doc = dict(event)
    encode: Callable[[dict[str, Any]], bytes] = orjson.dumps
    if kind == "invalid_json":
        raw = orjson.dumps(doc)
        return raw[: rng.randint(10, len(raw) - 5)]
    if kind == "non_utf8":
        raw = orjson.dumps(doc)
        cut = rng.randint(5, len(raw) - 5)
        return raw[:cut] + b"\xff\xfe\xc3" + raw[cut:]
    if kind == "not_an_object":
        return orjson.dumps([doc["transaction_id"], doc["amount"], doc["currency"]])
    if kind == "missing_field":
        del doc[rng.choice([f for f in REQUIRED_STRINGS if f != "transaction_id"])]
    elif kind == "wrong_type":
        field = rng.choice(["amount", "credit_card", "event_time"])
        doc[field] = {"amount": 12.5, "credit_card": int(doc["credit_card"]), "event_time": 1764000000}[field]
    elif kind == "unknown_schema_version":
        doc["schema_version"] = rng.choice([0, 2, 99])
    elif kind == "luhn_invalid_pan":
        pan = doc["credit_card"]
        doc["credit_card"] = pan[:-1] + str((int(pan[-1]) + rng.randint(1, 9)) % 10)
    elif kind == "wrong_pan_length":
        doc["credit_card"] = doc["credit_card"][:12] if rng.random() < 0.5 else doc["credit_card"] + "0" * (20 - len(doc["credit_card"]))
    elif kind == "invalid_cvv":
        doc["cvv"] = rng.choice(["12", "12a", "98765", ""])
    elif kind == "invalid_expiry":
        doc["card_expiry"] = rng.choice(["13/29", "00/30", "2030-01", "1/2"])
    elif kind == "negative_amount":
        doc["amount"] = "-" + doc["amount"]
    elif kind == "zero_amount":
        doc["amount"] = "0" if "." not in doc["amount"] else "0." + "0" * len(doc["amount"].split(".")[1])
    elif kind == "nan_amount":
        doc["amount"] = rng.choice(["NaN", "nan", "Infinity"])
    elif kind == "over_scaled_amount":
        doc["amount"] = doc["amount"] + ("1" if "." in doc["amount"] else ".5") + "7"
    elif kind == "unknown_currency":
        doc["currency"] = rng.choice(["XYZ", "usd", "EURO", "BTC"])
    elif kind == "unparsable_event_time":
        doc["event_time"] = rng.choice(["yesterday at noon", "2026-13-45T25:61:00Z", "", "1764000000"])
    elif kind == "far_future_event_time":
        from datetime import datetime
        t = datetime.fromisoformat(doc["event_time"]) + timedelta(days=365 * 30)
        doc["event_time"] = t.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    elif kind == "oversized_payload":
        doc["notes"] = "x" * OVERSIZED_BYTES
    elif kind == "empty_message":
        return b""
    else:
        raise ValueError(f"unknown malformed kind {kind!r}")
    return encode(doc)
