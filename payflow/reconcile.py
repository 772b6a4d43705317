"""Reconciliation: the warehouse against the simulator's ground-truth manifest.

Every valid on-time payment exactly once, nothing else; sums per currency equal to the
cent (Decimal); duplicates, late events and DLQ entries accounted for by kind.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from tabulate import tabulate

from payflow.simulator import malformed
from payflow.warehouse.base import Warehouse


@dataclass
class Check:
    name: str
    expected: Any
    actual: Any

    @property
    def ok(self) -> bool:
        return self.expected == self.actual


@dataclass
class Reconciliation:
    checks: list[Check] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def report(self) -> str:
        rows = [(c.name, c.expected, c.actual, "ok" if c.ok else "MISMATCH") for c in self.checks]
        out = tabulate(rows, headers=("check", "expected", "in warehouse", ""), tablefmt="simple",
                       disable_numparse=True)
        extra = "\n".join(f"{k}: {v}" for k, v in self.info.items())
        verdict = ("RECONCILED: every payment counted once, sums equal to the cent" if self.ok
                   else f"NOT RECONCILED: {sum(not c.ok for c in self.checks)} check(s) failed")
        lines = [out, extra, verdict]
        if self.missing:
            lines.append(f"missing (first 10): {', '.join(self.missing[:10])}")
        if self.extra:
            lines.append(f"extra (first 10): {', '.join(self.extra[:10])}")
        return "\n".join(x for x in lines if x)

    def to_json(self) -> dict[str, Any]:
        """For machines: every check with what was expected and found, and the ids that differ."""
        return {"ok": self.ok,
                "checks": [{"name": c.name, "expected": c.expected, "actual": c.actual, "ok": c.ok}
                           for c in self.checks],
                "missing": self.missing, "extra": self.extra, "info": self.info}


def reconcile(warehouse: Warehouse, manifest: dict[str, Any], *, anonymized_ok: bool = True) -> Reconciliation:
    r = Reconciliation()
    landed = {row["transaction_id"] for row in warehouse.query("SELECT transaction_id FROM payment_transactions")}
    expected = set(manifest["transaction_ids"])
    r.missing = sorted(expected - landed)
    r.extra = sorted(landed - expected)
    r.checks.append(Check("unique payments", len(expected), len(landed)))
    r.checks.append(Check("missing payments", 0, len(r.missing)))
    r.checks.append(Check("extra payments", 0, len(r.extra)))
    rows = warehouse.query("SELECT COUNT(*) AS n, COUNT(DISTINCT transaction_id) AS d FROM payment_transactions")
    r.checks.append(Check("rows per transaction_id", 1, 1 if rows[0]["n"] == rows[0]["d"] else "duplicated"))

    sums = {row["currency"]: (Decimal(row["total"]), row["n"]) for row in warehouse.query(
        "SELECT currency, SUM(amount) AS total, COUNT(*) AS n FROM payment_transactions GROUP BY currency")}
    exp_sums = {c: Decimal(v) for c, v in manifest["sum_by_currency"].items()}
    for currency in sorted(set(sums) | set(exp_sums)):
        got = sums.get(currency, (Decimal(0), 0))[0]
        want = exp_sums.get(currency, Decimal(0))
        # normalise so 12.340000000 and 12.34 compare (and print) as the same amount
        r.checks.append(Check(f"sum {currency}", _fmt(want), _fmt(got)))

    fraud_rows = warehouse.query("SELECT COUNT(*) AS n, COUNTIF(is_high_risk) AS high FROM payment_transactions_fraud")
    r.checks.append(Check("fraud-scored payments", len(expected), fraud_rows[0]["n"]))
    dup = warehouse.query("SELECT COUNT(*) AS n FROM deduplication_audit")[0]["n"]
    r.checks.append(Check("duplicates dropped (audited)", manifest["expected_duplicates"], dup))
    late = warehouse.query("SELECT COUNT(*) AS n FROM late_events")[0]["n"]
    r.checks.append(Check("late events", manifest["late"], late))
    dlq = Counter({row["reason"]: row["n"] for row in warehouse.query(
        "SELECT reason, COUNT(*) AS n FROM dead_letter_events GROUP BY reason")})
    want_dlq: Counter = Counter()
    for kind, n in manifest["malformed"]["by_kind"].items():
        want_dlq[malformed.EXPECTED_REASON[kind]] += n
    r.checks.append(Check("DLQ total", sum(want_dlq.values()), sum(dlq.values())))
    for reason in sorted(set(dlq) | set(want_dlq)):
        r.checks.append(Check(f"DLQ {reason}", want_dlq.get(reason, 0), dlq.get(reason, 0)))
    audit = warehouse.query("SELECT COUNT(*) AS n FROM pii_masking_audit")[0]["n"]
    r.checks.append(Check("masking audit rows", len(expected), audit))
    r.info["high-risk payments"] = fraud_rows[0]["high"]
    r.info["messages sent"] = manifest["messages_sent"]
    return r


def _fmt(d: Decimal) -> str:
    text = format(d.normalize(), "f")
    return text


# what `payflow fraud-report` holds the detector to
FRAUD_TARGETS = {"recall_at_least": 0.90, "false_positive_rate_at_most": 0.05}


def meets_fraud_targets(q: dict[str, Any]) -> bool:
    return (q["recall"] is not None and q["recall"] >= FRAUD_TARGETS["recall_at_least"]
            and (q["false_positive_rate"] or 0) <= FRAUD_TARGETS["false_positive_rate_at_most"])


def fraud_quality(warehouse: Warehouse, manifest: dict[str, Any]) -> dict[str, Any]:
    """Recall over injected fraud and false-positive rate on clean traffic."""
    labels: dict[str, dict] = manifest["fraud_labels"]
    scored = {row["transaction_id"]: bool(row["is_high_risk"]) for row in warehouse.query(
        "SELECT transaction_id, is_high_risk FROM payment_transactions_fraud")}
    detectable = [t for t, lab in labels.items() if lab["detectable"] and t in scored]
    all_fraud = [t for t in labels if t in scored]
    clean = [t for t in scored if t not in labels]
    by_kind: dict[str, list[int]] = {}
    for t in detectable:
        hit = by_kind.setdefault(labels[t]["kind"], [0, 0])
        hit[0] += scored[t]
        hit[1] += 1
    scenarios: dict[int, bool] = {}
    for t in all_fraud:
        sid = labels[t]["scenario"]
        scenarios[sid] = scenarios.get(sid, False) or scored[t]
    tp = sum(scored[t] for t in detectable)
    fp = sum(scored[t] for t in clean)
    return {
        "recall": tp / len(detectable) if detectable else None,
        "recall_all_labelled": sum(scored[t] for t in all_fraud) / len(all_fraud) if all_fraud else None,
        "scenario_recall": sum(scenarios.values()) / len(scenarios) if scenarios else None,
        "false_positive_rate": fp / len(clean) if clean else None,
        "detectable_fraud": len(detectable), "labelled_fraud": len(all_fraud), "scenarios": len(scenarios),
        "clean": len(clean), "false_positives": fp,
        "recall_by_kind": {k: round(v[0] / v[1], 4) for k, v in sorted(by_kind.items())},
    }
