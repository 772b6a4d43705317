"""Bad input, walked as a user meets it: each case is one line on stderr (no traceback) and
the documented exit code (2: could not run; 3: gdpr erase matched nothing). Runs the
installed `payflow` command; no broker or warehouse is needed (unreachable ones are the point)."""
from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from payflow.simulator.manifest import Manifest
from payflow.stages.cards import luhn_valid

# the payflow command of the venv running the tests (.venv, or .venv-3.12 for PYTHON=python3.12)
PAYFLOW = Path(sys.executable).parent / "payflow"
KEY = "k1:" + "ab" * 32
# nothing listens on port 1
DEAD = "127.0.0.1:1"


def a_test_pan() -> str:
    """A generated Luhn-valid 16-digit test number (never a real card)."""
    rng = random.Random(21)
    body = "4" + "".join(str(rng.randint(0, 9)) for _ in range(14))
    return next(body + d for d in "0123456789" if luhn_valid(body + d))


@pytest.fixture
def env(tmp_path):
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PAYFLOW_")}
    return {**clean, "PAYFLOW_DATA_DIR": str(tmp_path / "data"), "PAYFLOW_HMAC_KEY_FILE": str(tmp_path / "hmac-keys"),
            "PAYFLOW_WAREHOUSE": f"duckdb:///{tmp_path}/wh.duckdb", "PAYFLOW_KAFKA_BOOTSTRAP": DEAD,
            "PAYFLOW_LOG_FORMAT": "text"}


@pytest.fixture
def manifest(tmp_path) -> Path:
    path = tmp_path / "manifest.json"
    Manifest(seed=1, options={}, start_time="2026-11-20T08:00:00+00:00", topic="payment-events").write(path)
    return path


def run(env: dict, *args: str, stdin: str | None = None, code: int = 2) -> str:
    """Run payflow; assert the exit code and a single stderr line; return that line."""
    proc = subprocess.run([str(PAYFLOW), *args], env=env, capture_output=True, text=True, input=stdin,
                          timeout=120, cwd=env.get("PAYFLOW_DATA_DIR", "/").rsplit("/", 1)[0])
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


@pytest.mark.parametrize("name, value, allowed", [
    ("PAYFLOW_PARTITIONS", "abc", "an integer from 1 to"),
    ("PAYFLOW_PARTITIONS", "0", "an integer from 1 to"),
    ("PAYFLOW_WAREHOUSE", "postgres://db/x", "duckdb:///"),
    ("PAYFLOW_WAREHOUSE", "bigquery://only-a-project", "bigquery://PROJECT/DATASET"),
    ("PAYFLOW_LOG_LEVEL", "verbose", "one of debug, info"),
    ("PAYFLOW_LOG_FORMAT", "xml", "one of json, text"),
    ("PAYFLOW_KAFKA_BOOTSTRAP", "localhost", "HOST:PORT"),
    ("PAYFLOW_KAFKA_BOOTSTRAP", "localhost:99999", "ports 1 to 65535"),
    ("PAYFLOW_SINK_BATCH_SECONDS", "-1", "above 0"),
    ("PAYFLOW_SINK_BATCH_SIZE", "lots", "an integer"),
    ("PAYFLOW_PRODUCTION", "maybe", "true or false"),
    ("PAYFLOW_PRODUCER_COMPRESSION", "brotli", "none, lz4"),
    ("PAYFLOW_BIGQUERY_ENDPOINT", "localhost:9050", "http://HOST:PORT"),
    ("PAYFLOW_WEB_PORT", "70000", "0 to 65535"),
])
def test_a_bad_setting_is_one_line_naming_it_its_value_and_what_is_allowed(env, manifest, name, value, allowed):
    line = run({**env, name: value}, "reconcile", "--manifest", str(manifest))
    assert f"{name}={value!r} is not valid" in line and allowed in line, line


def test_bad_hmac_keys_are_named_but_never_shown(env, manifest):
    secret = "cd" * 10  # too short
    line = run({**env, "PAYFLOW_HMAC_KEYS": f"k1:{secret}"}, "reconcile", "--manifest", str(manifest))
    assert "PAYFLOW_HMAC_KEYS is not valid" in line and "32 bytes" in line and secret not in line
    line = run({**env, "PAYFLOW_HMAC_KEYS": "bad"}, "reconcile", "--manifest", str(manifest))
    assert "PAYFLOW_HMAC_KEYS is not valid" in line and "KEY_ID:HEX_SECRET" in line


def test_a_bad_setting_stops_every_command_before_it_starts(env):
    line = run({**env, "PAYFLOW_PARTITIONS": "abc"}, "audit", "pci", "--no-topics")
    assert line.startswith("payflow audit pci: error: PAYFLOW_PARTITIONS='abc'"), line


@pytest.mark.parametrize("args, text", [
    (["simulate", "--count", "-5"], "'--count': -5 is not in the range x>=1"),
    (["simulate", "--duplicate-ratio", "2"], "'--duplicate-ratio': 2.0 is not in the range 0<=x<=1"),
    (["simulate", "--malformed-ratio", "-0.1"], "'--malformed-ratio'"),
    (["simulate", "--rate", "0"], "'--rate'"),
    (["simulate", "--accounts", "0"], "'--accounts'"),
    (["audit", "pci", "--max-per-topic", "-1"], "'--max-per-topic'"),
])
def test_numeric_options_have_ranges(env, args, text):
    assert text in run(env, *args)


def test_an_unreachable_broker_is_one_line_naming_it_and_the_setting(env):
    line = run(env, "simulate", "--count", "1", "--quiet")
    assert DEAD in line and "PAYFLOW_KAFKA_BOOTSTRAP" in line, line


def test_audit_pci_with_kafka_unreachable_is_an_error_not_a_finding(env):
    line = run(env, "audit", "pci", "--no-warehouse", "--no-state")
    assert DEAD in line and "PAYFLOW_KAFKA_BOOTSTRAP" in line, line


def test_an_unreachable_bigquery_is_one_line_naming_it_and_the_setting(env, manifest):
    line = run({**env, "PAYFLOW_WAREHOUSE": "bigquery://proj/ds", "PAYFLOW_BIGQUERY_ENDPOINT": "http://" + DEAD},
               "reconcile", "--manifest", str(manifest))
    assert "http://" + DEAD in line and "PAYFLOW_BIGQUERY_ENDPOINT" in line, line


@pytest.mark.parametrize("command", [["reconcile"], ["fraud-report"]])
def test_a_missing_duckdb_file_is_an_error_and_is_not_created(env, manifest, tmp_path, command):
    line = run(env, *command, "--manifest", str(manifest))
    assert f"{tmp_path}/wh.duckdb does not exist" in line and "PAYFLOW_WAREHOUSE" in line, line
    other = tmp_path / "typo" / "wh.duckdb"
    line = run(env, *command, "--manifest", str(manifest), "--warehouse", f"duckdb:///{other}")
    assert "--warehouse" in line and not other.parent.exists(), line


def test_audit_pci_refuses_a_missing_duckdb_file_and_a_missing_log_file(env, tmp_path):
    line = run(env, "audit", "pci", "--no-topics", "--no-state")
    assert "does not exist" in line and not (tmp_path / "wh.duckdb").exists(), line
    missing = tmp_path / "no-such.log"
    line = run(env, "audit", "pci", "--no-topics", "--no-state", "--no-warehouse", "--log-file", str(missing))
    assert str(missing) in line, line


def test_a_manifest_that_is_not_one_is_an_error(env, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    assert "not a readable simulator manifest" in run(env, "reconcile", "--manifest", str(bad))


# -- gdpr erase: refuses rather than pretend ------------------------------------------------------
@pytest.mark.parametrize("expiry", ["13/99", "00/30", "1/29", "2029-01"])
def test_gdpr_erase_refuses_an_impossible_expiry(env, expiry):
    line = run({**env, "PAYFLOW_HMAC_KEYS": KEY}, "gdpr", "erase", "--mode", "delete", "--no-state",
               "--card", "-", "--expiry", expiry, stdin=a_test_pan() + "\n")
    assert "--expiry must be MM/YY" in line and a_test_pan() not in line, line


def test_gdpr_erase_refuses_a_card_failing_luhn_without_echoing_it(env):
    pan = a_test_pan()
    typo = pan[:-1] + str((int(pan[-1]) + 1) % 10)
    line = run({**env, "PAYFLOW_HMAC_KEYS": KEY}, "gdpr", "erase", "--mode", "delete", "--no-state",
               "--card", "-", "--expiry", "08/29", stdin=typo + "\n")
    assert "Luhn" in line and typo not in line, line


def test_gdpr_erase_never_generates_a_key(env, tmp_path):
    line = run(env, "gdpr", "erase", "--mode", "delete", "--no-state", "--card", "-", "--expiry", "08/29",
               stdin=a_test_pan() + "\n")
    assert "no HMAC key configured" in line and "PAYFLOW_HMAC_KEYS" in line, line
    assert not (tmp_path / "hmac-keys").exists()


def test_gdpr_erase_refuses_a_warehouse_that_does_not_exist_and_does_not_create_it(env, tmp_path):
    line = run({**env, "PAYFLOW_HMAC_KEYS": KEY}, "gdpr", "erase", "--mode", "delete", "--no-state",
               "--card", "-", "--expiry", "08/29", stdin=a_test_pan() + "\n")
    assert "does not exist" in line and not (tmp_path / "wh.duckdb").exists(), line


def test_gdpr_erase_with_the_card_on_the_command_line_warns_without_echoing_it(env):
    pan = a_test_pan()
    proc = subprocess.run([str(PAYFLOW), "gdpr", "erase", "--mode", "delete", "--no-state", "--card", pan,
                           "--expiry", "13/99"], env={**env, "PAYFLOW_HMAC_KEYS": KEY}, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2
    assert "shell history" in proc.stderr and "--card -" in proc.stderr and pan not in proc.stderr + proc.stdout


def test_gdpr_erase_needs_a_card_on_stdin(env):
    line = run({**env, "PAYFLOW_HMAC_KEYS": KEY}, "gdpr", "erase", "--mode", "delete", "--no-state",
               "--card", "-", "--expiry", "08/29", stdin="")
    assert "no card number on stdin" in line, line


def test_a_warehouse_url_is_parsed_once_into_its_parts():
    """PAYFLOW_WAREHOUSE and --warehouse are parsed in one place (settings.WarehouseURL): a
    relative DuckDB path made absolute, an in-memory DuckDB, a BigQuery project and dataset;
    a malformed URL given in code is a ValueError, not a settings exit."""
    import pytest

    from payflow.settings import ROOT, WarehouseURL
    relative = WarehouseURL.parse("duckdb:///var/x.duckdb")
    assert relative.is_duckdb and relative.path == str(ROOT / "var" / "x.duckdb")
    assert WarehouseURL.parse("duckdb:////tmp/a.duckdb").path == "/tmp/a.duckdb"
    assert WarehouseURL.parse("duckdb://:memory:").path == ":memory:"
    bq = WarehouseURL.parse("bigquery://proj-1/ds_2")
    assert bq.is_bigquery and (bq.project, bq.dataset) == ("proj-1", "ds_2")
    with pytest.raises(ValueError, match="postgres://x"):
        WarehouseURL.of("postgres://x")
