"""Layer 3: fraud scoring, a pure function over a payment and its sender's and card's recent history.

Signals and weights live here and nowhere else (README "Fraud scoring" documents them).
Each strong signal alone makes a payment high risk (score > 60); weak signals add up.
State is kept per sender (velocity, travel, devices: co-partitioned with the raw topic's key)
and per card hash (card testing), as short lists of recent activity.

Bounded per key, whatever the traffic: an entry holds the event time and fixed-size digests
of the region, device and transaction id (scoring only compares them for equality; the raw
strings could be ~64 KiB each), and a history keeps at most HISTORY_CAP entries, the most
recent by event time. Simulated and ordinary traffic stay far below the cap, so their
verdicts are exact. Past it, what a signal counts saturates: velocity_5m at HISTORY_CAP + 1,
distinct_devices_30m (and impossible travel, for an event older than the kept entries)
judged by the kept entries only, the card-testing count at CARD_HISTORY_CAP + 1; a sender
that busy already raises VELOCITY_SPIKE, and a card that busy CARD_TESTING.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from decimal import Decimal

from payflow.stages.currencies import to_usd
from payflow.models import HIGH_RISK_ABOVE, FraudAssessment, MaskedPayment  # noqa: F401 - HIGH_RISK_ABOVE re-exported

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

# 128-bit digests: a collision of two strings of one sender is out of reach (~2^64 tries)
DIGEST_BYTES = 16
# entries kept per sender and per card. The simulator's busiest sender has tens of entries in
# 30 minutes (test_bounded_state checks its streams); a score costs ~0.13 µs per entry
# (interpreted), so a sender at the cap costs ~70 µs a payment more, not its whole history.
HISTORY_CAP = 512
CARD_HISTORY_CAP = 512

# history entries: sender -> (ts, region, device, txn), card -> (ts, txn) (small amounts only),
# the strings as digest()
SenderEntry = tuple[float, bytes, bytes, bytes]
CardEntry = tuple[float, bytes]


def digest(text: str) -> bytes:
    """What a history stores of a string: a fixed-size digest (compared for equality only)."""
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=DIGEST_BYTES).digest()


def most_recent(entries: list, n: int) -> list:
    """The `n` entries with the latest event times, in their order (of equal times, the later
    ones in the list are kept)."""
    if len(entries) <= n:
        return entries
    by_age = sorted(range(len(entries)), key=lambda i: entries[i][0])
    dropped = set(by_age[:len(entries) - n])
    return [e for i, e in enumerate(entries) if i not in dropped]


@dataclass(slots=True)
class Scored:
    assessment: FraudAssessment
    sender_history: list[SenderEntry]
    card_history: list[CardEntry]


def score(payment: MaskedPayment, sender_history: list[SenderEntry], card_history: list[CardEntry],
          cap: int = HISTORY_CAP, card_cap: int = CARD_HISTORY_CAP) -> Scored:
    """One pass over each history (it runs per payment; README "Fraud scoring" defines the
    signals, tests/unit/test_dedup_and_fraud.py holds this equal to that definition).
    The histories returned hold at most `cap` and `card_cap` entries."""
    ts = payment.event_time.timestamp()
    txn = digest(payment.transaction_id)
    region = digest(payment.geo_region)
    device = digest(payment.device_id)
    # entries of this same transaction (a replay after a crash) are replaced, never counted twice
    horizon = ts - SENDER_HISTORY_S
    senders: list[SenderEntry] = []
    velocity = 1  # this payment included
    devices = {device}
    last: SenderEntry | None = None  # the latest earlier payment (the first of equals)
    oldest = -1  # index in `senders` of the earliest entry (the first of equals)
    oldest_t = 0.0
    for e in sender_history:
        t = e[0]
        if t < horizon or e[3] == txn:
            continue
        if oldest < 0 or t < oldest_t:
            oldest, oldest_t = len(senders), t
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
    if last is not None and last[1] != region and ts - last[0] <= TRAVEL_WINDOW_S:
        flags.append("IMPOSSIBLE_TRAVEL")
        geographic_risk = WEIGHTS["IMPOSSIBLE_TRAVEL"]

    if len(devices) >= DEVICE_ANOMALY_AT:
        flags.append("DEVICE_ANOMALY")
    elif len(devices) >= 3:
        flags.append("MULTIPLE_DEVICES")

    card_horizon = ts - CARD_TEST_WINDOW_S
    cards: list[CardEntry] = []
    small_before = 0
    card_oldest = -1
    card_oldest_t = 0.0
    for c in card_history:
        if c[0] >= card_horizon and c[1] != txn:
            if card_oldest < 0 or c[0] < card_oldest_t:
                card_oldest, card_oldest_t = len(cards), c[0]
            cards.append(c)
            if c[0] <= ts:
                small_before += 1
    small = usd < SMALL_AMOUNT_USD
    if small and 1 + small_before >= CARD_TEST_AT:
        flags.append("CARD_TESTING")

    fraud_score = min(100, sum(WEIGHTS[f] for f in flags))
    assessment = FraudAssessment(fraud_score=fraud_score, risk_flags=flags, geographic_risk=geographic_risk,
                                 velocity_5m=velocity, distinct_devices_30m=len(devices))
    senders = _keep(senders, (ts, region, device, txn), oldest, oldest_t, cap)
    if small:
        cards = _keep(cards, (ts, txn), card_oldest, card_oldest_t, card_cap)
    elif len(cards) > card_cap:  # a history from before the cap, or a lowered cap
        cards = most_recent(cards, card_cap)
    return Scored(assessment, senders, cards)


def _keep(entries: list, entry: tuple, oldest: int, oldest_t: float, cap: int) -> list:
    """`entries` with `entry` added, at most `cap` of them: at the cap the earliest goes (the
    new entry itself if it is the earliest). `oldest` indexes the earliest of `entries`."""
    entries.append(entry)
    if len(entries) <= cap:
        return entries
    if len(entries) == cap + 1:  # the usual case at the cap: one goes, found by the scan
        del entries[len(entries) - 1 if entry[0] < oldest_t or oldest < 0 else oldest]
        return entries
    return most_recent(entries, cap)  # a history from before the cap, or a lowered cap
