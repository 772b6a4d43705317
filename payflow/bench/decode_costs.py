"""CPU per message of the decode stage and of its parts, offline: what a faster decoder could
save (docs/performance.md, "decode and validation in one pass").

The valid messages of a fixed-seed simulated stream are decoded (payflow.stages.validation,
compiled if installed so); then each part of the work is timed alone over the same messages:
the JSON parse, the card-like-digit pre-scan over the text fields, the event time, the amount
and the Luhn check. CPU time, best of `--rounds`.

    python -m payflow.bench.decode_costs [--count 20000] [--rounds 5]
"""
from __future__ import annotations

import argparse
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

import orjson

from payflow.simulator.generator import EventStream, SimOptions
from payflow.stages import cards, validation

START = datetime(2026, 1, 5, 9, 0, tzinfo=timezone.utc)


def best_us(items: list[Any], step: Callable[[Any], Any], rounds: int) -> float:
    """The fastest of `rounds` passes of `step` over `items`, in CPU µs per item."""
    best = float("inf")
    for _ in range(rounds):
        started = time.process_time()
        for item in items:
            step(item)
        best = min(best, time.process_time() - started)
    return best / len(items) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=20_000, help="messages simulated (the valid ones are timed)")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    messages = [m.value for m in EventStream(SimOptions(count=args.count, seed=7, start_time=START))
                if m.kind == "valid"]
    now = START + timedelta(days=30)
    skew = timedelta(minutes=15)
    docs = [orjson.loads(m) for m in messages]
    parts = {
        "decode (all of it)": (messages, lambda m: validation.decode(m, now=now)),
        "JSON parse (orjson.loads)": (messages, orjson.loads),
        "card-like digit pre-scan": (docs, lambda d: cards.may_hold_pan("\x00".join(
            validation.CHECKED_TEXT_FIELDS(d)))),
        "event time": (docs, lambda d: validation.parse_event_time(d["event_time"], now, skew)),
        "amount": (docs, lambda d: validation.parse_amount(d["amount"], d["currency"])),
        "Luhn check": (docs, lambda d: cards.luhn_valid(d["credit_card"].replace(" ", "").replace("-", ""))),
    }
    print(f"{len(messages)} valid messages, CPU µs per message (best of {args.rounds}):")
    for name, (items, step) in parts.items():
        print(f"  {name:28s} {best_us(items, step, args.rounds):6.2f}")


if __name__ == "__main__":
    main()
