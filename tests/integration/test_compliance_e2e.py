"""Compliance end to end on a real worker run: `payflow audit pci` passes on what the
pipeline wrote and fails on a planted PAN; `payflow gdpr erase` removes a subject from the
warehouse and the worker's state, and a full replay of the raw topic brings nothing back."""
from __future__ import annotations

import re
import subprocess
import sys
import time

import orjson
import pytest

from payflow.keys import KeyRing
from payflow.settings import ROOT
from payflow.simulator.generator import EventStream, SimOptions
from payflow.warehouse.duck import DuckDBWarehouse
from tests.helpers import TEST_HMAC_KEYS, Worker, unique, wait_until

pytestmark = pytest.mark.integration
SEED, COUNT = 41, 3000


@pytest.fixture(scope="module")
def run(tmp_path_factory, kafka):
    """One simulated run, landed by a real worker, stopped: DuckDB has a single writer, so
    the CLI commands run while the worker is down (BigQuery has no such limit)."""
    tmp = tmp_path_factory.mktemp("compliance")
    prefix = unique("comp-") + "-"
    from tests.helpers import simulate
    manifest = simulate(prefix, tmp / "m.json", count=COUNT, seed=SEED)
    worker = Worker(tmp, prefix=prefix).start()
    worker.wait_caught_up(timeout=240)
    assert worker.stop() == 0, worker.log_tail()
    yield worker, manifest
    worker.stop()


def cli(worker: Worker, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "payflow.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          env={**worker.env, **env}, timeout=300)


def query(worker: Worker, sql: str) -> list[dict]:
    w = DuckDBWarehouse(worker.warehouse[len("duckdb:///"):])
    try:
        return w.query(sql)
    finally:
        w.close()


def a_subject() -> tuple[str, str, str]:
    """A card the simulator used (regenerated from the seed: the manifest holds no card data)."""
    from datetime import datetime, timezone
    options = SimOptions(count=COUNT, seed=SEED, start_time=datetime(2026, 11, 20, 8, 0, tzinfo=timezone.utc))
    cards: dict[tuple[str, str], set[str]] = {}
    for message in EventStream(options):
        try:
            doc = orjson.loads(message.value)
            cards.setdefault((doc["credit_card"], doc["card_expiry"]), set()).add(doc["transaction_id"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            continue
    (pan, expiry), _ = max(cards.items(), key=lambda kv: len(kv[1]))
    return pan, expiry, KeyRing.parse(TEST_HMAC_KEYS).hashes_for(pan, expiry)[0][1]


def test_audit_pci_is_clean_on_a_pipeline_warehouse_and_fails_on_planted_card_data(run):
    worker, _ = run
    clean = cli(worker, "audit", "pci")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "PCI scan: clean" in clean.stdout
    assert "card payments carrying a pii_hash: 100.00%" in clean.stdout

    pan = "4539 5787 6362 1486".replace(" ", "-")  # a generated Luhn-valid test PAN, dashed
    planted_log = worker.tmp / "planted.log"
    planted_log.write_text('{"msg": "retrying card 4539 5787 6362 1486"}\n')
    db = DuckDBWarehouse(worker.warehouse[len("duckdb:///"):])
    try:
        row = db.query("SELECT transaction_id FROM payment_transactions LIMIT 1")[0]["transaction_id"]
        db.con.execute("UPDATE payment_transactions SET device_id = ? WHERE transaction_id = ?", [f"dev {pan}", row])
    finally:
        db.close()
    dirty = cli(worker, "audit", "pci", "--log-file", str(planted_log))
    assert dirty.returncode == 1, dirty.stdout
    assert "FINDING pan at warehouse payment_transactions.device_id" in dirty.stdout
    assert f"FINDING pan at {planted_log}:1" in dirty.stdout
    assert "4539578763621486" not in dirty.stdout and pan not in dirty.stdout and "4539 5787 6362 1486" not in dirty.stdout
    db = DuckDBWarehouse(worker.warehouse[len("duckdb:///"):])
    try:  # leave the run clean for the next test
        db.con.execute("UPDATE payment_transactions SET device_id = 'dev_restored' WHERE transaction_id = ?", [row])
    finally:
        db.close()


def test_erasure_reaches_state_and_survives_a_full_replay(run, tmp_path):
    worker, manifest = run
    pan, expiry, subject_hash = a_subject()
    before = query(worker, f"SELECT COUNT(*) AS n FROM payment_transactions WHERE pii_hash = '{subject_hash}'")[0]["n"]
    total_before = query(worker, "SELECT COUNT(*) AS n FROM payment_transactions")[0]["n"]
    assert before >= 1

    # the worker is down (DuckDB's single writer) while the CLI erases; it then starts and
    # consumes the erasure requests the CLI sent to Kafka, deleting the subject's state keys
    started = time.perf_counter()
    erased = cli(worker, "gdpr", "erase", "--card", pan, "--expiry", expiry, "--mode", "delete")
    seconds = time.perf_counter() - started
    assert erased.returncode == 0, erased.stdout + erased.stderr
    assert pan not in erased.stdout + erased.stderr
    assert re.search(rf"payment_transactions\s+{before} rows deleted", erased.stdout), erased.stdout
    print(f"\nerasure of one subject ({before} payments): CLI {seconds:.2f} s\n{erased.stdout}")
    worker.start()
    log = worker.tmp / "data" / "logs" / "worker.log"
    wait_until(lambda: "stage gdpr: erasure" in log.read_text(), 120, what="the worker to consume the erasure request")
    assert worker.stop() == 0, worker.log_tail()
    erasure_lines = [orjson.loads(line) for line in log.read_text().splitlines() if "stage gdpr: erasure" in line]
    assert any(" removed " in e["message"] and not e["message"].endswith("removed 0 state key(s) for one sender partition")
               for e in erasure_lines), erasure_lines

    # a fresh consumer group replays the whole raw topic into the same warehouse
    replay = Worker(worker.tmp, prefix=worker.prefix, app_id=unique("replay-"), warehouse=worker.warehouse)
    replay.log_path = tmp_path / "replay.log"
    replay.env["PAYFLOW_DATA_DIR"] = str(tmp_path / "replay-data")
    replay.start()
    try:
        replay.wait_caught_up(timeout=240)
    finally:
        assert replay.stop() == 0, replay.log_tail()
    after = query(worker, f"SELECT COUNT(*) AS n FROM payment_transactions WHERE pii_hash = '{subject_hash}'")[0]["n"]
    assert after == 0, "the replay brought the erased subject back"
    for table in ("payment_transactions_fraud", "pii_masking_audit", "late_events"):
        assert query(worker, f"SELECT COUNT(*) AS n FROM {table} WHERE pii_hash = '{subject_hash}'")[0]["n"] == 0
    assert query(worker, "SELECT COUNT(*) AS n FROM payment_transactions")[0]["n"] == total_before - before
