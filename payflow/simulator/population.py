"""A deterministic population of accounts, cards and merchants, made with Faker.

Cards are generated, Luhn-valid test PANs (never real ones) across brands and lengths.
"""
from __future__ import annotations

import random
import string
from dataclasses import dataclass, field
from datetime import datetime

from payflow.stages.cards import BRANDS, luhn_check_digit

# region -> (IPv4 first octets used there, currencies used there)
REGIONS: dict[str, tuple[tuple[int, ...], tuple[str, ...]]] = {
    "us-east": ((3, 18, 23, 34), ("USD",)),
    "us-west": ((13, 44, 52, 54), ("USD",)),
    "eu-west": ((31, 46, 77, 81), ("EUR", "GBP")),
    "eu-central": ((78, 85, 91, 93), ("EUR", "CHF")),
    "ap-northeast": ((110, 126, 133, 153), ("JPY", "KRW")),
    "ap-south": ((103, 106, 117, 157), ("INR", "SGD")),
    "sa-east": ((177, 179, 186, 187), ("BRL",)),
    "me-central": ((37, 94, 151, 188), ("KWD", "BHD")),
    "oc-east": ((1, 101, 110, 203), ("AUD",)),
}
# brand weights: mostly 16-digit, some Amex and Diners, a few 19-digit PANs
BRAND_WEIGHTS = {"visa": 40, "mastercard": 30, "discover": 8, "amex": 12, "diners": 4, "visa19": 3, "unionpay19": 3}
MERCHANT_CATEGORIES = ("grocery", "fuel", "travel", "electronics", "restaurants", "utilities",
                       "pharmacy", "digital-goods", "apparel", "marketplace")


def letters_id(rng: random.Random, prefix: str, n: int = 12) -> str:
    """Ids with letters only: no digit runs, so no id can ever look like a PAN."""
    return prefix + "".join(rng.choices(string.ascii_lowercase, k=n))


@dataclass
class Card:
    pan: str = field(repr=False)
    cvv: str = field(repr=False)
    expiry: str = field(repr=False)
    brand: str


@dataclass
class Account:
    account_id: str
    region: str
    currency: str
    email: str
    cards: list[Card]
    devices: list[str]


@dataclass
class Merchant:
    merchant_id: str
    category: str
    region: str


def make_pan(rng: random.Random, brand: str) -> tuple[str, str]:
    prefixes, length, cvv_len = BRANDS[brand]
    prefix = rng.choice(prefixes)
    body = prefix + "".join(rng.choices(string.digits, k=length - len(prefix) - 1))
    pan = body + luhn_check_digit(body)
    cvv = "".join(rng.choices(string.digits, k=cvv_len))
    return pan, cvv


def make_card(rng: random.Random, start: datetime) -> Card:
    brand = rng.choices(list(BRAND_WEIGHTS), weights=list(BRAND_WEIGHTS.values()))[0]
    pan, cvv = make_pan(rng, brand)
    year = (start.year + rng.randint(1, 5)) % 100
    return Card(pan=pan, cvv=cvv, expiry=f"{rng.randint(1, 12):02d}/{year:02d}", brand=brand)


def ip_in(rng: random.Random, region: str) -> str:
    first = rng.choice(REGIONS[region][0])
    return f"{first}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"


@dataclass
class Population:
    accounts: list[Account]
    merchants: list[Merchant]

    @classmethod
    def build(cls, seed: int, n_accounts: int, n_merchants: int, start: datetime) -> "Population":
        from faker import Faker  # the `simulate` extra: the worker and reconcile do not need it

        rng = random.Random(f"population-{seed}")
        fake = Faker()
        fake.seed_instance(seed)
        regions = list(REGIONS)
        accounts = []
        for _ in range(n_accounts):
            region = rng.choice(regions)
            n_cards = rng.choices((1, 2, 3), weights=(70, 25, 5))[0]
            n_devices = rng.choices((1, 2, 3), weights=(60, 30, 10))[0]
            accounts.append(Account(
                account_id=letters_id(rng, "acct_"),
                region=region,
                currency=rng.choice(REGIONS[region][1]),
                email=fake.unique.email(),
                cards=[make_card(rng, start) for _ in range(n_cards)],
                devices=[letters_id(rng, "dev_", 10) for _ in range(n_devices)],
            ))
        merchants = [Merchant(letters_id(rng, "mrch_", 10), rng.choice(MERCHANT_CATEGORIES), rng.choice(regions))
                     for _ in range(n_merchants)]
        return cls(accounts, merchants)
