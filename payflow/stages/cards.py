"""Card-number facts: Luhn check, brands, and THE card-number detector.

`find_pans` is the one detector payflow has: the input guard (validation's
`card_data_in_field`), the DLQ masking (masking_remains), the log scrubber (logs) and the
PCI audit all use it. It finds every Luhn-valid window of 12 to 19 digits that starts with
an issuer prefix of `ISSUER_RANGES` and has a length that issuer uses,

- written with any mix of separators (`SEPARATORS`: white space, dash, dot, underscore,
  apostrophe and their Unicode look-alikes, invisible ones included) between any two digits, in any grouping (4-4-4-4, 4-6-5, 2-4-4-4-2,
  4.4.4.4, 4 4-4.4 ...);
- next to any character: a PAN directly after or before other digits ("1.4111…", "…1111.5")
  is found, because every window of a longer digit run that starts at a plausible prefix is
  examined. The price: a long number of another kind (19-digit ids, a float's fraction) can
  hold a Luhn-valid window by chance, and counts as a card number.

Up to three separators in a row still join ("4111 - 1111", two spaces); not joined: other
characters (comma, slash, colon, letters). Nothing inside an RFC 4122 UUID is a card
number (one random UUID in ~250 would otherwise hold one across its dashes).
Digits of any script count by their value (Arabic-Indic digits are a PAN too).
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from itertools import accumulate


# each digit doubled (minus 9 above 9), as a byte translation: the sums below run in C
_DOUBLED = bytes.maketrans(b"0123456789", b"0246813579")
_DOUBLED_VALUE = (0, 2, 4, 6, 8, 1, 3, 5, 7, 9)


def luhn_valid(digits: str) -> bool:
    """Luhn check of a digit string (digits of any script count by their value)."""
    if not digits.isascii():
        digits = "".join(str(unicodedata.digit(ch)) for ch in digits)
    raw = digits.encode("ascii")
    # from the right: odd positions as they are, even positions doubled; sum(bytes) counts
    # the ASCII codes, so take 48 ("0") off per digit
    return (sum(raw[-1::-2]) + sum(raw[-2::-2].translate(_DOUBLED)) - 48 * len(raw)) % 10 == 0


def luhn_check_digit(partial: str) -> str:
    for d in "0123456789":
        if luhn_valid(partial + d):
            return d
    raise AssertionError("unreachable")


# brand -> (IIN prefixes, PAN length, CVV length): what the simulator generates
BRANDS: dict[str, tuple[tuple[str, ...], int, int]] = {
    "visa": (("4",), 16, 3),
    "mastercard": (("51", "52", "53", "54", "55", "2221", "2720"), 16, 3),
    "discover": (("6011", "644", "65"), 16, 3),
    "amex": (("34", "37"), 15, 4),
    "diners": (("36", "38"), 14, 3),
    "visa19": (("4",), 19, 3),
    "unionpay19": (("62",), 19, 3),
}

# What the detector counts as a card number: (first, last) of a range of 4-digit prefixes,
# the PAN lengths used there (min, max) and the brands. Ranges may overlap (the lengths add
# up). 4, 5 and 6 are whole (Maestro's 50 and 56-69 at 12-19 digits cover the rest of 5 and
# 6); 1 (UATP, and epoch timestamps), 7 and 0 are not card prefixes.
ISSUER_RANGES: tuple[tuple[int, int, int, int, str], ...] = (
    (2200, 2205, 16, 19, "Mir, Borica"),
    (2221, 2720, 16, 16, "Mastercard 2-series"),
    (3000, 3059, 14, 19, "Diners Club 300-305"),
    (3095, 3095, 14, 19, "Diners Club 3095"),
    (3400, 3499, 15, 15, "American Express 34"),
    (3528, 3589, 16, 19, "JCB"),
    (3600, 3699, 14, 19, "Diners Club 36"),
    (3700, 3799, 15, 15, "American Express 37"),
    (3800, 3999, 14, 19, "Diners Club 38-39"),
    (4000, 4999, 13, 19, "Visa, Visa Electron, Elo"),
    (5000, 5099, 12, 19, "Maestro 50, Dankort, Verve"),
    (5100, 5599, 16, 16, "Mastercard 51-55"),
    (5600, 5999, 12, 19, "Maestro 56-59"),
    (6000, 6999, 12, 19, "Maestro 60-69, Discover 6011/644-649/65, UnionPay 62, RuPay 60"),
    (8100, 8299, 16, 19, "UnionPay 81, RuPay 81-82"),
    (9792, 9792, 16, 16, "Troy"),
)
PAN_MIN_DIGITS, PAN_MAX_DIGITS = 12, 19


def _lengths_by_prefix() -> list[int]:
    """4-digit prefix -> bit set of the PAN lengths its issuers use (bit n: n digits)."""
    table = [0] * 10000
    for first, last, shortest, longest, _ in ISSUER_RANGES:
        bits = 0
        for n in range(shortest, longest + 1):
            bits |= 1 << n
        for prefix in range(first, last + 1):
            table[prefix] |= bits
    return table


_LENGTHS = _lengths_by_prefix()

# single separators that may stand between two digits of a written card number
SEPARATORS = (" -.\t\n\r\v\f_'"  # ASCII: white space, dash, dot, underscore, apostrophe
              "\u00a0\u00ad\u00b7\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009"
              "\u200a\u200b\u200c\u200d\u2010\u2011\u2012\u2013\u2014\u2015\u2019\u2027\u202f\u205f"
              "\u2060\u2212\u3000\u30fb\u30fc\ufeff\uff0d\uff0e\uff3f")
# at most this many separators in a row still join two digits ("4111 - 1111", "4111  1111")
MAX_SEPARATORS = 3
_SEP_CLASS = "[" + re.escape(SEPARATORS) + "]"
# a digit run: digits with at most MAX_SEPARATORS separators between two; 12 digits at least
_RUN = re.compile(r"\d(?:" + _SEP_CLASS + r"{0," + str(MAX_SEPARATORS) + r"}\d){11,}")
# the pre-check's regex: 12 digits with any number of separators between (a superset of _RUN)
_MAYBE_PAN = re.compile(r"\d(?:" + _SEP_CLASS + r"*\d){11}")

# ASCII digits -> "0", the ASCII separators deleted, every other byte -> "x"
_DIGIT_CLASSES = bytes(ord("0") if 48 <= b <= 57 else ord("x") for b in range(256))
_ASCII_SEPARATORS = SEPARATORS[:SEPARATORS.index("\u00a0")].encode("ascii")
_TWELVE_DIGITS = b"0" * PAN_MIN_DIGITS


def may_hold_pan(text: str) -> bool:
    """Cheap pre-check: False means find_pans(text) finds nothing.

    Exactly `_MAYBE_PAN` (12 digits with only separators between), run on bytes for ASCII
    text: digits mapped to "0", separators deleted, anything else to "x", then one substring
    search, all in C. Text with non-ASCII characters takes the regex.
    """
    if not text.isascii():
        return _MAYBE_PAN.search(text) is not None
    return _TWELVE_DIGITS in text.encode("ascii").translate(_DIGIT_CLASSES, _ASCII_SEPARATORS)


@dataclass(frozen=True)
class PanHit:
    """A card number found: text[start:end] (separators included), its digits in ASCII."""
    start: int
    end: int
    digits: str

    @property
    def masked(self) -> str:
        return mask_digits(self.digits)


def mask_digits(digits: str) -> str:
    return "X" * (len(digits) - 4) + digits[-4:]


def _run_hits(run_start: int, run: str) -> list[PanHit]:
    """The card numbers in one digit run (a _RUN match at run_start of its text)."""
    if run.isascii():
        digits = run.encode("ascii").translate(None, _ASCII_SEPARATORS).decode("ascii")
    else:
        digits = _ascii_digits(run)
    n = len(digits)
    # the windows' starts at a plausible prefix, with the PAN lengths used there: most runs
    # that are not card numbers (IP addresses, other ids) end here
    starts = [(i, lengths) for i in range(n - PAN_MIN_DIGITS + 1) if (lengths := _LENGTHS[int(digits[i:i + 4])])]
    if not starts:
        return []
    values = [ord(ch) - 48 for ch in digits]
    # Luhn sums of every window in O(1): for a window ending at e, a digit at j is doubled
    # when e - j is odd, i.e. when j's parity differs from e's. sums[p][k] is the sum of
    # the first k digits weighted for windows ending at a position of parity p.
    sums = (
        [0, *accumulate(v if j % 2 == 0 else _DOUBLED_VALUE[v] for j, v in enumerate(values))],
        [0, *accumulate(_DOUBLED_VALUE[v] if j % 2 == 0 else v for j, v in enumerate(values))],
    )
    positions: list[int] = []
    hits: list[PanHit] = []
    for i, lengths in starts:
        for length in range(PAN_MIN_DIGITS, min(PAN_MAX_DIGITS, n - i) + 1):
            if lengths >> length & 1:
                end = i + length
                weighted = sums[(end - 1) % 2]
                if (weighted[end] - weighted[i]) % 10 == 0:
                    if not positions:
                        positions = [k for k, ch in enumerate(run) if ch not in SEPARATORS]
                    hits.append(PanHit(run_start + positions[i], run_start + positions[end - 1] + 1, digits[i:end]))
    return hits


# an RFC 4122 / 9562 UUID (version 1-8, variant 10xx): digits joined across its dashes hold a
# plausible, Luhn-valid window in about one random UUID of 250, the usual transaction id. Its
# edges are hex edges, not word edges: a UUID follows a name with no separator in binary
# files (RocksDB writes its db identity right after "rocksdb.creating.db.identity")
_UUID = re.compile(r"(?<![0-9A-Fa-f])[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[1-8][0-9A-Fa-f]{3}-[89abAB][0-9A-Fa-f]{3}-"
                   r"[0-9A-Fa-f]{12}(?![0-9A-Fa-f])")


def find_pans(text: str) -> list[PanHit]:
    """Every card number in text (see the module docstring), in order of start.

    Overlapping windows of one digit run are each reported: a run that is one PAN usually
    gives one hit, a long run of digits can give several. A hit inside a UUID is not
    reported (UUIDs are the usual transaction ids): a card number can be made to look like
    one only with its digits fitted to the version and variant positions, not by accident.
    """
    if not may_hold_pan(text):
        return []
    hits: list[PanHit] = []
    for m in _RUN.finditer(text):
        hits += _run_hits(m.start(), m.group())
    if hits and "-" in text:
        uuids = [m.span() for m in _UUID.finditer(text)]
        if uuids:
            hits = [h for h in hits if not any(start <= h.start and h.end <= end for start, end in uuids)]
    return hits


def find_pans_bytes(data: bytes) -> list[PanHit]:
    """find_pans over binary data (RocksDB files, raw records): its Latin-1 view, so a hit's
    start and end are byte offsets. Card numbers written as ASCII digits are found; ones in
    another encoding of digits (UTF-16, BCD) are not."""
    return find_pans(data.decode("latin-1"))


def mask_pans(text: str) -> str:
    """text with every digit run that holds a card number masked to its last four digits
    (the whole run, separators dropped); other runs and text are kept as they are."""
    if not may_hold_pan(text):
        return text

    def _mask(m: re.Match[str]) -> str:
        run = m.group()
        if not _run_hits(m.start(), run):
            return run
        return mask_digits(_ascii_digits(run))

    return _RUN.sub(_mask, text)


def _ascii_digits(run: str) -> str:
    return "".join(str(unicodedata.digit(ch)) for ch in run if ch not in SEPARATORS)


def redact_card_like(text: str) -> str:
    """Mask every run of 12 or more digits (single separators between), Luhn-valid or not.

    Used on the remains of garbage messages before they go to the DLQ and on log lines: a
    broken message may hold a PAN that no parser recognised, so anything card-shaped is
    masked. Its runs are find_pans' runs, so whatever find_pans finds is masked here.
    """
    if not may_hold_pan(text):
        return text
    return _RUN.sub(lambda m: mask_digits(_ascii_digits(m.group())), text)


def brand_of(pan: str) -> str:
    n = len(pan)
    if pan.startswith(("34", "37")) and n == 15:
        return "amex"
    if pan.startswith(("36", "38", "300", "301", "302", "303", "304", "305")) and n == 14:
        return "diners"
    if pan.startswith("4"):
        return "visa"
    if pan[:2] in {"51", "52", "53", "54", "55"} or 2221 <= int(pan[:4]) <= 2720:
        return "mastercard"
    if pan.startswith(("6011", "644", "645", "646", "647", "648", "649", "65")):
        return "discover"
    if pan.startswith("62"):
        return "unionpay"
    return "other"
