"""The masked remains of a rejected message, for the DLQ (topic and dead_letter_events).

A broken message may still carry card data that no parser recognised, so everything
card-shaped is masked: card data by field name (PAN, CVV/CVC/CID/CSC, PIN, expiry, track
data) and any 12+ digit run anywhere (cards.redact_card_like, whose runs are those of the
card-number detector).

Personal data that is not card data (email, IP address, device id) is not kept at all: the
DLQ topic and table are outside GDPR erasure (`payflow gdpr erase` finds a subject's rows by
pii_hash, and a rejected message has none), so whatever lands there could never be erased.
Fields named so are replaced by REMOVED, and in free text (a message that is not a JSON
object) emails, IP addresses and those fields' quoted values are replaced too.
"""
from __future__ import annotations

import re
from typing import Any

from payflow.stages.cards import SEPARATOR_SET, may_hold_pan, redact_card_like

MAX_REMAINS_CHARS = 2048
MAX_KEY_CHARS = 128
# the text a DLQ record keeps of one message, all strings and keys together
MAX_REMAINS_TOTAL_CHARS = 16384
REMOVED = "<removed>"

# a field name's words: split at non-alphanumerics, at camelCase humps and between letters
# and digits ("cardNumber" -> card number, "cvv2" -> cvv 2, "exp_month" -> exp month)
_WORDS = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+")
# sensitive authentication data: nothing of it is kept
_SECRET_WORDS = frozenset({
    "cvv", "cvc", "cid", "csc", "cvn", "cav", "cvd", "pin", "pinblock", "track", "trackdata", "track1",
    "track2", "magstripe", "securitycode", "cardverification",
})
_SECRET_PHRASES = ("security code", "verification code", "verification value", "pin block", "track data")
_EXPIRY_WORDS = frozenset({"exp", "expiry", "expiration", "expires", "expire", "expdate", "expmonth", "expyear",
                           "expmm", "expyy", "expyr", "expmo"})
_CARD_WORDS = frozenset({"card", "cards", "pan", "cc", "ccnum", "ccnumber", "cardnumber", "cardholder", "creditcard"})
_CARD_PHRASES = ("account number", "primary account")
# personal data, not card data: removed (see the module docstring)
_PERSONAL_WORDS = frozenset({"email", "mail", "ip", "ipv4", "ipv6", "ipaddress", "ipaddr", "device", "deviceid"})
_PERSONAL_PHRASES = ("e mail", "remote addr", "client addr")

# in free text: "cvv": "123", cvv=1234 ... and expiry-like MM/YY or MM/YYYY
_CVV_IN_TEXT = re.compile(r"(?i)((?:cvv|cvc|csc|cid)\W{0,4})\d{3,4}")
_EXPIRY_IN_TEXT = re.compile(r"(?<!\d)(0[1-9]|1[0-2])\s*/\s*(\d{4}|\d{2})(?!\d)")
# in free text: personal data
# the local part starts where a word does (after a delimiter, or at the start): otherwise the
# regex would try every position of a long word, each time to its end (quadratic)
_EMAIL_IN_TEXT = re.compile(r"(?<![^\s\"'<>(),;:@\\])[^\s\"'<>(),;:@\\]+@[^\s\"'<>(),;:@\\]+\.[^\s\"'<>(),;:@\\]+")
_IPV4_IN_TEXT = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.]?\d)")
_IPV6_IN_TEXT = re.compile(r"(?i)(?<![\w:])(?:[0-9a-f]{0,4}:){2,7}[0-9a-f]{0,4}(?![\w:])")
_PERSONAL_VALUE_IN_TEXT = re.compile(
    r"""(?i)((?<![A-Za-z0-9_])["']?(?:user_?email|e_?mail|ip_?address|ip|client_?ip|device_?id|device)["']?\s*[:=]\s*)"""
    r"""("(?:[^"\\]|\\.)*"?|'[^']*'?|[^\s,;}&]+)""")


def key_kind(key: str) -> str | None:
    """What a field named `key` holds, by its name: "secret" (CVV, PIN, track data),
    "expiry", "card" (a card number), "personal" (email, IP, device) or None."""
    words = [w.lower() for w in _WORDS.findall(key)]
    if not words:
        return None
    joined = "".join(words)
    phrase = " ".join(words)
    if any(w in _SECRET_WORDS for w in words) or joined in _SECRET_WORDS \
            or any(p in phrase for p in _SECRET_PHRASES):
        return "secret"
    if any(w in _EXPIRY_WORDS or w.startswith("expir") for w in words) \
            or joined.startswith(("expdate", "expmonth", "expyear", "expir")):
        return "expiry"
    if any(w in _CARD_WORDS or w.startswith("card") for w in words) or joined.startswith("card") \
            or any(p in phrase for p in _CARD_PHRASES):
        return "card"
    if any(w in _PERSONAL_WORDS for w in words) or joined in ("useremail", "emailaddress") \
            or any(p in phrase for p in _PERSONAL_PHRASES):
        return "personal"
    return None


def mask_text(text: str) -> str:
    """Card data masked in free text: 12+ digit runs, CVV-like and expiry-like values."""
    text = redact_card_like(text)
    text = _CVV_IN_TEXT.sub(lambda m: m.group(1) + "XXX", text)
    return _EXPIRY_IN_TEXT.sub(lambda m: m.group(1) + "/XX", text)


def remove_personal_text(text: str) -> str:
    """Emails, IP addresses and the values of email/IP/device fields removed from free text."""
    text = _PERSONAL_VALUE_IN_TEXT.sub(
        lambda m: m.group(1) + (f'"{REMOVED}"' if m.group(2).startswith('"') else REMOVED), text)
    text = _EMAIL_IN_TEXT.sub(REMOVED, text)
    text = _IPV4_IN_TEXT.sub(REMOVED, text)
    # an IPv6 address has "::" or seven colons; a time of day ("10:00:00") has neither
    return _IPV6_IN_TEXT.sub(lambda m: REMOVED if "::" in m.group() or m.group().count(":") == 7 else m.group(),
                             text)


def _without_cut_run(text: str) -> str:
    """text that was cut, without the digit run (digits and separators) at its end, whatever
    its length: a card number cut short is neither Luhn-valid nor in a card layout any more,
    so nothing would mask it, and it still holds most of its digits."""
    end = len(text)
    while end > 0 and (text[end - 1].isdecimal() or text[end - 1] in SEPARATOR_SET):
        end -= 1
    return text[:end]


def _mask_remains_text(text: str, limit: int) -> str:
    """text cut to `limit` characters, card data and personal data masked. The cut comes
    first, so the cost is bounded by the limit whatever the text's length."""
    if len(text) > limit:
        text = _without_cut_run(text[:limit])
    return remove_personal_text(mask_text(text))


def masked_remains(value: Any, max_chars: int = MAX_REMAINS_TOTAL_CHARS) -> Any:
    """What the DLQ keeps of a rejected message (decoded JSON, text or bytes).

    Bounded work whatever the message: at most `max_chars` characters of text are masked and
    kept (each string at most MAX_REMAINS_CHARS, each key MAX_KEY_CHARS), 64 fields an
    object, 32 items a list, 5 levels; what is past a bound is cut ("…"), and a digit run
    a cut goes through is dropped."""
    return _remains(value, 0, [max_chars])


def _text(value: str, limit: int, budget: list[int]) -> str:
    limit = min(limit, budget[0])
    if limit <= 0:
        return "…"
    budget[0] -= min(len(value), limit)
    return _mask_remains_text(value, limit)


def _remains(value: Any, depth: int, budget: list[int]) -> Any:
    if isinstance(value, (bytes, bytearray)):
        cut = len(value) > 4 * MAX_REMAINS_CHARS
        value = bytes(value[:4 * MAX_REMAINS_CHARS]).decode("utf-8", errors="replace")
        if cut:
            value = _without_cut_run(value)
    if isinstance(value, str):
        return _text(value, MAX_REMAINS_CHARS, budget)
    if depth > 4 or budget[0] <= 0:
        return "…"
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for i, (k, v) in enumerate(value.items()):
            if i >= 64 or budget[0] <= 0:
                out["…"] = f"{len(value) - i} more fields"
                break
            name = str(k)[:4 * MAX_KEY_CHARS]
            key = _text(name, MAX_KEY_CHARS, budget)
            kind = key_kind(name)
            if kind == "secret":
                out[key] = "XXX"
            elif kind == "expiry":
                out[key] = "MM/XX"
            elif kind == "card" and not isinstance(v, (dict, list)):
                out[key] = _mask_card_value(v)
            elif kind == "personal":
                out[key] = REMOVED
            else:
                out[key] = _remains(v, depth + 1, budget)
        return out
    if isinstance(value, list):
        return [_remains(v, depth + 1, budget) for v in value[:32]]
    if isinstance(value, float):
        # a float's digits can hold a card number too
        text = repr(value)
        return mask_text(text) if may_hold_pan(text) else value
    if isinstance(value, int) and not isinstance(value, bool):
        return _remains(repr(value), depth, budget) if abs(value) >= 10**11 else value
    return value


def _mask_card_value(value: Any) -> str:
    digits = "".join(ch for ch in str(value) if ch.isdigit())
    return "XXXX-XXXX-XXXX-" + digits[-4:] if len(digits) >= 4 else "XXXX"
