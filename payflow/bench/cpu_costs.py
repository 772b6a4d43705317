"""CPU per event of the worker's steps outside the stages, and of the DuckDB landing, offline.

A fixed-seed simulated stream runs through the BatchProcessor (state in dicts, no Kafka) in
batches; each step after it is timed in CPU time (time.process_time), which holds on a
shared machine where wall time does not: the enriched records (enriched_records), the other
outputs (output_records), the landing batch (build_batch), its pickling to the landing
process, and the landing itself into a fresh DuckDB file in this process (one DuckDB thread,
as the landing process runs it). Prints µs per event per step and the landing's memory.

    python -m payflow.bench.cpu_costs [--events 100000] [--batch 2000] [--rounds 3]
"""
from __future__ import annotations

import argparse
import gc
import json
import pickle
import tempfile
import time
import zlib
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from payflow.keys import KeyRing
from payflow.pipeline.outputs import enriched_records, output_records
from payflow.settings import Topics
from payflow.simulator.generator import EventStream, SimOptions
from payflow.stages.batch import BatchProcessor, RawItem
from payflow.tables.memory import MemoryState
from payflow.warehouse.base import build_batch
from payflow.warehouse.child import _pickled_without_memo

START = datetime(2026, 1, 5, 9, 0, tzinfo=timezone.utc)
PARTITIONS = 6


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run(events: int, batch_size: int, land: bool, duckdb_settings: list[str] = (), cache_mb: int = 0) -> dict[str, Any]:
    from payflow.warehouse.duck import DuckDBWarehouse

    options = SimOptions(count=events, seed=2026, start_time=START)
    offsets = [0] * PARTITIONS
    items = []
    for m in EventStream(options):
        p = zlib.crc32(m.key or b"") % PARTITIONS
        items.append((p, offsets[p], m.key, m.value))
        offsets[p] += 1
    keyring = KeyRing.parse("bench-1:" + "3c" * 32)
    tables = {name: MemoryState() for name in ("dedup", "watermark", "sender", "card")}
    clock = {"now": START + timedelta(seconds=events / options.business_tps + 60)}
    processor = BatchProcessor(keyring=keyring, dedup_table=tables["dedup"], watermark_table=tables["watermark"],
                               sender_table=tables["sender"], card_table=tables["card"], now=lambda: clock["now"])
    topics = Topics()
    cpu: dict[str, float] = defaultdict(float)
    with tempfile.TemporaryDirectory() as tmp:
        wh = DuckDBWarehouse(str(Path(tmp) / "w.duckdb")) if land else None
        if wh is not None:
            wh.ensure_schema()
            wh.con.execute("SET threads = 1")
            if cache_mb:
                wh.limit_cache(cache_mb)
            for setting in duckdb_settings:  # e.g. memory_limit='64MB'
                wh.con.execute(f"SET {setting}")
        rss_before = _rss_mb()
        gc.freeze()
        for i in range(0, len(items), batch_size):
            chunk = items[i:i + batch_size]
            clock["now"] += timedelta(seconds=1)
            now = clock["now"]
            raw = [RawItem(p, o, v) for p, o, _, v in chunk]
            keys = {(p, o): k for p, o, k, _ in chunk}
            t0 = time.process_time()
            result = processor.process(raw)
            t1 = time.process_time()
            enriched_records(result)
            t2 = time.process_time()
            output_records(result, keys, topics, now)
            t3 = time.process_time()
            batch = build_batch(result.enriched, result.duplicates, result.rejections, result.late,
                                result.watermarks, now)
            t4 = time.process_time()
            pickled = _pickled_without_memo(batch)
            batch = pickle.loads(pickled)
            t5 = time.process_time()
            if wh is not None:
                wh.land(batch)
            t6 = time.process_time()
            processor.expire(result.start_watermarks)
            for name, seconds in (("stages", t1 - t0), ("enriched_records", t2 - t1), ("output_records", t3 - t2),
                                  ("build_batch", t4 - t3), ("pickle_roundtrip", t5 - t4), ("land", t6 - t5)):
                cpu[name] += seconds
        out: dict[str, Any] = {"events": len(items),
                               "us_per_event": {k: round(v / len(items) * 1e6, 2) for k, v in cpu.items()}}
        if wh is not None:
            out["landing_rss_growth_mb"] = round(_rss_mb() - rss_before, 1)
            out["duckdb_memory_mb"] = {tag: round(b / 2**20, 1) for tag, b in wh.con.execute(
                "SELECT tag, memory_usage_bytes FROM duckdb_memory() WHERE memory_usage_bytes > 0").fetchall()}
            out["peak_rss_mb"] = round(_peak_rss_mb(), 1)
            wh.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=2_000)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--no-land", action="store_true", help="skip the DuckDB landing")
    parser.add_argument("--cache-mb", type=int, default=0, help="limit_cache() as the landing process sets it (0: off)")
    parser.add_argument("--set", action="append", default=[], help="a DuckDB setting for the landing, e.g. memory_limit='64MB'")
    args = parser.parse_args()
    for _ in range(args.rounds):
        print(json.dumps(run(args.events, args.batch, not args.no_land, args.set, args.cache_mb)), flush=True)


if __name__ == "__main__":
    main()
