"""One batch through decode -> mask -> watermark/dedup -> fraud, against the state tables.

Plain Python over mapping-like stores (Faust tables in the worker, dicts in unit tests),
so the agents stay thin glue. The stages share the raw topic's partitioning (key = sender),
so they run in one pass: each extra Kafka hop would be a full pass through Faust's
per-event machinery (see ARCHITECTURE.md). Per-sender and per-card state is read once and
written back once per batch, which keeps changelog writes to one per key per batch.
"""
from __future__ import annotations

import struct
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, MutableMapping

import orjson

from payflow import dedup, fraud
from payflow.keys import KeyRing
from payflow.masking import mask
from payflow.models import DedupAudit, EnrichedPayment, MaskedPayment, Rejection
from payflow.state import ExpiryIndex
from payflow.validation import decode

STAGES = ("decode", "mask", "dedup", "fraud")
# binary, not decimal text: a 16-digit epoch-µs string is exactly what PAN scanners flag
_WATERMARK = struct.Struct(">q")


@dataclass(slots=True)
class RawItem:
    partition: int
    offset: int
    value: bytes | None
    handle: Any = None  # the Faust event, so table writes go to its changelog partition


@dataclass
class BatchResult:
    enriched: list[EnrichedPayment] = field(default_factory=list)
    duplicates: list[DedupAudit] = field(default_factory=list)
    late: list[MaskedPayment] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    replays: int = 0
    watermarks: dict[int, int] = field(default_factory=dict)  # partition -> watermark (µs)


@dataclass
class StageClock:
    """Cumulative seconds per stage (the benchmark's cost per stage)."""
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    events: int = 0


def _us(t: datetime) -> int:
    return int(t.timestamp() * 1_000_000)


def _pack_history(partition: int, history: list) -> bytes:
    return orjson.dumps([partition, history])


def _history_ts(value: bytes) -> float:
    hist = orjson.loads(value)[1]
    return max((e[0] for e in hist), default=0.0)


class BatchProcessor:
    def __init__(self, *, keyring: KeyRing, dedup_table: MutableMapping, watermark_table: MutableMapping,
                 sender_table: MutableMapping, card_table: MutableMapping, watermark_seconds: int = 3600,
                 max_message_bytes: int = 65536, max_future_seconds: int = 900,
                 enter: Callable[[Any], None] = lambda handle: None,
                 now: Callable[[], datetime] = lambda: datetime.now(timezone.utc)):
        self.keyring = keyring
        self.dedup_table = dedup_table
        self.watermark_table = watermark_table
        self.sender_table = sender_table
        self.card_table = card_table
        self.window_us = watermark_seconds * 1_000_000
        self.max_bytes = max_message_bytes
        self.max_future = timedelta(seconds=max_future_seconds)
        self.enter = enter
        self.now = now
        self.clock = StageClock()
        self.dedup_index = ExpiryIndex(dedup_table, ts_of=lambda v: dedup.FirstSeen.unpack(v).event_time_us / 1e6,
                                       partition_of=lambda v: dedup.FirstSeen.unpack(v).partition)
        self.sender_index = ExpiryIndex(sender_table, ts_of=_history_ts, partition_of=lambda v: orjson.loads(v)[0])
        self.card_index = ExpiryIndex(card_table, ts_of=_history_ts, partition_of=lambda v: orjson.loads(v)[0])
        self._watermarks: dict[int, int] = {}

    # -- state bootstrap -------------------------------------------------------------------
    def _ensure_indexes(self) -> None:
        if not self.dedup_index.rebuilt:
            self.dedup_index.rebuild(self.dedup_table.items())
            self.sender_index.rebuild(self.sender_table.items())
            self.card_index.rebuild(self.card_table.items())

    def _watermark(self, partition: int) -> int | None:
        if partition not in self._watermarks:
            raw = self.watermark_table.get(str(partition))
            if raw is None:
                return None
            self._watermarks[partition] = _WATERMARK.unpack(raw)[0]
        return self._watermarks[partition]

    # -- one batch ---------------------------------------------------------------------
    def process(self, items: list[RawItem]) -> BatchResult:
        self._ensure_indexes()
        out = BatchResult()
        secs = self.clock.seconds
        perf = time.perf_counter
        now = self.now()
        senders: dict[str, list] = {}
        cards: dict[str, list] = {}
        last_item: dict[int, RawItem] = {}
        owner: dict[str, RawItem] = {}  # state key -> item whose partition it is written to
        key = self.keyring.active
        batch_start_watermarks = {p: self._watermark(p) for p in {i.partition for i in items}}

        for item in items:
            last_item[item.partition] = item
            # table reads and writes go to the partition of the event being processed
            self.enter(item.handle)
            t0 = perf()
            decoded = decode(item.value, now=now, max_bytes=self.max_bytes, max_future=self.max_future)
            t1 = perf()
            secs["decode"] += t1 - t0
            if isinstance(decoded, Rejection):
                decoded.source_partition, decoded.source_offset = item.partition, item.offset
                out.rejections.append(decoded)
                continue
            payment = mask(decoded, key, now, item.partition, item.offset)
            del decoded  # raw card data ends here
            t2 = perf()
            secs["mask"] += t2 - t1

            et_us = _us(payment.event_time)
            watermark = self._watermark(item.partition)
            raw_first = self.dedup_table.get(payment.transaction_id)
            first = dedup.FirstSeen.unpack(raw_first) if raw_first is not None else None
            verdict = dedup.classify(first, item.partition, item.offset)
            # A replay (same partition and offset as first seen) was on time when first
            # processed; after a crash the recovered watermark may be ahead of it, so it
            # must not be judged late again (it would leave the payments table).
            if verdict is not dedup.Verdict.REPLAY and dedup.is_late(et_us, watermark, self.window_us):
                out.late.append(payment)
                secs["dedup"] += perf() - t2
                continue
            if watermark is None or et_us > watermark:
                self._watermarks[item.partition] = et_us
            if verdict is dedup.Verdict.DUPLICATE:
                out.duplicates.append(DedupAudit(
                    transaction_id=payment.transaction_id, first_partition=first.partition,
                    first_offset=first.offset,
                    first_event_time=datetime.fromtimestamp(first.event_time_us / 1e6, timezone.utc),
                    duplicate_partition=item.partition, duplicate_offset=item.offset,
                    duplicate_event_time=payment.event_time, detected_at=now))
                secs["dedup"] += perf() - t2
                continue
            if verdict is dedup.Verdict.NEW:
                self.dedup_table[payment.transaction_id] = dedup.FirstSeen(item.partition, item.offset, et_us).pack()
                self.dedup_index.note(item.partition, et_us / 1e6, payment.transaction_id)
            else:
                out.replays += 1
            t3 = perf()
            secs["dedup"] += t3 - t2

            sender = payment.sender_account_id
            if sender not in senders:
                raw = self.sender_table.get(sender)
                senders[sender] = orjson.loads(raw)[1] if raw is not None else []
            card = payment.pii_hash
            if card not in cards:
                raw = self.card_table.get(card)
                cards[card] = orjson.loads(raw)[1] if raw is not None else []
            scored = fraud.score(payment, senders[sender], cards[card])
            senders[sender] = scored.sender_history
            cards[card] = scored.card_history
            owner["s:" + sender] = item
            owner["c:" + card] = item
            out.enriched.append(EnrichedPayment(payment, scored.assessment))
            secs["fraud"] += perf() - t3
        self.clock.events += len(items)

        t4 = perf()
        for sender, history in senders.items():
            item = owner["s:" + sender]
            self.enter(item.handle)
            self.sender_table[sender] = _pack_history(item.partition, history)
            if history:
                self.sender_index.note(item.partition, max(e[0] for e in history), sender)
        for card, history in cards.items():
            item = owner["c:" + card]
            self.enter(item.handle)
            if history:
                self.card_table[card] = _pack_history(item.partition, history)
                self.card_index.note(item.partition, max(e[0] for e in history), card)
            elif card in self.card_table:
                del self.card_table[card]
        for partition, item in last_item.items():
            wm = self._watermarks.get(partition)
            if wm is None:
                continue
            out.watermarks[partition] = wm
            self.enter(item.handle)
            self.watermark_table[str(partition)] = _WATERMARK.pack(wm)
            # expire against the watermark this batch started from: this batch's own keys
            # must survive until it has landed, or a crash before landing would replay
            # its events without their dedup entries (and judge them late)
            start = batch_start_watermarks.get(partition)
            if start is not None:
                self._expire(partition, start)
        secs["fraud"] += perf() - t4
        return out

    def _expire(self, partition: int, watermark_us: int) -> None:
        wm = watermark_us / 1e6
        for index, table, horizon in (
            (self.dedup_index, self.dedup_table, wm - self.window_us / 1e6),
            (self.sender_index, self.sender_table, wm - fraud.SENDER_HISTORY_S),
            (self.card_index, self.card_table, wm - fraud.CARD_TEST_WINDOW_S),
        ):
            for k in index.expired(partition, horizon):
                try:
                    del table[k]
                except KeyError:
                    pass

    def forget(self, keys: list[str]) -> int:
        """Erasure: delete these state keys (card hashes, transaction ids) wherever held."""
        n = 0
        for table in (self.dedup_table, self.card_table):
            for k in keys:
                if k in table:
                    del table[k]
                    n += 1
        return n
