"""The `payflow` command line (click, which Faust already depends on)."""
from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

import click

from payflow.settings import Settings, SettingError

# exit codes of every command
EXIT_OK = 0
EXIT_FAILED = 1           # the command ran and its check failed: a mismatch, a finding, below target
EXIT_ERROR = 2            # it could not run: bad input or setting, a service unreachable, a file missing
EXIT_NOTHING_ERASED = 3   # gdpr erase matched no row (without --allow-none)


class CommandError(click.ClickException):
    """An error a command reports as one line (exit 2), for the operator, not a traceback."""
    exit_code = EXIT_ERROR


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


class _Main(click.Group):
    """Every error a command meets is one line on stderr and a non-zero exit, no traceback:
    usage errors and invalid settings (exit 2) as much as an unreachable broker or warehouse.
    PAYFLOW_LOG_LEVEL=debug shows the traceback of an unexpected error."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta["payflow.args"] = list(args)  # the command words, for the error line
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context):
        from payflow.kafka_security import KafkaConnectionFailure, KafkaSettingError
        from payflow.runtime import UnauditedVersion

        where = _path_of(ctx)
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:  # BadParameter and the range types among them
            where = exc.ctx.command_path if exc.ctx else ctx.command_path
            _die(where, f"{exc.format_message()} (see {where} --help)")
        except CommandError as exc:
            _die(where, exc.format_message())
        except (SettingError, KafkaSettingError, KafkaConnectionFailure, UnauditedVersion) as exc:
            _die(where, str(exc))
        except (click.exceptions.Exit, click.Abort, SystemExit, KeyboardInterrupt):
            raise
        except Exception as exc:  # noqa: BLE001 - an unexpected error is still one line
            if os.environ.get("PAYFLOW_LOG_LEVEL", "").strip().lower() == "debug":
                raise
            _die(where, f"{type(exc).__name__}: {exc} (PAYFLOW_LOG_LEVEL=debug shows the traceback)")


def _path_of(ctx: click.Context) -> str:
    """`payflow gdpr erase`: the command words of this invocation, for the error line."""
    words, command = [ctx.command_path], ctx.command
    args = list(ctx.meta.get("payflow.args", []))
    while isinstance(command, click.Group) and args:
        command = command.get_command(ctx, args[0])
        if command is None:
            break
        words.append(args.pop(0))
    return " ".join(words)


def _die(where: str, message: str) -> None:
    click.echo(f"{where}: error: {_one_line(message)}", err=True)
    sys.exit(EXIT_ERROR)


def _open_warehouse(settings: Settings, url: str | None, *, schema: bool = False):
    """The warehouse a command reads, or CommandError in one line: a URL of the wrong shape,
    a DuckDB file or BigQuery dataset that does not exist (never created here), or a
    warehouse that cannot be reached. `schema`: bring its tables up to date after opening."""
    from payflow.settings import WarehouseURL
    from payflow.warehouse import open_warehouse

    setting = "--warehouse" if url else "PAYFLOW_WAREHOUSE"
    where = WarehouseURL.parse(url, setting) if url else settings.warehouse
    url = where.url
    if where.is_duckdb:
        if where.path == ":memory:":
            raise CommandError(f"{setting}={url}: an in-memory DuckDB holds nothing to read")
        if not Path(where.path).is_file():
            raise CommandError(f"the DuckDB file {where.path} does not exist ({setting}={url}); "
                               "the worker creates it, this command never does")
    try:
        wh = open_warehouse(settings, where)
    except Exception as exc:  # noqa: BLE001
        raise CommandError(f"cannot open the warehouse {url} ({setting}): {_one_line(exc)}") from None
    try:
        if where.is_bigquery:
            _check_dataset(wh, settings, setting, url)
        if schema:
            wh.ensure_schema()
    except CommandError:
        wh.close()
        raise
    except Exception as exc:  # noqa: BLE001
        wh.close()
        raise CommandError(f"cannot read the warehouse {url} ({setting}): {_one_line(exc)}") from None
    return wh


def _check_dataset(wh, settings: Settings, setting: str, url: str) -> None:
    """Reach BigQuery once, briefly: an unreachable endpoint or a missing dataset is one line."""
    from google.api_core.exceptions import NotFound
    from google.cloud import bigquery

    where = settings.bigquery_endpoint or "Google's BigQuery API"
    try:
        wh.client.get_dataset(f"{wh.project}.{wh.dataset}", retry=bigquery.DEFAULT_RETRY.with_deadline(15),
                              timeout=10)
    except NotFound:
        raise CommandError(f"the BigQuery dataset {wh.project}.{wh.dataset} does not exist at {where} "
                           f"({setting}={url}); the worker creates it, this command never does") from None
    except Exception as exc:  # noqa: BLE001
        raise CommandError(f"cannot reach BigQuery at {where} (PAYFLOW_BIGQUERY_ENDPOINT, {setting}={url}): "
                           f"{type(exc).__name__}: {_one_line(exc)[:300]}") from None


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="payflow")
def main() -> None:
    """payflow: streaming payments, card data masked on first touch, every payment counted once.

    Exit codes: 0 ok; 1 a check failed (reconcile, audit findings, fraud targets); 2 an error
    (bad input or setting, broker or warehouse unreachable, a file missing), always one line
    on stderr; 3 `gdpr erase` matched nothing."""
    Settings.from_env()  # every setting validated before any command runs: one line if one is wrong
    from payflow.runtime import check_versions
    check_versions()  # the fence's audited library versions, before any command reaches their internals


# a share of the simulated messages
RATIO = click.FloatRange(0, 1)


@main.command()
@click.option("--count", type=click.IntRange(min=1), default=20_000, show_default=True,
              help="messages to send (all kinds)")
@click.option("--seed", type=click.IntRange(min=0), default=42, show_default=True,
              help="same seed + options = same bytes")
@click.option("--start-time", type=click.DateTime(formats=["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S"]),
              default=None, help="event_time of the first payment (UTC); default: the stream ends about now")
@click.option("--rate", type=click.FloatRange(min=0, min_open=True), default=None,
              help="events per second; default unlimited")
@click.option("--accounts", type=click.IntRange(min=1), default=10_000, show_default=True, help="sender population")
@click.option("--merchants", type=click.IntRange(min=1), default=500, show_default=True)
@click.option("--business-tps", type=click.FloatRange(min=0, min_open=True), default=5.0, show_default=True,
              help="payments per simulated second of event time")
@click.option("--duplicate-ratio", type=RATIO, default=0.05, show_default=True,
              help="share of messages re-sent as client double-submits")
@click.option("--late-ratio", type=RATIO, default=0.01, show_default=True,
              help="share of events more than 1 h behind the stream")
@click.option("--malformed-ratio", type=RATIO, default=0.01, show_default=True,
              help="share of malformed messages (19 kinds, cycled)")
@click.option("--fraud-ratio", type=RATIO, default=0.005, show_default=True,
              help="share of slots that start a fraud scenario")
@click.option("--manifest", "manifest_path", type=click.Path(path_type=Path), default=Path("var/manifest.json"),
              show_default=True, help="ground-truth manifest (no card data)")
@click.option("--topic", default=None, help="default: payment-events")
@click.option("--no-idempotence", is_flag=True, help="turn the idempotent producer off (for fault tests only)")
@click.option("--quiet", is_flag=True, help="no progress bar")
def simulate(count, seed, start_time, rate, accounts, merchants, business_tps, duplicate_ratio, late_ratio,
             malformed_ratio, fraud_ratio, manifest_path, topic, no_idempotence, quiet) -> None:
    """Produce realistic payment events (with card data) to the raw topic, and a manifest."""
    from payflow.simulator.generator import SimOptions
    from payflow.kafka_security import connect_or_exit
    from payflow.simulator.producer import simulate as run

    settings = Settings.from_env()
    connect_or_exit(settings.kafka_bootstrap)
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
    """Run the pipeline worker (same as `faust -A payflow.worker_app worker`); extra args go to Faust."""
    from payflow.worker_app import app, settings
    from payflow.kafka_security import preflight

    # a wrong security setting or an unreachable cluster: one line and exit 1, not a retry loop;
    # with PAYFLOW_KAFKA_REPLICATION_FACTOR=-1 the topics get the cluster's default (Faust takes no -1)
    app.conf.topic_replication_factor = preflight(settings.kafka_bootstrap)
    _follow_raw_partitions(settings)
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


def _follow_raw_partitions(settings: Settings) -> None:
    """The state changelogs and erasure requests grown to the raw topic's partition count
    (docs/operations.md, "Growing the raw topic"); a follower with more partitions than the
    raw topic: one line and exit 2, as Kafka cannot shrink it."""
    from payflow.kafka_admin import PartitionsAhead, follow_partitions
    from payflow.pipeline.assemble import follower_topics
    from payflow.tables.definitions import ALL_TABLES

    try:
        asyncio.run(follow_partitions(settings.kafka_bootstrap, settings.topics.raw, follower_topics(settings, ALL_TABLES)))
    except PartitionsAhead as exc:
        click.echo(f"payflow worker: {exc}", err=True)
        sys.exit(2)


@main.command()
@click.option("--manifest", "manifest_path", type=click.Path(exists=True, path_type=Path), required=True)
@click.option("--warehouse", default=None, help="warehouse URL; default PAYFLOW_WAREHOUSE")
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
def reconcile(manifest_path: Path, warehouse: str | None, as_json: bool) -> None:
    """Compare the warehouse with a simulator manifest.

    Exit 0: reconciled; 1: a check failed; 2: the manifest or warehouse could not be read."""
    from payflow.reconcile import reconcile as run

    manifest = _manifest(manifest_path)
    wh = _open_warehouse(Settings.from_env(), warehouse)
    try:
        result = run(wh, manifest)
    finally:
        wh.close()
    click.echo(json.dumps(result.to_json(), indent=2, default=str) if as_json else result.report())
    sys.exit(EXIT_OK if result.ok else EXIT_FAILED)


def _manifest(path: Path) -> dict:
    from payflow.simulator.manifest import load

    try:
        return load(path)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CommandError(f"{path} is not a readable simulator manifest: {_one_line(exc)}") from None


@main.group()
def gdpr() -> None:
    """GDPR data-subject requests."""


@gdpr.command("erase")
@click.option("--card", default=None, metavar="-|PAN",
              help="the subject's card number: '-' reads it from stdin, or a hidden prompt on a terminal "
                   "(a PAN given here lands in shell history and ps); hashed with every key, never stored")
@click.option("--expiry", default=None, help="the card's expiry, MM/YY (part of the hash)")
@click.option("--pii-hash", default=None, help="or the subject's pii_hash, as stored in the warehouse")
@click.option("--mode", type=click.Choice(["delete", "anonymize"]), required=True,
              help="delete: remove the subject's rows; anonymize: keep the financial facts, remove every link")
@click.option("--warehouse", default=None, help="warehouse URL; default PAYFLOW_WAREHOUSE")
@click.option("--no-state", is_flag=True, help="do not send the state-table erasure request to the worker")
@click.option("--allow-none", is_flag=True, help="exit 0 even when no row matched the subject")
def gdpr_erase(card, expiry, pii_hash, mode, warehouse, no_state, allow_none) -> None:
    """Erase a data subject everywhere payflow keeps them, and print a receipt.

    Name the subject with `--card - --expiry MM/YY` (the number then comes from stdin or a
    hidden prompt) or `--pii-hash`. It refuses, changing nothing, when no HMAC key is
    configured (it never makes one), when the warehouse holds rows hashed under a key the
    ring lacks, or when the warehouse does not exist. Exit 0: rows erased; 3: no row matched
    (the receipt says so; --allow-none makes it 0); 2: refused or an error."""
    from payflow.compliance.gdpr import ErasureError, erase, missing_key_ids, subject_hashes
    from payflow.key_config import key_ring_from_settings
    from payflow.keys import KeyConfigError

    settings = Settings.from_env()
    if card and pii_hash:
        raise CommandError("name the subject with --card or with --pii-hash, not both")
    if card == "-":
        card = _read_card()
    elif card:
        click.echo("payflow gdpr erase: warning: a card number on the command line lands in shell history, "
                   "ps and audit logs; use --card - (stdin or a hidden prompt)", err=True)
    keyring = None
    if card:
        try:
            keyring = key_ring_from_settings(settings, generate=False)
        except KeyConfigError as exc:
            raise CommandError(f"refused: {exc}") from None
    try:
        hashes = subject_hashes(keyring, card=card, expiry=expiry, pii_hash=pii_hash)
    except ErasureError as exc:
        raise CommandError(str(exc)) from None
    if not no_state:
        from payflow.kafka_security import connect_or_exit
        connect_or_exit(settings.kafka_bootstrap)
    wh = _open_warehouse(settings, warehouse, schema=True)
    try:
        if keyring is not None:
            missing = missing_key_ids(keyring, wh)
            if missing:
                raise CommandError(
                    f"refused: the warehouse holds rows hashed under key id(s) {', '.join(missing)}, which "
                    f"PAYFLOW_HMAC_KEYS lacks (it has {', '.join(keyring.key_ids)}): this subject's rows under "
                    "them cannot be found by card; add those keys to the ring, after the active one")
        result = erase(settings, wh, hashes, mode, send_state_requests=not no_state)
    finally:
        wh.close()
    click.echo(result.render())
    if result.rows_erased == 0:
        click.echo("payflow gdpr erase: NOTHING ERASED: no row matched the subject"
                   + ("" if allow_none else f" (exit {EXIT_NOTHING_ERASED}; --allow-none accepts this)"), err=True)
        sys.exit(EXIT_OK if allow_none else EXIT_NOTHING_ERASED)


def _read_card() -> str:
    """The card number from stdin (a pipe) or a hidden prompt (a terminal): never in argv."""
    if sys.stdin is not None and not sys.stdin.isatty():
        card = sys.stdin.readline().strip()
    else:
        card = click.prompt("card number", hide_input=True, err=True).strip()
    if not card:
        raise CommandError("--card -: no card number on stdin")
    return card


@main.group()
def audit() -> None:
    """Compliance audits."""


@audit.command("pci")
@click.option("--warehouse", default=None, help="warehouse URL; default PAYFLOW_WAREHOUSE")
@click.option("--no-warehouse", is_flag=True, help="do not scan the warehouse")
@click.option("--topic", "topic_names", multiple=True,
              help="a topic to scan (repeatable; it must exist); default: every payflow topic but the raw one")
@click.option("--topics/--no-topics", default=True, help="scan topics at all")
@click.option("--max-per-topic", type=click.IntRange(min=0), default=100_000, show_default=True,
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
            fail(f"cannot reach Kafka at {settings.kafka_bootstrap} (PAYFLOW_KAFKA_BOOTSTRAP): {describe_error(exc)}")
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
        # a missing DuckDB file is an error, never created (a new empty file would audit clean)
        try:
            wh = _open_warehouse(settings, warehouse)
        except CommandError as exc:
            fail(exc.format_message())
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
    sys.exit(result.exit_code)


@main.command("fraud-report")
@click.option("--manifest", "manifest_path", type=click.Path(exists=True, path_type=Path), required=True)
@click.option("--warehouse", default=None, help="warehouse URL; default PAYFLOW_WAREHOUSE")
@click.option("--json", "as_json", is_flag=True, help="print the result as one JSON document")
def fraud_report(manifest_path: Path, warehouse: str | None, as_json: bool) -> None:
    """Fraud quality against the simulator's labels: recall and false-positive rate.

    Exit 0: meets the targets; 1: below them; 2: the manifest or warehouse could not be read."""
    from payflow.reconcile import FRAUD_TARGETS, fraud_quality, meets_fraud_targets

    manifest = _manifest(manifest_path)
    wh = _open_warehouse(Settings.from_env(), warehouse)
    try:
        q = fraud_quality(wh, manifest)
    finally:
        wh.close()
    ok = meets_fraud_targets(q)
    if as_json:
        click.echo(json.dumps({**q, "targets": FRAUD_TARGETS, "meets_targets": ok}, indent=2))
    else:
        click.echo(json.dumps(q, indent=2))
        click.echo("fraud quality: " + ("meets the targets (recall >= 0.90, FPR <= 5%)" if ok else "BELOW TARGET"))
    sys.exit(EXIT_OK if ok else EXIT_FAILED)


@main.command("query")
@click.argument("sql")
@click.option("--warehouse", default=None, help="warehouse URL; default PAYFLOW_WAREHOUSE")
@click.option("--json", "as_json", is_flag=True, help="print the rows as JSON lines")
def query_command(sql: str, warehouse: str | None, as_json: bool) -> None:
    """Run one read-only SQL statement (BigQuery dialect) on the warehouse, also while a worker
    runs (it is then answered by the worker that holds the DuckDB file)."""
    from tabulate import tabulate

    from payflow.query import QueryError, run

    try:
        rows = run(sql, url=warehouse)
    except QueryError as exc:
        click.echo(f"payflow query: error: {exc}", err=True)
        sys.exit(2)
    except Exception as exc:  # a syntax error, an unknown column: the database's message, one line
        click.echo("payflow query: error: " + " ".join(f"{type(exc).__name__}: {exc}".split()), err=True)
        sys.exit(2)
    if as_json:
        for row in rows:
            click.echo(json.dumps(row, default=str))  # decimals and timestamps as their exact text
    else:
        click.echo(tabulate(rows, headers="keys", tablefmt="simple", disable_numparse=True) if rows else "(no rows)")

if __name__ == "__main__":
    main()
