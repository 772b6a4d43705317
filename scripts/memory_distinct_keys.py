"""Worker memory with many distinct keys: N payments, each from its own sender with its own
transaction id (and one of `--cards` cards), all inside the state window, through a real
`payflow worker` (DuckDB landing child included). Prints the peak and idle RSS of the worker
plus its landing process, sampled every 0.2 s.

    PAYFLOW_KAFKA_BOOTSTRAP=127.0.0.1:9092 .venv/bin/python scripts/memory_distinct_keys.py --count 1000000

Exit 0 when the peak stays under --limit-mb (512), 1 otherwise.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import signal
import string
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import orjson
import psutil

ROOT = Path(__file__).resolve().parent.parent


def _letters(rng: random.Random, n: int) -> str:
    return "".join(rng.choices(string.ascii_lowercase, k=n))


async def produce(bootstrap: str, topic: str, count: int, cards: int, partitions: int) -> None:
    from aiokafka import AIOKafkaProducer

    from payflow.kafka_admin import ensure_topics
    from payflow.simulator.population import make_pan

    await ensure_topics(bootstrap, [topic], partitions)
    rng = random.Random(7)
    pans = [make_pan(rng, "visa")[0] for _ in range(cards)]
    start = datetime.now(timezone.utc) - timedelta(minutes=55)
    step = timedelta(minutes=50) / count  # every payment inside the one-hour window
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=512 * 1024,
                                compression_type="lz4", acks=1)
    await producer.start()
    try:
        pending = []
        for i in range(count):
            sender = f"acct_{_letters(rng, 12)}"
            doc = {"schema_version": 1, "transaction_id": f"txn_{_letters(rng, 20)}",
                   "event_time": (start + step * i).isoformat().replace("+00:00", "Z"),
                   "sender_account_id": sender, "receiver_account_id": f"mrch_{_letters(rng, 6)}",
                   "amount": f"{rng.randint(1, 50000) / 100:.2f}", "currency": "EUR",
                   "credit_card": pans[i % cards], "cvv": "123", "card_expiry": "09/29",
                   "ip_address": f"203.0.113.{i % 250}", "geo_region": "eu-west",
                   "device_id": f"dev_{_letters(rng, 8)}", "merchant_id": "m_1", "user_email": None}
            pending.append(await producer.send(topic, orjson.dumps(doc), key=sender.encode()))
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tree_rss(pid: int) -> dict[str, int]:
    """RSS of the process and of each of its children (the DuckDB landing process, the
    multiprocessing resource tracker), by a short name."""
    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return {}
    out: dict[str, int] = {}
    for p in procs:
        try:
            name = "worker" if p.pid == pid else _role(p)
            out[name] = out.get(name, 0) + p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return out


def _role(p: psutil.Process) -> str:
    command = " ".join(p.cmdline())
    if "resource_tracker" in command:
        return "resource tracker"
    if "spawn_main" in command or "forkserver" in command:
        return "landing process"
    return "other"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--cards", type=int, default=10_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--idle-seconds", type=float, default=30)
    parser.add_argument("--limit-mb", type=float, default=512)
    args = parser.parse_args()
    bootstrap = os.environ.get("PAYFLOW_KAFKA_BOOTSTRAP") or f"127.0.0.1:{os.environ.get('PAYFLOW_LOCAL_KAFKA_PORT', '9092')}"
    prefix = "mem-" + _letters(random.Random(), 8) + "-"
    topic = prefix + "payment-events"
    work = Path(tempfile.mkdtemp(prefix="payflow-mem-"))
    t0 = time.monotonic()
    asyncio.run(produce(bootstrap, topic, args.count, args.cards, args.partitions))
    print(f"produced {args.count} payments in {time.monotonic() - t0:.0f} s", flush=True)

    env = {**os.environ, "PAYFLOW_KAFKA_BOOTSTRAP": bootstrap, "PAYFLOW_APP_ID": prefix + "app",
           "PAYFLOW_TOPIC_PREFIX": prefix, "PAYFLOW_WAREHOUSE": f"duckdb:///{work / 'warehouse.duckdb'}",
           "PAYFLOW_DATA_DIR": str(work / "data"), "PAYFLOW_HMAC_KEYS": "mem-1:" + "5a" * 32,
           "PAYFLOW_WEB_PORT": str(_free_port()), "PAYFLOW_PARTITIONS": str(args.partitions)}
    log = open(work / "worker.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "payflow.cli", "worker", "-l", "warn"], cwd=ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    peak: list = [0, {}]  # the highest total, and its parts
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            parts = tree_rss(proc.pid)
            if sum(parts.values()) > peak[0]:
                peak[0], peak[1] = sum(parts.values()), parts
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    from payflow.kafka_admin import group_lag
    t0 = time.monotonic()
    try:
        while True:
            if proc.poll() is not None:
                print(f"worker exited with {proc.returncode}; log: {work / 'worker.log'}")
                return 2
            try:
                lag = sum(asyncio.run(group_lag(bootstrap, prefix + "app", topic)).values())
            except Exception:  # noqa: BLE001 - the group may not exist yet
                lag = args.count
            if lag == 0:
                break
            time.sleep(2)
        busy = time.monotonic() - t0
        time.sleep(args.idle_seconds)
        idle = sum(tree_rss(proc.pid).values())
    finally:
        stop.set()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=120)
    mb = 1024 * 1024
    print(f"{args.count} distinct senders and transaction ids ({args.cards} cards): processed in {busy:.0f} s; "
          f"worker + landing process RSS peak {peak[0] / mb:.0f} MB, after {args.idle_seconds:.0f} s idle "
          f"{idle / mb:.0f} MB (limit {args.limit_mb:.0f} MB)")
    print("at the peak: " + ", ".join(f"{name} {rss / mb:.0f} MB" for name, rss in sorted(peak[1].items())))
    shutil.rmtree(work, ignore_errors=True)
    return 0 if peak[0] / mb < args.limit_mb else 1


if __name__ == "__main__":
    sys.exit(main())
