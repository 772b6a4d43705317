"""Fraud scoring (payflow.stages.fraud, docs/fraud.md): graded scores with reasons, the
sender's long-memory baseline, and verdicts independent of batching and partitioning."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from payflow.models import MaskedPayment
from payflow.stages import fraud

T0 = datetime(2026, 11, 20, 10, 0, tzinfo=timezone.utc)
DAY = timedelta(days=1)


def payment(n: int = 0, *, at: timedelta = timedelta(0), amount: str = "40.00", region: str = "us-east",
            device: str = "dev_a", card: str = "hash_a", sender: str = "acct_s", receiver: str = "mrch_x") -> MaskedPayment:
    return MaskedPayment(
        transaction_id=f"txn_{n}", event_time=T0 + at, sender_account_id=sender, receiver_account_id=receiver,
        amount=Decimal(amount), currency="USD", credit_card_masked="XXXX-XXXX-XXXX-1111", cvv_masked="XXX",
        card_expiry_masked="08/XX", card_brand="visa", pii_hash=card, pii_key_id="k1", masked_at=T0,
        masking_reason="r", ip_address="3.1.1.1", geo_region=region, device_id=device, merchant_id="mrch_x")


def run(payments, kind: str = ""):
    state = fraud.new_state()
    out = []
    for p in payments:
        s = fraud.score(p, state, kind)
        state = s.state
        out.append(s.assessment)
    return out, state


def history(days: int = 14, per_day: int = 2):
    """An ordinary sender: a couple of payments a day, own phone, home region, a few payees."""
    return [payment(i, at=i * DAY / per_day, amount=f"{30 + (i % 5) * 5}.00", receiver=f"payee_{i % 4}")
            for i in range(days * per_day)]


def test_an_ordinary_sender_scores_low():
    out, _ = run(history())
    assert max(a.fraud_score for a in out) <= 20 and not any(a.is_high_risk for a in out)


def test_takeover_new_device_and_high_amount_is_high_risk_with_its_reasons():
    h = history()
    out, _ = run(h + [payment(999, at=len(h) * DAY / 2, amount="400.00", device="dev_attacker", receiver="mule")])
    a = out[-1]
    assert a.is_high_risk and "NEW_DEVICE" in a.risk_flags and "NEW_DEVICE_HIGH_AMOUNT" in a.risk_flags
    reason = next(r for r in a.risk_reasons if r.startswith("AMOUNT_VS_BASELINE:"))
    assert "x the sender's typical" in reason and "," not in "".join(a.risk_reasons)


def test_the_score_ranks_the_amount():
    h = history()
    at = len(h) * DAY / 2
    scores = [run(h + [payment(999, at=at, amount=amt, device="dev_new")])[0][-1].fraud_score
              for amt in ("60.00", "150.00", "400.00", "2000.00")]
    assert scores == sorted(scores) and len(set(scores)) == 4, scores


def test_a_new_phone_alone_is_not_high_risk():
    h = history()
    out, _ = run(h + [payment(999 + i, at=len(h) * DAY / 2 + timedelta(hours=i), device="dev_new_phone")
                      for i in range(3)])
    assert not any(a.is_high_risk for a in out[-3:])


def test_impossible_travel_is_judged_by_speed_between_centroids_not_by_a_region_change():
    h = [payment(i, at=i * DAY / 2, amount="40.00", region="eu-west", receiver=f"payee_{i % 4}") for i in range(28)]
    at = len(h) * DAY / 2
    home = payment(997, at=at, region="eu-west")
    neighbour, _ = run(h + [home, payment(998, at=at + timedelta(minutes=5), region="eu-central")])
    assert "IMPOSSIBLE_TRAVEL" not in neighbour[-1].risk_flags and not neighbour[-1].is_high_risk
    far, _ = run(h + [home, payment(998, at=at + timedelta(minutes=90), region="us-east", device="dev_x")])
    assert "IMPOSSIBLE_TRAVEL" in far[-1].risk_flags and far[-1].is_high_risk
    assert any("km/h" in r for r in far[-1].risk_reasons)
    flight, _ = run(h + [home, payment(998, at=at + timedelta(hours=12), region="us-east")])
    assert "IMPOSSIBLE_TRAVEL" not in flight[-1].risk_flags and not flight[-1].is_high_risk
    # the victim at home again after the attacker abroad: familiar device and region
    back, _ = run(h + [home, payment(998, at=at + timedelta(minutes=90), region="us-east", device="dev_x"),
                       payment(999, at=at + timedelta(minutes=150), region="eu-west")])
    assert not back[-1].is_high_risk


def test_card_testing_many_cards_small_amounts():
    out, _ = run([payment(i, at=timedelta(seconds=30 * i), amount="1.50", card=f"hash_{i}") for i in range(6)])
    assert "CARD_TESTING" in out[-1].risk_flags and out[-1].is_high_risk


def test_bulk_senders_are_judged_against_their_kind():
    burst = [payment(i, at=timedelta(seconds=i), amount="3000.00", receiver=f"employee_{i}") for i in range(100)]
    unknown, _ = run(burst)
    payroll, _ = run(burst, kind="payroll")
    assert any(a.is_high_risk for a in unknown) and not any(a.is_high_risk for a in payroll)


def test_a_replay_is_not_counted_twice():
    p = payment(1)
    first = fraud.score(p, fraud.new_state())
    again = fraud.score(p, first.state)
    assert len(again.state.recent) == 1 and again.assessment == first.assessment


def test_the_state_packs_and_unpacks_to_the_same_verdicts():
    h = history()
    _, state = run(h)
    copy = fraud.unpack_state(fraud.pack_state(state))
    nxt = payment(999, at=len(h) * DAY / 2, amount="300.00", device="dev_z")
    assert fraud.score(nxt, state).assessment == fraud.score(nxt, copy).assessment


# -- deterministic verdicts ----------------------------------------------------------------

@pytest.fixture(scope="module")
def eval_traffic():
    from payflow.fraudeval.traffic import Traffic

    t = Traffic(seed=7, scale=0.08, end=datetime(2026, 11, 20, tzinfo=timezone.utc))
    return t.build(), t.account_kinds


@pytest.mark.parametrize("partitions,batch_size", [(1, 1), (4, 500), (12, 5000)])
def test_scores_do_not_depend_on_batch_size_or_partition_count(eval_traffic, partitions, batch_size):
    from payflow.fraudeval.run import score_in_process

    events, kinds = eval_traffic
    reference = score_in_process(events, partitions=4, batch_size=1, account_kinds=kinds)
    got = score_in_process(events, partitions=partitions, batch_size=batch_size, account_kinds=kinds)
    assert len(reference) == len(events) and got == reference
