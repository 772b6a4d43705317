"""Dedup decisions (pure): replay versus duplicate, and the one-hour watermark.

The dedup table maps transaction_id -> where it was first seen (partition, offset) and
its event_time. Every copy of a transaction arrives in one partition (the raw key is the
sender), so the same id at the same (partition, offset) can only be the same message read
again after a crash: it passes through (the sink is idempotent). The same id at another
offset is a second message: a duplicate, dropped and audited.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import Enum

_PACK = struct.Struct(">iqq")


class Verdict(str, Enum):
    NEW = "new"
    REPLAY = "replay"
    DUPLICATE = "duplicate"


@dataclass(frozen=True, slots=True)
class FirstSeen:
    partition: int
    offset: int
    event_time_us: int

    def pack(self) -> bytes:
        return _PACK.pack(self.partition, self.offset, self.event_time_us)

    @classmethod
    def unpack(cls, raw: bytes) -> "FirstSeen":
        return cls(*_PACK.unpack(raw))


def classify(first: FirstSeen | None, partition: int, offset: int) -> Verdict:
    if first is None:
        return Verdict.NEW
    if first.partition == partition and first.offset == offset:
        return Verdict.REPLAY
    return Verdict.DUPLICATE


def is_late(event_time_us: int, watermark_us: int | None, window_us: int) -> bool:
    """Older than the watermark: more than `window` behind the highest event_time seen."""
    return watermark_us is not None and event_time_us < watermark_us - window_us
