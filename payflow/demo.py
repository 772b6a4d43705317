"""`make demo`: the main job end to end on the embedded defaults, then a reconciliation.

Resets the demo's topics, state and DuckDB file, simulates traffic (duplicates, late,
malformed and fraud included), runs a real worker until every offset is committed, stops
it, reconciles against the manifest, and shows a few queries over the views.
"""
from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from pathlib import Path

from tabulate import tabulate

from payflow.catch_up import CatchUpFailed, run_worker_until_caught_up, worker_stdout_log
from payflow.kafka_admin import delete_topics, list_topics, rewind_group
from payflow.settings import Settings

DEMO_EVENTS = int(os.environ.get("PAYFLOW_DEMO_EVENTS", "20000"))
EXAMPLE_QUERIES = {
    "daily_summary (finance: payments and totals per currency)":
        "SELECT day, currency, payments, total_amount FROM daily_summary ORDER BY currency LIMIT 6",
    "fraud_summary (risk: high-risk share and signals)":
        "SELECT day, payments, high_risk_payments, high_risk_share, velocity_spikes, impossible_travel, "
        "device_anomalies, card_testing, high_amounts FROM fraud_summary",
    "deduplication_effectiveness (audit: duplicates dropped)":
        "SELECT day, unique_payments, duplicates_dropped, duplicate_rate FROM deduplication_effectiveness",
    "top risk payments (masked card data only)":
        "SELECT transaction_id, amount, currency, credit_card_masked, fraud_score, risk_flags "
        "FROM payment_transactions_fraud ORDER BY fraud_score DESC, transaction_id LIMIT 5",
}


def say(text: str) -> None:
    print(f"\n== {text}", flush=True)


async def _reset(settings: Settings) -> None:
    t = settings.topics
    names = [t.raw, t.dlq, t.late, t.enriched, t.dedup_audit, t.account_types, t.fraud_labels]
    existing = await list_topics(settings.kafka_bootstrap)
    names += [n for n in existing if n.startswith(settings.app_id + "-")]
    await delete_topics(settings.kafka_bootstrap, names)
    for _ in range(60):
        left = set(names) & await list_topics(settings.kafka_bootstrap)
        if not left:
            return
        await asyncio.sleep(0.5)
    raise RuntimeError(f"topics not deleted in time: {sorted(left)}")


def _query_hint(db_path: Path) -> str:
    """The `payflow query` command for this warehouse, as the user can paste it."""
    def short(p: Path) -> Path:
        try:
            return p.relative_to(Path.cwd())
        except ValueError:
            return p
    return (f"PAYFLOW_WAREHOUSE=duckdb:///{short(db_path)} {short(Path(sys.executable).parent / 'payflow')} query "
            '"SELECT currency, payments, total_amount FROM daily_summary ORDER BY currency"')


def main() -> int:
    from payflow.runtime import refuse_unaudited
    refuse_unaudited("payflow demo")
    os.environ.setdefault("PAYFLOW_APP_ID", "payflow-demo")
    os.environ.setdefault("PAYFLOW_WAREHOUSE", "duckdb:///var/demo/payflow.duckdb")
    os.environ.setdefault("PAYFLOW_DATA_DIR", "var/demo")
    os.environ.setdefault("PAYFLOW_LOG_FORMAT", "json")
    settings = Settings.from_env()
    db_path = Path(settings.warehouse.path)
    manifest_path = settings.data_dir / "manifest.json"

    say(f"resetting the demo: topics, worker state in {settings.data_dir}, warehouse {db_path}")
    asyncio.run(_reset(settings))
    shutil.rmtree(settings.data_dir / "state", ignore_errors=True)
    for p in (db_path, db_path.with_suffix(".duckdb.wal"), manifest_path):
        p.unlink(missing_ok=True)
    if not settings.hmac_keys:
        print(f"no PAYFLOW_HMAC_KEYS set: the worker uses a generated local key in {settings.hmac_key_file} "
              "(development only; production mode refuses to start without a key)")

    say(f"simulating {DEMO_EVENTS} payment events (5% duplicates, 1% late, 1% malformed, fraud scenarios)")
    sim = subprocess.run([sys.executable, "-m", "payflow.cli", "simulate", "--count", str(DEMO_EVENTS),
                          "--seed", "2026", "--manifest", str(manifest_path)])
    if sim.returncode != 0:
        return sim.returncode
    # the new topic starts from nothing for the worker's consumer group too
    asyncio.run(rewind_group(settings.kafka_bootstrap, settings.app_id, settings.topics.raw))

    say("starting the worker (payflow worker) and waiting until every offset is committed")
    try:
        took = run_worker_until_caught_up(settings, timeout=600, interval=2)
    except CatchUpFailed as exc:
        print(exc)
        return 1
    print(f"caught up in {took:.1f} s ({DEMO_EVENTS / took:.0f} events/s "
          "including worker start-up); worker stopped")

    from payflow.compliance.pci import scan_all
    from payflow.reconcile import fraud_quality, reconcile
    from payflow.simulator.manifest import load
    from payflow.warehouse import open_warehouse

    warehouse = open_warehouse(settings)
    try:
        manifest = load(manifest_path)
        say("reconciliation against the simulator's manifest")
        result = reconcile(warehouse, manifest)
        print(result.report())
        say("fraud quality against the simulator's labels")
        q = fraud_quality(warehouse, manifest)
        flagged = warehouse.query("SELECT transaction_id FROM payment_transactions_fraud WHERE is_high_risk")
        true_alerts = sum(1 for r in flagged if r["transaction_id"] in manifest["fraud_labels"])
        precision = true_alerts / len(flagged) if flagged else 0.0
        print(f"recall {q['recall']:.3f} (detectable injected fraud), false-positive rate "
              f"{q['false_positive_rate']:.4f} on {q['clean']} clean payments, precision {precision:.3f}")
        print("  (the simulator's own fraud scenarios; `make fraud-eval` measures on independent typology "
              "traffic: docs/fraud.md)")
        for title, sql in EXAMPLE_QUERIES.items():
            say(title)
            rows = warehouse.query(sql)
            print(tabulate(rows, headers="keys", tablefmt="simple", disable_numparse=True) if rows else "(no rows)")
        say("PCI scan of the warehouse and the worker's logs")
        findings = scan_all(warehouse, log_files=[settings.data_dir / "logs" / "worker.log",
                                                  worker_stdout_log(settings)])
        print(findings.summary())
    finally:
        warehouse.close()
    say("done: query the views (also while a worker runs), for example:\n   " + _query_hint(db_path))
    return 0 if result.ok and findings.ok else 1


if __name__ == "__main__":
    sys.exit(main())
