"""Generated, Luhn-valid test PANs for every brand and length the simulator makes."""
from __future__ import annotations

import random

from payflow.cards import BRANDS
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
