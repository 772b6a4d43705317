"""CPU cost of fraud scoring per event, on the simulator's stream (what `make bench` sends):
the batch processor over in-memory tables, fraud stage seconds / events, best of N runs.

    python -m payflow.fraudeval.cost [--events 20000] [--runs 5]
"""
from __future__ import annotations

import argparse
import time
from datetime import datetime, timedelta, timezone


def measure(events: int, runs: int, batch: int = 2000) -> tuple[float, float]:
    """(fraud stage CPU µs per event, whole batch CPU µs per event), best of `runs`."""
    from payflow.keys import KeyRing
    from payflow.tables.memory import MemoryState
    from payflow.simulator.generator import EventStream, SimOptions
    from payflow.stages.batch import BatchProcessor, RawItem

    start = datetime(2026, 11, 20, tzinfo=timezone.utc)
    msgs = [m.value for m in EventStream(SimOptions(count=events, seed=42, start_time=start))]
    now = start + timedelta(seconds=events / 5 + 3600)
    best_fraud = best_all = float("inf")
    for _ in range(runs):
        tables = {name: MemoryState() for name in ("dedup_table", "watermark_table", "sender_table", "card_table")}
        p = BatchProcessor(keyring=KeyRing.parse("cost-1:" + "5a" * 32), now=lambda: now, **tables)
        started = time.process_time()
        for i in range(0, len(msgs), batch):
            result = p.process([RawItem(0, i + j, v) for j, v in enumerate(msgs[i:i + batch])])
            p.expire(result.start_watermarks)
        total = time.process_time() - started
        best_fraud = min(best_fraud, p.clock.seconds["fraud"] / len(msgs) * 1e6)
        best_all = min(best_all, total / len(msgs) * 1e6)
    return best_fraud, best_all


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    fraud_us, all_us = measure(args.events, args.runs)
    print(f"fraud stage {fraud_us:.1f} µs/event, whole batch processor {all_us:.1f} µs/event (CPU, best of {args.runs})")


if __name__ == "__main__":
    main()
