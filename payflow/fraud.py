"""Layer 3: fraud scoring, a pure function over a payment and its sender's and card's recent history.

Signals and weights live here and nowhere else (README "Fraud scoring" documents them).
Each strong signal alone makes a payment high risk (score > 60); weak signals add up.
State is kept per sender (velocity, travel, devices: co-partitioned with the raw topic's key)
and per card hash (card testing), as short lists of recent activity.
"""
from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from payflow.currencies import to_usd
from payflow.models import FraudAssessment, MaskedPayment

HIGH_RISK_ABOVE = 60
HIGH_AMOUNT_USD = Decimal(5000)
ELEVATED_AMOUNT_USD = Decimal(1000)
SMALL_AMOUNT_USD = Decimal(5)
VELOCITY_WINDOW_S = 300
VELOCITY_SPIKE_AT = 5  # payments by one sender within the window, this one included
VELOCITY_ELEVATED_AT = 3
TRAVEL_WINDOW_S = 1800  # a region change faster than this is impossible travel
DEVICE_WINDOW_S = 1800
DEVICE_ANOMALY_AT = 4  # distinct devices of one sender within the window
CARD_TEST_WINDOW_S = 600
CARD_TEST_AT = 4  # small payments on one card within the window
SENDER_HISTORY_S = max(VELOCITY_WINDOW_S, TRAVEL_WINDOW_S, DEVICE_WINDOW_S)

WEIGHTS: dict[str, int] = {
    "HIGH_AMOUNT": 65,
    "VELOCITY_SPIKE": 65,
    "IMPOSSIBLE_TRAVEL": 65,
    "DEVICE_ANOMALY": 65,
    "CARD_TESTING": 65,
    "ELEVATED_AMOUNT": 20,
    "ELEVATED_VELOCITY": 15,
    "MULTIPLE_DEVICES": 10,
}

# history entries: sender -> [ts, region, device, txn], card -> [ts, txn] (small amounts only)
SenderEntry = list  # [float, str, str, str]
CardEntry = list  # [float, str]


@dataclass(slots=True)
class Scored:
    assessment: FraudAssessment
    sender_history: list[SenderEntry]
    card_history: list[CardEntry]


def score(payment: MaskedPayment, sender_history: list[SenderEntry], card_history: list[CardEntry]) -> Scored:
    """One pass over each history (it runs per payment; README "Fraud scoring" defines the
    signals, tests/unit/test_dedup_and_fraud.py holds this equal to that definition)."""
    ts = payment.event_time.timestamp()
    txn = payment.transaction_id
    # entries of this same transaction (a replay after a crash) are replaced, never counted twice
    horizon = ts - SENDER_HISTORY_S
    senders: list[SenderEntry] = []
    velocity = 1  # this payment included
    devices = {payment.device_id}
    last = None  # the latest earlier payment (the first of equals)
    for e in sender_history:
        t = e[0]
        if t < horizon or e[3] == txn:
            continue
        senders.append(e)
        if t <= ts:
            age = ts - t
            if age <= VELOCITY_WINDOW_S:
                velocity += 1
            if age <= DEVICE_WINDOW_S:
                devices.add(e[2])
            if last is None or t > last[0]:
                last = e
    usd = to_usd(payment.amount, payment.currency)
    flags: list[str] = []

    if usd > HIGH_AMOUNT_USD:
        flags.append("HIGH_AMOUNT")
    elif usd >= ELEVATED_AMOUNT_USD:
        flags.append("ELEVATED_AMOUNT")

    if velocity >= VELOCITY_SPIKE_AT:
        flags.append("VELOCITY_SPIKE")
    elif velocity >= VELOCITY_ELEVATED_AT:
        flags.append("ELEVATED_VELOCITY")

    geographic_risk = 0
    if last is not None and last[1] != payment.geo_region and ts - last[0] <= TRAVEL_WINDOW_S:
        flags.append("IMPOSSIBLE_TRAVEL")
        geographic_risk = WEIGHTS["IMPOSSIBLE_TRAVEL"]

    if len(devices) >= DEVICE_ANOMALY_AT:
        flags.append("DEVICE_ANOMALY")
    elif len(devices) >= 3:
        flags.append("MULTIPLE_DEVICES")

    card_horizon = ts - CARD_TEST_WINDOW_S
    cards: list[CardEntry] = []
    small_before = 0
    for e in card_history:
        if e[0] >= card_horizon and e[1] != txn:
            cards.append(e)
            if e[0] <= ts:
                small_before += 1
    small = usd < SMALL_AMOUNT_USD
    if small and 1 + small_before >= CARD_TEST_AT:
        flags.append("CARD_TESTING")

    fraud_score = min(100, sum(WEIGHTS[f] for f in flags))
    assessment = FraudAssessment(fraud_score=fraud_score, risk_flags=flags, geographic_risk=geographic_risk,
                                 velocity_5m=velocity, distinct_devices_30m=len(devices))
    senders.append([ts, payment.geo_region, payment.device_id, txn])
    if small:
        cards.append([ts, txn])
    return Scored(assessment, senders, cards)
