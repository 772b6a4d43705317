"""The ground-truth manifest: what the simulator sent, counted on delivery.

It holds no card data: a test that needs a card regenerates it from the seed.
"""
from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from payflow.simulator import malformed
from payflow.simulator.generator import Message


@dataclass
class Manifest:
    seed: int
    options: dict[str, Any]
    start_time: str
    topic: str
    messages_sent: int = 0
    valid_ids: set[str] = field(default_factory=set)
    duplicates: int = 0
    late_ids: set[str] = field(default_factory=set)
    malformed_by_kind: Counter = field(default_factory=Counter)
    sums: dict[str, Decimal] = field(default_factory=lambda: defaultdict(Decimal))
    counts: Counter = field(default_factory=Counter)
    fraud: dict[str, dict] = field(default_factory=dict)
    throughput: dict[str, float] = field(default_factory=dict)
    interrupted: bool = False

    def record(self, msg: Message) -> None:
        """Count one message the broker acknowledged."""
        self.messages_sent += 1
        if msg.kind == "valid":
            self.valid_ids.add(msg.transaction_id)
            self.sums[msg.currency] += msg.amount
            self.counts[msg.currency] += 1
            if msg.fraud:
                self.fraud[msg.transaction_id] = msg.fraud
        elif msg.kind == "duplicate":
            self.duplicates += 1
        elif msg.kind == "late":
            self.late_ids.add(msg.transaction_id)
        else:
            self.malformed_by_kind[msg.malformed_kind] += 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "options": self.options,
            "start_time": self.start_time,
            "topic": self.topic,
            "interrupted": self.interrupted,
            "messages_sent": self.messages_sent,
            "unique_valid_on_time": len(self.valid_ids),
            "expected_duplicates": self.duplicates,
            "late": len(self.late_ids),
            "malformed": {
                "total": sum(self.malformed_by_kind.values()),
                "by_kind": dict(sorted(self.malformed_by_kind.items())),
                "expected_reason": {k: malformed.EXPECTED_REASON[k] for k in sorted(self.malformed_by_kind)},
            },
            "sum_by_currency": {c: str(v) for c, v in sorted(self.sums.items())},
            "count_by_currency": dict(sorted(self.counts.items())),
            "fraud_labels": dict(sorted(self.fraud.items())),
            "transaction_ids": sorted(self.valid_ids),
            "late_transaction_ids": sorted(self.late_ids),
            "throughput": self.throughput,
        }

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1))
        tmp.replace(path)


def load(path: Path) -> dict[str, Any]:
    data = json.loads(Path(path).read_text())
    data["sum_by_currency"] = {c: Decimal(v) for c, v in data["sum_by_currency"].items()}
    return data
