"""The query face through a running worker (real broker, real worker process): writes and
reads outside the warehouse refused with the owner file's token, Faust's state views not
served, a 10,000,000-row read bounded without growing the worker or stalling its event
loop, landings going on beside a long read, and no HMAC key in the landing process."""
from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from payflow.settings import ROOT
from tests.helpers import KAFKA, TEST_HMAC_KEYS, Worker, unique, wait_until

pytestmark = pytest.mark.integration

CROSS_JOIN = "SELECT sum(a.range * b.range) AS s FROM range(1000000) AS a, range(1000000) AS b"


def cli(worker: Worker, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "payflow.cli", *args], cwd=ROOT, env=worker.env,
                          capture_output=True, text=True, timeout=timeout)


def rows(worker: Worker, sql: str) -> list[dict]:
    proc = cli(worker, "query", "--json", sql)
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def landing_process(worker: Worker) -> int:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if int(fields[1]) == worker.proc.pid and b"spawn_main" in cmdline:
                return int(entry.name)
    raise AssertionError("no landing process under the worker")


def send(worker: Worker, count: int, rate: float | None, seed: int) -> threading.Thread:
    from payflow.simulator.generator import SimOptions
    from payflow.simulator.producer import simulate

    options = SimOptions(count=count, seed=seed, start_time=datetime(2026, 11, 20, 8, 0, tzinfo=timezone.utc))
    sender = threading.Thread(target=lambda: asyncio.run(simulate(
        options, bootstrap=KAFKA, topic=worker.prefix + "payment-events", partitions=4,
        manifest_path=worker.tmp / f"manifest-{seed}.json", rate=rate, progress=False)))
    sender.start()
    return sender


def test_the_query_face_through_a_worker(kafka, tmp: Path):
    prefix = unique("face") + "-"
    # the long read below runs until this bound: long enough to see landings beside it
    worker = Worker(tmp, prefix=prefix, extra_env={"PAYFLOW_QUERY_TIMEOUT_SECONDS": "25"}).start()
    db_path = Path(worker.warehouse[len("duckdb:///"):])
    try:
        def started() -> bool:
            assert worker.alive(), worker.log_tail()
            try:
                return bool(worker.get_json("/readyz")["checks"]["pipeline_started"])
            except OSError:
                return False
        wait_until(started, 180, what="the worker's pipeline to start")
        send(worker, 1000, rate=None, seed=3).join(timeout=120)
        wait_until(lambda: rows(worker, "SELECT count(*) AS n FROM payment_transactions")[0]["n"] > 0, 180,
                   what="payments to land")
        worker.wait_caught_up()

        # -- no write, nothing outside the warehouse, with the owner file's token ------------------
        target = rows(worker, "SELECT transaction_id, amount FROM payment_transactions "
                              "ORDER BY transaction_id LIMIT 1")[0]
        cli(worker, "gdpr", "erase", "--pii-hash", "a" * 64, "--mode", "delete")
        before = (rows(worker, "SELECT transaction_id, amount FROM payment_transactions ORDER BY 1"),
                  rows(worker, "SELECT request_id, pii_hash FROM gdpr_erasures ORDER BY 1"))
        assert before[1], "the erasure ledger has an entry to protect"
        attacks = [
            f"WITH u AS (UPDATE payment_transactions SET amount = 999999.99 WHERE transaction_id = "
            f"'{target['transaction_id']}' RETURNING transaction_id, amount) SELECT * FROM u",
            "WITH d AS (DELETE FROM gdpr_erasures RETURNING *) SELECT * FROM d",
            "SELECT * FROM read_text('/proc/self/environ')",
            "SELECT * FROM read_csv_auto('/etc/passwd')",
            "SELECT * FROM read_csv_auto('http://127.0.0.1:9/x.csv')",
        ]
        for sql in attacks:
            refused = cli(worker, "query", sql)
            assert refused.returncode == 2 and "read-only" in refused.stderr, (sql, refused.stdout, refused.stderr)
            assert "Traceback" not in refused.stderr
            assert "5a5a5a5a" not in refused.stdout + refused.stderr
        after = (rows(worker, "SELECT transaction_id, amount FROM payment_transactions ORDER BY 1"),
                 rows(worker, "SELECT request_id, pii_hash FROM gdpr_erasures ORDER BY 1"))
        assert after == before

        # -- Faust's state views are not served ----------------------------------------------------
        for path in (f"/table/{prefix}app-dedup/x/", "/table/", "/router/", f"/router/dedup/x/"):
            status, _ = worker.get(path)
            assert status == 404, path
        assert worker.get("/livez")[0] == 200

        # -- the landing process: no HMAC key in its environment, its files for this user only -----
        child = landing_process(worker)
        environment = Path(f"/proc/{child}/environ").read_bytes()
        assert b"PAYFLOW_HMAC_KEYS" not in environment
        assert TEST_HMAC_KEYS.split(":")[1].encode() not in environment
        assert stat.S_IMODE(db_path.stat().st_mode) == 0o600
        wal = Path(str(db_path) + ".wal")
        if wal.exists():
            assert stat.S_IMODE(wal.stat().st_mode) == 0o600

        # -- a 10,000,000-row read: bounded, the worker small and its event loop answering ---------
        peak = {"rss": 0.0, "livez": 0.0}
        done = threading.Event()

        def watch() -> None:
            while not done.is_set():
                peak["rss"] = max(peak["rss"], rss_mb(worker.proc.pid))
                started = time.monotonic()
                try:
                    worker.get("/livez")
                except OSError:
                    pass
                peak["livez"] = max(peak["livez"], time.monotonic() - started)
                time.sleep(0.2)
        watcher = threading.Thread(target=watch)
        watcher.start()
        started = time.monotonic()
        try:
            big = cli(worker, "query", "--json",
                      "SELECT range AS n, 'padding-padding-padding-padding' AS pad FROM range(10000000)",
                      timeout=300)
        finally:
            done.set()
            watcher.join()
        took = time.monotonic() - started
        print(f"10M-row read: {took:.1f} s, worker peak RSS {peak['rss']:.0f} MB, "
              f"slowest /livez {peak['livez'] * 1000:.0f} ms, landing process RSS {rss_mb(child):.0f} MB")
        # stopped at the row bound (or, on a machine too busy to fetch a million rows in time, the time bound)
        assert big.returncode == 2, big.stderr[-500:]
        assert "more than 1000000 rows" in big.stderr or "PAYFLOW_QUERY_TIMEOUT_SECONDS" in big.stderr, big.stderr
        assert peak["rss"] < 512, peak
        assert peak["livez"] < 1.0, peak
        assert worker.alive(), worker.log_tail()

        # -- a long read does not hold landings ----------------------------------------------------
        landed = rows(worker, "SELECT count(*) AS n FROM payment_transactions")[0]["n"]
        long_read = subprocess.Popen([sys.executable, "-m", "payflow.cli", "query", CROSS_JOIN], cwd=ROOT,
                                     env=worker.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            time.sleep(3)
            sender = send(worker, 1500, rate=300, seed=4)
            wait_until(lambda: rows(worker, "SELECT count(*) AS n FROM payment_transactions")[0]["n"] > landed,
                       120, what="payments to land while a long read runs")
            assert long_read.poll() is None, "the long read ended before landings were seen beside it"
            sender.join(timeout=120)
        finally:
            _, err = long_read.communicate(timeout=120)
        assert long_read.returncode == 2 and "PAYFLOW_QUERY_TIMEOUT_SECONDS" in err, err
        worker.wait_caught_up()
        assert worker.alive(), worker.log_tail()
    finally:
        worker.stop()
    assert not os.path.exists(str(db_path) + ".owner.json")
