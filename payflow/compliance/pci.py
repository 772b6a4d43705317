"""`payflow audit pci`: look for card data where it must never be (PCI DSS 4.0 req. 3).

Scans every STRING column of every warehouse table, Kafka topics (DLQ, outputs, audit,
changelogs; bounded by a count per topic) and log files for: Luhn-valid 13-19 digit runs
(also grouped with spaces or dashes), CVV-like values and full expiries. Findings show the
location and the masked value, never the value itself.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from payflow.cards import find_pans, mask_digits
from payflow.warehouse.base import Warehouse

# candidate filter pushed into SQL: any run of 13+ digits, optionally grouped
_SQL_CANDIDATE = r"[0-9][0-9 -]{11,}[0-9]"
_CVV_FIELD = re.compile(r"""(?i)["']?(cvv|cvc|csc|security_code)["']?\s*[:=]\s*["']?(\d{3,4})(?!\d)""")
_EXPIRY_FIELD = re.compile(r"""(?i)["']?(card_expiry|expiry|exp_date|expiration)["']?\s*[:=]\s*["']?((0[1-9]|1[0-2])\s*/\s*(\d{2}|\d{4}))(?!\d)""")
CVV_COLUMNS = ("cvv_masked",)
EXPIRY_COLUMNS = ("card_expiry_masked",)


@dataclass(frozen=True)
class Finding:
    kind: str  # pan | cvv | expiry
    location: str
    masked: str


@dataclass
class ScanResult:
    findings: list[Finding] = field(default_factory=list)
    scanned: dict[str, int] = field(default_factory=dict)
    pii_hash_share: float | None = None

    @property
    def ok(self) -> bool:
        return not self.findings

    def summary(self) -> str:
        lines = ["scanned: " + ", ".join(f"{k} {v}" for k, v in self.scanned.items())]
        if self.pii_hash_share is not None:
            lines.append(f"card payments carrying a pii_hash: {self.pii_hash_share:.2%}")
        for f in self.findings[:50]:
            lines.append(f"FINDING {f.kind} at {f.location}: {f.masked}")
        if len(self.findings) > 50:
            lines.append(f"... and {len(self.findings) - 50} more findings")
        lines.append("PCI scan: clean, no card data found" if self.ok
                     else f"PCI scan: {len(self.findings)} finding(s) of card data")
        return "\n".join(lines)


def scan_text(text: str, location: str) -> list[Finding]:
    out = [Finding("pan", location, hit.masked) for hit in find_pans(text)]
    out += [Finding("cvv", location, f"{m.group(1)}=XXX") for m in _CVV_FIELD.finditer(text)]
    out += [Finding("expiry", location, f"{m.group(1)}={m.group(3)}/XX") for m in _EXPIRY_FIELD.finditer(text)]
    return out


def scan_warehouse(warehouse: Warehouse, result: ScanResult) -> None:
    rows_scanned = 0
    for table, columns in warehouse.string_columns().items():
        for column in columns:
            rows = warehouse.query(
                f"SELECT {column} AS v FROM {table} WHERE REGEXP_CONTAINS({column}, r'{_SQL_CANDIDATE}') "
                f"OR REGEXP_CONTAINS(LOWER({column}), r'(cvv|cvc|expir)')")
            for row in rows:
                result.findings += scan_text(str(row["v"]), f"warehouse {table}.{column}")
            rows_scanned += len(rows)
        for column in CVV_COLUMNS:
            if column in columns:
                bad = warehouse.query(f"SELECT COUNT(*) AS n FROM {table} WHERE {column} IS NOT NULL AND {column} != 'XXX'")
                if bad[0]["n"]:
                    result.findings.append(Finding("cvv", f"warehouse {table}.{column}", f"{bad[0]['n']} unmasked values"))
        for column in EXPIRY_COLUMNS:
            if column in columns:
                bad = warehouse.query(f"SELECT COUNT(*) AS n FROM {table} WHERE {column} IS NOT NULL "
                                      f"AND NOT REGEXP_CONTAINS({column}, r'^(0[1-9]|1[0-2])/XX$')")
                if bad[0]["n"]:
                    result.findings.append(Finding("expiry", f"warehouse {table}.{column}", f"{bad[0]['n']} full expiries"))
    result.scanned["warehouse candidate values"] = rows_scanned
    share = warehouse.query(
        "SELECT COUNTIF(pii_hash IS NOT NULL) AS hashed, COUNT(*) AS n FROM payment_transactions "
        "WHERE credit_card_masked IS NOT NULL")
    result.pii_hash_share = share[0]["hashed"] / share[0]["n"] if share[0]["n"] else None


def scan_files(paths: Iterable[Path], result: ScanResult) -> None:
    n = 0
    for path in paths:
        path = Path(path)
        if not path.exists():
            continue
        with open(path, encoding="utf-8", errors="replace") as f:
            for lineno, line in enumerate(f, 1):
                result.findings += scan_text(line, f"{path}:{lineno}")
                n += 1
    result.scanned["log lines"] = n


def scan_topics(bootstrap: str, topics: Iterable[str], max_per_topic: int, result: ScanResult) -> None:
    import asyncio

    from aiokafka import AIOKafkaConsumer, TopicPartition

    async def run() -> int:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                    max_partition_fetch_bytes=4 * 1024 * 1024)
        await consumer.start()
        total = 0
        try:
            await consumer._client.force_metadata_update()
            for topic in topics:
                tps = [TopicPartition(topic, p) for p in (consumer.partitions_for_topic(topic) or ())]
                if not tps:
                    continue
                consumer.assign(tps)
                await consumer.seek_to_beginning(*tps)
                ends = await consumer.end_offsets(tps)
                remaining = {tp for tp in tps if ends[tp] > 0}
                seen = 0
                while remaining and seen < max_per_topic:
                    batch = await consumer.getmany(timeout_ms=1000, max_records=5000)
                    if not batch:
                        break
                    for tp, records in batch.items():
                        for rec in records:
                            for part, blob in (("key", rec.key), ("value", rec.value)):
                                if blob:
                                    result.findings.extend(scan_text(
                                        blob.decode("utf-8", "replace"), f"topic {topic}[{tp.partition}]@{rec.offset} {part}"))
                        seen += len(records)
                        if records and records[-1].offset >= ends[tp] - 1:
                            remaining.discard(tp)
                total += seen
        finally:
            await consumer.stop()
        return total

    result.scanned["topic records"] = asyncio.run(run())


def scan_all(warehouse: Warehouse | None = None, *, log_files: Iterable[Path] = (), bootstrap: str | None = None,
             topics: Iterable[str] = (), max_per_topic: int = 100_000) -> ScanResult:
    result = ScanResult()
    if warehouse is not None:
        scan_warehouse(warehouse, result)
    scan_files(log_files, result)
    topics = list(topics)
    if bootstrap and topics:
        scan_topics(bootstrap, topics, max_per_topic, result)
    return result


__all__ = ["Finding", "ScanResult", "scan_all", "scan_text", "mask_digits"]
