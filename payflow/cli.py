"""The `payflow` command line (click, which Faust already depends on)."""
from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

import click

from payflow.settings import Settings


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="payflow")
def main() -> None:
    """payflow: streaming payments, card data masked on first touch, every payment counted once."""


@main.command()
@click.option("--count", default=20_000, show_default=True, help="messages to send (all kinds)")
@click.option("--seed", default=42, show_default=True, help="same seed + options = same bytes")
@click.option("--start-time", type=click.DateTime(formats=["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S"]),
              default=None, help="event_time of the first payment (UTC); default: the stream ends about now")
@click.option("--rate", type=float, default=None, help="events per second; default unlimited")
@click.option("--accounts", default=10_000, show_default=True, help="sender population")
@click.option("--merchants", default=500, show_default=True)
@click.option("--business-tps", default=5.0, show_default=True, help="payments per simulated second of event time")
@click.option("--duplicate-ratio", default=0.05, show_default=True, help="share of messages re-sent as client double-submits")
@click.option("--late-ratio", default=0.01, show_default=True, help="share of events more than 1 h behind the stream")
@click.option("--malformed-ratio", default=0.01, show_default=True, help="share of malformed messages (19 kinds, cycled)")
@click.option("--fraud-ratio", default=0.005, show_default=True, help="share of slots that start a fraud scenario")
@click.option("--manifest", "manifest_path", type=click.Path(path_type=Path), default=Path("var/manifest.json"),
              show_default=True, help="ground-truth manifest (no card data)")
@click.option("--topic", default=None, help="default: payment-events")
@click.option("--no-idempotence", is_flag=True, help="turn the idempotent producer off (for fault tests only)")
@click.option("--quiet", is_flag=True, help="no progress bar")
def simulate(count, seed, start_time, rate, accounts, merchants, business_tps, duplicate_ratio, late_ratio,
             malformed_ratio, fraud_ratio, manifest_path, topic, no_idempotence, quiet) -> None:
    """Produce realistic payment events (with card data) to the raw topic, and a manifest."""
    from payflow.simulator.generator import SimOptions
    from payflow.simulator.producer import simulate as run

    settings = Settings.from_env()
    if start_time is not None and start_time.tzinfo is None:
        from datetime import timezone
        start_time = start_time.replace(tzinfo=timezone.utc)
    options = SimOptions(count=count, seed=seed, start_time=start_time, accounts=accounts, merchants=merchants,
                         business_tps=business_tps, duplicate_ratio=duplicate_ratio, late_ratio=late_ratio,
                         malformed_ratio=malformed_ratio, fraud_ratio=fraud_ratio)
    manifest = asyncio.run(run(options, bootstrap=settings.kafka_bootstrap, topic=topic or settings.topics.raw,
                               partitions=settings.partitions, manifest_path=manifest_path, rate=rate,
                               progress=not quiet, idempotent=not no_idempotence))
    d = manifest.to_dict()
    tp = d["throughput"]
    click.echo(
        f"sent {d['messages_sent']} messages in {tp['seconds']} s ({tp['events_per_second']:.0f} events/s): "
        f"{d['unique_valid_on_time']} unique valid, {d['expected_duplicates']} duplicates, {d['late']} late, "
        f"{d['malformed']['total']} malformed, {len(d['fraud_labels'])} fraud-labelled"
        + (" (interrupted)" if d["interrupted"] else "")
    )
    click.echo(f"manifest: {manifest_path}  replay: payflow simulate --seed {seed} --count {count} "
               f"--start-time {d['start_time'][:19]}+0000")
    if tp["unconfirmed"]:
        click.echo(f"{tp['unconfirmed']} messages were not confirmed by the broker", err=True)
        sys.exit(1)


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.pass_context
def worker(ctx: click.Context) -> None:
    """Run the pipeline worker (same as `faust -A payflow.app worker`); extra args go to Faust."""
    from payflow.app import app, settings

    # After a crash the dead worker stays in the consumer group until its session times
    # out, so a quick restart joins, gets partitions, and is rebalanced again moments later;
    # across such back-to-back rebalances Faust can lose track of offsets it read
    # (faust-streaming/faust#596; our SIGKILL fault test lost a payment to it). Waiting the
    # session out first gives one clean assignment. The marker exists only while running.
    marker = settings.data_dir / "worker.running"
    if marker.exists():
        wait = settings.session_timeout_seconds + 1
        click.echo(f"the previous worker did not stop cleanly: waiting {wait:.0f} s for its group "
                   "membership to expire before joining", err=True)
        time.sleep(wait)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()
    sys.argv = ["payflow-worker", "worker", *ctx.args]
    from payflow.runtime.process import tune_garbage_collector
    tune_garbage_collector()  # after the app's imports: they are what gc.freeze() sets aside
    try:
        app.main()
    finally:
        marker.unlink(missing_ok=True)


@main.command()
@click.option("--manifest", "manifest_path", type=click.Path(exists=True, path_type=Path), required=True)
@click.option("--warehouse", default=None, help="warehouse URL; default PAYFLOW_WAREHOUSE")
def reconcile(manifest_path: Path, warehouse: str | None) -> None:
    """Compare the warehouse with a simulator manifest; exit 1 on any mismatch."""
    from payflow.reconcile import reconcile as run
    from payflow.simulator.manifest import load
    from payflow.warehouse import open_warehouse

    wh = open_warehouse(Settings.from_env(), warehouse)
    try:
        result = run(wh, load(manifest_path))
    finally:
        wh.close()
    click.echo(result.report())
    sys.exit(0 if result.ok else 1)


@main.group()
def gdpr() -> None:
    """GDPR data-subject requests."""


@gdpr.command("erase")
@click.option("--card", default=None, help="the subject's PAN (hashed with every key version, never stored)")
@click.option("--expiry", default=None, help="the card's expiry, MM/YY (part of the hash)")
@click.option("--pii-hash", default=None, help="or the subject's pii_hash, as stored in the warehouse")
@click.option("--mode", type=click.Choice(["delete", "anonymize"]), required=True,
              help="delete: remove the subject's rows; anonymize: keep the financial facts, remove every link")
@click.option("--warehouse", default=None, help="warehouse URL; default PAYFLOW_WAREHOUSE")
@click.option("--no-state", is_flag=True, help="do not send the state-table erasure request to the worker")
def gdpr_erase(card, expiry, pii_hash, mode, warehouse, no_state) -> None:
    """Erase a data subject everywhere payflow keeps them, and print a receipt."""
    from payflow.compliance.gdpr import ErasureError, erase, subject_hashes
    from payflow.keys import KeyRing
    from payflow.warehouse import open_warehouse

    settings = Settings.from_env()
    try:
        hashes = subject_hashes(KeyRing.from_settings(settings), card=card, expiry=expiry, pii_hash=pii_hash)
    except ErasureError as exc:
        raise click.UsageError(str(exc)) from None
    wh = open_warehouse(settings, warehouse)
    try:
        wh.ensure_schema()
        result = erase(settings, wh, hashes, mode, send_state_requests=not no_state)
    finally:
        wh.close()
    click.echo(result.render())


@main.group()
def audit() -> None:
    """Compliance audits."""


@audit.command("pci")
@click.option("--warehouse", default=None, help="warehouse URL; default PAYFLOW_WAREHOUSE")
@click.option("--no-warehouse", is_flag=True, help="do not scan the warehouse")
@click.option("--topic", "topic_names", multiple=True,
              help="a topic to scan (repeatable; it must exist); default: every payflow topic but the raw one")
@click.option("--topics/--no-topics", default=True, help="scan topics at all")
@click.option("--max-per-topic", default=100_000, show_default=True,
              help="records read per topic at most (0: no bound); what the bound leaves out is reported")
@click.option("--state-dir", "state_dirs", multiple=True, type=click.Path(path_type=Path),
              help="a worker state directory to scan (repeatable; it must exist); default PAYFLOW_DATA_DIR/state")
@click.option("--no-state", is_flag=True, help="do not scan the worker's state directory")
@click.option("--log-file", "log_files", multiple=True, type=click.Path(path_type=Path),
              help="a log file to scan (repeatable; it must exist), besides the worker's log dir")
@click.option("--log-dir", "log_dirs", multiple=True, type=click.Path(path_type=Path),
              help="a log directory to scan (repeatable); default PAYFLOW_DATA_DIR/logs")
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON")
def audit_pci(warehouse, no_warehouse, topic_names, topics, max_per_topic, state_dirs, no_state, log_files, log_dirs,
              as_json) -> None:
    """Scan topics, warehouse, worker state and logs for card data.

    Exit 0: clean, with what was read stated per place; 1: card data found (masked in the
    report); 2: a place could not be read (broker or warehouse unreachable, a named topic,
    file or directory missing) or nothing at all was read."""
    import logging

    from payflow.compliance.pci import AuditError, describe_error, scan_all, topic_partitions
    from payflow.warehouse import open_warehouse

    settings = Settings.from_env()
    # what cannot be read is reported below, once; aiokafka's own retries and errors would
    # reach stderr through logging's last-resort handler
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)

    def fail(message: str) -> None:
        click.echo("payflow audit pci: error: " + " ".join(message.split()), err=True)  # one line
        sys.exit(2)

    names: list[str] = []
    if topics:
        try:
            existing = asyncio.run(topic_partitions(settings.kafka_bootstrap))
        except Exception as exc:
            fail(f"cannot reach Kafka at {settings.kafka_bootstrap}: {describe_error(exc)}")
        if topic_names:
            missing = [n for n in topic_names if n not in existing]
            if missing:
                fail(f"topic(s) not found at {settings.kafka_bootstrap}: {', '.join(missing)}")
            names = list(dict.fromkeys(topic_names))
        else:
            # every payflow topic (outputs, DLQ, audit, erasure requests, the app's changelogs
            # and internal topics) but the raw one, which holds card data by design
            t = settings.topics
            wanted = [t.dlq, t.late, t.enriched, t.dedup_audit, t.erasure_requests]
            names = wanted + sorted(n for n in existing if n.startswith(settings.app_id + "-") and n not in wanted)
            names = [n for n in names if n != t.raw]
    wh = None
    if not no_warehouse:
        url = warehouse or settings.warehouse_url
        if url.startswith("duckdb://"):
            path = url[len("duckdb://"):]
            if not path or path == ":memory:":
                fail(f"{url}: an in-memory DuckDB has nothing to audit")
            if not Path(path).is_file():  # opening would create it, and report a new empty file clean
                fail(f"DuckDB file {path} does not exist")
        try:
            wh = open_warehouse(settings, url)
        except Exception as exc:
            fail(f"cannot open the warehouse {url}: {describe_error(exc)}")
    try:
        result = scan_all(wh, log_files=log_files, bootstrap=settings.kafka_bootstrap, topics=names,
                          explicit_topics=bool(topic_names), max_per_topic=max_per_topic or None,
                          state_dirs=state_dirs, worker_state_dir=None if no_state or state_dirs else
                          settings.data_dir / "state", log_dirs=log_dirs or [settings.data_dir / "logs"])
    except AuditError as exc:
        fail(str(exc))
    except Exception as exc:  # a warehouse query failing midway, say
        fail(describe_error(exc))
    finally:
        if wh is not None:
            wh.close()
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2))
    else:
        click.echo(result.summary())
    sys.exit(1 if not result.ok else 2 if result.read_nothing else 0)


@main.command("fraud-report")
@click.option("--manifest", "manifest_path", type=click.Path(exists=True, path_type=Path), required=True)
@click.option("--warehouse", default=None, help="warehouse URL; default PAYFLOW_WAREHOUSE")
def fraud_report(manifest_path: Path, warehouse: str | None) -> None:
    """Fraud quality against the simulator's labels: recall and false-positive rate."""
    from payflow.reconcile import fraud_quality
    from payflow.simulator.manifest import load
    from payflow.warehouse import open_warehouse

    wh = open_warehouse(Settings.from_env(), warehouse)
    try:
        q = fraud_quality(wh, load(manifest_path))
    finally:
        wh.close()
    click.echo(json.dumps(q, indent=2))
    ok = q["recall"] is not None and q["recall"] >= 0.90 and (q["false_positive_rate"] or 0) <= 0.05
    click.echo("fraud quality: " + ("meets the targets (recall >= 0.90, FPR <= 5%)" if ok else "BELOW TARGET"))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
