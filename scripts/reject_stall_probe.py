"""Event-loop stalls from crafted rejects, measured live: a real `payflow worker` (DuckDB
landing process included) takes N rejected ~62 KB messages (a payment without its cvv and
30 extra fields of 2,048 digits each: the outside attack's shape), while a probe asks its
/livez every 20 ms. Prints the slowest answer and how many took longer than a second.

    PAYFLOW_KAFKA_BOOTSTRAP=127.0.0.1:9092 .venv/bin/python scripts/reject_stall_probe.py --count 150

Exit 0 when no answer took longer than --limit-seconds (1), 1 otherwise.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent


def crafted_reject(rng: random.Random, pan: str) -> bytes:
    doc = {"schema_version": 1, "transaction_id": "txn_" + "".join(rng.choices("abcdefghij", k=20)),
           "event_time": datetime.now(timezone.utc).isoformat().replace("+00:00", "Z"),
           "sender_account_id": "acct_probe", "receiver_account_id": "mrch_probe", "amount": "12.50",
           "currency": "EUR", "credit_card": pan, "card_expiry": "09/29", "ip_address": "203.0.113.7",
           "geo_region": "eu-west", "device_id": "dev_probe", "merchant_id": "m_1", "user_email": None}
    for i in range(30):  # the cvv is missing: a reject, whose remains the DLQ redacts
        doc[f"note_{i}"] = "".join(rng.choices("0123456789", k=2048))
    return orjson.dumps(doc)


async def produce(bootstrap: str, topic: str, count: int) -> None:
    from aiokafka import AIOKafkaProducer

    from payflow.kafka_admin import ensure_topics
    from payflow.simulator.population import make_pan

    await ensure_topics(bootstrap, [topic], 4)
    rng = random.Random(26)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_request_size=1 << 20, acks=1)
    await producer.start()
    try:
        for _ in range(count):
            await producer.send(topic, crafted_reject(rng, make_pan(rng, "visa")[0]), key=b"acct_probe")
        await producer.flush()
    finally:
        await producer.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=150)
    parser.add_argument("--limit-seconds", type=float, default=1.0)
    args = parser.parse_args()
    bootstrap = os.environ.get("PAYFLOW_KAFKA_BOOTSTRAP") or f"127.0.0.1:{os.environ.get('PAYFLOW_LOCAL_KAFKA_PORT', '9092')}"
    prefix = "stall-" + "".join(random.Random().choices("abcdefgh", k=8)) + "-"
    work = Path(tempfile.mkdtemp(prefix="payflow-stall-"))
    port = free_port()
    env = {**os.environ, "PAYFLOW_KAFKA_BOOTSTRAP": bootstrap, "PAYFLOW_APP_ID": prefix + "app",
           "PAYFLOW_TOPIC_PREFIX": prefix, "PAYFLOW_WAREHOUSE": f"duckdb:///{work / 'warehouse.duckdb'}",
           "PAYFLOW_DATA_DIR": str(work / "data"), "PAYFLOW_HMAC_KEYS": "probe-1:" + "5a" * 32,
           "PAYFLOW_WEB_PORT": str(port)}
    asyncio.run(produce(bootstrap, prefix + "payment-events", 1))  # the topic, and one reject to warm up
    log = open(work / "worker.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "payflow.cli", "worker", "-l", "warn"], cwd=ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    answers: list[float] = []
    stop = threading.Event()

    def live() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/livez", timeout=30) as r:
                return r.status == 200
        except OSError:
            return False

    def probe() -> None:
        while not stop.is_set():
            t0 = time.monotonic()
            live()
            answers.append(time.monotonic() - t0)
            time.sleep(0.02)

    from payflow.kafka_admin import group_lag
    try:
        deadline = time.monotonic() + 180
        while not live():
            if proc.poll() is not None or time.monotonic() > deadline:
                print(f"the worker did not come up; log: {work / 'worker.log'}")
                return 2
            time.sleep(0.5)
        time.sleep(5)
        prober = threading.Thread(target=probe, daemon=True)
        prober.start()
        time.sleep(2)
        t0 = time.monotonic()
        asyncio.run(produce(bootstrap, prefix + "payment-events", args.count))
        while sum(asyncio.run(group_lag(bootstrap, prefix + "app", prefix + "payment-events")).values()) > 0:
            if proc.poll() is not None or time.monotonic() - t0 > 300:
                print(f"the worker did not catch up; log: {work / 'worker.log'}")
                return 2
            time.sleep(1)
        busy = time.monotonic() - t0
        time.sleep(2)
    finally:
        stop.set()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=120)
    slow = [a for a in answers if a > args.limit_seconds]
    print(f"{args.count} crafted ~62 KB rejects taken in {busy:.1f} s; /livez asked {len(answers)} times: "
          f"slowest {max(answers) * 1000:.0f} ms, median {sorted(answers)[len(answers) // 2] * 1000:.0f} ms, "
          f"{len(slow)} over {args.limit_seconds:g} s")
    shutil.rmtree(work, ignore_errors=True)
    return 0 if not slow else 1


if __name__ == "__main__":
    sys.exit(main())
