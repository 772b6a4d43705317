"""Throughput of a fleet of workers landing in the BigQuery emulator, with the streams they
created and how many landings each served (docs/bigquery.md).

    scripts/stack.sh run -- .venv/bin/python scripts/bq_fleet_throughput.py [--workers 3] [--events 30000]

Runs the simulator into a fresh raw topic, starts the workers together (one consumer group,
one fresh dataset), waits until every offset is committed and prints: events, seconds from
the start to the last commit, events/s, landings (the workers' payflow_sink_flush_seconds
counts), write streams created and AppendRows requests (the workers' counters), appends per
stream, and the write streams the emulator holds for the dataset (every version counts there).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.helpers import BQ_ENDPOINT, BQ_PROJECT, Worker, simulate, unique, wait_until  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--events", type=int, default=30_000)
    parser.add_argument("--partitions", type=int, default=12)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bq-fleet-"))
    prefix = unique("fleet-") + "-"
    simulate(prefix, tmp / "m.json", count=args.events, seed=61, partitions=args.partitions)
    dataset = unique("fleet_")
    env = {"PAYFLOW_BIGQUERY_ENDPOINT": BQ_ENDPOINT}
    workers = []
    for i in range(args.workers):
        (tmp / str(i)).mkdir()
        workers.append(Worker(tmp / str(i), prefix=prefix, app_id=prefix + "app",
                              warehouse=f"bigquery://{BQ_PROJECT}/{dataset}", extra_env=env))
    started = time.monotonic()
    for worker in workers:
        worker.start()
    try:
        wait_until(lambda: all(w.alive() for w in workers) and workers[0].lag() == 0, 1800, interval=0.5,
                   what="every offset committed")
        seconds = time.monotonic() - started
        totals = {name: sum(w.metrics().get((name, ()), 0) for w in workers) for name in
                  ("payflow_sink_flush_seconds_count", "payflow_bigquery_write_streams_created_total",
                   "payflow_bigquery_appends_total")}
    finally:
        codes = [w.stop() for w in workers]
    held = None  # the emulator's admin API is off unless BQEMU_ADMIN_ENABLED=true
    try:
        with urllib.request.urlopen(f"{BQ_ENDPOINT}/admin/streams", timeout=30) as answer:
            held = len([s for s in json.load(answer)["writeStreams"] if s["datasetId"] == dataset])
    except urllib.error.HTTPError as error:
        if error.code != 404:
            raise
    landings, created, appends = totals.values()
    print(json.dumps({"workers": args.workers, "partitions": args.partitions, "events": args.events,
                      "seconds": round(seconds, 1), "events_per_s": round(args.events / seconds),
                      "landings": int(landings), "streams_created": int(created), "appends": int(appends),
                      "appends_per_stream": round(appends / max(1, created), 1),
                      "streams_per_landing": round(created / max(1, landings), 2),
                      "streams_the_emulator_holds": held, "exit_codes": codes}))

if __name__ == "__main__":
    main()
