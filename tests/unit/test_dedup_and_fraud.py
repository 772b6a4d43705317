"""Dedup decisions, the watermark, and each fraud signal (pure functions)."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from payflow.stages import dedup
from payflow.stages import fraud
from payflow.models import FraudAssessment, MaskedPayment

T0 = datetime(2026, 11, 20, 10, 0, tzinfo=timezone.utc)


def test_replay_versus_duplicate():
    first = dedup.FirstSeen(2, 100, 5)
    assert dedup.classify(None, 2, 100) is dedup.Verdict.NEW
    assert dedup.classify(first, 2, 100) is dedup.Verdict.REPLAY
    assert dedup.classify(first, 2, 101) is dedup.Verdict.DUPLICATE
    assert dedup.classify(first, 3, 100) is dedup.Verdict.DUPLICATE
    assert dedup.FirstSeen.unpack(first.pack()) == first


def test_watermark_is_one_hour_behind_the_highest_event_time():
    hour = 3600 * 1_000_000
    wm = 10 * hour
    assert not dedup.is_late(wm - hour, wm, hour)
    assert dedup.is_late(wm - hour - 1, wm, hour)
    assert not dedup.is_late(0, None, hour)


def payment(n: int = 0, *, at: timedelta = timedelta(0), amount: str = "40.00", region: str = "us-east",
            device: str = "dev_a", card: str = "hash_a", sender: str = "acct_s") -> MaskedPayment:
    return MaskedPayment(
        transaction_id=f"txn_{n}", event_time=T0 + at, sender_account_id=sender, receiver_account_id="mrch_x",
        amount=Decimal(amount), currency="USD", credit_card_masked="XXXX-XXXX-XXXX-1111", cvv_masked="XXX",
        card_expiry_masked="08/XX", card_brand="visa", pii_hash=card, pii_key_id="k1", masked_at=T0,
        masking_reason="r", ip_address="3.1.1.1", geo_region=region, device_id=device, merchant_id="mrch_x")


def run(payments):
    """Score in order, keeping history per sender and per card as the pipeline does."""
    senders: dict[str, list] = {}
    cards: dict[str, list] = {}
    out = []
    for p in payments:
        s = fraud.score(p, senders.get(p.sender_account_id, []), cards.get(p.pii_hash, []))
        senders[p.sender_account_id], cards[p.pii_hash] = s.sender_history, s.card_history
        out.append(s.assessment)
    return out


def test_clean_payment_scores_low():
    a = run([payment(0)])[0]
    assert a.fraud_score == 0 and a.risk_flags == [] and not a.is_high_risk


def test_high_amount_is_high_risk_in_usd_terms():
    assert run([payment(0, amount="5000.01")])[0].risk_flags == ["HIGH_AMOUNT"]
    assert run([payment(0, amount="5000.00")])[0].risk_flags == ["ELEVATED_AMOUNT"]
    jpy = payment(0, amount="700000")
    jpy.currency = "JPY"  # ~4,690 USD: not high
    assert "HIGH_AMOUNT" not in run([jpy])[0].risk_flags


def test_velocity_spike_within_five_minutes():
    out = run([payment(i, at=timedelta(seconds=30 * i)) for i in range(6)])
    assert [("VELOCITY_SPIKE" in a.risk_flags) for a in out] == [False, False, False, False, True, True]
    assert out[-1].is_high_risk
    slow = run([payment(i, at=timedelta(minutes=6 * i)) for i in range(6)])
    assert not any(a.is_high_risk for a in slow)


def test_impossible_travel():
    out = run([payment(0), payment(1, at=timedelta(minutes=5), region="eu-west")])
    assert "IMPOSSIBLE_TRAVEL" in out[1].risk_flags and out[1].geographic_risk > 0 and out[1].is_high_risk
    ok = run([payment(0), payment(1, at=timedelta(hours=2), region="eu-west")])
    assert not ok[1].is_high_risk


def test_device_anomaly():
    out = run([payment(i, at=timedelta(minutes=i), device=f"dev_{i}") for i in range(4)])
    assert "DEVICE_ANOMALY" in out[3].risk_flags and out[3].is_high_risk
    assert not out[1].is_high_risk


def test_card_testing_counts_small_amounts_per_card():
    out = run([payment(i, at=timedelta(minutes=2 * i), amount="1.50") for i in range(4)])
    assert "CARD_TESTING" in out[3].risk_flags
    other_cards = run([payment(i, at=timedelta(minutes=2 * i), amount="1.50", card=f"h{i}") for i in range(4)])
    assert not any("CARD_TESTING" in a.risk_flags for a in other_cards)


def test_replay_does_not_count_twice():
    p = payment(0)
    s1 = fraud.score(p, [], [])
    s2 = fraud.score(p, s1.sender_history, s1.card_history)
    assert s2.assessment.velocity_5m == 1 and len(s2.sender_history) == 1


@pytest.mark.parametrize("n", range(1, 12))
def test_score_is_bounded(n):
    many = [payment(i, at=timedelta(seconds=i), amount="9000" if i % 2 else "1.00", region="eu-west" if i % 3 else "us-east",
                    device=f"d{i}") for i in range(n)]
    for a in run(many):
        assert 0 <= a.fraud_score <= 100
        assert a.is_high_risk == (a.fraud_score > 60)


def test_replay_after_a_crash_is_not_judged_late_by_the_recovered_watermark():
    """A batch processed (state written) but not landed before a crash is read again with
    the watermark it advanced: its early events are replays, not late events (found by the
    SIGKILL fault test: one payment went missing)."""
    import orjson

    from payflow.keys import KeyRing
    from payflow.stages.batch import RawItem
    from tests.fakes import dict_processor
    from tests.unit.cards_fixtures import event

    tables = dict(dedup_table={}, watermark_table={}, sender_table={}, card_table={})
    ring = KeyRing.parse("t-1:" + "ab" * 32)
    items = [RawItem(0, 0, orjson.dumps(event(transaction_id="txn_early_one", event_time="2026-11-20T10:00:00Z"))),
             RawItem(0, 1, orjson.dumps(event(transaction_id="txn_later_one", event_time="2026-11-20T11:30:00Z")))]
    first = dict_processor(keyring=ring, **tables).process(items)
    assert [e.payment.transaction_id for e in first.enriched] == ["txn_early_one", "txn_later_one"]
    replayed = dict_processor(keyring=ring, **tables).process(items)  # state recovered, batch read again
    assert [e.payment.transaction_id for e in replayed.enriched] == ["txn_early_one", "txn_later_one"]
    assert replayed.late == [] and replayed.replays == 2


# -- score() is one pass over each history; this is the signals' definition it must equal --

def reference_score(payment: MaskedPayment, sender_history: list, card_history: list) -> fraud.Scored:
    """The README's signals, written as plainly as possible (the previous implementation).
    Histories hold digests of the strings (fraud.digest), compared for equality only."""
    D = fraud.digest
    ts = payment.event_time.timestamp()
    txn = D(payment.transaction_id)
    senders = [e for e in sender_history if ts - fraud.SENDER_HISTORY_S <= e[0] and e[3] != txn]
    previous = [e for e in senders if e[0] <= ts]
    usd = fraud.to_usd(payment.amount, payment.currency)
    flags = []
    if usd > fraud.HIGH_AMOUNT_USD:
        flags.append("HIGH_AMOUNT")
    elif usd >= fraud.ELEVATED_AMOUNT_USD:
        flags.append("ELEVATED_AMOUNT")
    velocity = 1 + sum(1 for e in senders if abs(ts - e[0]) <= fraud.VELOCITY_WINDOW_S and e[0] <= ts)
    if velocity >= fraud.VELOCITY_SPIKE_AT:
        flags.append("VELOCITY_SPIKE")
    elif velocity >= fraud.VELOCITY_ELEVATED_AT:
        flags.append("ELEVATED_VELOCITY")
    geographic_risk = 0
    if previous:
        last = max(previous, key=lambda e: e[0])
        if last[1] != D(payment.geo_region) and ts - last[0] <= fraud.TRAVEL_WINDOW_S:
            flags.append("IMPOSSIBLE_TRAVEL")
            geographic_risk = fraud.WEIGHTS["IMPOSSIBLE_TRAVEL"]
    devices = {e[2] for e in previous if ts - e[0] <= fraud.DEVICE_WINDOW_S} | {D(payment.device_id)}
    if len(devices) >= fraud.DEVICE_ANOMALY_AT:
        flags.append("DEVICE_ANOMALY")
    elif len(devices) >= 3:
        flags.append("MULTIPLE_DEVICES")
    cards = [e for e in card_history if ts - fraud.CARD_TEST_WINDOW_S <= e[0] and e[1] != txn]
    small = usd < fraud.SMALL_AMOUNT_USD
    if small and 1 + sum(1 for e in cards if e[0] <= ts) >= fraud.CARD_TEST_AT:
        flags.append("CARD_TESTING")
    assessment = FraudAssessment(fraud_score=min(100, sum(fraud.WEIGHTS[f] for f in flags)), risk_flags=flags,
                                 geographic_risk=geographic_risk, velocity_5m=velocity,
                                 distinct_devices_30m=len(devices))
    senders.append((ts, D(payment.geo_region), D(payment.device_id), txn))
    if small:
        cards.append((ts, txn))
    return fraud.Scored(assessment, senders, cards)


def keep_most_recent(history: list, n: int) -> list:
    """The n entries with the latest event times (of equal times, the later in the list), in order."""
    by_time = sorted(range(len(history)), key=lambda i: history[i][0])  # stable: list order among equals
    return [history[i] for i in sorted(by_time[max(0, len(history) - n):])]


_offsets = st.integers(min_value=-2400, max_value=120)  # seconds from the payment: before, at, after
_sender_entries = st.lists(st.tuples(_offsets, st.sampled_from(["us-east", "eu-west", "ap-south"]),
                                     st.sampled_from(["dev_a", "dev_b", "dev_c", "dev_d", "dev_e"]),
                                     st.sampled_from(["txn_0", "txn_1", "txn_2", "txn_3"])), max_size=12)
_card_entries = st.lists(st.tuples(_offsets, st.sampled_from(["txn_0", "txn_1", "txn_2", "txn_3"])), max_size=8)


@settings(max_examples=400, deadline=None)
@given(senders=_sender_entries, cards=_card_entries, amount=st.sampled_from(["1.00", "4.99", "40.00", "1000.00", "9000"]),
       region=st.sampled_from(["us-east", "eu-west"]), device=st.sampled_from(["dev_a", "dev_f"]))
def test_score_equals_the_definition_of_the_signals(senders, cards, amount, region, device):
    p = payment(1, amount=amount, region=region, device=device)  # txn_1: some entries are its replays
    ts = p.event_time.timestamp()
    D = fraud.digest
    sender_history = [(ts + dt, D(r), D(d), D(t)) for dt, r, d, t in senders]
    card_history = [(ts + dt, D(t)) for dt, t in cards]
    got, want = fraud.score(p, sender_history, card_history), reference_score(p, sender_history, card_history)
    assert (got.assessment, got.sender_history, got.card_history) == \
        (want.assessment, want.sender_history, want.card_history)


@settings(max_examples=300, deadline=None)
@given(senders=_sender_entries, cards=_card_entries, amount=st.sampled_from(["1.00", "40.00"]),
       cap=st.integers(min_value=1, max_value=6), card_cap=st.integers(min_value=1, max_value=4))
def test_a_capped_history_keeps_the_most_recent_entries_and_the_verdict(senders, cards, amount, cap, card_cap):
    """The cap bounds what is kept; the payment is judged on the history it was given."""
    p = payment(1, amount=amount)
    ts = p.event_time.timestamp()
    D = fraud.digest
    sender_history = [(ts + dt, D(r), D(d), D(t)) for dt, r, d, t in senders]
    card_history = [(ts + dt, D(t)) for dt, t in cards]
    got = fraud.score(p, sender_history, card_history, cap, card_cap)
    want = reference_score(p, sender_history, card_history)
    assert got.assessment == want.assessment
    assert got.sender_history == keep_most_recent(want.sender_history, cap)
    assert got.card_history == keep_most_recent(want.card_history, card_cap)


def test_history_entries_are_fixed_size_whatever_the_strings():
    big = "x" * 60_000
    s = fraud.score(payment(0, region=big, device=big), [], [])
    entry = s.sender_history[0]
    assert [len(f) for f in entry[1:]] == [fraud.DIGEST_BYTES] * 3 and big.encode() not in b"".join(entry[1:])
