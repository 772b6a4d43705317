"""One batch through decode -> mask -> watermark/dedup -> fraud, against the state tables.

Plain Python over mapping-like stores (Faust tables in the worker, dicts in unit tests),
so the agents stay thin glue. The stages share the raw topic's partitioning (key = sender),
so they run in one pass: each extra Kafka hop would be a full pass through Faust's
per-event machinery (see ARCHITECTURE.md). Per-sender and per-card state is read once and
written back once per batch, which keeps changelog writes to one per key per batch.
"""
from __future__ import annotations

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
from payflow.watermarks import WatermarkLog

STAGES = ("decode", "mask", "dedup", "fraud")


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
                 committed_offset: Callable[[int], int | None] | None = None,
                 now: Callable[[], datetime] = lambda: datetime.now(timezone.utc)):
        """`committed_offset(partition)` is the consumer's committed position (next offset to
        read; None if nothing is committed yet): a crash replays from there, so state must
        hold what a replay from there needs. Without it, everything before a batch counts as
        committed when the batch starts (for use outside a consumer)."""
        self.keyring = keyring
        self.dedup_table = dedup_table
        self.watermark_table = watermark_table
        self.sender_table = sender_table
        self.card_table = card_table
        self.window_us = watermark_seconds * 1_000_000
        self.max_bytes = max_message_bytes
        self.max_future = timedelta(seconds=max_future_seconds)
        self.enter = enter
        self.committed_offset = committed_offset
        self.now = now
        self.clock = StageClock()
        self.dedup_index = ExpiryIndex(dedup_table, ts_of=lambda v: dedup.FirstSeen.unpack(v).event_time_us / 1e6,
                                       partition_of=lambda v: dedup.FirstSeen.unpack(v).partition)
        self.sender_index = ExpiryIndex(sender_table, ts_of=_history_ts, partition_of=lambda v: orjson.loads(v)[0])
        self.card_index = ExpiryIndex(card_table, ts_of=_history_ts, partition_of=lambda v: orjson.loads(v)[0])
        self._watermarks: dict[int, int] = {}   # partition -> current watermark (µs)
        self._logs: dict[int, WatermarkLog] = {}  # partition -> watermark per processed batch
        self._seen: dict[int, int] = {}  # partition -> last offset processed

    # -- state bootstrap -------------------------------------------------------------------
    def _ensure_indexes(self) -> None:
        if not self.dedup_index.rebuilt:
            self.dedup_index.rebuild(self.dedup_table.items())
            self.sender_index.rebuild(self.sender_table.items())
            self.card_index.rebuild(self.card_table.items())

    def _log(self, partition: int) -> WatermarkLog:
        log = self._logs.get(partition)
        if log is None:
            log = self._logs[partition] = WatermarkLog.unpack(self.watermark_table.get(str(partition)))
            if log.watermark is not None:
                self._watermarks[partition] = log.watermark
            if log.last_offset is not None:
                self._seen[partition] = log.last_offset
        return log

    def _watermark(self, partition: int) -> int | None:
        return self._watermarks.get(partition)

    def _replay_check(self, item: RawItem) -> None:
        """An offset at or below one already processed is read again (restart, seek back):
        rewind the watermark to what it was before that offset."""
        log = self._log(item.partition)
        seen = self._seen.get(item.partition)
        if seen is not None and item.offset <= seen:
            wm = log.rewind(item.offset)
            if wm is None:
                self._watermarks.pop(item.partition, None)
            else:
                self._watermarks[item.partition] = wm
        self._seen[item.partition] = item.offset

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
        first_offsets: dict[int, int] = {}

        for item in items:
            last_item[item.partition] = item
            first_offsets.setdefault(item.partition, item.offset)
            # table reads and writes go to the partition of the event being processed (a
            # partitioned store finds nothing of another partition: Faust's RocksDB store)
            self.enter(item.handle)
            self._replay_check(item)
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
            committed = (self.committed_offset(partition) if self.committed_offset is not None
                         else first_offsets[partition])
            self.enter(item.handle)
            log = self._log(partition)
            log.record(item.offset, wm, committed)
            self.watermark_table[str(partition)] = log.pack()
            # expire only against the watermark a replay would start from: a replay from the
            # committed position must find the dedup entries its events found the first time
            replay_start = log.before(committed) if committed is not None else None
            if replay_start is not None:
                self._expire(partition, replay_start)
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
