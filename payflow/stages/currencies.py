"""ISO 4217 currencies payflow accepts, with their minor-unit scale, and a static
USD rate used only by fraud scoring to compare amounts across currencies."""
from __future__ import annotations

from decimal import Decimal

# code -> (minor-unit digits, approximate USD per unit for risk thresholds only)
CURRENCIES: dict[str, tuple[int, Decimal]] = {
    "USD": (2, Decimal("1")),
    "EUR": (2, Decimal("1.08")),
    "GBP": (2, Decimal("1.27")),
    "CHF": (2, Decimal("1.13")),
    "CAD": (2, Decimal("0.73")),
    "AUD": (2, Decimal("0.66")),
    "SGD": (2, Decimal("0.74")),
    "BRL": (2, Decimal("0.18")),
    "INR": (2, Decimal("0.012")),
    "JPY": (0, Decimal("0.0067")),
    "KRW": (0, Decimal("0.00072")),
    "KWD": (3, Decimal("3.25")),
    "BHD": (3, Decimal("2.65")),
}


def minor_units(currency: str) -> int | None:
    entry = CURRENCIES.get(currency)
    return entry[0] if entry else None


def to_usd(amount: Decimal, currency: str) -> Decimal:
    return amount * CURRENCIES[currency][1]
