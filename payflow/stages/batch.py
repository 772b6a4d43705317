"""One batch through decode -> mask -> watermark/dedup -> fraud, against the state tables.

Plain Python over partitioned state (payflow.tables.changelog: Faust tables in the worker, dicts
in unit tests), with no Faust in sight. The stages share the raw topic's partitioning
(key = sender), so they run in one agent: each extra Kafka hop would be a full pass through
Faust's per-event machinery (docs/architecture.md). Within a batch each stage runs over every
event before the next stage starts, which keeps its code and data in the CPU's caches.
Per-sender and per-card state is read once and written back once per batch; the tables log
a batch's changes as one changelog record per partition. This module and the stages it
calls are compiled by mypyc at install (setup.py compiles payflow/stages/).
"""
from __future__ import annotations

import logging
import struct
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Callable, Iterable

import orjson

from payflow.stages import dedup
from payflow.stages import fraud
from payflow.keys import KeyRing
from payflow.stages.mask import ErasedSubjects, erased_outcome, mask
from payflow.stages.redact import masked_remains
from payflow.models import DedupAudit, EnrichedPayment, MaskedPayment, Rejection, to_us
from payflow.stages.state import ExpiryIndex, PartitionedState, WatermarkLog
from payflow.stages.validation import UNDECODABLE, ValidatedPayment, decode

STAGES = ("decode", "mask", "dedup", "fraud")
LEGACY_CARD_WINDOW_S = 600  # the card table's values (format 2) expire after this
log = logging.getLogger("payflow.pipeline")


@dataclass(slots=True)
class RawItem:
    partition: int
    offset: int
    value: bytes | None
    # the record's Kafka timestamp (seconds): event-time skew is judged against it, or the
    # worker's clock if that is earlier, so a lagging worker judges as a prompt one would
    timestamp: float | None = None


@dataclass
class BatchResult:
    enriched: list[EnrichedPayment] = field(default_factory=list)
    duplicates: list[DedupAudit] = field(default_factory=list)
    late: list[MaskedPayment] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    replays: int = 0
    watermarks: dict[int, int] = field(default_factory=dict)  # partition -> watermark (µs)
    # partition -> watermark a replay from the committed position would start from:
    # expire() with it once the batch landed
    start_watermarks: dict[int, int] = field(default_factory=dict)


@dataclass
class StageClock:
    """Cumulative seconds per stage (the benchmark's cost per stage)."""
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    events: int = 0

    def lap(self, stage: str, started: float) -> float:
        """The time since `started` (time.perf_counter) counted to `stage`; returns now, where
        the next stage's time starts."""
        now = time.perf_counter()
        self.seconds[stage] += now - started
        return now


def _from_seconds(seconds: float, fallback: datetime) -> datetime:
    try:
        return datetime.fromtimestamp(seconds, timezone.utc)
    except (OverflowError, OSError, ValueError):  # a nonsense record timestamp: the worker's clock
        return fallback


# A sender's stored fraud state: a header (format, partition, newest event time), then
# payflow.stages.fraud's packed state (profile and last hour), of a bounded size
# (history_value_bound) whatever the traffic. Values of older formats (2: struct entries of
# the last 30 minutes; orjson lists before that) start a new state, and a card's (the card
# table's, no longer written) expire.
HISTORY_FORMAT = 3
_HISTORY_HEAD = struct.Struct(">BId")


def history_value_bound(sender_cap: int = 0, card_cap: int = 0) -> int:
    """The largest sender value the processor writes."""
    return _HISTORY_HEAD.size + fraud.state_bound()


def _is_legacy(value: bytes) -> bool:
    return value[:1] == b"["


def _sender_state(value: bytes) -> fraud.SenderState:
    if _is_legacy(value) or value[0] != HISTORY_FORMAT:
        return fraud.new_state()
    return fraud.unpack_state(memoryview(value)[_HISTORY_HEAD.size:])


def _history_partition(value: bytes) -> int:
    if _is_legacy(value):
        return int(orjson.loads(value)[0])
    return int(_HISTORY_HEAD.unpack_from(value)[1])


def _stored(table: PartitionedState, index: ExpiryIndex, partition: int, key: str) -> bytes | None:
    """The table's value for `key`, read only if the index knows the key: it knows every key
    the table holds for a processed partition, and most keys in a batch are new."""
    return table.read(partition, key) if index.holds(partition, key) else None


def _undecodable(raw: bytes | None, exc: Exception) -> Rejection:
    """A message decode or mask raised on: a payflow bug, as both turn any bad input into a
    Rejection (a compiled stage's type check could raise, say). It goes to the DLQ like bad
    input, so its partition goes on. The error is named by its type only: its message could
    quote the card number."""
    log.error("stage decode: %s raised on a message; it goes to the DLQ as %s (a payflow bug)",
              type(exc).__name__, UNDECODABLE)
    try:
        remains = masked_remains(raw) if raw else ""
    except Exception:  # noqa: BLE001 - the remains are a courtesy; the message must reach the DLQ
        remains = ""
    return Rejection(UNDECODABLE, f"payflow failed on this message ({type(exc).__name__}); see the worker's log",
                     remains=remains)


def _history_ts(value: bytes) -> float:
    if _is_legacy(value):
        return float(max((e[0] for e in orjson.loads(value)[1]), default=0.0))
    return float(_HISTORY_HEAD.unpack_from(value)[2])


class BatchProcessor:
    def __init__(self, *, keyring: KeyRing, dedup_table: PartitionedState,
                 watermark_table: PartitionedState, sender_table: PartitionedState,
                 card_table: PartitionedState, watermark_seconds: int = 3600,
                 max_message_bytes: int = 65536, max_future_seconds: int = 900,
                 committed_offset: Callable[[int], int | None] | None = None,
                 account_kinds: dict[str, str] | None = None, fraud_config: fraud.FraudConfig | None = None,
                 now: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
                 decoder: Callable[..., ValidatedPayment | Rejection] = decode,
                 erased: ErasedSubjects | None = None):
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
        self.committed_offset = committed_offset
        self.now = now
        self.decoder = decoder
        # GDPR: the erasure ledger's hashes (shared with the erasure agent, which adds to it)
        self.erased = erased if erased is not None else ErasedSubjects(keyring)
        self.clock = StageClock()
        self.dedup_index = ExpiryIndex(ts_of=lambda v: dedup.FirstSeen.unpack(v).event_time_us / 1e6,
                                       partition_of=lambda v: dedup.FirstSeen.unpack(v).partition)
        self.sender_index = ExpiryIndex(ts_of=_history_ts, partition_of=_history_partition)
        self.card_index = ExpiryIndex(ts_of=_history_ts, partition_of=_history_partition)
        # sender -> account type (payroll, payout, ...) from the reference data; thresholds
        self.account_kinds = account_kinds if account_kinds is not None else {}
        self.fraud_config = fraud_config if fraud_config is not None else fraud.FraudConfig()
        self._watermarks: dict[int, int] = {}   # partition -> current watermark (µs)
        self._logs: dict[int, WatermarkLog] = {}  # partition -> watermark per processed batch
        self._seen: dict[int, int] = {}  # partition -> last offset processed
        self._loaded: set[int] = set()  # partitions whose cached state is current
        self._assigned: set[int] = set()  # the raw partitions assigned at the last rebalance
        self._generation: int | None = None  # and the group generation it completed

    # -- state per partition -----------------------------------------------------------------
    def assigned(self, partitions: Iterable[int], generation: int | None = None) -> None:
        """The raw topic's partitions assigned to this worker by a rebalance (all of them),
        and the consumer group generation it completed.

        One that was not assigned at the previous rebalance may have been processed by
        another worker meanwhile, its state changes recovered into the tables from the
        changelog: what this processor cached about it (watermark log, last offset seen,
        expiry index entries) is reloaded from the tables at its next batch. Left cached, a
        stale watermark judged lateness differently from the worker before, and keys
        recovered for it never expired locally. Partitions held from one generation to the
        next keep their cache (a reload scans the partition's state); after a gap in the
        generations (this worker was out of the group for one, e.g. fenced after a session
        timeout) every partition is reloaded."""
        now_assigned = set(partitions)
        consecutive = generation is None or self._generation is None or generation == self._generation + 1
        held = self._assigned if consecutive else set()
        self._loaded.difference_update(now_assigned - held)
        self._assigned = now_assigned
        self._generation = generation

    def _load(self, partition: int) -> None:
        self._logs.pop(partition, None)
        self._watermarks.pop(partition, None)
        self._seen.pop(partition, None)
        for index, table in ((self.dedup_index, self.dedup_table), (self.sender_index, self.sender_table),
                             (self.card_index, self.card_table)):
            index.load_partition(partition, table.scan_partition(partition))
        self._log(partition)
        self._loaded.add(partition)

    def _log(self, partition: int) -> WatermarkLog:
        log = self._logs.get(partition)
        if log is None:
            log = self._logs[partition] = WatermarkLog.unpack(self.watermark_table.read(partition, str(partition)))
            if log.watermark is not None:
                self._watermarks[partition] = log.watermark
            if log.last_offset is not None:
                self._seen[partition] = log.last_offset
        return log

    def _rewind(self, partition: int, offset: int) -> None:
        """An offset at or below one already processed is read again (restart, seek back):
        rewind the watermark to what it was before that offset."""
        wm = self._log(partition).rewind(offset)
        if wm is None:
            self._watermarks.pop(partition, None)
        else:
            self._watermarks[partition] = wm

    # -- one batch ---------------------------------------------------------------------
    def process(self, items: list[RawItem]) -> BatchResult:
        """One batch, in data order: decode and mask all of it, then dedup, score and write
        back the state. Decode and mask are pure, so they run over the whole batch first:
        each stage's code and data stay in the CPU's caches for a batch rather than an event
        (only the order of state changes matters)."""
        for partition in {item.partition for item in items} - self._loaded:
            self._load(partition)
        out = BatchResult()
        now = self.now()
        outcomes = self._decode_and_mask(items, now)
        positions: dict[int, tuple[int, int]] = {}  # partition -> the batch's first and last offset
        to_score = self._dedup(items, outcomes, positions, out, now)
        senders = self._score(to_score, out)
        self.clock.events += len(items)
        self._write_back(senders, positions, out)
        return out

    def _decode_and_mask(self, items: list[RawItem], now: datetime) -> list[MaskedPayment | Rejection]:
        """Each item decoded and validated, then masked (its card data ends here), or the
        reason it is rejected; an erased subject's payment stops here, where the card still
        exists (its hash under an older key is found after a rotation)."""
        perf, lap = time.perf_counter, self.clock.lap
        key = self.keyring.active
        decoder = self.decoder
        erased = self.erased if len(self.erased) else None  # no erasures: no check at all
        outcomes: list[MaskedPayment | Rejection] = []
        for item in items:
            started = perf()
            outcome: MaskedPayment | Rejection
            decoded: ValidatedPayment | Rejection | None = None
            try:
                # no timestamp (None, or Kafka's -1; 0 in test contexts): the worker's clock
                judged_at = now if not item.timestamp or item.timestamp <= 0 else min(now, _from_seconds(item.timestamp, now))
                decoded = decoder(item.value, now=judged_at, max_bytes=self.max_bytes, max_future=self.max_future)
                started = lap("decode", started)
                if isinstance(decoded, Rejection):
                    outcome = decoded
                else:
                    outcome = mask(decoded, key, now, item.partition, item.offset)
                    if erased is not None:
                        outcome = erased_outcome(erased, decoded, outcome)
                    lap("mask", started)
            except Exception as exc:  # noqa: BLE001 - one message must not stop its partition
                outcome = _undecodable(item.value, exc)
            decoded = None  # raw card data ends here
            if isinstance(outcome, Rejection):
                outcome.source_partition, outcome.source_offset = item.partition, item.offset
            outcomes.append(outcome)
        return outcomes

    def _dedup(self, items: list[RawItem], outcomes: list[MaskedPayment | Rejection],
               positions: dict[int, tuple[int, int]], out: BatchResult, now: datetime) -> list[MaskedPayment]:
        """Rejections, late events and duplicates to `out`; the new payments and replays, in
        order, returned for scoring (its state is per sender, apart from dedup's: scoring
        after the whole batch's dedup changes nothing). Notes each partition's first and last
        offset in `positions`; a partition read again from an offset at or before one already
        seen is rewound there first (its watermark as it was then)."""
        perf, lap = time.perf_counter, self.clock.lap
        seen = self._seen
        to_score: list[MaskedPayment] = []
        for item, payment in zip(items, outcomes):
            partition, offset = item.partition, item.offset
            positions[partition] = (positions[partition][0] if partition in positions else offset, offset)
            last_seen = seen.get(partition)
            if last_seen is not None and offset <= last_seen:
                self._rewind(partition, offset)
            seen[partition] = offset
            if isinstance(payment, Rejection):
                out.rejections.append(payment)
                continue
            started = perf()
            if self._judge(partition, offset, payment, out, now):
                to_score.append(payment)
            lap("dedup", started)
        return to_score

    def _judge(self, partition: int, offset: int, payment: MaskedPayment, out: BatchResult, now: datetime) -> bool:
        """Dedup's verdict on one payment against the state: True if it goes on to scoring
        (new, or a replay of its first position); late and duplicate ones go to `out`."""
        et_us = to_us(payment.event_time)
        watermark = self._watermarks.get(partition)
        raw_first = _stored(self.dedup_table, self.dedup_index, partition, payment.transaction_id)
        first = dedup.FirstSeen.unpack(raw_first) if raw_first is not None else None
        verdict = dedup.classify(first, partition, offset)
        if verdict is dedup.Verdict.DUPLICATE and first is not None and dedup.is_late(first.event_time_us, watermark, self.window_us):
            # first seen outside the window: an entry recovered from the changelog before
            # expiry caught up; the window decides, as if it had expired
            verdict, first = dedup.Verdict.NEW, None
        # A replay (same partition and offset as first seen) was on time when first
        # processed; after a crash the recovered watermark may be ahead of it, so it
        # must not be judged late again (it would leave the payments table).
        if verdict is not dedup.Verdict.REPLAY and dedup.is_late(et_us, watermark, self.window_us):
            out.late.append(payment)
            return False
        if watermark is None or et_us > watermark:
            self._watermarks[partition] = et_us
        if verdict is dedup.Verdict.DUPLICATE and first is not None and first.partition == partition \
                and first.offset > offset:
            # read again from before the position first seen: this message came first in the
            # log, and the entry is a later copy that found this one's entry expired (the id
            # again more than the window later). It is not that copy's duplicate: it passes
            # as a replay, the entry stays, and the warehouse's key tells which one landed
            out.replays += 1
            return True
        if verdict is dedup.Verdict.DUPLICATE and first is not None:  # (a duplicate has a first)
            out.duplicates.append(DedupAudit(
                transaction_id=payment.transaction_id, first_partition=first.partition,
                first_offset=first.offset,
                first_event_time=datetime.fromtimestamp(first.event_time_us / 1e6, timezone.utc),
                duplicate_partition=partition, duplicate_offset=offset,
                duplicate_event_time=payment.event_time, detected_at=now))
            return False
        if verdict is dedup.Verdict.NEW:
            self.dedup_table.write(partition, payment.transaction_id, dedup.FirstSeen(partition, offset, et_us).pack())
            self.dedup_index.note(partition, et_us / 1e6, payment.transaction_id)
        else:
            # the same entry again: a re-read after changes that were never logged (a landing
            # refused after its processing: Checkpoint discards them) logs it anew
            assert raw_first is not None
            self.dedup_table.write(partition, payment.transaction_id, raw_first)
            out.replays += 1
        return True

    def _score(self, to_score: list[MaskedPayment], out: BatchResult) -> dict[str, tuple[int, fraud.SenderState]]:
        """Each payment scored against its sender's history, in order, to `out.enriched`;
        returns sender -> (the partition its state is written to, its state after the batch)."""
        started = time.perf_counter()
        kinds = self.account_kinds
        config = self.fraud_config
        senders: dict[str, tuple[int, fraud.SenderState]] = {}
        for payment in to_score:
            partition = payment.source_partition  # where it was read (mask() records it)
            sender = payment.sender_account_id
            if sender in senders:
                state = senders[sender][1]
            else:
                raw = _stored(self.sender_table, self.sender_index, partition, sender)
                state = _sender_state(raw) if raw is not None else fraud.new_state()
            scored = fraud.score(payment, state, kinds.get(sender, ""), config)
            senders[sender] = (partition, scored.state)
            out.enriched.append(EnrichedPayment(payment, scored.assessment))
        self.clock.lap("fraud", started)
        return senders

    def _write_back(self, senders: dict[str, tuple[int, fraud.SenderState]],
                    positions: dict[int, tuple[int, int]], out: BatchResult) -> None:
        """The batch's state changes: sender histories, each partition's watermark log (and
        the watermark a replay from the committed position would start from, for expiry),
        then one write per partition to the local store. Counted as fraud time."""
        started = time.perf_counter()
        for sender, (partition, state) in senders.items():
            newest = max(state.profile.folded_ts, max((e[0] for e in state.recent), default=0.0))
            self.sender_table.write(partition, sender, _HISTORY_HEAD.pack(HISTORY_FORMAT, partition, newest)
                                    + fraud.pack_state(state))
            self.sender_index.note(partition, newest, sender)
        for partition, (first_offset, last_offset) in positions.items():
            wm = self._watermarks.get(partition)
            if wm is None:
                continue
            out.watermarks[partition] = wm
            committed = (self.committed_offset(partition) if self.committed_offset is not None
                         else first_offset)
            log = self._log(partition)
            log.record(last_offset, wm, committed)
            self.watermark_table.write(partition, str(partition), log.pack())
            # expire only against the watermark a replay would start from: a replay from the
            # committed position must find the dedup entries its events found the first time
            replay_start = log.before(committed) if committed is not None else None
            if replay_start is not None:
                out.start_watermarks[partition] = replay_start
        for table in (self.dedup_table, self.sender_table, self.card_table, self.watermark_table):
            table.apply_writes()  # one write per partition to the local store
        self.clock.lap("fraud", started)

    def expire(self, start_watermarks: dict[int, int]) -> None:
        """Drop state behind the window, judged by the watermark a replay from the committed
        position would start from (BatchResult.start_watermarks).

        Called once that batch has landed: a replay must find the dedup entries its events
        found the first time, or it would judge them late or new where they were not.
        """
        for partition, watermark_us in start_watermarks.items():
            wm = watermark_us / 1e6
            for index, table, horizon in (
                (self.dedup_index, self.dedup_table, wm - self.window_us / 1e6),
                (self.sender_index, self.sender_table, wm - fraud.PROFILE_IDLE_S),
                (self.card_index, self.card_table, wm - LEGACY_CARD_WINDOW_S),
            ):
                table.expire(partition, index.expired(partition, horizon, table))
