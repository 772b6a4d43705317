"""Worker memory under load and through a warehouse outage: RSS sampled every few seconds.

Starts one `payflow worker` (DuckDB by default, or the BigQuery emulator of the local stack),
produces simulated payments at a steady rate, optionally freezes the warehouse for a while
(SIGSTOP of the DuckDB landing process, or of the stack's BigQuery emulator: a warehouse that
hangs, not one that refuses), and prints the RSS of the worker and of its child processes
every --interval seconds, then the peak of their sum. After the run it waits until every
offset is committed and reconciles the warehouse against the simulator's manifest.

    # a 5-minute warehouse outage at 2,000 events/s (DuckDB landing process frozen)
    .venv/bin/python scripts/rss_soak.py --events 800000 --rate 2000 --freeze-at 30 --freeze-seconds 300
    # a 300,000-event soak at 2,000 events/s
    .venv/bin/python scripts/rss_soak.py --events 300000 --rate 2000

Needs the local stack (`make up`; PAYFLOW_LOCAL_* ports respected). Exit code 1 when the
peak is at or above --limit-mb (default 512) or the run does not reconcile.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.helpers import BQ_ENDPOINT, BQ_GRPC, BQ_PROJECT, KAFKA, Worker, unique  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def rss_mb(pid: int) -> tuple[float, list[tuple[int, str, float]]]:
    """(the process's RSS, [(child pid, name, RSS)...]) in MB."""
    proc = psutil.Process(pid)
    children = []
    for child in proc.children(recursive=True):
        try:
            name = "resource_tracker" if "resource_tracker" in " ".join(child.cmdline()) else "landing"
            children.append((child.pid, name, child.memory_info().rss / 2**20))
        except psutil.Error:
            pass
    return proc.memory_info().rss / 2**20, children


def landing_processes(pid: int) -> list[psutil.Process]:
    return [c for c in psutil.Process(pid).children(recursive=True)
            if "resource_tracker" not in " ".join(c.cmdline())]


def emulator_pid() -> int:
    return int((ROOT / "var" / "run" / "bqemulator" / "bqemulator.pid").read_text().split()[0])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=300_000)
    ap.add_argument("--rate", type=float, default=2000.0)
    ap.add_argument("--interval", type=float, default=10.0, help="seconds between samples")
    ap.add_argument("--freeze-at", type=float, default=None, help="seconds after the first event consumed")
    ap.add_argument("--freeze-seconds", type=float, default=300.0)
    ap.add_argument("--warehouse", choices=("duckdb", "bigquery"), default="duckdb")
    ap.add_argument("--limit-mb", type=float, default=512.0)
    ap.add_argument("--env", action="append", default=[], help="NAME=VALUE for the worker (repeatable)")
    ap.add_argument("--json", type=Path, default=None, help="write the samples here")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="rss-soak-"))
    prefix = unique("rss-") + "-"
    extra = dict(e.split("=", 1) for e in args.env)
    dataset = None
    if args.warehouse == "bigquery":
        dataset = unique("rss_")
        extra.setdefault("PAYFLOW_BIGQUERY_ENDPOINT", BQ_ENDPOINT)
        worker = Worker(tmp, prefix=prefix, warehouse=f"bigquery://{BQ_PROJECT}/{dataset}", extra_env=extra)
    else:
        worker = Worker(tmp, prefix=prefix, extra_env=extra)
    manifest_path = tmp / "manifest.json"
    produced: dict = {}

    def produce() -> None:
        import asyncio
        from datetime import datetime, timezone

        from payflow.simulator.generator import SimOptions
        from payflow.simulator.producer import simulate
        options = SimOptions(count=args.events, seed=args.seed,
                             start_time=datetime(2026, 11, 20, 8, 0, tzinfo=timezone.utc))
        m = asyncio.run(simulate(options, bootstrap=KAFKA, topic=prefix + "payment-events", partitions=4,
                                 manifest_path=manifest_path, progress=False, rate=args.rate))
        produced.update(m.to_dict())

    print(f"work dir {tmp}; worker log {worker.log_path}", flush=True)
    worker.start()
    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    samples: list[dict] = []
    frozen: list[psutil.Process] = []
    started = time.monotonic()
    first_event = None
    freeze_done = args.freeze_at is None
    next_sample = started
    try:
        while True:
            if not worker.alive():
                print(f"worker exited with {worker.proc.returncode}:\n{worker.log_tail()}", flush=True)
                return 1
            now = time.monotonic()
            if first_event is None and worker.metrics().get(
                    ("payflow_stage_events_in_total", (("stage", "decode"),)), 0) > 0:
                first_event = now
            if not freeze_done and first_event is not None and not frozen and now - first_event >= args.freeze_at:
                frozen = ([psutil.Process(emulator_pid())] if args.warehouse == "bigquery"
                          else landing_processes(worker.proc.pid))
                for p in frozen:
                    p.send_signal(signal.SIGSTOP)
                frozen_at = now
                print(f"t={now - started:6.0f}s warehouse frozen (SIGSTOP {[p.pid for p in frozen]})", flush=True)
            if frozen and now - frozen_at >= args.freeze_seconds:
                for p in frozen:
                    p.send_signal(signal.SIGCONT)
                print(f"t={now - started:6.0f}s warehouse resumed (SIGCONT)", flush=True)
                frozen, freeze_done = [], True
            if now >= next_sample:
                next_sample += args.interval
                main_mb, children = rss_mb(worker.proc.pid)
                m = worker.metrics()
                sample = {"t": round(now - started, 1), "worker_mb": round(main_mb, 1),
                          "children_mb": [round(c[2], 1) for c in children],
                          "total_mb": round(main_mb + sum(c[2] for c in children), 1),
                          "consumed": m.get(("payflow_stage_events_in_total", (("stage", "decode"),)), 0),
                          "buffered_mb": round(m.get(("payflow_buffered_bytes", ()), 0) / 2**20, 1),
                          "ready": worker.get("/readyz")[0] if m else None}
                samples.append(sample)
                print(" ".join(f"{k}={v}" for k, v in sample.items()), flush=True)
            if not producer.is_alive() and freeze_done and worker.lag() == 0:
                break
            time.sleep(1.0)
    finally:
        for p in frozen:
            p.send_signal(signal.SIGCONT)
        code = worker.stop()
    peak = max(s["total_mb"] for s in samples)
    print(f"peak RSS worker + children: {peak:.0f} MB (limit {args.limit_mb:.0f}); "
          f"worker alone {max(s['worker_mb'] for s in samples):.0f} MB; {len(samples)} samples; "
          f"worker exit {code}", flush=True)
    from payflow.reconcile import reconcile
    from payflow.simulator.manifest import load
    if dataset is not None:
        from payflow.warehouse.bq import BigQueryWarehouse
        warehouse = BigQueryWarehouse(BQ_PROJECT, dataset, endpoint=BQ_ENDPOINT, grpc_endpoint=BQ_GRPC)
    else:
        from payflow.warehouse.duck import DuckDBWarehouse
        warehouse = DuckDBWarehouse(worker.warehouse[len("duckdb:///"):])
    try:
        result = reconcile(warehouse, load(manifest_path))
        print(result.report(), flush=True)
    finally:
        if dataset is not None:
            warehouse.client.delete_dataset(f"{BQ_PROJECT}.{dataset}", delete_contents=True, not_found_ok=True)
        warehouse.close()
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "samples": samples,
                                         "peak_mb": peak, "reconciled": result.ok}, indent=1))
    return 0 if peak < args.limit_mb and result.ok else 1


if __name__ == "__main__":
    os.environ.setdefault("PAYFLOW_LOG_FORMAT", "json")
    sys.exit(main())
