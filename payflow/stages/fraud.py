"""Fraud scoring, a pure function over a payment and its sender's state.

docs/fraud.md defines every signal, its state and bound, and the measured figures.

The state per sender (one value, packed by `pack_state`):
- the last hour of payments exactly (`Recent`: event time, USD amount, digests of region,
  device, receiver, card and transaction id), at most RECENT_CAP of them;
- a long-memory profile of everything older (`Profile`): first payment seen, decayed
  count, mean and spread of log amounts (half-life AMOUNT_HALF_LIFE_S), decayed peaks of
  the 5-minute and 1-hour payment counts, and first-seen sets of devices, regions,
  receivers and cards, each capped (the least recently seen entry goes).

A payment leaves the last hour into the profile in event-time order once a later payment of
the sender is an hour ahead of it. A replay of a payment (after a crash) finds its own entry
in the last hour and replaces it, so it is never counted twice, and its score depends only on
the sender's earlier payments in the partition's order, never on how they were batched.

Evidence adds up in points; the score is 100 * (1 - exp(-points / SCORE_SCALE)), so it
ranks (not a handful of values) and saturates smoothly. Every signal that contributes
leaves a reason with the values behind it.
"""
from __future__ import annotations

import hashlib
import math
import struct
from dataclasses import dataclass, field

from payflow.stages.currencies import to_usd
from payflow.models import HIGH_RISK_ABOVE, FraudAssessment, MaskedPayment

DIGEST_BYTES = 8  # per sender: a collision of two of its strings is out of reach (2^-64 a pair)
RECENT_WINDOW_S = 3600
RECENT_CAP = 512
PROFILE_IDLE_S = 35 * 86_400.0  # a sender silent this long (event time) is forgotten
AMOUNT_HALF_LIFE_S = 14 * 86_400.0
PEAK_HALF_LIFE_S = 7 * 86_400.0
FAMILIAR_AFTER_S = 6 * 3600.0  # a device or region seen first this long ago is familiar
ESTABLISHED_PAYMENTS = 3  # a baseline needs this many payments...
ESTABLISHED_AGE_S = 86_400.0  # ...over at least this long
SET_CAPS = (8, 8, 48, 8)  # devices, regions, receivers, cards kept per sender
DEVICES, REGIONS, RECEIVERS, CARDS = 0, 1, 2, 3
SCORE_SCALE = 70.0
# the most an amount alone (familiar device and place) adds up to: score 47, under the default
# operating point (models.HIGH_RISK_ABOVE): a large purchase is not an alarm by itself
AMOUNT_ALONE_POINTS = 45.0
SMALL_USD = 10.0
TRAVEL_MIN_KM = 1500.0  # region changes nearer than this are IP geolocation noise
TRAVEL_MAX_KMH = 900.0  # faster than a scheduled flight
BULK_KINDS = frozenset(("payroll", "payout", "marketplace", "billing"))

# region -> centroid (latitude, longitude) of the region's population
REGION_CENTROIDS: dict[str, tuple[float, float]] = {
    "us-east": (38.9, -77.4), "us-west": (45.6, -121.2), "eu-west": (53.3, -6.3), "eu-central": (50.1, 8.7),
    "ap-northeast": (35.7, 139.7), "ap-south": (19.1, 72.9), "sa-east": (-23.5, -46.6),
    "me-central": (24.5, 54.4), "oc-east": (-33.9, 151.2),
}

# (event time, usd, 5-min count, 1-h count, region, device, receiver, card, txn) digests
Recent = tuple[float, float, int, int, bytes, bytes, bytes, bytes, bytes]
_RECENT = struct.Struct(f">dfHH{DIGEST_BYTES}s{DIGEST_BYTES}s{DIGEST_BYTES}s{DIGEST_BYTES}s{DIGEST_BYTES}s")
# first payment, last folded, payments, decayed weight, sum log usd, sum log usd^2, peak 5m, peak 1h
_PROFILE = struct.Struct(">ddIdddff4B")
_SET_ENTRY = struct.Struct(f">{DIGEST_BYTES}sdd")  # digest, first seen, last seen
SenderEntry = Recent  # the name batch.py knew


def digest(text: str) -> bytes:
    """What the state stores of a string: a fixed-size digest (compared for equality only)."""
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=DIGEST_BYTES).digest()


_CENTROID_BY_DIGEST: dict[bytes, tuple[float, float]] = {digest(k): v for k, v in REGION_CENTROIDS.items()}


def distance_km(a: bytes, b: bytes) -> float:
    """Great-circle distance between two regions' centroids; -1 when either is unknown."""
    pa = _CENTROID_BY_DIGEST.get(a)
    pb = _CENTROID_BY_DIGEST.get(b)
    if pa is None or pb is None:
        return -1.0
    la1, lo1, la2, lo2 = map(math.radians, (pa[0], pa[1], pb[0], pb[1]))
    h = math.sin((la2 - la1) / 2) ** 2 + math.cos(la1) * math.cos(la2) * math.sin((lo2 - lo1) / 2) ** 2
    return 2 * 6371.0 * math.asin(min(1.0, math.sqrt(h)))


@dataclass(slots=True)
class FraudConfig:
    """The thresholds and the operating point (payflow.settings: PAYFLOW_FRAUD_*)."""
    high_risk_above: int = HIGH_RISK_ABOVE
    small_usd: float = SMALL_USD
    travel_max_kmh: float = TRAVEL_MAX_KMH


@dataclass(slots=True)
class Profile:
    first_ts: float = 0.0
    folded_ts: float = 0.0
    n: int = 0
    weight: float = 0.0
    sum_log: float = 0.0
    sum_log2: float = 0.0
    peak_5m: float = 0.0
    peak_1h: float = 0.0
    # per set: digest -> [first seen, last seen]
    sets: list[dict[bytes, list[float]]] = field(default_factory=lambda: [{}, {}, {}, {}])


@dataclass(slots=True)
class SenderState:
    profile: Profile
    recent: list[Recent]


def new_state() -> SenderState:
    return SenderState(Profile(), [])


def pack_state(state: SenderState) -> bytes:
    p = state.profile
    sets = p.sets
    out = [_PROFILE.pack(p.first_ts, p.folded_ts, p.n, p.weight, p.sum_log, p.sum_log2, p.peak_5m, p.peak_1h,
                         *(len(s) for s in sets))]
    for s in sets:
        for d, (first, last) in s.items():
            out.append(_SET_ENTRY.pack(d, first, last))
    out.extend(_RECENT.pack(*e) for e in state.recent)
    return b"".join(out)


def unpack_state(value: bytes | memoryview) -> SenderState:
    fields = _PROFILE.unpack_from(value)
    sets: list[dict[bytes, list[float]]] = []
    off = _PROFILE.size
    for count in fields[8:12]:
        s: dict[bytes, list[float]] = {}
        for _ in range(count):
            d, first, last = _SET_ENTRY.unpack_from(value, off)
            s[d] = [first, last]
            off += _SET_ENTRY.size
        sets.append(s)
    profile = Profile(fields[0], fields[1], fields[2], fields[3], fields[4], fields[5], fields[6], fields[7], sets)
    recent = list(_RECENT.iter_unpack(memoryview(value)[off:]))
    return SenderState(profile, recent)


def state_bound() -> int:
    """The largest value pack_state writes."""
    return _PROFILE.size + sum(SET_CAPS) * _SET_ENTRY.size + RECENT_CAP * _RECENT.size


def _note(s: dict[bytes, list[float]], d: bytes, ts: float, cap: int) -> None:
    seen = s.get(d)
    if seen is not None:
        seen[0] = min(seen[0], ts)
        seen[1] = max(seen[1], ts)
        return
    if len(s) >= cap:  # the least recently seen goes
        del s[min(s, key=lambda k: s[k][1])]
    s[d] = [ts, ts]


def _fold(p: Profile, e: Recent, learn_peaks: bool = True) -> None:
    """A payment leaves the last hour into the long-memory profile. One pushed out by the
    cap (its hour is not over) does not teach the peaks: a burst is not its own baseline."""
    ts = e[0]
    if p.n == 0 or ts < p.first_ts:
        p.first_ts = ts if p.n == 0 else min(p.first_ts, ts)
    dt = max(0.0, ts - p.folded_ts) if p.n else 0.0
    amount_decay = 0.5 ** (dt / AMOUNT_HALF_LIFE_S)
    peak_decay = 0.5 ** (dt / PEAK_HALF_LIFE_S)
    log_usd = math.log(max(e[1], 0.01))
    p.weight = p.weight * amount_decay + 1.0
    p.sum_log = p.sum_log * amount_decay + log_usd
    p.sum_log2 = p.sum_log2 * amount_decay + log_usd * log_usd
    p.peak_5m = max(p.peak_5m * peak_decay, float(e[2]) if learn_peaks else 0.0)
    p.peak_1h = max(p.peak_1h * peak_decay, float(e[3]) if learn_peaks else 0.0)
    p.folded_ts = max(p.folded_ts, ts)
    p.n = min(p.n + 1, 2**32 - 1)
    sets = p.sets
    _note(sets[DEVICES], e[5], ts, SET_CAPS[DEVICES])
    _note(sets[REGIONS], e[4], ts, SET_CAPS[REGIONS])
    _note(sets[RECEIVERS], e[6], ts, SET_CAPS[RECEIVERS])
    _note(sets[CARDS], e[7], ts, SET_CAPS[CARDS])


@dataclass(slots=True)
class Scored:
    assessment: FraudAssessment
    state: SenderState


class _Evidence:
    __slots__ = ("points", "flags", "reasons")

    def __init__(self) -> None:
        self.points = 0.0
        self.flags: list[str] = []
        self.reasons: list[str] = []

    def add(self, code: str, points: float, why: str) -> None:
        if points <= 0:
            return
        self.points += points
        self.flags.append(code)
        self.reasons.append(f"{code}: {why}")


def _familiarity(known: dict[bytes, list[float]], d: bytes, in_hour: "set[bytes] | dict[bytes, float] | tuple[()]",
                 ts: float) -> float:
    """0: never seen, 0.5: first seen within FAMILIAR_AFTER_S (or in the last hour), 1: familiar."""
    seen = known.get(d)
    if seen is not None:
        return 1.0 if ts - seen[0] >= FAMILIAR_AFTER_S else 0.5
    return 0.5 if d in in_hour else 0.0


def _first_payment(ts: float, usd: float, kind: str, cfg: FraudConfig, entry: Recent) -> Scored:
    ev = _Evidence()
    if usd > 1000 and kind not in BULK_KINDS:
        ev.add("HIGH_AMOUNT", min(40.0, 10.0 * math.log2(usd / 1000)), f"amount {usd:.0f} USD")
    fraud_score = int(round(100.0 * (1.0 - math.exp(-ev.points / SCORE_SCALE)))) if ev.points else 0
    assessment = FraudAssessment(fraud_score=fraud_score, risk_flags=ev.flags, geographic_risk=0, velocity_5m=1,
                                 distinct_devices_30m=1, risk_reasons=ev.reasons, high_risk_above=cfg.high_risk_above)
    return Scored(assessment, SenderState(Profile(), [entry]))


class _Payment:
    """The payment as scoring sees it: its time, USD amount and digested identifiers."""
    __slots__ = ("ts", "usd", "txn", "region", "device", "receiver", "card")

    def __init__(self, payment: MaskedPayment) -> None:
        self.ts = payment.event_time.timestamp()
        self.usd = float(to_usd(payment.amount, payment.currency))
        self.txn = digest(payment.transaction_id)
        self.region = digest(payment.geo_region)
        self.device = digest(payment.device_id)
        self.receiver = digest(payment.receiver_account_id)
        self.card = digest(payment.pii_hash)


class _Hour:
    """The sender's last hour before the payment, the payment included in the counts."""
    __slots__ = ("c5", "c1h", "small", "devices", "receivers", "cards", "region_seen_at")

    def __init__(self, keep: list[Recent], pay: _Payment, cfg: FraudConfig) -> None:
        ts = pay.ts
        self.c5 = self.c1h = 1
        self.small = 1 if pay.usd < cfg.small_usd else 0
        self.devices: set[bytes] = set()
        self.receivers: set[bytes] = set()
        self.cards: set[bytes] = set()
        self.region_seen_at: dict[bytes, float] = {}
        for e in keep:
            t = e[0]
            if t > ts:
                continue
            self.c1h += 1
            if ts - t <= 300:
                self.c5 += 1
            if e[1] < cfg.small_usd:
                self.small += 1
            self.devices.add(e[5])
            self.receivers.add(e[6])
            self.cards.add(e[7])
            if self.region_seen_at.get(e[4], -1.0) < t:
                self.region_seen_at[e[4]] = t


def score(payment: MaskedPayment, state: SenderState, kind: str = "", config: FraudConfig | None = None) -> Scored:
    """The payment's assessment against its sender's state, and the state with it added.
    `kind` is the sender's account type from the reference data ("" = unknown)."""
    cfg = config if config is not None else FraudConfig()
    pay = _Payment(payment)
    ts, usd = pay.ts, pay.usd
    p = state.profile
    if p.n == 0 and not state.recent:  # a sender's first payment: only its amount can tell
        return _first_payment(ts, usd, kind, cfg, (ts, usd, 1, 1, pay.region, pay.device, pay.receiver, pay.card,
                                                   pay.txn))
    keep = _recent_hour(p, state.recent, ts, pay.txn)
    hour = _Hour(keep, pay, cfg)
    age = ts - min(p.first_ts, min((e[0] for e in keep), default=ts)) if p.n else (
        ts - min((e[0] for e in keep), default=ts))
    established = p.n >= ESTABLISHED_PAYMENTS and age >= ESTABLISHED_AGE_S
    bulk = kind in BULK_KINDS
    ev = _Evidence()
    z, typical = _amount_signals(ev, p, keep, pay, bulk)
    dev_fam, reg_fam, rcv_new = _novelty_signals(ev, p.sets, hour, pay, established, z, typical)
    fastest = _travel_signal(ev, p.sets, hour, pay, cfg, strong=dev_fam < 1 or reg_fam < 1)
    if not bulk:
        _velocity_signals(ev, p, hour, established, rcv_new)
    _card_signals(ev, p.sets, hour, pay, cfg, established, dev_fam)

    fraud_score = int(round(100.0 * (1.0 - math.exp(-ev.points / SCORE_SCALE))))
    geographic = int(round(100.0 * (1.0 - math.exp(-(45.0 if fastest > cfg.travel_max_kmh else 0.0) / SCORE_SCALE))))
    assessment = FraudAssessment(fraud_score=fraud_score, risk_flags=ev.flags, geographic_risk=geographic,
                                 velocity_5m=hour.c5, distinct_devices_30m=len(hour.devices | {pay.device}),
                                 risk_reasons=ev.reasons, high_risk_above=cfg.high_risk_above)
    keep.append((ts, usd, min(hour.c5, 65535), min(hour.c1h, 65535), pay.region, pay.device, pay.receiver, pay.card,
                 pay.txn))
    return Scored(assessment, SenderState(p, keep))


def _recent_hour(p: Profile, recent: list[Recent], ts: float, txn: bytes) -> list[Recent]:
    """The entries of the last hour before `ts`, at most RECENT_CAP - 1: a replay's own entry
    goes; what fell behind the hour, or beyond the cap, is folded into the profile."""
    horizon = ts - RECENT_WINDOW_S
    keep: list[Recent] = []
    leaving: list[Recent] = []
    for e in recent:
        if e[8] == txn:
            continue
        (leaving if e[0] < horizon else keep).append(e)
    if leaving:
        leaving.sort(key=lambda e: e[0])
        for e in leaving:
            _fold(p, e)
    if len(keep) >= RECENT_CAP:
        keep.sort(key=lambda e: e[0])
        for e in keep[:len(keep) - RECENT_CAP + 1]:
            _fold(p, e, learn_peaks=False)
        keep = keep[len(keep) - RECENT_CAP + 1:]
    return keep


def _amount_signals(ev: _Evidence, p: Profile, keep: list[Recent], pay: _Payment, bulk: bool) -> tuple[float, float]:
    """The amount against the sender's own baseline, and in absolute terms; returns (z, the
    sender's typical amount), 0 for a sender without a baseline."""
    usd, ts = pay.usd, pay.ts
    z = 0.0
    typical = 0.0
    if p.n >= ESTABLISHED_PAYMENTS and p.weight > 0:
        mean = p.sum_log / p.weight
        spread = max(0.5, math.sqrt(max(0.0, p.sum_log2 / p.weight - mean * mean)))
        typical = math.exp(mean)
        z = (math.log(max(usd, 0.01)) - mean) / spread
    # the amount alone (familiar device and place) stays under the default operating point
    amount_points = 0.0
    if z > 1.5:
        amount_points = min(45.0, 12.0 * (z - 1.5))
        ev.add("AMOUNT_VS_BASELINE", amount_points,
               f"amount {usd / typical:.1f}x the sender's typical {typical:.2f} USD ({z:.1f} spreads above)")
    if usd > 1000 and not bulk:
        ev.add("HIGH_AMOUNT", min(40.0, AMOUNT_ALONE_POINTS - amount_points, 10.0 * math.log2(usd / 1000)),
               f"amount {usd:.0f} USD")
    if typical > 0:
        outsized = sum(1 for e in keep if e[0] <= ts and e[1] > 3.0 * typical)
        if outsized and z > 1.5:
            ev.add("REPEATED_HIGH_AMOUNTS", min(45.0, 22.0 * outsized),
                   f"{outsized + 1} payments over 3x the sender's typical within 1 h")
    return z, typical


def _novelty_signals(ev: _Evidence, sets: list[dict[bytes, list[float]]], hour: _Hour, pay: _Payment,
                     established: bool, z: float, typical: float) -> tuple[float, float, bool]:
    """Device, region, receiver: new for this sender? Returns the device's and the region's
    familiarity (_familiarity) and whether the receiver was never paid before."""
    ts = pay.ts
    dev_fam = _familiarity(sets[DEVICES], pay.device, hour.devices, ts)
    reg_fam = _familiarity(sets[REGIONS], pay.region, hour.region_seen_at, ts)
    rcv_new = pay.receiver not in sets[RECEIVERS] and pay.receiver not in hour.receivers
    if established and dev_fam < 1:
        ev.add("NEW_DEVICE", 25.0 if dev_fam == 0 else 15.0,
               "device first seen now" if dev_fam == 0 else "device first seen within 6 h")
        if z > 1.0:
            ev.add("NEW_DEVICE_HIGH_AMOUNT", min(35.0, 14.0 * z),
                   f"device new and amount {pay.usd / typical:.1f}x the sender's typical")
        if rcv_new:
            ev.add("NEW_DEVICE_NEW_PAYEE", 15.0, "new device paying a receiver never paid before")
    if established and reg_fam < 1:
        regions = sets[REGIONS]
        home = max(regions, key=lambda k: regions[k][1] - regions[k][0]) if regions else pay.region
        home_km = distance_km(home, pay.region)
        if home_km < 0 or home_km >= TRAVEL_MIN_KM:
            ev.add("NEW_REGION", 20.0 if reg_fam == 0 else 10.0,
                   f"region first seen {'now' if reg_fam == 0 else 'within 6 h'} {home_km:.0f} km from home")
    return dev_fam, reg_fam, rcv_new


def _travel_signal(ev: _Evidence, sets: list[dict[bytes, list[float]]], hour: _Hour, pay: _Payment,
                   cfg: FraudConfig, strong: bool) -> float:
    """Speed from every region paid from in the last day (profile) or hour; returns the
    fastest (km/h). Weak from a familiar device and region (`strong` False)."""
    ts, region = pay.ts, pay.region
    fastest, fastest_km = 0.0, 0.0
    last_seen: dict[bytes, float] = {d: seen[1] for d, seen in sets[REGIONS].items() if ts - seen[1] <= 86_400}
    for d, t in hour.region_seen_at.items():
        last_seen[d] = max(t, last_seen.get(d, 0.0))
    for d, t in last_seen.items():
        if d == region or t > ts:
            continue
        km = distance_km(d, region)
        if km >= TRAVEL_MIN_KM:
            kmh = km / max((ts - t) / 3600.0, 1 / 60)
            if kmh > fastest:
                fastest, fastest_km = kmh, km
    if fastest > cfg.travel_max_kmh:
        ev.add("IMPOSSIBLE_TRAVEL", 45.0 if strong else 8.0,
               f"{fastest_km:.0f} km from a recent payment at {fastest:.0f} km/h"
               + ("" if strong else " from a familiar device and region"))
    return fastest


def _velocity_signals(ev: _Evidence, p: Profile, hour: _Hour, established: bool, rcv_new: bool) -> None:
    """Velocity against the sender's own peaks, and new receivers within the hour."""
    c5, c1h = hour.c5, hour.c1h
    expect5 = max(3.0, 1.5 * p.peak_5m)
    expect1h = max(6.0, 1.5 * p.peak_1h)
    if c5 > expect5:
        ev.add("VELOCITY_5M", min(60.0, 8.0 * (c5 - expect5)), f"{c5} payments in 5 min (usual peak {p.peak_5m:.1f})")
    if c1h > expect1h:
        ev.add("VELOCITY_1H", min(40.0, 3.0 * (c1h - expect1h)), f"{c1h} payments in 1 h (usual peak {p.peak_1h:.1f})")
    new_payees = sum(1 for r in hour.receivers if r not in p.sets[RECEIVERS]) + (1 if rcv_new else 0)
    if established and new_payees >= 2:
        ev.add("PAYEE_FAN_OUT", min(40.0, 10.0 * (new_payees - 1)), f"{new_payees} new receivers within 1 h")


def _card_signals(ev: _Evidence, sets: list[dict[bytes, list[float]]], hour: _Hour, pay: _Payment,
                  cfg: FraudConfig, established: bool, dev_fam: float) -> None:
    """Card testing (many cards, small amounts) and a burst of new devices."""
    ts = pay.ts
    new_cards = sum(1 for c in hour.cards | {pay.card} if c not in sets[CARDS])
    if new_cards >= 2:
        ev.add("MANY_CARDS", min(60.0, 18.0 * (new_cards - 1)), f"{new_cards} cards new to this sender within 1 h")
    if pay.usd < cfg.small_usd and (new_cards >= 2 or (not established and hour.small >= 3)):
        ev.add("CARD_TESTING", min(40.0, 8.0 * hour.small),
               f"{hour.small} payments under {cfg.small_usd:.0f} USD within 1 h")
    new_devices = (dev_fam < 1) + sum(1 for d in hour.devices
                                      if d != pay.device and _familiarity(sets[DEVICES], d, (), ts) < 1)
    if established and new_devices >= 2:
        ev.add("DEVICE_BURST", min(50.0, 25.0 * (new_devices - 1)), f"{new_devices} new devices within 1 h")
