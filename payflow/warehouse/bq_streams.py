"""The BigQuery landing of a worker in a consumer group: COMMITTED write streams, one per
(table, raw partition), reused landing after landing and sealed when the partition changes
hands, with no read of what the tables hold.

A landing of partition p's range [O, E) (O: the group's committed offset) goes:

1. **Decide.** One generation-fenced offset commit (payflow.runtime.landing_fence) leaves
   the offset at O and writes in its metadata, per table with rows: the stream, the row
   offset R the landing's rows start at, and how many there are; with the range's end E
   and, per table, the offset below which the table held p's rows before this landing,
   where that is past O (its floor). A worker evicted before this point is refused by the group.
2. **Append** each table's rows of p to its stream at row offset R (AppendRows with an
   offset: visible at once; BigQuery refuses an offset already written, a gap, and any
   append to a finalized stream).
3. Faust's commit of the acks moves the offset to E and clears the metadata.

Whoever lands p next and finds a decision it did not see complete (the previous owner
stopped, crashed or was paused past its session between 1 and 3; or its own attempt failed)
**finalizes** every stream the decision names first: from then on BigQuery refuses every
append to them, so a paused worker that resumes can add nothing (the fence is BigQuery's
own). The row counts FinalizeWriteStream returns say which tables the decided landing
reached: a table whose stream holds R + n rows holds p's rows below E, one that holds R
holds them below its floor. Rows below a table's floor are replays and are not appended;
nothing is read from the tables to know it. Every later decision carries the floors on
until the committed offset passes them.

Two things are still read: payment_transactions, for the batch's ids landed from another
raw position (an id_conflict: two senders reusing an id land in two partitions, which no
per-partition state can see), and the erasure ledger. A decision of the previous format
(PENDING streams named, no range) or one whose streams BigQuery no longer knows is finished
and landed once with the full lookup (bq_write.StorageWriteLanding.plan without floors).

Streams: one per (table, partition) while a worker holds the partition; a new one after a
takeover or a failed append (the old one is sealed), never one per landing.
"""
from __future__ import annotations

import functools
import json
import logging
from typing import Any

from payflow import fault
from payflow.warehouse.base import LANDING_ORDER, LandingBatch, Landed
from payflow.warehouse.bq_write import (
    AppendError, Floors, Rows, StorageWriteLanding, StreamRefused, _arrow, _chunks, _take, decided_pending_streams,
    table_of)

log = logging.getLogger("payflow.sink")

DECISION_PREFIX = "payflow-landing/2 "
# Kafka's default offset.metadata.max.bytes: a longer decision would be refused by the broker
MAX_METADATA_BYTES = 4096

Key = tuple[str, int]  # (topic, partition)


class GroupLanding:
    """Lands LandingBatches of a worker in a consumer group for a StorageWriteLanding,
    deciding each through `fence` (payflow.runtime.landing_fence.KafkaLandingFence)."""

    def __init__(self, landing: StorageWriteLanding, fence: Any):
        self.landing = landing
        self.fence = fence
        # (table, topic, partition) -> [stream name, next row offset]: the streams this worker
        # appends to; only this worker writes them
        self.streams: dict[tuple[str, str, int], list] = {}
        # (topic, partition) -> this worker's last decision there whose appends all succeeded
        self.completed: dict[Key, str] = {}
        self.landings_per_stream: dict[str, int] = {}
        # a seal found rows of another landing: the ledger's recent erasures are applied again
        self.erase_meanwhile = False

    def land(self, batch: LandingBatch, again: bool = False) -> Landed:
        from payflow.runtime.landing_fence import Fenced
        keys = sorted(batch.partitions)
        if len({topic for topic, _ in keys}) != 1:
            raise ValueError(f"a landing holds the messages of one raw topic, not {sorted({t for t, _ in keys})}")
        topic = keys[0][0]
        try:
            held = self.fence.pending(keys)  # Fenced during a rebalance
            floors, read_all = self._floors(held, keys)
            if self._past_a_gap(floors, batch, keys):
                return Landed(fenced=True)
            landed, appends, hashes, erasures, now = self.landing.plan(batch, None if read_all else floors)
            writes, decided, decisions = self._writes(topic, appends, floors, held, batch.ends, keys, read_all)
            self.fence.decide({key: held[key][0] if key in held else None for key in keys}, decisions)
        except Fenced:
            return Landed(fenced=True)
        fault.pause_at("before_write")
        try:
            paused = False
            for table, partition, entry, rows in writes:
                if table != writes[0][0] and not paused:
                    fault.pause_at("between_tables")
                    paused = True
                self.landing.append_at(table, entry[0], entry[1], rows)
                entry[1] += rows.num_rows
                self.landings_per_stream[entry[0]] = self.landings_per_stream.get(entry[0], 0) + 1
        except StreamRefused as exc:
            # this worker no longer knows where its streams stand: decided again, the landing
            # finds this decision incomplete, seals its streams and opens new ones
            self._forget(topic, {p for _, p in keys})
            if again:
                raise
            log.info("stage sink: %s; the landing of partition(s) %s is decided again with new streams", exc,
                     ", ".join(str(p) for _, p in keys))
            return self.land(batch, again=True)
        except Exception:
            # as above, through the sink's retry
            self._forget(topic, {p for _, p in keys})
            raise
        self.completed.update(decisions)
        for key, decision in decided.items():
            # Faust's commit of this landing's acks clears the decision; it carries on how far
            # each table holds the partition, where that is past the offset committed
            through = _landed_through(decision, 0, None)
            self.fence.carry(key, functools.partial(_carried_floors, through))
        if hashes and self.erase_meanwhile:
            self.landing.erase_what_was_erased_meanwhile(hashes, {}, now)
            self.erase_meanwhile = False
        elif writes and hashes:
            self.landing.erase_what_was_erased_meanwhile(hashes, erasures, now)
        return landed

    # -- what the tables hold, from the decision the group holds ------------------------
    def _floors(self, held: dict[Key, tuple[int, str]], keys: list[Key]) -> tuple[Floors, bool]:
        """Per table and partition, the offset below which the table holds the partition's
        rows; and whether this landing must read the tables instead (a decision of the
        previous format, or streams BigQuery no longer knows)."""
        floors: Floors = {}
        read_all = False
        for key in keys:
            committed, metadata = held.get(key, (None, ""))
            base = committed if committed is not None else 0
            partition = key[1]
            for table in LANDING_ORDER:
                floors.setdefault(table, {})[partition] = base
            if metadata.startswith(DECISION_PREFIX):
                decision = json.loads(metadata[len(DECISION_PREFIX):])
                counts = None  # this worker's own decision, seen complete: every append went
                if self.completed.get(key) != metadata:
                    counts = self._seal(key, decision)
                    if counts is None or decision.get("r"):
                        read_all = True
                        continue
                    if any(counts[t] > start for t, (_, start, _) in decision["t"].items()):
                        # rows it appended are there; an erasure that ran before them and after
                        # its ledger read is applied by this landing (erase_meanwhile)
                        self.erase_meanwhile = True
                for table, through in _landed_through(decision, base, counts).items():
                    floors[table][partition] = through
            elif decided_pending_streams(metadata):
                self._finish_pending(decided_pending_streams(metadata))
                read_all = True
        return floors, read_all

    def _past_a_gap(self, floors: Floors, batch: LandingBatch, keys: list[Key]) -> bool:
        """Does the batch leave out an offset between where a table holds a partition and its
        last message, one that may hold a payment (not delivered, and not known to hold no
        record: LandingBatch.accounted_from)? Its range claimed, that payment would be a
        replay when read again. Such a landing is refused, and its partitions are read again
        from the committed offset. (A gap seen twice was once taken for one with no record
        in it; a seek that left stale messages in the batch buffer made the same gap twice,
        and the zombie test lost 952 payments on BigQuery.)"""
        past: dict[Key, tuple[int, int]] = {}
        for key in keys:
            low = batch.accounted_from.get(key, batch.starts.get(key))
            floor = min(floors[table][key[1]] for table in LANDING_ORDER)
            if low is not None and low > floor:
                past[key] = (floor, low)
        for key, (floor, low) in past.items():
            log.warning("stage sink: the landing of partition %s[%d] leaves out offsets from %d (where a table "
                        "holds it) to %d that are neither in it nor known to hold no record: refused, the "
                        "partition is read again", key[0], key[1], floor, low)
        return bool(past)

    def _seal(self, key: Key, decision: dict) -> dict[str, int] | None:
        """Finalize every stream a decision names (no append to them succeeds after this) and
        return table -> its row count; None if BigQuery knows one of them no more."""
        topic, partition = key
        counts = {}
        for table, (stream_id, _, _) in decision["t"].items():
            name = _stream_name(self.landing, table, stream_id)
            count = self.landing.finalize(name)
            for cached, entry in list(self.streams.items()):
                if entry[0] == name:
                    del self.streams[cached]
            if count is None:
                log.warning("stage sink: a decided write stream of %s is gone; partition %d's range is landed "
                            "with a read of the tables", table, partition)
                return None
            counts[table] = count
        if counts:
            log.info("stage sink: partition %s[%d] taken over from an unfinished landing: its %d stream(s) sealed",
                     topic, partition, len(counts))
        return counts

    def _finish_pending(self, names: list[str]) -> None:
        for name in sorted(names):
            self.landing.commit_stream(table_of(name), name, finishing=True, gone_ok=True)

    # -- what this landing appends, and its decision ------------------------------------
    def _writes(self, topic: str, appends: dict[str, Rows], floors: Floors,
                held: dict[Key, tuple[int, str]], ends: dict[Key, int], keys: list[Key], read_all: bool):
        """[(table, partition, stream entry, Arrow rows)] in landing order, and per partition
        its decision and the metadata that commits it."""
        decided: dict[Key, dict] = {}
        for key in keys:
            base = held[key][0] if key in held else 0
            end = max(ends.get(key, base), base)
            decided[key] = {"e": end, "t": {},
                            "f": {t: floors[t][key[1]] for t in LANDING_ORDER if floors[t][key[1]] > base}}
            if read_all:
                decided[key]["r"] = 1  # its floors are the committed offset: whoever finishes it reads
        writes = []
        for table in LANDING_ORDER:
            if table not in appends:
                continue
            columns, partitions, offsets = appends[table]
            by_partition: dict[int, list[int]] = {}
            for i, p in enumerate(partitions):
                by_partition.setdefault(p, []).append(i)
            for partition in sorted(by_partition):
                key = (topic, partition)
                if key not in decided:
                    raise ValueError(f"{table} has rows of partition {partition}, which the landing's messages "
                                     "do not come from")
                rows = sorted(by_partition[partition], key=lambda i: offsets[i])
                arrow = _arrow(table, _take(columns, rows))
                entry = self.streams.get((table, topic, partition))
                if entry is None:
                    entry = self.streams[(table, topic, partition)] = [self.landing.create_committed(table), 0]
                marks, landed_rows = [], 0
                for chunk in _chunks(arrow):  # where each chunk's append leaves the table
                    landed_rows += chunk.num_rows
                    marks.append([landed_rows, offsets[rows[landed_rows]] if landed_rows < len(rows)
                                  else decided[key]["e"]])
                decided[key]["t"][table] = [entry[0].rsplit("/", 1)[1], entry[1], marks]
                writes.append((table, partition, entry, arrow))
        metadata = {key: DECISION_PREFIX + json.dumps(d, separators=(",", ":")) for key, d in decided.items()}
        for key, text in metadata.items():
            if len(text.encode()) > MAX_METADATA_BYTES:
                raise AppendError(f"the decision of partition {key[1]} is {len(text)} bytes, more than the offset "
                                  f"commit's {MAX_METADATA_BYTES}")
        return writes, decided, metadata

    def _forget(self, topic: str, partitions: set[int]) -> None:
        for cached in [c for c in self.streams if c[1] == topic and c[2] in partitions]:
            del self.streams[cached]


def _landed_through(decision: dict, base: int, counts: dict[str, int] | None) -> dict[str, int]:
    """table -> the offset below which it holds the partition's rows, after the decision's
    appends went as far as `counts` say (None: all of them)."""
    end = decision["e"]
    out = {}
    for table in LANDING_ORDER:
        floor = max(base, decision["f"].get(table, base))
        if table not in decision["t"]:
            out[table] = max(floor, end)
            continue
        _, start, marks = decision["t"][table]
        written = marks[-1][0] if counts is None else counts[table] - start
        through = floor
        for rows, next_offset in marks:
            if rows <= written:
                through = max(through, next_offset)
        out[table] = through
    return out


def _stream_name(landing: StorageWriteLanding, table: str, stream_id: str) -> str:
    return f"projects/{landing.wh.project}/datasets/{landing.wh.dataset}/tables/{table}/streams/{stream_id}"


def _carried_floors(through: dict[str, int], offset: int) -> str:
    """The metadata of a commit at `offset`: the tables that hold the partition past it."""
    floors = {table: f for table, f in through.items() if f > offset}
    if not floors:
        return ""
    return DECISION_PREFIX + json.dumps({"e": offset, "t": {}, "f": floors}, separators=(",", ":"))
