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
    ts = payment.event_time.timestamp()
    txn = payment.transaction_id
    # entries of this same transaction (a replay after a crash) are replaced, never counted twice
    senders = [e for e in sender_history if ts - SENDER_HISTORY_S <= e[0] and e[3] != txn]
    previous = [e for e in senders if e[0] <= ts]
    usd = to_usd(payment.amount, payment.currency)
    flags: list[str] = []

    if usd > HIGH_AMOUNT_USD:
        flags.append("HIGH_AMOUNT")
    elif usd >= ELEVATED_AMOUNT_USD:
        flags.append("ELEVATED_AMOUNT")

    velocity = 1 + sum(1 for e in senders if abs(ts - e[0]) <= VELOCITY_WINDOW_S and e[0] <= ts)
    if velocity >= VELOCITY_SPIKE_AT:
        flags.append("VELOCITY_SPIKE")
    elif velocity >= VELOCITY_ELEVATED_AT:
        flags.append("ELEVATED_VELOCITY")

    geographic_risk = 0
    if previous:
        last = max(previous, key=lambda e: e[0])
        if last[1] != payment.geo_region and ts - last[0] <= TRAVEL_WINDOW_S:
            flags.append("IMPOSSIBLE_TRAVEL")
            geographic_risk = WEIGHTS["IMPOSSIBLE_TRAVEL"]

    devices = {e[2] for e in previous if ts - e[0] <= DEVICE_WINDOW_S} | {payment.device_id}
    if len(devices) >= DEVICE_ANOMALY_AT:
        flags.append("DEVICE_ANOMALY")
    elif len(devices) >= 3:
        flags.append("MULTIPLE_DEVICES")

    cards = [e for e in card_history if ts - CARD_TEST_WINDOW_S <= e[0] and e[1] != txn]
    small = usd < SMALL_AMOUNT_USD
    if small and 1 + sum(1 for e in cards if e[0] <= ts) >= CARD_TEST_AT:
        flags.append("CARD_TESTING")

    fraud_score = min(100, sum(WEIGHTS[f] for f in flags))
    assessment = FraudAssessment(fraud_score=fraud_score, risk_flags=flags, geographic_risk=geographic_risk,
                                 velocity_5m=velocity, distinct_devices_30m=len(devices))
    senders.append([ts, payment.geo_region, payment.device_id, txn])
    if small:
        cards.append([ts, txn])
    return Scored(assessment, senders, cards)
