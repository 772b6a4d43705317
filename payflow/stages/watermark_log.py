"""Per-partition watermark history, so a replay is judged by the watermark it was first judged by.

After a crash, or when the stall guard seeks a partition back, events from the committed
position on are read again. The in-memory or recovered watermark may by then be hours of
event time ahead of them: judged against it, payments that were on time the first time (or
never delivered the first time) would go to the late topic instead of the payments table.
So each partition keeps a log of (last offset processed, watermark after it), one entry per
batch, back to the committed position. A replay rewinds the watermark to the entry before its
offset; from there the watermark advances over the same events exactly as it did before.

The committed position also bounds state expiry: a dedup entry may only expire against the
watermark the next replay would start from, or a replayed event would find no entry.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field

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
