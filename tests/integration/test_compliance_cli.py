"""The compliance commands cannot lie, on a warehouse a real worker wrote: `gdpr erase` refuses
a key ring that lacks the warehouse's keys (naming them), says NOTHING ERASED with exit 3 when
no row matched, takes the card from stdin; `audit pci` exits 0 clean, 1 on a finding, 2 when
Kafka is unreachable; `reconcile`, `audit pci` and `fraud-report` print JSON with --json."""
from __future__ import annotations

import json
import random
import subprocess
import sys

import orjson
import pytest

from payflow.keys import KeyRing
from payflow.settings import ROOT
from payflow.simulator.generator import EventStream, SimOptions
from payflow.stages.cards import luhn_valid
from payflow.warehouse.duck import DuckDBWarehouse
from tests.helpers import TEST_HMAC_KEYS, Worker, simulate, unique

pytestmark = pytest.mark.integration
SEED, COUNT = 43, 1500


@pytest.fixture(scope="module")
def run(tmp_path_factory, kafka):
    """One simulated run landed by a real worker, then stopped (DuckDB has a single writer)."""
    tmp = tmp_path_factory.mktemp("compliance-cli")
    prefix = unique("ccli-") + "-"
    simulate(prefix, tmp / "m.json", count=COUNT, seed=SEED)
    worker = Worker(tmp, prefix=prefix).start()
    try:
        worker.wait_caught_up(timeout=240)
    finally:
        assert worker.stop() == 0, worker.log_tail()
    yield worker


def cli(worker: Worker, *args: str, stdin: str | None = None, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "payflow.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          env={**worker.env, **env}, input=stdin, timeout=300)


def count(worker: Worker, sql: str) -> int:
    w = DuckDBWarehouse(worker.warehouse[len("duckdb:///"):])
    try:
        return w.query(sql)[0]["n"]
    finally:
        w.close()


def subject() -> tuple[str, str]:
    """The card the simulator used most (regenerated from the seed: the manifest holds no card data)."""
    from datetime import datetime, timezone
    options = SimOptions(count=COUNT, seed=SEED, start_time=datetime(2026, 11, 20, 8, 0, tzinfo=timezone.utc))
    cards: dict[tuple[str, str], int] = {}
    for message in EventStream(options):
        if message.kind != "valid":
            continue
        doc = orjson.loads(message.value)
        cards[(doc["credit_card"], doc["card_expiry"])] = cards.get((doc["credit_card"], doc["card_expiry"]), 0) + 1
    return max(cards, key=cards.get)


def unused_test_pan() -> str:
    rng = random.Random(5)
    body = "5" + "".join(str(rng.randint(0, 9)) for _ in range(14))
    return next(body + d for d in "0123456789" if luhn_valid(body + d))


def test_reconcile_and_fraud_report_print_json(run):
    manifest = str(run.tmp / "m.json")
    rec = cli(run, "reconcile", "--manifest", manifest, "--json")
    assert rec.returncode == 0, rec.stdout + rec.stderr
    doc = json.loads(rec.stdout)
    assert doc["ok"] is True and doc["missing"] == [] and doc["extra"] == []
    assert {c["name"] for c in doc["checks"]} >= {"unique payments", "DLQ total"} and all(c["ok"] for c in doc["checks"])
    fraud = cli(run, "fraud-report", "--manifest", manifest, "--json")
    q = json.loads(fraud.stdout)
    assert fraud.returncode == (0 if q["meets_targets"] else 1), fraud.stdout + fraud.stderr
    assert {"recall", "false_positive_rate", "targets"} <= set(q)


def test_audit_pci_exit_codes_clean_finding_and_error(run):
    clean = cli(run, "audit", "pci", "--json")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert json.loads(clean.stdout)
    planted = run.tmp / "planted.log"
    planted.write_text(f'{{"msg": "card {unused_test_pan()}"}}\n')
    dirty = cli(run, "audit", "pci", "--no-topics", "--log-file", str(planted))
    assert dirty.returncode == 1, dirty.stdout + dirty.stderr
    assert unused_test_pan() not in dirty.stdout + dirty.stderr
    down = cli(run, "audit", "pci", PAYFLOW_KAFKA_BOOTSTRAP="127.0.0.1:1")
    assert down.returncode == 2, down.stdout + down.stderr
    assert len(down.stderr.strip().splitlines()) == 1 and "127.0.0.1:1" in down.stderr


def test_gdpr_erase_refuses_a_key_ring_that_lacks_the_warehouse_keys(run):
    pan, expiry = subject()
    before = count(run, "SELECT COUNT(*) AS n FROM payment_transactions")
    other = "other-7:" + "3c" * 32
    refused = cli(run, "gdpr", "erase", "--card", "-", "--expiry", expiry, "--mode", "delete",
                  stdin=pan + "\n", PAYFLOW_HMAC_KEYS=other)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "test-1" in refused.stderr and "refused" in refused.stderr and pan not in refused.stderr + refused.stdout
    assert count(run, "SELECT COUNT(*) AS n FROM payment_transactions") == before
    assert count(run, "SELECT COUNT(*) AS n FROM gdpr_erasures") == 0


def test_gdpr_erase_of_nobody_says_so_and_exits_3_unless_allowed(run):
    nobody = cli(run, "gdpr", "erase", "--card", "-", "--expiry", "04/31", "--mode", "delete", "--no-state",
                 stdin=unused_test_pan() + "\n")
    assert nobody.returncode == 3, nobody.stdout + nobody.stderr
    assert "NOTHING ERASED" in nobody.stdout and "NOTHING ERASED" in nobody.stderr
    allowed = cli(run, "gdpr", "erase", "--card", "-", "--expiry", "04/31", "--mode", "delete", "--no-state",
                  "--allow-none", stdin=unused_test_pan() + "\n")
    assert allowed.returncode == 0 and "NOTHING ERASED" in allowed.stdout, allowed.stdout + allowed.stderr


def test_gdpr_erase_reads_the_card_from_stdin_and_erases(run):
    pan, expiry = subject()
    subject_hash = KeyRing.parse(TEST_HMAC_KEYS).hashes_for(pan, expiry)[0][1]
    rows = f"SELECT COUNT(*) AS n FROM payment_transactions WHERE pii_hash = '{subject_hash}'"
    assert count(run, rows) >= 1
    erased = cli(run, "gdpr", "erase", "--card", "-", "--expiry", expiry, "--mode", "delete", stdin=pan + "\n")
    assert erased.returncode == 0, erased.stdout + erased.stderr
    assert "NOTHING ERASED" not in erased.stdout and erased.stderr == "" and pan not in erased.stdout
    assert count(run, rows) == 0
