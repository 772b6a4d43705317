"""`make fraud-eval`: the labelled traffic (payflow.fraudeval.traffic) through the real worker
into the warehouse (DuckDB), then recall, false-positive rate and precision, overall and per
scenario, and a threshold table (docs/fraud.md explains the figures). Then the feedback loop
as a fraud team runs it: an analyst's label on every payment flagged and a chargeback on every
fraud missed go to the labels topic, the worker lands them, and the view fraud_label_quality
must give the same precision and recall.

    python -m payflow.fraudeval.run                 # real worker, local broker, DuckDB
    python -m payflow.fraudeval.run --direct        # the batch processor in-process (quick)
"""
from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import time
import zlib
from collections import defaultdict
from datetime import date, datetime, timezone
from pathlib import Path

import orjson

from payflow.fraudeval.traffic import FRAUD, LEGIT, Labelled, Traffic, messages
from payflow.pipeline.fraud_labels import QUALITY_SQL, quality
from payflow.tables.memory import MemoryState

THRESHOLDS = (20, 30, 40, 50, 60, 70, 80, 90)


# -- scoring ------------------------------------------------------------------------------


def score_in_process(events: list[Labelled], *, partitions: int = 4, batch_size: int = 500,
                     account_kinds: dict[str, str] | None = None, processor_kwargs: dict | None = None) -> dict[str, tuple[int, str]]:
    """transaction_id -> (fraud_score, risk_flags) from the batch processor over in-memory
    tables, each partition's payments in order, batches of `batch_size` (no Kafka, no warehouse)."""
    from payflow.keys import KeyRing
    from payflow.stages.batch import BatchProcessor, RawItem

    tables = {name: MemoryState() for name in ("dedup_table", "watermark_table", "sender_table", "card_table")}
    last = max(e.event_time for e in events)
    now = datetime.fromtimestamp(last + 60, timezone.utc)
    processor = BatchProcessor(keyring=KeyRing.parse("eval-1:" + "5a" * 32), now=lambda: now,
                               account_kinds=account_kinds, **tables, **(processor_kwargs or {}))
    queues: dict[int, list[RawItem]] = defaultdict(list)
    for key, value in messages(events):
        p = zlib.crc32(key) % partitions
        queues[p].append(RawItem(p, len(queues[p]), value, None))
    out: dict[str, tuple[int, str]] = {}
    for p in sorted(queues):
        items = queues[p]
        for i in range(0, len(items), batch_size):
            result = processor.process(items[i:i + batch_size])
            for e in result.enriched:
                out[e.payment.transaction_id] = (e.fraud.fraud_score, ",".join(e.fraud.risk_flags))
            processor.expire(result.start_watermarks)
    return out


async def _produce(bootstrap: str, partitions: int, records: dict[str, list[tuple[bytes, bytes]]],
                   compacted: tuple[str, ...] = ()) -> None:
    """Each topic's (key, value) records, topic after topic in `records`' order (the topics
    created first, those in `compacted` as compacted topics), all acknowledged."""
    from payflow.kafka_admin import ensure_topics
    from payflow.simulator.producer import make_producer

    topics = [t for t, batch in records.items() if batch]
    plain, compact = [t for t in topics if t not in compacted], [t for t in topics if t in compacted]
    await ensure_topics(bootstrap, plain, partitions)
    if compact:
        await ensure_topics(bootstrap, compact, partitions, configs={t: {"cleanup.policy": "compact"} for t in compact})
    producer = make_producer(bootstrap)
    await producer.start()
    try:
        futures = [await producer.send(t, value, key=key) for t in topics for key, value in records[t]]
        await producer.flush()
        for f in futures:
            await f
    finally:
        await producer.stop()


def score_with_worker(events: list[Labelled], account_kinds: dict[str, str]) -> dict[str, tuple[int, str]]:
    """The traffic to a fresh raw topic, a real `payflow worker` until every offset is
    committed, then the scores as the warehouse holds them."""
    from payflow.demo import _reset
    from payflow.catch_up import CatchUpFailed, run_worker_until_caught_up
    from payflow.kafka_admin import rewind_group
    from payflow.settings import Settings
    from payflow.warehouse import open_warehouse

    os.environ.setdefault("PAYFLOW_APP_ID", "payflow-fraudeval")
    os.environ.setdefault("PAYFLOW_WAREHOUSE", "duckdb:///var/fraudeval/payflow.duckdb")
    os.environ.setdefault("PAYFLOW_DATA_DIR", "var/fraudeval")
    os.environ.setdefault("PAYFLOW_LOG_FORMAT", "json")
    settings = Settings.from_env()
    db_path = Path(settings.warehouse.path)
    asyncio.run(_reset(settings))
    shutil.rmtree(settings.data_dir / "state", ignore_errors=True)
    for p in (db_path, db_path.with_suffix(".duckdb.wal")):
        p.unlink(missing_ok=True)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    print(f"producing {len(events)} labelled payments to {settings.topics.raw}", flush=True)
    types = [(account.encode(), orjson.dumps({"account_type": kind})) for account, kind in account_kinds.items()]
    asyncio.run(_produce(settings.kafka_bootstrap, settings.partitions,
                         {settings.topics.account_types: types, settings.topics.raw: list(messages(events))},
                         compacted=(settings.topics.account_types,)))
    asyncio.run(rewind_group(settings.kafka_bootstrap, settings.app_id, settings.topics.raw))
    try:
        run_worker_until_caught_up(settings, timeout=1200, interval=3)
    except CatchUpFailed as exc:
        raise SystemExit(str(exc)) from None
    warehouse = open_warehouse(settings)
    try:
        rows = warehouse.query("SELECT transaction_id, fraud_score, risk_flags FROM payment_transactions_fraud")
    finally:
        warehouse.close()
    return {r["transaction_id"]: (int(r["fraud_score"]), r["risk_flags"] or "") for r in rows}


# -- the feedback loop ---------------------------------------------------------------------------
def feedback_labels(events: list[Labelled], scores: dict[str, tuple[int, str]], threshold: int,
                    labelled_at: datetime) -> list[tuple[bytes, bytes]]:
    """The labels a fraud team would feed back: an analyst's decision on every payment
    flagged high risk (what it was), and a chargeback for every fraud payment not flagged."""
    out = []
    for e in events:
        txn = e.doc["transaction_id"]
        got = scores.get(txn)
        if got is None:
            continue
        if got[0] > threshold:
            label, source = ("fraud" if e.fraud else "legitimate"), "analyst"
        elif e.fraud:
            label, source = "fraud", "chargeback"
        else:
            continue
        out.append((txn.encode(), orjson.dumps({"transaction_id": txn, "label": label, "source": source,
                                                "labelled_at": labelled_at.isoformat()})))
    return out


def quality_through_worker(labels: list[tuple[bytes, bytes]]) -> dict:
    """The labels to the labels topic, the worker run until it committed them, then the
    precision and recall the warehouse's view fraud_label_quality gives, over every day."""
    from payflow.catch_up import CatchUpFailed, run_worker_until_caught_up
    from payflow.settings import Settings
    from payflow.warehouse import open_warehouse

    settings = Settings.from_env()
    topic = settings.topics.fraud_labels

    print(f"feeding back {len(labels)} labels to {topic}", flush=True)
    asyncio.run(_produce(settings.kafka_bootstrap, settings.partitions, {topic: labels}))
    try:
        run_worker_until_caught_up(settings, timeout=600, interval=3, topics=(topic,))
    except CatchUpFailed as exc:
        raise SystemExit(str(exc)) from None
    warehouse = open_warehouse(settings)
    try:
        return warehouse.query(QUALITY_SQL, {"since": date(1970, 1, 1)})[0]
    finally:
        warehouse.close()


def feedback_report(row: dict, own: dict, labels_sent: int) -> tuple[str, bool]:
    """The view's figures, and whether they are the evaluation's own over every label sent."""
    precision, recall, labelled, _ = quality(row)
    precision, recall = precision or 0.0, recall or 0.0
    same = (labelled == labels_sent > 0 and abs(precision - own["precision"]) < 1e-9
            and abs(recall - own["recall_all_fraud"]) < 1e-9)
    return (f"feedback loop (labels topic -> fraud_labels -> view fraud_label_quality): {labelled} of {labels_sent} "
            f"labelled payments, precision {precision:.3f}, recall {recall:.3f} (all fraud): "
            + ("the same as the evaluation's own figures" if same else
               f"NOT the evaluation's own (precision {own['precision']:.3f}, recall {own['recall_all_fraud']:.3f} "
               f"over {labels_sent} labels)")), same


# -- figures --------------------------------------------------------------------------------
def figures(events: list[Labelled], scores: dict[str, tuple[int, str]], threshold: int) -> dict:
    """Recall (over detectable fraud, and over all fraud), false-positive rate and precision
    at `threshold` (high risk: score > threshold), overall and per scenario."""
    per: dict[str, list[int]] = defaultdict(lambda: [0, 0])  # scenario -> [flagged, payments]
    tp = fn = fp = tn = tp_all = n_fraud = missing = 0
    for e in events:
        got = scores.get(e.doc["transaction_id"])
        if got is None:
            missing += 1
            continue
        flagged = got[0] > threshold
        per[e.scenario][0] += flagged
        per[e.scenario][1] += 1
        if e.fraud:
            n_fraud += 1
            tp_all += flagged
            if e.detectable:
                tp += flagged
                fn += not flagged
        else:
            fp += flagged
            tn += not flagged
    return {"threshold": threshold, "recall": tp / max(1, tp + fn), "recall_all_fraud": tp_all / max(1, n_fraud),
            "fpr": fp / max(1, fp + tn), "precision": tp_all / max(1, tp_all + fp),
            "per_scenario": {k: (v[0], v[1]) for k, v in per.items()}, "missing": missing,
            "legit": fp + tn, "fraud": n_fraud, "detectable": tp + fn}


def report(events: list[Labelled], scores: dict[str, tuple[int, str]], threshold: int) -> str:
    from tabulate import tabulate

    f = figures(events, scores, threshold)
    lines = [f"{len(events)} labelled payments ({f['legit']} legitimate, {f['fraud']} fraud of which "
             f"{f['detectable']} detectable), {f['missing']} not in the warehouse",
             f"operating point: high risk = score > {threshold}",
             f"recall {f['recall']:.3f} (detectable fraud; all fraud {f['recall_all_fraud']:.3f}), "
             f"false-positive rate {f['fpr']:.4f}, precision {f['precision']:.3f}", ""]
    reasons: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for e in events:
        got = scores.get(e.doc["transaction_id"])
        if got and got[0] > threshold:
            for flag in filter(None, got[1].split(",")):
                reasons[e.scenario][flag.split(":")[0]] += 1
    rows = []
    for name in (*LEGIT, *FRAUD):
        flagged, n = f["per_scenario"].get(name, (0, 0))
        if n:
            top = sorted(reasons[name].items(), key=lambda kv: -kv[1])[:3]
            rows.append((name, "fraud" if name in FRAUD else "legit", n, flagged, f"{flagged / n:.3f}",
                         " ".join(f"{k}={v}" for k, v in top)))
    lines.append(tabulate(rows, headers=("scenario", "label", "payments", "flagged", "rate", "top reasons"),
                          tablefmt="github"))
    lines.append("")
    table = []
    for t in sorted({*THRESHOLDS, threshold}):
        g = figures(events, scores, t)
        worst = max(((g["per_scenario"][s][0] / g["per_scenario"][s][1], s) for s in LEGIT if s in g["per_scenario"]),
                    default=(0.0, "-"))
        table.append((f"> {t}", f"{g['recall']:.3f}", f"{g['recall_all_fraud']:.3f}", f"{g['fpr']:.4f}",
                      f"{g['precision']:.3f}", f"{worst[1]} {worst[0]:.3f}"))
    lines.append(tabulate(table, headers=("high risk", "recall", "recall (all fraud)", "FPR", "precision",
                                          "worst legitimate scenario"), tablefmt="github"))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from payflow.runtime import refuse_unaudited
    refuse_unaudited("payflow fraud-eval")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=29)
    ap.add_argument("--scale", type=float, default=0.5, help="traffic volume (1.0: about 57,000 payments)")
    ap.add_argument("--direct", action="store_true", help="score in-process with the batch processor")
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=500)
    ap.add_argument("--no-account-kinds", action="store_true", help="do not give the worker the account types")
    ap.add_argument("--threshold", type=int, default=None, help="high risk above (default: the setting)")
    args = ap.parse_args(argv)
    from payflow.settings import Settings

    threshold = args.threshold if args.threshold is not None else Settings.from_env().fraud_high_risk_above
    traffic = Traffic(seed=args.seed, scale=args.scale)
    events = traffic.build()
    kinds = {} if args.no_account_kinds else traffic.account_kinds
    started = time.process_time()
    if args.direct:
        scores = score_in_process(events, partitions=args.partitions, batch_size=args.batch_size, account_kinds=kinds)
        print(f"scored in-process in {time.process_time() - started:.1f} s CPU")
    else:
        scores = score_with_worker(events, kinds)
    print(report(events, scores, threshold))
    if not args.direct:  # the same figures as a fraud team gets them: from labels fed back
        worker_threshold = Settings.from_env().fraud_high_risk_above
        labels = feedback_labels(events, scores, worker_threshold, datetime.now(timezone.utc))
        line, same = feedback_report(quality_through_worker(labels), figures(events, scores, worker_threshold),
                                     len(labels))
        print(line)
        if not same:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
