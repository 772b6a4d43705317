"""The masked remains of a rejected message, for the DLQ.

A broken message may still carry card data that no parser recognised, so everything
card-shaped is masked: card, CVV and expiry fields by name, and any 12+ digit run anywhere.
"""
from __future__ import annotations

import re
from typing import Any

from payflow.cards import redact_card_like

MAX_REMAINS_CHARS = 2048
_CARD_KEYS = re.compile(r"card|pan|cc_?num|account_?number", re.I)
_CVV_KEYS = re.compile(r"cvv|cvc|csc|security_?code", re.I)
_EXPIRY_KEYS = re.compile(r"expir|exp_?date", re.I)
# in free text: "cvv": "123", cvv=1234 ... and expiry-like MM/YY or MM/YYYY
_CVV_IN_TEXT = re.compile(r"(?i)((?:cvv|cvc|csc)\W{0,4})\d{3,4}")
_EXPIRY_IN_TEXT = re.compile(r"(?<!\d)(0[1-9]|1[0-2])\s*/\s*(\d{4}|\d{2})(?!\d)")


def mask_text(text: str) -> str:
    text = redact_card_like(text)
    text = _CVV_IN_TEXT.sub(lambda m: m.group(1) + "XXX", text)
    return _EXPIRY_IN_TEXT.sub(lambda m: m.group(1) + "/XX", text)


def masked_remains(value: Any, depth: int = 0) -> Any:
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, str):
        return mask_text(value[:MAX_REMAINS_CHARS])
    if depth > 4:
        return "…"
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for i, (k, v) in enumerate(value.items()):
            if i >= 64:
                out["…"] = f"{len(value) - 64} more fields"
                break
            key = mask_text(str(k))[:128]
            if _CVV_KEYS.search(key):
                out[key] = "XXX"
            elif _EXPIRY_KEYS.search(key):
                out[key] = "MM/XX"
            elif _CARD_KEYS.search(key) and not isinstance(v, (dict, list)):
                out[key] = _mask_card_value(v)
            else:
                out[key] = masked_remains(v, depth + 1)
        return out
    if isinstance(value, list):
        return [masked_remains(v, depth + 1) for v in value[:32]]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return masked_remains(repr(value), depth) if abs(value) >= 10**11 else value
    return value


def _mask_card_value(value: Any) -> str:
    digits = "".join(ch for ch in str(value) if ch.isdigit())
    return "XXXX-XXXX-XXXX-" + digits[-4:] if len(digits) >= 4 else "XXXX"
