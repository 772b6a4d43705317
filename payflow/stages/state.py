"""The state the stages keep, and what they need of the tables that hold it.

- `PartitionedState`: what the batch processor needs of a state table, as a type: pure (no
  Faust, no RocksDB), so the stages import nothing of the runtime. BatchLoggedTable
  (tables/changelog.py) implements it over RocksDB and a changelog; MemoryState
  (tables/memory.py) in memory for the offline runs.
- `ExpiryIndex`: keeps the tables bounded (below).
- `WatermarkLog`: each partition's watermark per batch, so a replay is judged by the
  watermark it was first judged by (below).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Callable, Iterable, Protocol


class PartitionedState(Protocol):
    def read(self, partition: int, key: str) -> bytes | None: ...
    def write(self, partition: int, key: str, value: bytes) -> None: ...
    def remove(self, partition: int, key: str) -> bool: ...
    def apply_writes(self) -> None: ...
    def expire(self, partition: int, keys: Iterable[str]) -> None: ...
    def scan(self) -> Iterable[tuple[str, bytes]]: ...
    def scan_partition(self, partition: int) -> Iterable[tuple[str, bytes]]: ...
    def scan_partition_from(self, partition: int, after: str | None, limit: int) -> list[tuple[str, bytes]]: ...


# -- ExpiryIndex ---------------------------------------------------------------------------
# Keeping state tables bounded, in memory of a fixed size whatever the number of keys.
#
# Tables hold only what the watermark window needs: a key whose newest event time fell behind
# the horizon is deleted from the local store (the changelog ages out by retention, see
# payflow.tables.changelog). Finding those keys takes no per-key memory: after each landed batch
# the index sweeps on through the partition's store from where it stopped (in key order,
# wrapping around), reads each value's event time and returns the keys behind the horizon. A
# sweep step reads at least `min_sweep` entries and twice as many as were written since the
# last step, so the sweep outpaces the writes and an expired key is gone within one pass over
# the store. A key read before its sweep deletes it is judged by the event time its value
# carries (dedup treats an entry past the window as absent; fraud scoring drops history
# entries past their window), so a late delete changes no verdict.
#
# Most transaction ids, senders and cards in a batch are new, and a read that finds nothing
# costs a RocksDB lookup: `holds` answers from a Bloom filter of fixed size per partition
# (every key written, loaded or recovered since the filter was built is in it; a false "may
# hold" costs one read that finds nothing). Keys cannot be removed from a Bloom filter, so each
# full pass of the sweep builds the next one from the keys it kept plus those written during
# the pass, and swaps it in at the end of the pass.


class SweptTable(Protocol):
    def scan_partition(self, partition: int) -> Iterable[tuple[str, bytes]]: ...
    def scan_partition_from(self, partition: int, after: str | None, limit: int) -> list[tuple[str, bytes]]: ...


FILTER_BITS = 1 << 22  # 512 KiB per partition and table: ~0.5% false "may hold" at 250,000 keys
_HASHES = 3


class KeyFilter:
    """A Bloom filter over str keys (Python's str hash: stable within the process, which is
    as long as the filter lives)."""

    __slots__ = ("bits", "size")

    def __init__(self, size: int = FILTER_BITS):
        self.size = size
        self.bits = bytearray(size // 8)

    def add(self, key: str) -> None:
        h = hash(key)
        step = (h >> 32) | 1
        bits, size = self.bits, self.size
        for i in range(_HASHES):
            pos = (h + i * step) % size
            bits[pos >> 3] |= 1 << (pos & 7)

    def __contains__(self, key: str) -> bool:
        h = hash(key)
        step = (h >> 32) | 1
        bits, size = self.bits, self.size
        for i in range(_HASHES):
            pos = (h + i * step) % size
            if not bits[pos >> 3] & (1 << (pos & 7)):
                return False
        return True


class _Partition:
    __slots__ = ("filter", "next_filter", "cursor", "kept", "last_pass_keys", "written", "written_in_pass")

    def __init__(self, filter_bits: int):
        self.filter = KeyFilter(filter_bits)  # answers holds()
        self.next_filter = KeyFilter(filter_bits)  # built by the pass under way
        self.cursor: str | None = None  # the last key the sweep read (None: at the start)
        self.kept = 0  # keys the pass under way kept so far
        self.last_pass_keys = 0  # keys the last full pass kept
        self.written = 0  # writes since the last sweep step
        self.written_in_pass = 0  # writes since the last full pass ended (or the partition loaded)


class ExpiryIndex:
    def __init__(self, *, ts_of: Callable[[bytes], float], partition_of: Callable[[bytes], int],
                 min_sweep: int = 4096, filter_bits: int = FILTER_BITS):
        """`ts_of` and `partition_of` read a stored value."""
        self.ts_of = ts_of
        self.partition_of = partition_of
        self.min_sweep = min_sweep
        self.filter_bits = filter_bits
        self._partitions: dict[int, _Partition] = {}

    def _state(self, partition: int) -> _Partition:
        state = self._partitions.get(partition)
        if state is None:
            state = self._partitions[partition] = _Partition(self.filter_bits)
        return state

    def load_partition(self, partition: int, items: Iterable[tuple[object, bytes]]) -> int:
        """Start afresh for `partition` from the table's entries of it (at a worker's start,
        and when the partition is assigned again: another worker may have changed it
        meanwhile, and the store was recovered from the changelog)."""
        state = self._partitions[partition] = _Partition(self.filter_bits)
        n = 0
        for key, value in items:
            if self.partition_of(value) != partition:
                continue
            k = key.decode() if isinstance(key, (bytes, bytearray)) else str(key)
            state.filter.add(k)
            n += 1
        state.last_pass_keys = n
        return n

    def note(self, partition: int, ts: float, key: str) -> None:
        """`key` was written (with a value whose event time is `ts`)."""
        state = self._state(partition)
        state.filter.add(key)
        state.next_filter.add(key)
        state.written += 1
        state.written_in_pass += 1

    def holds(self, partition: int, key: str) -> bool:
        """Whether the store may hold `key` for `partition`: False means it has no entry and
        the read can be skipped."""
        state = self._partitions.get(partition)
        return state is not None and key in state.filter

    def expired(self, partition: int, horizon: float, table: SweptTable) -> list[str]:
        """One sweep step over `partition` of `table`: the keys it read whose event time is
        behind `horizon` (the caller deletes them)."""
        state = self._state(partition)
        budget = max(self.min_sweep, 2 * state.written)
        state.written = 0
        started_at = state.cursor
        out: list[str] = []
        wrapped = False
        while budget > 0:
            want = min(budget, 2048)
            entries = table.scan_partition_from(partition, state.cursor, want)
            budget -= want
            at_end = len(entries) < want  # the store has no more keys after these
            back_at_start = False
            if wrapped and started_at is not None:  # the second lap stops where this step began
                lap = [(k, v) for k, v in entries if k < started_at]
                back_at_start = len(lap) < len(entries)
                entries = lap
            for key, value in entries:
                if self.partition_of(value) != partition:
                    continue
                if self.ts_of(value) < horizon:
                    out.append(key)
                else:
                    state.next_filter.add(key)
                    state.kept += 1
            if entries:
                state.cursor = entries[-1][0]
            if back_at_start:
                break
            if at_end:
                # the pass over the whole store is complete: its filter takes over
                state.filter, state.next_filter = state.next_filter, KeyFilter(self.filter_bits)
                state.last_pass_keys, state.kept, state.cursor = state.kept, 0, None
                state.written_in_pass = 0
                if wrapped or started_at is None:
                    break
                wrapped = True
        return out

    def size(self) -> int:
        """Keys held: as the last full pass (or the load) counted them, plus the writes since
        (an upper estimate: a write may replace a key already counted, or one the sweep will
        find expired)."""
        return sum(max(s.last_pass_keys + s.written_in_pass, s.kept) for s in self._partitions.values())


# -- WatermarkLog --------------------------------------------------------------------------
# Per-partition watermark history, so a replay is judged by the watermark it was first judged by.
#
# After a crash, or when the stall guard seeks a partition back, events from the committed
# position on are read again. The in-memory or recovered watermark may by then be hours of
# event time ahead of them: judged against it, payments that were on time the first time (or
# never delivered the first time) would go to the late topic instead of the payments table.
# So each partition keeps a log of (last offset processed, watermark after it), one entry per
# batch, back to the committed position. A replay rewinds the watermark to the entry before its
# offset; from there the watermark advances over the same events exactly as it did before.
#
# The committed position also bounds state expiry: a dedup entry may only expire against the
# watermark the next replay would start from, or a replayed event would find no entry.

# binary, not decimal text: a 16-digit epoch-µs string is exactly what PAN scanners flag
_ENTRY = struct.Struct(">qq")
_LEGACY = struct.Struct(">q")  # a bare watermark, as written before this log existed
# a bound for when nothing commits for a long time (the entries back to the committed
# position are kept; past this many, the oldest go and a replay that far back is inexact)
MAX_ENTRIES = 4096


@dataclass
class WatermarkLog:
    entries: list[tuple[int, int]] = field(default_factory=list)  # (offset, watermark µs), ascending offsets

    @classmethod
    def unpack(cls, raw: bytes | None) -> "WatermarkLog":
        if not raw:
            return cls()
        if len(raw) == _LEGACY.size:
            return cls([(-1, _LEGACY.unpack(raw)[0])])
        return cls([_ENTRY.unpack_from(raw, i) for i in range(0, len(raw), _ENTRY.size)])

    def pack(self) -> bytes:
        return b"".join(_ENTRY.pack(o, w) for o, w in self.entries)

    @property
    def last_offset(self) -> int | None:
        return self.entries[-1][0] if self.entries else None

    @property
    def watermark(self) -> int | None:
        return self.entries[-1][1] if self.entries else None

    def before(self, offset: int) -> int | None:
        """The watermark after everything before `offset` was processed (None: nothing was)."""
        for o, w in reversed(self.entries):
            if o < offset:
                return w
        return None

    def rewind(self, offset: int) -> int | None:
        """`offset` is read again: forget what came from it on; returns the watermark to resume from."""
        while self.entries and self.entries[-1][0] >= offset:
            self.entries.pop()
        return self.watermark

    def record(self, offset: int, watermark: int, committed: int | None) -> None:
        """Note the watermark after `offset`; drop entries no replay can go back to."""
        self.entries.append((offset, watermark))
        if committed is not None:
            keep_from = 0
            for i, (o, _) in enumerate(self.entries):
                if o < committed:
                    keep_from = i  # the last entry before the committed position is a replay's start
            del self.entries[:keep_from]
        if len(self.entries) > MAX_ENTRIES:
            del self.entries[:len(self.entries) - MAX_ENTRIES]
