"""Deterministic event stream: the same seed and options give the same bytes.

Event time advances at `business_tps` payments per simulated second from `start_time`.
Each message slot is, by the user's ratios: a duplicate (an earlier message re-sent as is,
seconds to minutes later), a late event (event_time over an hour behind the stream), a
malformed message, the start of a fraud scenario, or a normal payment.
"""
from __future__ import annotations

import heapq
import itertools
import random
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal
from typing import Iterator

import orjson

from payflow.stages import currencies
from payflow.simulator import malformed
from payflow.simulator.population import REGIONS, Account, Population, ip_in, letters_id

HIGH_AMOUNT_USD = Decimal(5000)
NORMAL_MAX_USD = 3000.0
SMALL_AMOUNT_USD = (0.5, 3.0)
LATE_BEHIND = (timedelta(minutes=65), timedelta(minutes=110))
DUPLICATE_WINDOW = 2400  # a duplicate re-sends one of the last N valid messages
FRAUD_KINDS = ("high_amount", "velocity", "impossible_travel", "device_burst", "card_testing")
# a scenario's payments become detectable (the pattern exists) from this payment on
VELOCITY_SIZE, VELOCITY_DETECTABLE_FROM = 14, 4
DEVICE_BURST_SIZE, DEVICE_DETECTABLE_FROM = 7, 3
CARD_TEST_SIZE, CARD_TEST_DETECTABLE_FROM = 10, 3


@dataclass(frozen=True)
class SimOptions:
    count: int = 20_000
    seed: int = 42
    start_time: datetime | None = None
    accounts: int = 10_000
    merchants: int = 500
    business_tps: float = 5.0
    duplicate_ratio: float = 0.05
    late_ratio: float = 0.01
    malformed_ratio: float = 0.01
    fraud_ratio: float = 0.005
    email_ratio: float = 0.7

    def resolved_start(self) -> datetime:
        if self.start_time is not None:
            return self.start_time.astimezone(timezone.utc)
        # end the simulated stream about now, so no event is in the future
        span = timedelta(seconds=self.count / self.business_tps)
        now = datetime.now(timezone.utc).replace(microsecond=0)
        return now - span - timedelta(minutes=1)


@dataclass
class Message:
    key: bytes | None
    value: bytes
    kind: str  # valid | duplicate | late | malformed
    transaction_id: str | None = None
    amount: Decimal | None = None
    currency: str | None = None
    malformed_kind: str | None = None
    fraud: dict | None = None  # {"kind", "scenario", "detectable"} for injected fraud


@dataclass(order=True)
class _Scheduled:
    due: datetime
    seq: int
    build: object = field(compare=False)


def iso(t: datetime) -> str:
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class EventStream:
    def __init__(self, options: SimOptions):
        self.o = options
        self.start = options.resolved_start()
        self.rng = random.Random(f"stream-{options.seed}")
        self.pop = Population.build(options.seed, options.accounts, options.merchants, self.start)
        self.t = self.start
        self._seq = itertools.count()
        self._scheduled: list[_Scheduled] = []
        self._recent_valid: deque[Message] = deque(maxlen=DUPLICATE_WINDOW)
        self._scenario_ids = itertools.count(1)
        self._mal_cycle = 0

    # -- events -------------------------------------------------------------------------
    def _txn_id(self) -> str:
        return letters_id(self.rng, "txn_", 20)

    def _amount(self, account: Account, usd: float) -> Decimal:
        scale = currencies.minor_units(account.currency) or 0
        quantum = Decimal(1).scaleb(-scale)
        rate = currencies.CURRENCIES[account.currency][1]
        amount = (Decimal(repr(round(usd, 4))) / rate).quantize(quantum, rounding=ROUND_HALF_UP)
        return max(amount, quantum)

    def _normal_usd(self) -> float:
        return min(max(self.rng.lognormvariate(3.7, 1.0), 1.0), NORMAL_MAX_USD)

    def _event(self, account: Account, t: datetime, *, usd: float | None = None, region: str | None = None,
               device: str | None = None, card_index: int | None = None) -> dict:
        rng = self.rng
        card = account.cards[card_index if card_index is not None else rng.randrange(len(account.cards))]
        merchant = rng.choice(self.pop.merchants)
        receiver = rng.choice(self.pop.accounts).account_id if rng.random() < 0.2 else merchant.merchant_id
        region = region or account.region
        doc = {
            "schema_version": 1,
            "transaction_id": self._txn_id(),
            "event_time": iso(t),
            "sender_account_id": account.account_id,
            "receiver_account_id": receiver,
            "amount": str(self._amount(account, usd if usd is not None else self._normal_usd())),
            "currency": account.currency,
            "credit_card": card.pan,
            "cvv": card.cvv,
            "card_expiry": card.expiry,
            "ip_address": ip_in(rng, region),
            "geo_region": region,
            "device_id": device or rng.choice(account.devices),
            "merchant_id": merchant.merchant_id,
        }
        if rng.random() < self.o.email_ratio:
            doc["user_email"] = account.email
        return doc

    def _valid(self, doc: dict, kind: str = "valid", fraud: dict | None = None) -> Message:
        return Message(key=doc["sender_account_id"].encode(), value=orjson.dumps(doc), kind=kind,
                       transaction_id=doc["transaction_id"], amount=Decimal(doc["amount"]),
                       currency=doc["currency"], fraud=fraud)

    # -- fraud scenarios ------------------------------------------------------------------
    def _schedule(self, due: datetime, build) -> None:
        heapq.heappush(self._scheduled, _Scheduled(due, next(self._seq), build))

    def _start_scenario(self) -> Message:
        rng = self.rng
        kind = rng.choice(FRAUD_KINDS)
        sid = next(self._scenario_ids)
        account = rng.choice(self.pop.accounts)
        label = lambda detectable: {"kind": kind, "scenario": sid, "detectable": detectable}  # noqa: E731
        t = self.t
        if kind == "high_amount":
            usd = rng.uniform(5_200, 25_000)
            return self._valid(self._event(account, t, usd=usd), fraud=label(True))
        if kind == "velocity":
            offsets = sorted(rng.uniform(0, 200) for _ in range(VELOCITY_SIZE - 1))
            for i, off in enumerate(offsets, start=1):
                self._schedule(t + timedelta(seconds=off),
                               lambda due, i=i: self._valid(self._event(account, due), fraud=label(i >= VELOCITY_DETECTABLE_FROM)))
            return self._valid(self._event(account, t), fraud=label(False))
        if kind == "impossible_travel":
            away = rng.choice([r for r in REGIONS if r != account.region])
            self._schedule(t + timedelta(seconds=rng.uniform(60, 600)),
                           lambda due: self._valid(self._event(account, due, region=away, device=letters_id(rng, "dev_", 10)),
                                                   fraud=label(True)))
            return self._valid(self._event(account, t))  # the genuine payment at home
        if kind == "device_burst":
            offsets = sorted(rng.uniform(0, 600) for _ in range(DEVICE_BURST_SIZE - 1))
            for i, off in enumerate(offsets, start=1):
                self._schedule(t + timedelta(seconds=off),
                               lambda due, i=i: self._valid(self._event(account, due, device=letters_id(rng, "dev_", 10)),
                                                            fraud=label(i >= DEVICE_DETECTABLE_FROM)))
            return self._valid(self._event(account, t, device=letters_id(rng, "dev_", 10)), fraud=label(False))
        # card testing: many small amounts on one card
        card_index = rng.randrange(len(account.cards))
        offsets = sorted(rng.uniform(0, 240) for _ in range(CARD_TEST_SIZE - 1))
        small = lambda: rng.uniform(*SMALL_AMOUNT_USD)  # noqa: E731
        for i, off in enumerate(offsets, start=1):
            self._schedule(t + timedelta(seconds=off),
                           lambda due, i=i: self._valid(self._event(account, due, usd=small(), card_index=card_index),
                                                        fraud=label(i >= CARD_TEST_DETECTABLE_FROM)))
        return self._valid(self._event(account, t, usd=small(), card_index=card_index), fraud=label(False))

    # -- the stream -----------------------------------------------------------------------
    def __iter__(self) -> Iterator[Message]:
        o, rng = self.o, self.rng
        late_after = max(1, int(o.count * 0.02))
        for i in range(o.count):
            if self._scheduled and self._scheduled[0].due <= self.t:
                item = heapq.heappop(self._scheduled)
                msg = item.build(item.due)
                self._recent_valid.append(msg)
                yield msg
                continue
            self.t += timedelta(seconds=rng.expovariate(o.business_tps))
            u = rng.random()
            if u < o.duplicate_ratio and self._recent_valid:
                original = rng.choice(self._recent_valid)
                yield Message(key=original.key, value=original.value, kind="duplicate",
                              transaction_id=original.transaction_id)
                continue
            u -= o.duplicate_ratio
            if u < o.late_ratio and i >= late_after:
                behind = timedelta(seconds=rng.uniform(*(d.total_seconds() for d in LATE_BEHIND)))
                doc = self._event(rng.choice(self.pop.accounts), self.t - behind)
                yield self._valid(doc, kind="late")
                continue
            u -= o.late_ratio
            if u < o.malformed_ratio:
                kind = malformed.KINDS[self._mal_cycle % len(malformed.KINDS)]
                self._mal_cycle += 1
                account = rng.choice(self.pop.accounts)
                doc = self._event(account, self.t)
                key = None if kind == "empty_message" else account.account_id.encode()
                yield Message(key=key, value=malformed.corrupt(kind, doc, rng), kind="malformed",
                              malformed_kind=kind, transaction_id=doc["transaction_id"])
                continue
            u -= o.malformed_ratio
            if u < o.fraud_ratio:
                msg = self._start_scenario()
            else:
                msg = self._valid(self._event(rng.choice(self.pop.accounts), self.t))
            self._recent_valid.append(msg)
            yield msg

