"""The path of one valid payment through a real worker, traced: which of payflow's files and
functions it passes through, from the raw topic to its DuckDB row and its enriched record,
and how often the reading switches file.

A worker runs against the local broker on a topic holding one payment (a hand-written event
of the contract, a generated Luhn-valid test PAN), from a copy of payflow laid out as
installed and without its compiled stages (mypyc's native calls leave no Python frame to
see). A sitecustomize in that copy records every call and return of a function of payflow
in the worker and in its DuckDB landing process. Of those, the payment's path is what runs
under the pipeline agent's task, the raw topic's fetch, the landings the checkpoint starts
and the landing process; timers, probes and the web server are left out.

A first payment warms the worker up (a partition's first batch loads its caches); the
second is traced from the fetch that delivers it to three ends: its DuckDB row, its
enriched record, and the first offset commit after its landing. For each end, two ways:
every call and return as they happen (file:function each time the file changes), and the
first reading, each function once where it is first called (how a reader follows the
path); for each, the distinct files and the switches between them.

    scripts/stack.sh run --no-bq -- .venv/bin/python scripts/payment_path.py [--show]
    ... scripts/payment_path.py --checkout /path/to/an/older/checkout
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from lint_imports import lay_out  # noqa: E402 - the package as installed, .py files only

# the event: the contract's example (docs/event-contract.md), its card number generated here
# (a Luhn-valid test PAN, never written out in the repository)
PAYMENT = {"schema_version": 1, "transaction_id": "txn_path_0001", "event_time": None,
           "sender_account_id": "acct_000123", "receiver_account_id": "mrch_0042", "amount": "125.50",
           "currency": "USD", "credit_card": None, "cvv": "123", "card_expiry": "08/29",
           "ip_address": "203.0.113.7", "geo_region": "us-east", "device_id": "dev_7f3a", "merchant_id": "mrch_0042",
           "user_email": "someone@example.com"}

# records every call and return of payflow's own functions, one JSON line per event, per process
SITECUSTOMIZE = '''
import json, os, sys, threading, time
_out_dir = os.environ.get("PAYFLOW_TRACE_DIR")
if _out_dir:
    _base = os.path.dirname(os.path.abspath(__file__)) + "/"
    _out = open(os.path.join(_out_dir, f"trace-{os.getpid()}.jsonl"), "w", buffering=1)
    _lock = threading.Lock()

    def _roots(frame):
        # payflow's frames from this one up to the first frame not of payflow (the event
        # loop's task step, a thread's run, Faust's caller): the last is the root
        chain = []
        while frame is not None and frame.f_code.co_filename.startswith(_base):
            chain.append((frame.f_code.co_filename[len(_base):], frame.f_code.co_qualname))
            frame = frame.f_back
        return chain

    def _profile(frame, event, arg):
        if event not in ("call", "return") or not frame.f_code.co_filename.startswith(_base):
            return
        chain = _roots(frame)
        line = json.dumps([time.monotonic_ns(), os.getpid(), threading.current_thread().name, event,
                           chain[0][0], chain[0][1], chain[-1][0] + ":" + chain[-1][1], len(chain)])
        with _lock:
            _out.write(line + "\\n")

    import atexit
    atexit.register(_out.flush)
    sys.setprofile(_profile)
    threading.setprofile(_profile)
'''

# where the payment's path starts: the outermost of the payflow frames on top of an event's
# stack (below them: the event loop's task, a thread, or Faust calling a replaced method)
PATH_ROOTS = ("pipeline.py:process_payments", "fetch.py:", "checkpoint.py:", "sink.py:",
              "child.py:ChildProcessDuckDB.land", "child.py:_land_pickled", "take.py:", "commit_offsets.py:")
# the window: from the fetch's delivery of the payment to the agent's buffer, to the first offset
# commit computed after the landing's ack
FIRST = ("fetch.py", "_deliver_routed", "call")
LANDED = ("checkpoint.py", "Checkpoint._commit", "return")
LAST = ("commit_offsets.py", "fixed_new_offset", "return")
# the ends the path is read to: the payment's DuckDB row, its enriched record, its committed offset
ENDS = (("to its DuckDB row", ("duck.py", "DuckDBWarehouse.land", "return")),
        ("to its enriched record", ("outputs.py", "KafkaOutputs.send_landed", "return")),
        ("to its committed offset", None))  # the window's end


def on_path(root: str) -> bool:
    """By file name and function, so that the same script reads an older layout too."""
    name = root.rsplit("/", 1)[-1]
    return any(name == r or (r.endswith(":") and name.startswith(r)) for r in PATH_ROOTS)


def at(event: list, mark: tuple[str, str, str]) -> bool:
    return (event[4].rsplit("/", 1)[-1], event[5], event[3]) == mark


def test_pan() -> str:
    """A 16-digit Visa-range test number with its Luhn check digit."""
    from payflow.stages.cards import luhn_check_digit
    partial = "4" + "1" * 14
    return partial + luhn_check_digit(partial)


async def produce(bootstrap: str, topic: str, transaction_id: str, create: bool) -> None:
    from aiokafka import AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    if create:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(topic, 1, 1)])
        finally:
            await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True)
    await producer.start()
    try:
        event = dict(PAYMENT, transaction_id=transaction_id, credit_card=test_pan(),
                     event_time=time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()))
        await producer.send_and_wait(topic, json.dumps(event).encode(), key=event["sender_account_id"].encode())
    finally:
        await producer.stop()


def landed(copy: Path, env: dict[str, str], transaction_id: str) -> bool:
    """The payment's row, read through the worker that holds the DuckDB file."""
    done = subprocess.run([sys.executable, "-m", "payflow.cli", "query", "--json",
                           f"SELECT count(*) AS n FROM payment_transactions WHERE transaction_id = '{transaction_id}'"],
                          cwd=copy, env=env, capture_output=True, text=True, timeout=60)
    return done.returncode == 0 and json.loads(done.stdout or "{}").get("n") == 1


def window(events: list[list]) -> list[list]:
    """The traced payment's events on the path: from the last delivery of a fetch to the
    agent's buffer (the warm-up payment's came before) to the first offset commit computed
    after the landing's ack."""
    events = sorted(events)
    start = max(i for i, e in enumerate(events) if at(e, FIRST))
    kept, landed = [], False
    for e in events[start:]:
        if landed and at(e, LAST):
            break
        landed = landed or at(e, LANDED)
        if on_path(e[6]):
            kept.append(e)
    return kept


def switches(events: list[list]) -> list[str]:
    """Every call and return, as they happen: file:function each time the file changes."""
    visits: list[str] = []
    for _, _, _, _, path, function, _, _ in events:
        if not visits or visits[-1].split(":")[0] != path:
            visits.append(f"{path}:{function}")
    return visits


def first_reading(events: list[list]) -> list[str]:
    """The reading of the path: each function once, where it is first called; a switch
    each time the next function to read is in another file."""
    seen: set[tuple[str, str]] = set()
    visits: list[str] = []
    for _, _, _, event, path, function, _, _ in events:
        if event != "call" or (path, function) in seen:
            continue
        seen.add((path, function))
        if not visits or visits[-1].split(":")[0] != path:
            visits.append(f"{path}:{function}")
    return visits


def report(name: str, visits: list[str], show: bool) -> None:
    files = sorted({h.split(":")[0] for h in visits})
    print(f"{name}: {len(files)} files, {len(visits) - 1} switches")
    if show:
        for i, h in enumerate(visits, 1):
            print(f"{i:4d}  {h}")
        print("files: " + " ".join(files) + "\n")


def trace(checkout: Path, work: Path) -> Path:
    """Runs the worker of `checkout` over a warm-up payment, then the traced one; the traces' folder."""
    bootstrap = os.environ.get("PAYFLOW_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
    copy, traces = lay_out(work / "copy", checkout), work / "traces"
    shutil.copytree(checkout / "sql", copy / "payflow" / "sql", dirs_exist_ok=True)
    traces.mkdir()
    (copy / "sitecustomize.py").write_text(SITECUSTOMIZE)
    prefix = f"path-{uuid.uuid4().hex[:8]}-"
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(copy), "PAYFLOW_KAFKA_BOOTSTRAP": bootstrap,
           "PAYFLOW_TOPIC_PREFIX": prefix, "PAYFLOW_APP_ID": prefix + "app", "PAYFLOW_PARTITIONS": "1",
           "PAYFLOW_WAREHOUSE": f"duckdb:///{work}/w.duckdb", "PAYFLOW_DATA_DIR": str(work / "data"),
           "PAYFLOW_HMAC_KEYS": "path-1:" + "5a" * 32, "PAYFLOW_WEB_PORT": os.environ.get("PAYFLOW_PATH_WEB_PORT", "6399"),
           "PAYFLOW_SINK_BATCH_SECONDS": "0.2", "PAYFLOW_SQL_DIR": str(checkout / "sql")}
    topic = prefix + "payment-events"
    worker = subprocess.Popen([sys.executable, "-m", "payflow.cli", "worker", "-l", "warn"], cwd=copy,
                              env={**env, "PAYFLOW_TRACE_DIR": str(traces)}, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=open(work / "worker.log", "w"))
    try:
        # the warm-up payment: the first batch of a partition loads its caches, the second does not
        for n, transaction_id in enumerate(("txn_path_warmup", "txn_path_traced")):
            asyncio.run(produce(bootstrap, topic, transaction_id, create=n == 0))
            deadline = time.monotonic() + 180
            while not landed(copy, env, transaction_id):
                if worker.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"{transaction_id} did not land (worker log: {work / 'worker.log'})")
                time.sleep(1)
        time.sleep(3)  # the landing's offset commit
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGTERM)
            worker.wait(60)
    return traces


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkout", type=Path, default=ROOT, help="the checkout whose worker is traced")
    parser.add_argument("--traces", type=Path, default=None, help="read these traces instead of running a worker")
    parser.add_argument("--show", action="store_true", help="print the hops, not only the counts")
    parser.add_argument("--keep", action="store_true", help="keep the copy and the traces (printed)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="payflow-path-"))
    traces = args.traces or trace(args.checkout.resolve(), work)
    events = window([json.loads(line) for f in traces.glob("*.jsonl")
                     for line in f.read_text().splitlines() if line.strip()])
    for end, mark in ENDS:
        upto = events if mark is None else events[:next(i for i, e in enumerate(events) if at(e, mark)) + 1]
        report(f"{end}, every call and return", switches(upto), args.show)
        report(f"{end}, the first reading (each function once)", first_reading(upto), args.show)
    if args.keep:
        print(f"kept: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
