"""State tables in memory, one dict per partition: the batch processor's tables for offline
runs (the fraud evaluation's direct mode, the CPU-cost benchmark), with the PartitionedState
and SweptTable methods it calls. Partitions are kept apart as RocksDB keeps them (one
database per partition): the same key written from two partitions is two entries."""
from __future__ import annotations

from collections import defaultdict
from typing import Iterable


class MemoryState:
    def __init__(self) -> None:
        self.data: dict[int, dict[str, bytes]] = defaultdict(dict)

    def read(self, partition: int, key: str) -> bytes | None:
        return self.data[partition].get(key)

    def write(self, partition: int, key: str, value: bytes) -> None:
        self.data[partition][key] = value

    def remove(self, partition: int, key: str) -> bool:
        return self.data[partition].pop(key, None) is not None

    def apply_writes(self) -> None:
        pass  # written through at once

    def expire(self, partition: int, keys: Iterable[str]) -> None:
        for key in keys:
            self.data[partition].pop(key, None)

    def scan_partition(self, partition: int) -> list[tuple[str, bytes]]:
        return list(self.data[partition].items())

    def scan_partition_from(self, partition: int, after: str | None, limit: int) -> list[tuple[str, bytes]]:
        keys = sorted(k for k in self.data[partition] if after is None or k > after)[:limit]
        return [(k, self.data[partition][k]) for k in keys]
