"""The warehouse interface both backends implement, and the rows a batch lands.

Every landing is idempotent: a row whose key already exists is left alone (DuckDB: primary
key + INSERT OR IGNORE, the payment tables through payment_transactions' key; BigQuery: the
landing looks the batch's keys up before it writes, warehouse/bq_write.py). Rows of subjects in
gdpr_erasures never come back: erased-by-delete rows are not inserted, erased-by-anonymize
rows are inserted without any link to the person.
"""
from __future__ import annotations

import abc
import dataclasses
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from operator import attrgetter
from typing import Any, Callable, Collection, Iterable

import orjson

from payflow.models import (  # noqa: F401 - to_us, from_us, LINK_COLUMNS, anonymized re-exported
    ERASED_AT, ERASED_FLAG, LINK_COLUMNS, NULLED, DedupAudit, EnrichedPayment, FraudAssessment, MaskedPayment,
    Rejection, anonymized, from_us, to_us,
)

# Tables whose rows carry pii_hash and so consult the erasure list when landing.
ERASABLE = tuple(LINK_COLUMNS)
LANDING_ORDER = ("payment_transactions", "payment_transactions_fraud", "pii_masking_audit",
                 "deduplication_audit", "dead_letter_events", "late_events")


# The three tables an enriched payment lands in share most columns: the batch keeps them
# once, under PAYMENTS, and each table takes its columns from there.
PAYMENTS = "payments"
PAYMENT_TABLES = ("payment_transactions", "payment_transactions_fraud", "pii_masking_audit")
_COLUMN_IN_SOURCE = {("pii_masking_audit", "masking_timestamp"): "masked_at"}


def _source_of(table: str) -> str:
    return PAYMENTS if table in PAYMENT_TABLES else table


def _without_deleted_copies(payments: dict[str, list], ids: list[str], deleted: Collection[str]) -> dict[str, list]:
    """The payments without those of `deleted` subjects whose id another subject's payment
    in the batch has too."""
    kept_ids = {t for t, h in zip(ids, payments["pii_hash"]) if h not in deleted}
    rows = [i for i, (t, h) in enumerate(zip(ids, payments["pii_hash"])) if h not in deleted or t not in kept_ids]
    if len(rows) == len(ids):
        return payments
    return {column: [values[i] for i in rows] for column, values in payments.items()}


@dataclass
class LandingBatch:
    """A batch's warehouse rows, column by column, as plain ints and strings.

    Timestamps are microseconds since the epoch (UTC) and NUMERIC values decimal strings:
    the batch is pickled to the DuckDB landing process and turned into Arrow arrays there,
    and datetime and Decimal objects cost ~10x more on both steps than ints and strings (a
    list of dicts with them was ~20 µs per payment of the worker's and the landing
    process's CPU, `make bench`). rows() gives them back as datetime and Decimal.
    """
    sources: dict[str, dict[str, list]] = field(default_factory=dict)
    # set by first_per_key(): transaction_id -> every raw position it came from in this
    # batch, for ids that came from more than one (all but the landed one are conflicts)
    repeated: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    # and the sender and event time (µs) of each of those positions (same_payment() reads them)
    copies: dict[tuple[int, int], tuple[str, int]] = field(default_factory=dict)
    # the raw (topic, partition)s of the messages the batch holds, set when it is launched:
    # a BigQuery landing's decision is made on these (payflow.runtime.landing_fence); empty
    # in tests that land rows directly
    partitions: set[tuple[str, int]] = field(default_factory=set)
    # and per (topic, partition), the offsets of the batch's first message there and after its
    # last: a BigQuery landing records the range it lands (payflow.warehouse.bq_streams)
    starts: dict[tuple[str, int], int] = field(default_factory=dict)
    ends: dict[tuple[str, int], int] = field(default_factory=dict)
    # and the lowest offset from which every offset up to the end is one of the batch's
    # messages or known to hold no record (stepped over by the fetcher, below the log's
    # start): a BigQuery landing claims its range only from there (missing: its start)
    accounted_from: dict[tuple[str, int], int] = field(default_factory=dict)

    def count(self, table: str) -> int:
        source = self.sources.get(_source_of(table))
        return len(next(iter(source.values()))) if source else 0

    def __len__(self) -> int:
        return sum(self.count(t) for t in LANDING_ORDER)

    def columns(self, table: str) -> dict[str, list]:
        """The table's columns in schema order (empty lists if the batch has no rows for it)."""
        from payflow.warehouse import schema  # only where batches land: it loads sqlglot (~15 MB)
        source = self.sources.get(_source_of(table))
        cols = schema.tables()[table]
        if not source:
            return {c.name: [] for c in cols}
        return {c.name: source[_COLUMN_IN_SOURCE.get((table, c.name), c.name)] for c in cols}

    def rows(self, table: str) -> list[dict[str, Any]]:
        """The table's rows with Python values: datetime (UTC) and Decimal."""
        from payflow.warehouse import schema
        columns = self.columns(table)
        types = {c.name: c.bq_type for c in schema.tables()[table]}
        for name, values in columns.items():
            if types[name] == "TIMESTAMP":
                columns[name] = [None if v is None else from_us(v) for v in values]
            elif types[name] == "NUMERIC":
                columns[name] = [None if v is None else Decimal(v) for v in values]
        names = list(columns)
        return [dict(zip(names, values)) for values in zip(*columns.values())]

    def hashes_of_repeated_ids(self) -> set[str]:
        """The pii_hashes of the payments whose transaction_id the batch holds more than once
        (empty in the usual case): whose erasure first_per_key() must know."""
        payments = self.sources.get(PAYMENTS)
        if not payments:
            return set()
        ids = payments["transaction_id"]
        if len(set(ids)) == len(ids):
            return set()
        counts = Counter(ids)
        return {h for t, h in zip(ids, payments["pii_hash"]) if counts[t] > 1 and h}

    def first_per_key(self, deleted: Collection[str] = ()) -> "LandingBatch":
        """The batch with each table's key once, from its first row. A key twice in one batch
        (a layer above failed) must land once, and neither backend sees the repeat itself:
        BigQuery's MERGE inserts every unmatched source row, and DuckDB's fraud and
        masking-audit rows follow what payment_transactions inserted. The copies a pass found
        stay known to a second pass over its result (a landing decided again).

        `deleted`: pii_hashes erased by delete. Their payments never land, so a copy of
        theirs must not stand in for the payment id: where another subject's payment has the
        same id, theirs is left out (as an erased payment alone is: not landed, no record)
        and the other one lands."""
        from payflow.warehouse import schema
        out = LandingBatch(partitions=self.partitions, starts=self.starts, ends=self.ends,
                           accounted_from=self.accounted_from, repeated=self.repeated, copies=self.copies)
        for name, source in self.sources.items():
            table = PAYMENT_TABLES[0] if name == PAYMENTS else name  # the payment tables share a key
            key_columns = schema.primary_keys()[table]
            # a one-column key is its column (no tuple per row: ~5 µs a payment of the landing)
            keys = source[key_columns[0]] if len(key_columns) == 1 else list(zip(*(source[k] for k in key_columns)))
            if len(set(keys)) == len(keys):  # the usual case, at C speed
                out.sources[name] = source
                continue
            if name == PAYMENTS and deleted:
                source = _without_deleted_copies(source, keys, deleted)
                keys = source["transaction_id"]
            seen: set = set()
            firsts = [i for i, k in enumerate(keys) if not (k in seen or seen.add(k))]
            out.sources[name] = {column: [values[i] for i in firsts] for column, values in source.items()}
            if name == PAYMENTS:  # a payment id at two raw positions: which one landed decides
                at: dict[str, list[tuple[int, int]]] = {}
                copies: dict[tuple[int, int], tuple[str, int]] = {}
                for txn, p, o, sender, et in zip(keys, source["source_partition"], source["source_offset"],
                                                 source["sender_account_id"], source["event_time"]):
                    at.setdefault(txn, [])
                    if (p, o) not in at[txn]:
                        at[txn].append((p, o))
                        copies[(p, o)] = (sender, et)
                out.repeated = {txn: places for txn, places in at.items() if len(places) > 1}
                out.copies = {pos: copies[pos] for places in out.repeated.values() for pos in places}
        return out

    def extend(self, later: "LandingBatch") -> None:
        for name, source in later.sources.items():
            mine = self.sources.get(name)
            if mine is None:
                self.sources[name] = source
            else:
                for column, values in source.items():
                    mine[column].extend(values)


# How a record's field becomes a column of the batch, by the field's declared type: money as
# a decimal string, time as µs since the epoch, a list of flags comma-joined; the rest as is.
_CONVERT: dict[str, Callable[[Any], Any]] = {
    "Decimal": str, "datetime": to_us, "list[str]": ",".join,
}


def _plan(record_type: type, only: tuple[str, ...] | None = None) -> tuple[tuple[str, Callable | None], ...]:
    """(field name, converter or None) for the record type's fields (all, or `only`)."""
    return tuple((f.name, _CONVERT.get(str(f.type))) for f in dataclasses.fields(record_type)
                 if only is None or f.name in only)


def _columns(records: list, plan: tuple[tuple[str, Callable | None], ...]) -> dict[str, list]:
    out = {}
    for name, convert in plan:
        values = list(map(attrgetter(name), records))
        if convert is not None:
            # one time shared by the whole batch (masked_at) is converted once (equal times are
            # the same microsecond; list.count compares in C)
            if convert is to_us and values and values[-1] is values[0] and values.count(values[0]) == len(values):
                values = [convert(values[0])] * len(values)
            else:
                values = list(map(convert, values))
        out[name] = values
    return out


# Each record type's columns, derived once from its dataclass (payflow.models): the payment
# tables take every MaskedPayment and FraudAssessment field; the late events the fields named
# here. tests/unit/test_field_source.py holds these against the DDL (sql/001_tables.sql).
_PAYMENT_PLAN = _plan(MaskedPayment)
_FRAUD_PLAN = _plan(FraudAssessment)
_DEDUP_PLAN = _plan(DedupAudit)
_REJECTION_PLAN = _plan(Rejection, ("source_partition", "source_offset", "reason", "detail", "transaction_id"))
LATE_FROM_PAYMENT = ("transaction_id", "source_partition", "source_offset", "sender_account_id", "amount",
                     "currency", "pii_hash", "event_time")
_LATE_PLAN = _plan(MaskedPayment, LATE_FROM_PAYMENT)
# columns no record carries: set when the batch is built (or by the landing, for an erasure)
WAREHOUSE_ONLY = {
    "payments": ("ingestion_time", "anonymized_at", "erasure_requested", "erasure_timestamp"),
    "dead_letter_events": ("rejected_at", "remains"),
    "late_events": ("watermark", "received_at"),
}


def build_batch(enriched: Iterable[EnrichedPayment], duplicates: Iterable[DedupAudit] = (),
                rejections: Iterable[Rejection] = (), late: Iterable[MaskedPayment] = (),
                watermarks: dict[int, int] | None = None, now: datetime | None = None) -> LandingBatch:
    now = now or datetime.now(timezone.utc)
    now_us = to_us(now)
    b = LandingBatch()
    enriched = list(enriched)
    if enriched:
        n = len(enriched)
        b.sources[PAYMENTS] = {
            **_columns([e.payment for e in enriched], _PAYMENT_PLAN),
            **_columns([e.fraud for e in enriched], _FRAUD_PLAN),
            "is_high_risk": [e.fraud.is_high_risk for e in enriched],
            "ingestion_time": [now_us] * n,
            "anonymized_at": [None] * n,
            "erasure_requested": [False] * n,
            "erasure_timestamp": [None] * n,
        }
    duplicates = list(duplicates)
    if duplicates:
        b.sources["deduplication_audit"] = _columns(duplicates, _DEDUP_PLAN)
    rejections = list(rejections)
    if rejections:
        b.sources["dead_letter_events"] = {
            **_columns(rejections, _REJECTION_PLAN),
            "rejected_at": [now_us] * len(rejections),
            "remains": [r.remains if isinstance(r.remains, str) else orjson.dumps(r.remains).decode()
                        for r in rejections],
        }
    late = list(late)
    if late:
        marks = watermarks or {}
        b.sources["late_events"] = {
            **_columns(late, _LATE_PLAN),
            # a watermark is already µs since the epoch
            "watermark": [marks.get(p.source_partition) or None for p in late],
            "received_at": [now_us] * len(late),
        }
    return b


@dataclass
class ErasureReceipt:
    mode: str
    pii_hashes: list[str]
    rows_affected: dict[str, int]
    seconds: float
    request_id: str


ID_CONFLICT = "id_conflict"


class Landed(dict):
    """What a landing did: rows newly inserted per table (the dict), and `conflicts`: the
    batch's payments the warehouse refused because their transaction_id had already landed
    from another raw position (another partition or offset: two senders reusing an id, or a
    copy the dedup window no longer covered). Each is (transaction_id, source_partition,
    source_offset, landed_partition, landed_offset); the landing records it in
    dead_letter_events as `id_conflict`, and the agent publishes it to the DLQ instead of
    payments-enriched. A replay (same id, same position) is not a conflict."""

    conflicts: list[tuple[str, int, int, int, int]]
    # those of `conflicts` that are copies of the landed payment (same_payment): recorded in
    # deduplication_audit, not dead_letter_events; each (transaction_id, partition, offset,
    # landed partition, landed offset, landed event time µs, event time µs)
    duplicates: list[tuple[str, int, int, int, int, int, int]]
    # True: the landing was refused as a whole (its worker no longer owns the range: see
    # payflow.runtime.landing_fence); nothing of it is in the warehouse and its messages
    # must not be acked (whoever owns their partitions now reads them again)
    fenced: bool

    def __init__(self, *args: Any, conflicts: Iterable[tuple[str, int, int, int, int]] = (),
                 duplicates: Iterable[tuple[str, int, int, int, int, int, int]] = (),
                 fenced: bool = False, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.conflicts = list(conflicts)
        self.duplicates = list(duplicates)
        self.fenced = fenced


def find_conflicts(batch_positions: dict[str, list[tuple[int, int]]],
                   landed_positions: Iterable[tuple[str, int | None, int | None]]) -> list[tuple[str, int, int, int, int]]:
    """The batch's payments whose id is in the warehouse from another raw position.

    `batch_positions`: transaction_id -> the raw positions the batch has it from (ids the
    warehouse refused, and ids the batch has from several positions); `landed_positions`:
    (transaction_id, partition, offset) of the rows the warehouse holds for those ids.
    Every position but the landed one is a conflict, whichever came first in the batch (a
    replay may bring the other copy first). An id with no row was refused for another
    reason (an erased subject): no conflict."""
    out = []
    for txn, partition, offset in landed_positions:
        landed = (-1 if partition is None else int(partition), -1 if offset is None else int(offset))
        for mine in batch_positions.get(txn, ()):
            if mine != landed:
                out.append((txn, mine[0], mine[1], landed[0], landed[1]))
    return sorted(out)


def same_payment(conflicts: list[tuple[str, int, int, int, int]],
                 copies: dict[tuple[int, int], tuple[str, int]],
                 landed: dict[str, tuple[str, int]]) -> list[tuple[str, int, int, int, int, int, int]]:
    """The conflicts that are copies of the payment that landed: the same transaction_id
    from the same sender. Every copy of a sender's payment reaches one partition, where
    dedup drops it, until the raw topic grows: the sender's key then maps to another
    partition, whose dedup state never saw the payments sent before (docs/operations.md,
    "Growing the raw topic"). Such a copy is a duplicate, not an id conflict (two senders
    reusing an id). `copies`: (partition, offset) -> (sender, event time µs) of the batch's
    positions; `landed`: transaction_id -> (sender, event time µs) of the landed row."""
    out = []
    for txn, p, o, lp, lo in conflicts:
        copy, first = copies.get((p, o)), landed.get(txn)
        if copy is not None and first is not None and copy[0] == first[0]:
            out.append((txn, p, o, lp, lo, first[1], copy[1]))
    return out


def conflict_detail(landed_partition: int, landed_offset: int) -> str:
    return (f"transaction_id already landed from partition {landed_partition} offset {landed_offset}; "
            "this payment was not landed (one row per transaction_id)")


class TransientWarehouseError(Exception):
    """Worth retrying (network, 5xx, rate limit, lock contention)."""


class Warehouse(abc.ABC):
    name: str

    @abc.abstractmethod
    def ensure_schema(self) -> None: ...

    @abc.abstractmethod
    def land(self, batch: LandingBatch) -> Landed:
        """Land every table's rows idempotently; return rows newly inserted per table and the
        id conflicts found (see Landed)."""

    @abc.abstractmethod
    def query(self, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Run a read query written in BigQuery's dialect (transpiled where needed)."""

    @abc.abstractmethod
    def erase(self, pii_hashes: list[tuple[str, str]], mode: str, request_id: str) -> ErasureReceipt: ...

    def land_labels(self, rows: list[dict[str, Any]]) -> int:
        """Fraud labels fed back (rows of fraud_labels: payflow.pipeline.fraud_labels), each
        once per labels-topic position however often it comes; returns how many were new."""
        raise NotImplementedError(f"the {self.name} warehouse does not land fraud labels")

    def query_beside_landings(self, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """`query`, for a periodic read that must not hold up the landings (the DuckDB landing
        process runs it on a cursor and thread of its own, bounded as `payflow query` is)."""
        return self.query(sql, params)

    def erased_subjects(self) -> list[tuple[str, str, str]]:
        """The erasure ledger as (pii_key_id, pii_hash, mode), one per hash of every erasure
        ("" for a key id not recorded): what the worker's mask step checks payments against
        (payflow.stages.mask.ErasedSubjects), loaded at start and refreshed periodically."""
        return [(r["pii_key_id"] or "", r["pii_hash"], r["mode"]) for r in self.query(
            "SELECT DISTINCT pii_key_id, pii_hash, mode FROM gdpr_erasures")]

    @abc.abstractmethod
    def string_columns(self) -> dict[str, list[str]]:
        """table -> its STRING columns (the PCI scan reads these)."""

    def close(self) -> None:
        pass
