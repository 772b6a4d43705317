"""Labelled payment traffic for the fraud evaluation, written from published typologies
(docs/fraud.md cites them), independently of payflow's simulator and of the scoring rules:
attackers sit just under every threshold the old rules documented (5 payments in 5 minutes,
under 5 USD, over 5,000 USD, 4 devices in 30 minutes, region changes within 30 minutes).

Every payment carries a label: its scenario, whether it is fraud, and whether a stream
scorer could know by then (`detectable`: the pattern exists at that payment, e.g. the third
card-testing attempt, not the first; friendly fraud never is). Same seed, same traffic.
"""
from __future__ import annotations

import random
import string
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal
from typing import Iterator

import orjson

from payflow.simulator.population import REGIONS
from payflow.stages import currencies
from payflow.stages.cards import BRANDS, luhn_check_digit

DAY = 86_400.0
HOUR = 3_600.0

# an IP geolocation database often places a mobile carrier's addresses one region over
NEIGHBOUR = {"us-east": "us-west", "us-west": "us-east", "eu-west": "eu-central", "eu-central": "eu-west",
             "ap-northeast": "ap-south", "ap-south": "ap-northeast", "sa-east": "us-east",
             "me-central": "eu-central", "oc-east": "ap-northeast"}
# a traveller's or attacker's destination: another continent
FAR = {"us-east": "eu-west", "us-west": "ap-northeast", "eu-west": "us-east", "eu-central": "ap-south",
       "ap-northeast": "us-west", "ap-south": "eu-central", "sa-east": "eu-west", "me-central": "us-east",
       "oc-east": "us-west"}
# hours of a scheduled flight between FAR pairs, doors to doors (lower bound used)
FLIGHT_HOURS = 9.0

LEGIT = ("everyday", "new_customer", "shopping_spree", "large_purchase", "phone_upgrade", "payroll",
         "marketplace_payout", "subscription_billing", "traveller", "commuter", "household_card",
         "in_app_micro", "mobile_ip_neighbour")
FRAUD = ("card_testing_burst", "card_testing_5_10usd", "card_testing_slow_drip", "card_testing_many_accounts",
         "bin_attack", "account_takeover_mid", "account_takeover_just_under_5000", "bust_out",
         "mule_fan_out_slow", "low_and_slow_velocity", "impossible_travel_late", "device_farm_3",
         "friendly_fraud")


def ident(rng: random.Random, prefix: str, n: int = 12) -> str:
    """Letters only: no id can look like a card number."""
    return prefix + "".join(rng.choices(string.ascii_lowercase, k=n))


def pan_with_bin(rng: random.Random, bin6: str, length: int = 16) -> str:
    body = bin6 + "".join(rng.choices(string.digits, k=length - len(bin6) - 1))
    return body + luhn_check_digit(body)


def new_bin(rng: random.Random) -> str:
    prefixes, _, _ = BRANDS[rng.choice(("visa", "mastercard", "discover"))]
    prefix = rng.choice(prefixes)
    return (prefix + "".join(rng.choices(string.digits, k=6)))[:6]


@dataclass
class Card:
    pan: str = field(repr=False)
    expiry: str = field(repr=False)
    cvv: str = field(repr=False)


@dataclass
class Account:
    account_id: str
    region: str
    currency: str
    median_usd: float
    cards: list[Card]
    devices: list[str]
    payees: list[str]
    kind: str = "consumer"  # the account type the business knows (reference data)


@dataclass
class Labelled:
    event_time: float
    doc: dict
    scenario: str
    fraud: bool
    detectable: bool


class Traffic:
    """Accounts and their payments over `days` of event time ending at `end`."""

    def __init__(self, seed: int = 29, end: datetime | None = None, days: float = 14.0, scale: float = 1.0):
        self.rng = random.Random(f"fraudeval-{seed}")
        self.end = (end or datetime.now(timezone.utc) - timedelta(hours=1)).timestamp()
        self.start = self.end - days * DAY
        self.scale = scale
        self.events: list[Labelled] = []
        self.account_kinds: dict[str, str] = {}
        self.merchants = [ident(self.rng, "mrch_", 10) for _ in range(400)]

    # -- building blocks -------------------------------------------------------------------
    def n(self, count: int) -> int:
        return max(1, round(count * self.scale))

    def card(self, bin6: str | None = None) -> Card:
        rng = self.rng
        end_year = datetime.fromtimestamp(self.end, timezone.utc).year
        return Card(pan_with_bin(rng, bin6 or new_bin(rng)), f"{rng.randint(1, 12):02d}/{(end_year + rng.randint(1, 4)) % 100:02d}",
                    "".join(rng.choices(string.digits, k=3)))

    def account(self, *, region: str | None = None, median: float | None = None, kind: str = "consumer",
                devices: int | None = None) -> Account:
        rng = self.rng
        region = region or rng.choice(list(REGIONS))
        acct = Account(ident(rng, "acct_"), region, rng.choice(REGIONS[region][1]),
                       median if median is not None else min(max(rng.lognormvariate(3.6, 0.8), 4.0), 900.0),
                       [self.card() for _ in range(rng.choices((1, 2), weights=(80, 20))[0])],
                       [ident(rng, "dev_", 10) for _ in range(devices or rng.choices((1, 2), weights=(70, 30))[0])],
                       [ident(rng, "acct_") for _ in range(rng.randint(2, 6))] + rng.sample(self.merchants, 8), kind)
        if kind != "consumer":
            self.account_kinds[acct.account_id] = kind
        return acct

    def amount(self, acct: Account, usd: float) -> str:
        scale = currencies.minor_units(acct.currency) or 0
        quantum = Decimal(1).scaleb(-scale)
        rate = currencies.CURRENCIES[acct.currency][1]
        value = (Decimal(repr(round(usd, 4))) / rate).quantize(quantum, rounding=ROUND_HALF_UP)
        return str(max(value, quantum))

    def usual_usd(self, acct: Account) -> float:
        return acct.median_usd * self.rng.lognormvariate(0.0, 0.45)

    def ip(self, region: str) -> str:
        rng = self.rng
        return f"{rng.choice(REGIONS[region][0])}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"

    def pay(self, acct: Account, t: float, scenario: str, *, fraud: bool = False, detectable: bool | None = None,
            usd: float | None = None, region: str | None = None, device: str | None = None,
            card: Card | None = None, receiver: str | None = None, ip: str | None = None,
            merchant: str | None = None) -> None:
        if not (self.start <= t <= self.end):
            return
        rng = self.rng
        card = card or rng.choice(acct.cards)
        region = region or acct.region
        doc = {
            "schema_version": 1,
            "transaction_id": ident(rng, "txn_", 20),
            "event_time": datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "sender_account_id": acct.account_id,
            "receiver_account_id": receiver or rng.choice(acct.payees),
            "amount": self.amount(acct, usd if usd is not None else self.usual_usd(acct)),
            "currency": acct.currency,
            "credit_card": card.pan,
            "cvv": card.cvv,
            "card_expiry": card.expiry,
            "ip_address": ip or self.ip(region),
            "geo_region": region,
            "device_id": device or rng.choice(acct.devices),
            "merchant_id": merchant or rng.choice(self.merchants),
        }
        self.events.append(Labelled(t, doc, scenario, fraud, fraud if detectable is None else detectable))

    def history(self, acct: Account, scenario: str, per_day: float, until: float | None = None,
                since: float | None = None) -> None:
        """An account's ordinary payments: Poisson at `per_day`, usual amounts, own devices."""
        t = since if since is not None else self.start
        until = until if until is not None else self.end
        while True:
            t += self.rng.expovariate(per_day / DAY)
            if t > until:
                return
            self.pay(acct, t, scenario)

    def late_t(self, hours: float = 48.0) -> float:
        """A moment in the last `hours` of the window (attacks happen on warm accounts)."""
        return self.end - self.rng.uniform(0.5 * HOUR, hours * HOUR)

    # -- legitimate behaviour --------------------------------------------------------------
    def legit(self) -> None:
        rng = self.rng
        for _ in range(self.n(1400)):
            self.history(self.account(), "everyday", rng.uniform(0.3, 1.5))
        for _ in range(self.n(150)):  # joins during the window: no history at all
            acct = self.account()
            self.history(acct, "new_customer", rng.uniform(1, 3), since=self.late_t(96))
        for _ in range(self.n(120)):  # five to eight purchases in a quarter of an hour (holidays)
            acct = self.account()
            self.history(acct, "shopping_spree", 0.5)
            t = self.late_t()
            for _ in range(rng.randint(5, 8)):
                t += rng.uniform(30, 150)
                self.pay(acct, t, "shopping_spree")
        for _ in range(self.n(120)):  # tuition, a car deposit, a sofa: many times the usual, own device
            acct = self.account()
            self.history(acct, "large_purchase", 0.6)
            self.pay(acct, self.late_t(), "large_purchase", usd=rng.choice((acct.median_usd * rng.uniform(8, 30),
                                                                           rng.uniform(3_000, 22_000))))
        for _ in range(self.n(120)):  # a new phone: a new device from the same place, usual amounts
            acct = self.account()
            t = self.late_t(120)
            self.history(acct, "phone_upgrade", 0.8, until=t)
            acct.devices = [ident(rng, "dev_", 10)]
            self.history(acct, "phone_upgrade", 0.8, since=t)
        for _ in range(self.n(4)):  # payroll: every employee within minutes, weekly
            acct = self.account(median=3_000, kind="payroll", devices=1)
            staff = [ident(rng, "acct_") for _ in range(rng.randint(60, 220))]
            for week in range(3):
                t = self.end - rng.uniform(0, 2 * DAY) - week * 7 * DAY
                for person in staff:
                    t += rng.uniform(0.2, 2.0)
                    self.pay(acct, t, "payroll", usd=rng.uniform(1_500, 7_500), receiver=person)
        for _ in range(self.n(3)):  # marketplace: daily payouts to sellers
            acct = self.account(median=300, kind="marketplace", devices=1)
            sellers = [ident(rng, "acct_") for _ in range(rng.randint(100, 300))]
            for day in range(14):
                t = self.start + day * DAY + rng.uniform(0, 4 * HOUR)
                for seller in rng.sample(sellers, k=len(sellers) // 2):
                    t += rng.uniform(0.5, 5.0)
                    self.pay(acct, t, "marketplace_payout", usd=rng.lognormvariate(5.5, 1.0), receiver=seller)
        for _ in range(self.n(3)):  # a billing account: small recurring charges, in a nightly run
            acct = self.account(median=12, kind="billing", devices=1)
            for day in range(14):
                t = self.start + day * DAY + rng.uniform(0, HOUR)
                for _ in range(rng.randint(80, 160)):
                    t += rng.uniform(0.2, 3.0)
                    self.pay(acct, t, "subscription_billing", usd=rng.choice((4.99, 9.99, 12.99, 2.99, 19.99)),
                             receiver=rng.choice(self.merchants))
        for _ in range(self.n(120)):  # a flight to another continent, then payments there
            acct = self.account()
            t = self.late_t(96)
            self.history(acct, "traveller", 0.8, until=t)
            self.pay(acct, t, "traveller")
            away = FAR[acct.region]
            arrive = t + (FLIGHT_HOURS + rng.uniform(1, 6)) * HOUR
            self.history(acct, "traveller", 3, since=arrive, until=arrive + 2 * DAY)
            for e in self.events[-40:]:  # the payments abroad: there, same phone
                if e.doc["sender_account_id"] == acct.account_id and e.event_time >= arrive:
                    e.doc["geo_region"] = away
                    e.doc["ip_address"] = self.ip(away)
        for _ in range(self.n(120)):  # lives in one region, works in the neighbouring one
            acct = self.account()
            work = NEIGHBOUR[acct.region]
            t = self.start
            while t < self.end:
                t += rng.expovariate(2 / DAY)
                hour = (t % DAY) / HOUR
                self.pay(acct, t, "commuter", region=work if 8 <= hour < 18 else acct.region)
        for _ in range(self.n(120)):  # one card, three or four family members' phones
            acct = self.account(devices=rng.randint(3, 4))
            self.history(acct, "household_card", 1.5)
            t = self.late_t()
            for device in acct.devices:  # an evening of family shopping
                t += rng.uniform(60, 600)
                self.pay(acct, t, "household_card", device=device)
        for _ in range(self.n(120)):  # a game's in-app purchases: many under 5 USD in minutes
            acct = self.account(median=rng.uniform(2, 8))
            self.history(acct, "in_app_micro", 0.5)
            t = self.late_t()
            merchant = rng.choice(self.merchants)
            for _ in range(rng.randint(4, 9)):
                t += rng.uniform(20, 240)
                self.pay(acct, t, "in_app_micro", usd=rng.choice((0.99, 1.99, 2.99, 4.99)), merchant=merchant,
                         receiver=merchant)
        for _ in range(self.n(120)):  # a phone whose IP geolocates to the next region at times
            acct = self.account(devices=1)
            t = self.start
            while t < self.end:
                t += rng.expovariate(2 / DAY)
                self.pay(acct, t, "mobile_ip_neighbour",
                         region=NEIGHBOUR[acct.region] if rng.random() < 0.35 else acct.region)

    # -- fraud ------------------------------------------------------------------------------
    def fraud(self) -> None:
        rng = self.rng
        victims = [self.account() for _ in range(self.n(400))]
        for v in victims:
            self.history(v, "everyday", rng.uniform(0.3, 1.2))
        victims_left = iter(victims)

        for _ in range(self.n(30)):  # enumeration of one card's CVV/expiry, under 5 USD, in minutes
            acct = self.account()
            card, t = self.card(), self.late_t()
            for i in range(rng.randint(8, 25)):
                t += rng.uniform(5, 40)
                guess = Card(card.pan, f"{rng.randint(1, 12):02d}/{card.expiry[-2:]}", "".join(rng.choices(string.digits, k=3)))
                self.pay(acct, t, "card_testing_burst", fraud=True, detectable=i >= 2, usd=rng.uniform(0.5, 4.9),
                         card=guess)
        for _ in range(self.n(25)):  # the same, at 5-10 USD (just above the old small-amount line)
            acct = self.account()
            t = self.late_t()
            cards = [self.card() for _ in range(rng.randint(6, 15))]
            for i, card in enumerate(cards):
                t += rng.uniform(10, 50)
                self.pay(acct, t, "card_testing_5_10usd", fraud=True, detectable=i >= 2, usd=rng.uniform(5.0, 10.0),
                         card=card)
        for _ in range(self.n(20)):  # slow drip: one attempt every 80-200 s (under 4 in 10 minutes)
            acct = self.account()
            t = self.late_t()
            for i in range(rng.randint(15, 40)):
                t += rng.uniform(80, 200)
                self.pay(acct, t, "card_testing_slow_drip", fraud=True, detectable=i >= 3, usd=rng.uniform(0.5, 4.9),
                         card=self.card())
        for _ in range(self.n(10)):  # one stolen card tried from many fresh accounts, one try each
            card, t = self.card(), self.late_t()
            device = ident(rng, "dev_", 10)
            for i in range(rng.randint(15, 40)):
                acct = self.account(devices=1)
                t += rng.uniform(20, 120)
                guess = Card(card.pan, card.expiry, "".join(rng.choices(string.digits, k=3)))
                self.pay(acct, t, "card_testing_many_accounts", fraud=True, detectable=i >= 2,
                         usd=rng.uniform(0.5, 9.0), card=guess, device=device if rng.random() < 0.5 else None)
        for _ in range(self.n(10)):  # a BIN attack: generated numbers of one issuer range, many accounts
            bin6, t = new_bin(rng), self.late_t()
            for i in range(rng.randint(20, 50)):
                acct = self.account(devices=1)
                t += rng.uniform(10, 90)
                self.pay(acct, t, "bin_attack", fraud=True, detectable=i >= 3, usd=rng.uniform(0.5, 9.0),
                         card=self.card(bin6))
        for _ in range(self.n(60)):  # takeover: the attacker's device and place, a new payee, 3-12x usual
            v = next(victims_left)
            t, device, away = self.late_t(), ident(rng, "dev_", 10), rng.choice((v.region, FAR[v.region]))
            mule = ident(rng, "acct_")
            for _ in range(rng.randint(1, 4)):
                t += rng.uniform(60, 900)
                self.pay(v, t, "account_takeover_mid", fraud=True, usd=v.median_usd * rng.uniform(3, 12),
                         device=device, region=away, receiver=mule)
        for _ in range(self.n(40)):  # takeover cashing out just under 5,000 USD
            v = next(victims_left)
            t, device = self.late_t(), ident(rng, "dev_", 10)
            for _ in range(rng.randint(1, 3)):
                t += rng.uniform(120, 1200)
                self.pay(v, t, "account_takeover_just_under_5000", fraud=True, usd=rng.uniform(4_500, 4_990),
                         device=device, receiver=ident(rng, "acct_"))
        for _ in range(self.n(40)):  # bust-out: months of good behaviour, then everything at once
            acct = self.account(median=rng.uniform(20, 80))
            t = self.late_t(24)
            self.history(acct, "everyday", 1.0, until=t)
            for i in range(rng.randint(4, 9)):
                t += rng.uniform(300, 1800)
                self.pay(acct, t, "bust_out", fraud=True, detectable=i >= 0, usd=acct.median_usd * rng.uniform(10, 40),
                         receiver=ident(rng, "acct_"))
        for _ in range(self.n(40)):  # a mule account fanning out to many new payees, one every 3-10 min
            acct = self.account()
            t = self.late_t()
            self.history(acct, "everyday", 0.5, until=t)
            for i in range(rng.randint(8, 20)):
                t += rng.uniform(180, 600)
                self.pay(acct, t, "mule_fan_out_slow", fraud=True, detectable=i >= 2, usd=rng.uniform(200, 900),
                         receiver=ident(rng, "acct_"))
        for _ in range(self.n(40)):  # low and slow: 4 payments per 5 minutes for an hour, taken-over account
            v = next(victims_left)
            t = self.late_t()
            device = ident(rng, "dev_", 10)
            for i in range(rng.randint(12, 40)):
                t += rng.uniform(76, 110)
                self.pay(v, t, "low_and_slow_velocity", fraud=True, detectable=i >= 2, usd=self.usual_usd(v) * 2,
                         device=device, receiver=ident(rng, "acct_"))
        for _ in range(self.n(60)):  # impossible travel: abroad 40-240 min after the victim paid at home
            v = next(victims_left)
            t = self.late_t()
            self.pay(v, t, "everyday")
            device, away = ident(rng, "dev_", 10), FAR[v.region]
            t += rng.uniform(40, 240) * 60
            for _ in range(rng.randint(1, 4)):
                self.pay(v, t, "impossible_travel_late", fraud=True, usd=self.usual_usd(v) * 1.5, region=away,
                         device=device)
                t += rng.uniform(120, 1500)
            self.pay(v, t + rng.uniform(600, 3600), "everyday")  # the victim again, at home
        for _ in range(self.n(40)):  # an emulator farm: three new devices in 30 minutes (under four)
            v = next(victims_left)
            t = self.late_t()
            for i in range(3):
                device = ident(rng, "dev_", 10)
                for _ in range(rng.randint(1, 2)):
                    t += rng.uniform(60, 500)
                    self.pay(v, t, "device_farm_3", fraud=True, usd=self.usual_usd(v) * 2, device=device,
                             receiver=ident(rng, "acct_"))
        for _ in range(self.n(40)):  # friendly fraud: the cardholder's own purchase, disputed later
            v = next(victims_left)
            self.pay(v, self.late_t(), "friendly_fraud", fraud=True, detectable=False)

    def build(self) -> list[Labelled]:
        self.legit()
        self.fraud()
        self.events.sort(key=lambda e: (e.event_time, e.doc["transaction_id"]))
        return self.events


def messages(events: list[Labelled]) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) per payment, as the raw topic takes them (key = sender)."""
    for e in events:
        yield e.doc["sender_account_id"].encode(), orjson.dumps(e.doc)
