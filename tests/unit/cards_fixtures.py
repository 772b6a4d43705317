"""Generated, Luhn-valid test PANs for every brand and length the simulator makes."""
from __future__ import annotations

import random

from payflow.stages.cards import BRANDS, luhn_check_digit
from payflow.simulator.population import make_pan


def pans_by_brand(seed: int = 1) -> dict[str, tuple[str, str]]:
    rng = random.Random(seed)
    return {brand: make_pan(rng, brand) for brand in BRANDS}


def event(pan: str = "4111111111111111", cvv: str = "123", **overrides) -> dict:
    doc = {
        "schema_version": 1, "transaction_id": "txn_abcdefghijklmnopqrst", "event_time": "2026-11-20T10:00:00.000Z",
        "sender_account_id": "acct_sender", "receiver_account_id": "mrch_receiver", "amount": "125.50",
        "currency": "USD", "credit_card": pan, "cvv": cvv, "card_expiry": "08/29", "ip_address": "3.1.2.3",
        "geo_region": "us-east", "device_id": "dev_one", "merchant_id": "mrch_receiver",
        "user_email": "someone@example.com",
    }
    doc.update(overrides)
    return doc


# Issuers and PAN lengths the card-number detector must know, written out here rather than
# taken from payflow.stages.cards so a range dropped there fails the tests: brand -> (prefixes or
# (first, last) 4-digit ranges, lengths)
ISSUERS: dict[str, tuple[tuple[str | tuple[int, int], ...], tuple[int, ...]]] = {
    "visa": (("4",), tuple(range(13, 20))),
    "mastercard": (("51", "52", "53", "54", "55", (2221, 2720)), (16,)),
    "amex": (("34", "37"), (15,)),
    "discover": (("6011", "644", "645", "646", "647", "648", "649", "65"), tuple(range(16, 20))),
    "diners": (("300", "301", "302", "303", "304", "305", "36", "38"), tuple(range(14, 20))),
    "jcb": (((3528, 3589),), tuple(range(16, 20))),
    "unionpay": (("62",), tuple(range(16, 20))),
    "maestro": (("50", "56", "57", "58", "59", "60", "63", "67", "69"), tuple(range(12, 20))),
    "mir": (((2200, 2204),), tuple(range(16, 20))),
}


def issuer_pan(rng: random.Random, brand: str, length: int | None = None) -> str:
    """A Luhn-valid PAN of `brand` (ISSUERS), of the given or a random length it uses."""
    prefixes, lengths = ISSUERS[brand]
    prefix = rng.choice(prefixes)
    if isinstance(prefix, tuple):
        prefix = str(rng.randint(*prefix))
    n = length or rng.choice(lengths)
    body = prefix + "".join(rng.choices("0123456789", k=n - len(prefix) - 1))
    return body + luhn_check_digit(body)
