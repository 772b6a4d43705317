"""Card-number facts: Luhn check, brands, and THE card-number detector.

`find_pans` is the one detector payflow has: the input guard (validation), the keyed
tokens in identifier fields (mask), the DLQ masking (redact), the log scrubber (logs) and
the PCI audit all use it. It finds every Luhn-valid window of 12 to 19 digits that starts
with an issuer prefix of `ISSUER_RANGES` and has a length that issuer uses,

- written with up to three joiners (white space, invisible characters, combining marks,
  dash, dot, underscore, apostrophe and their Unicode look-alikes) between any two digits,
  in any grouping (4-4-4-4, 4-6-5, 2-4-4-4-2, 4.4.4.4, 4 4-4.4 ...);
- or across listing gaps (up to eight of any other punctuation mark, symbol, control or
  format character: slash, plus, colon, comma, pipe, semicolon, bullet, Arabic comma, unit
  separator...; or longer white space: "4111/1111/…", "4111|1111|…", "4111    1111    …")
  when written as a card is, in whole groups of four (the last 1 to 4 digits), 4-6-5 or
  4-6-4, the same gap throughout: lists, tables and times of day use those gaps too, and
  any window across them would make most of them card numbers. The groups may also be
  joined to other digits or to each other by joining gaps ("2026-4111|1111|…",
  "…|1111-01", "4111-1111|1111-1111"), every listing gap the same;
- next to any character: a PAN directly after or before other digits ("1.4111…", "…1111.5")
  is found, because every window of a longer digit run that starts at a plausible prefix is
  examined. The price: a long number of another kind (19-digit ids, a float's fraction) can
  hold a Luhn-valid window by chance, and counts as a card number.

Not joined: letters and other characters. Identifiers recognised by their own rules are not
card numbers: nothing inside an RFC 4122 UUID, an IBAN whose ISO 13616 check holds, or a
date and time (docs/compliance.md, "What counts as a card number"). Digits of any script
count by their value (Arabic-Indic digits are a PAN too). The cost is linear in the text.
"""
from __future__ import annotations

import re
import unicodedata
from bisect import bisect_right
from dataclasses import dataclass
from itertools import accumulate
from typing import Callable


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

# What may stand between two digits of a written card number. A gap of up to MAX_JOINERS
# of the JOINERS (white space, invisible characters, dash, dot, underscore, apostrophe and
# their look-alikes) joins digits anywhere: "4111 1111-1111.1111", "41-1111 1111.1111-11",
# "1.4111…". A gap with a LISTING mark (any other punctuation, symbol, control or format
# character: slash, plus, colon, comma, pipe, bullet...) or
# longer white space ("4111/1111/…", "4111,1111,…", "4111    1111    …") is how lists, tables,
# times and ratios are written too, so digits across such gaps count as one card number only
# when they are written as one: whole groups of four (the last 1 to 4 digits) or 4-6-5 /
# 4-6-4, every gap between them the same (see _windows).
SPACE_SEPARATORS = (" \t\n\r\v\f\u00a0\u00ad\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
                    "\u2009\u200a\u200b\u200c\u200d\u2028\u2029\u202f\u205f\u2060\u3000\ufeff")
# ... and the combining marks (Unicode Mn, Me: a keycap, an underline, a variation selector
# written on a digit hold it together with the next one as invisibly as a zero-width space)
JOINING_MARKS = ("-._'\u00b7\u066b\u2010\u2011\u2012\u2013\u2014\u2015\u2019\u2027\u2212\u30fb\u30fc"
                 "\uff0d\uff0e\uff3f"
                 + "".join(chr(c) for c in range(0x10000) if unicodedata.category(chr(c)) in ("Mn", "Me")))


def _listing_marks() -> str:
    """Every punctuation mark, symbol, control and format character of the Basic
    Multilingual Plane that is not a joiner: "4111|1111|…", "4111;1111;…", "4111•1111•…",
    "4111،1111،…", "4111\x1f1111\x1f…" (Unicode categories P*, S*, Cc and Cf)."""
    joiners = set(SPACE_SEPARATORS + JOINING_MARKS)
    out = []
    for code in range(0x10000):
        ch = chr(code)
        category = unicodedata.category(ch)
        if (category[0] in "PS" or category in ("Cc", "Cf")) and ch not in joiners:
            out.append(ch)
    return "".join(out)


LISTING_MARKS = _listing_marks()
JOINERS = SPACE_SEPARATORS + JOINING_MARKS
SEPARATORS = JOINERS + LISTING_MARKS
SEPARATOR_SET = frozenset(SEPARATORS)  # for one character's membership
_JOINER_SET = frozenset(JOINERS)
MAX_JOINERS = 3
MAX_MARKS = 8  # "4111....1111....", "4111 - / - 1111 - / - …"
_SPACES = "[" + re.escape(SPACE_SEPARATORS) + "]"
_MARKS = "[" + re.escape(JOINING_MARKS + LISTING_MARKS) + "]"
# any gap: white space, and at most MAX_MARKS marks among it. The two classes are disjoint,
# so the regex never tries one gap two ways (linear in the text)
_GAP = f"{_SPACES}*(?:{_MARKS}{_SPACES}*){{0,{MAX_MARKS}}}"
# a digit run: digits joined by any gaps; 12 digits at least
_RUN = re.compile(r"\d(?:" + _GAP + r"\d){11,}")
# a group: digits joined by joining gaps only
_GROUP = re.compile(r"\d(?:[" + re.escape(JOINERS) + r"]{0," + str(MAX_JOINERS) + r"}\d)*")
# a run holding a gap that is not a joining one (digits of one run are separated by at most MAX_MARKS + spaces)
_LISTED = re.compile("[" + re.escape(LISTING_MARKS) + "]|[" + re.escape(JOINERS) + "]{" + str(MAX_JOINERS + 1) + "}")
# a digit sequence of a run (between any two gaps)
_DIGITS = re.compile(r"\d+")
# runs of 12+ digits that masking takes whatever their Luhn check (redact_card_like)
_JOINED_RUN = re.compile(r"\d(?:[" + re.escape(JOINERS) + r"]{0," + str(MAX_JOINERS) + r"}\d){11,}")
# the pre-check's regex: 12 digits with any number of separators between (a superset of _RUN)
_MAYBE_PAN = re.compile(r"\d(?:[" + re.escape(SEPARATORS) + r"]*\d){11}")

# ASCII digits -> "0", the ASCII separators deleted, every other byte -> "x"
_DIGIT_CLASSES = bytes(ord("0") if 48 <= b <= 57 else ord("x") for b in range(256))
_ASCII_SEPARATORS = "".join(ch for ch in SEPARATORS if ch.isascii()).encode("ascii")
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


def _run_digits(run: str) -> str:
    """The digits of a run, in ASCII."""
    if run.isascii():
        return run.encode("ascii").translate(None, _ASCII_SEPARATORS).decode("ascii")
    return "".join(str(unicodedata.decimal(ch)) for ch in run if ch.isdecimal())


def _run_windows(digits: str) -> list[tuple[int, int]]:
    """(start, end) in `digits` of every Luhn-valid window at a plausible issuer prefix and a
    length used there. One pass: the Luhn sum of any window comes from two running sums
    (for a window ending at e, the digit at j is doubled when e - j is odd), so the cost is
    linear in the run, never a check per window."""
    n = len(digits)
    lengths = _LENGTHS
    starts = [(i, bits) for i in range(n - PAN_MIN_DIGITS + 1) if (bits := lengths[int(digits[i:i + 4])])]
    if not starts:
        return []
    values = [ord(ch) - 48 for ch in digits]
    doubled = _DOUBLED_VALUE
    # sums[p][k]: the first k digits, weighted for windows ending at a position of parity p
    sums = (
        [0, *accumulate(v if j % 2 == 0 else doubled[v] for j, v in enumerate(values))],
        [0, *accumulate(doubled[v] if j % 2 == 0 else v for j, v in enumerate(values))],
    )
    out: list[tuple[int, int]] = []
    for i, bits in starts:
        for length in range(PAN_MIN_DIGITS, min(PAN_MAX_DIGITS, n - i) + 1):
            if bits >> length & 1:
                end = i + length
                weighted = sums[(end - 1) % 2]
                if (weighted[end] - weighted[i]) % 10 == 0:
                    out.append((i, end))
    return out


def _card_layout(counts: list[int]) -> bool:
    """Digit groups written as a card number is: fours (the last 1 to 4), or Amex's 4-6-5 and
    Diners' 4-6-4."""
    last = counts[-1]
    return (1 <= last <= 4 and all(c == 4 for c in counts[:-1])) or counts == [4, 6, 5] or counts == [4, 6, 4]


def _windows(run: str, digits: str) -> list[tuple[int, int]]:
    """(start, end) in `digits` (the run's) of every card number in a digit run: any window
    inside a group (digits joined by joining gaps); whole groups across listing gaps written
    in a card layout, every gap the same; and whole digit sequences in a card layout, joining
    gaps anywhere between them and every listing gap written the same (white space aside): a
    card number's groups joined to other digits ("2026-4253|6600|8229|4841",
    "4254|6629|8117|6813-01") or in pairs ("4793-7429|9515-9464")."""
    if _LISTED.search(run) is None:
        return _run_windows(digits)
    groups = [m.span() for m in _GROUP.finditer(run)]
    counts = [len(_run_digits(run[a:b])) for a, b in groups]
    firsts = [0, *accumulate(counts)]
    out: list[tuple[int, int]] = []
    for k, count in enumerate(counts):
        if count >= PAN_MIN_DIGITS:
            first = firsts[k]
            out += [(first + i, first + e) for i, e in _run_windows(digits[first:first + count])]
    out += _layout_windows(digits, counts, [run[groups[k][1]:groups[k + 1][0]] for k in range(len(groups) - 1)])
    sequences = [m.span() for m in _DIGITS.finditer(run)]
    out += _layout_windows(digits, [b - a for a, b in sequences],
                           [_listing_mark(run[sequences[k][1]:sequences[k + 1][0]]) for k in range(len(sequences) - 1)])
    return sorted(set(out))


def _listing_mark(gap: str) -> str | None:
    """None for a joining gap (MAX_JOINERS joiners at most); else what the listing gap is
    written with, white space aside ("," for ", " and ","; " " for long white space)."""
    if len(gap) <= MAX_JOINERS and all(ch in _JOINER_SET for ch in gap):
        return None
    marks = "".join(ch for ch in gap if ch not in SPACE_SEPARATORS)
    return marks or " "


def _layout_windows(digits: str, counts: list[int], gaps: list[str | None]) -> list[tuple[int, int]]:
    """Windows of whole groups (group k has counts[k] digits, gaps[k] follows it: None for a
    joining gap, which may stand anywhere; else how the gap is written) in a card layout
    across at least one other gap, every such gap written the same, Luhn-valid at a prefix
    that uses the window's length."""
    firsts = [0, *accumulate(counts)]
    out: list[tuple[int, int]] = []
    for i in range(len(counts) - 1):
        if counts[i] != 4:  # every card layout starts with a group of four
            continue
        first = firsts[i]
        listing: str | None = None
        for j in range(i + 1, len(counts)):
            gap = gaps[j - 1]
            if gap is not None:
                if listing is not None and gap != listing:
                    break
                listing = gap
            length = firsts[j + 1] - first
            if length > PAN_MAX_DIGITS:
                break
            if listing is not None and length >= PAN_MIN_DIGITS and _card_layout(counts[i:j + 1]):
                window = digits[first:first + length]
                if _LENGTHS[int(window[:4])] >> length & 1 and luhn_valid(window):
                    out.append((first, first + length))
    return out


# Identifiers whose structure no card number has by accident, recognised by their own rules:
# a card number inside one is not reported (see find_pans).
# - an RFC 4122 / 9562 UUID (version 1-8, variant 10xx). Its edges are hex edges, not word
#   edges: a UUID follows a name with no separator in binary files (RocksDB writes its db
#   identity right after "rocksdb.creating.db.identity")
_UUID = re.compile(r"(?<![0-9A-Fa-f])[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[1-8][0-9A-Fa-f]{3}-[89abAB][0-9A-Fa-f]{3}-"
                   r"[0-9A-Fa-f]{12}(?![0-9A-Fa-f])")
# - an IBAN (ISO 13616): country code, two check digits, the country's BBAN length, electronic
#   form or printed in groups of four; valid when its mod-97 check holds (ISO 7064 MOD 97-10)
IBAN_LENGTHS: dict[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BI": 27,
    "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27, "DK": 18, "DO": 28,
    "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23,
    "GL": 18, "GR": 27, "GT": 28, "HN": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26,
    "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21,
    "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28,
    "NL": 18, "NO": 15, "OM": 23, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22,
    "RU": 33, "SA": 24, "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25,
    "SV": 28, "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}
_IBAN_CANDIDATE = re.compile(r"(?<![0-9A-Za-z])[A-Za-z]{2}[0-9]{2}(?: ?[0-9A-Za-z]){11,30}")
# - a date and time ("2026-11-20 10:00:00,123", as logging writes it): joined by the
#   separators, its digits make a long run
_DATE_TIME = re.compile(r"(?<!\d)\d{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])[Tt ](?:[01]\d|2[0-3]):[0-5]\d"
                        r"(?::[0-5]\d(?:[.,]\d{1,9})?)?(?!\d)")


def iban_valid(text: str) -> bool:
    """An IBAN (spaces allowed) of its country's length whose ISO 13616 check holds."""
    compact = text.replace(" ", "").upper()
    if IBAN_LENGTHS.get(compact[:2]) != len(compact) or not compact.isascii() or not compact.isalnum():
        return False
    return int("".join(str(int(ch, 36)) for ch in compact[4:] + compact[:4])) % 97 == 1


def _iban_spans(text: str) -> list[tuple[int, int]]:
    spans = []
    for m in _IBAN_CANDIDATE.finditer(text):
        length = IBAN_LENGTHS.get(m.group()[:2].upper())
        if length is None:
            continue
        # the country's length of characters, separators not counted: the candidate may run on
        kept = 0
        for end, ch in enumerate(m.group(), 1):
            if ch != " ":
                kept += 1
                if kept == length:
                    if iban_valid(m.group()[:end]):
                        spans.append((m.start(), m.start() + end))
                    break
    return spans


def _identifier_spans(text: str) -> list[tuple[int, int]]:
    spans = [m.span() for m in _UUID.finditer(text)] if "-" in text else []
    spans += _iban_spans(text)
    if ":" in text:
        spans += [m.span() for m in _DATE_TIME.finditer(text)]
    return spans


def _containment_index(spans: list[tuple[int, int]]) -> tuple[list[int], list[int]]:
    """The spans' starts in order, and the furthest end of the spans up to each: a hit is
    inside one of them when a span starting at or before it reaches its end (a binary search
    per hit, not a pass over every span)."""
    ordered = sorted(spans)
    return [a for a, _ in ordered], list(accumulate((b for _, b in ordered), max))


def _contained(hit: PanHit, starts: list[int], reach: list[int]) -> bool:
    k = bisect_right(starts, hit.start)
    return k > 0 and reach[k - 1] >= hit.end


def _scan(text: str) -> list[tuple[re.Match[str], list[PanHit]]]:
    """Each digit run of text that holds a card number, with its card numbers."""
    if not may_hold_pan(text):
        return []
    found: list[tuple[re.Match[str], list[PanHit]]] = []
    spans: list[tuple[int, int]] | None = None
    starts: list[int] = []
    reach: list[int] = []
    for m in _RUN.finditer(text):
        run = m.group()
        digits = _run_digits(run)
        windows = _windows(run, digits)
        if not windows:
            continue
        offset = m.start()
        positions = [offset + k for k, ch in enumerate(run) if ch.isdecimal()]
        hits = [PanHit(positions[i], positions[e - 1] + 1, digits[i:e]) for i, e in windows]
        if spans is None:
            spans = _identifier_spans(text)
            starts, reach = _containment_index(spans)
        if starts:
            hits = [h for h in hits if not _contained(h, starts, reach)]
        if hits:
            found.append((m, hits))
    return found


def find_pans(text: str) -> list[PanHit]:
    """Every card number in text (see the module docstring), in order of start.

    Overlapping windows of one digit run are each reported: a run that is one PAN usually
    gives one hit, a long run of digits can give several. A hit inside a UUID, a valid IBAN
    or a date and time is not reported: a card number can be made to look like one only
    with its digits fitted to the identifier's own structure and check, not by accident.
    """
    return [h for _, hits in _scan(text) for h in hits]


def find_pans_bytes(data: bytes) -> list[PanHit]:
    """find_pans over binary data (RocksDB files, raw records): its Latin-1 view, so a hit's
    start and end are byte offsets. Card numbers written as ASCII digits are found; ones in
    another encoding of digits (UTF-16, BCD) are not."""
    return find_pans(data.decode("latin-1"))


def replace_pans(text: str, replacement: Callable[[str], str]) -> str:
    """text with each digit run that holds a card number (find_pans) replaced by
    `replacement(the run's digits)`, separators and all; other runs and text kept."""
    found = _scan(text)
    if not found:
        return text
    parts: list[str] = []
    last = 0
    for m, _ in found:
        parts += [text[last:m.start()], replacement(_run_digits(m.group()))]
        last = m.end()
    parts.append(text[last:])
    return "".join(parts)


def mask_pans(text: str) -> str:
    """text with every digit run that holds a card number masked to its last four digits
    (the whole run, separators dropped); other runs and text are kept as they are."""
    return replace_pans(text, mask_digits)


def redact_card_like(text: str) -> str:
    """Mask every card number find_pans finds, and every other run of 12 or more digits
    joined by joining gaps, Luhn-valid or not (lists and tables of numbers are kept).

    Used on the remains of garbage messages before they go to the DLQ and on log lines: a
    broken message may hold a PAN that no parser recognised, so anything card-shaped is
    masked.
    """
    if not may_hold_pan(text):
        return text
    text = _JOINED_RUN.sub(lambda m: mask_digits(_run_digits(m.group())), text)
    # what is left of a card number is written across listing gaps, in groups of 4 to 6
    return mask_pans(text) if _LISTED.search(text) else text


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
