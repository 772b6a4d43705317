"""`payflow audit pci`: look for card data where it must never be (PCI DSS 4.0 req. 3).

Every place is read whole, with one detector (`payflow.stages.cards.find_pans`):
- Kafka topics: each partition from its first offset to the high-water mark taken when the
  topic's scan starts (at most `max_per_topic` records a topic, reported when reached);
  record keys, values and headers;
- the warehouse: every row of every string column of every table in its schema (the
  catalogue is asked, so a table outside payflow's DDL is read too);
- the worker's state directory: every file as bytes (SST, WAL, MANIFEST, ...), and since
  RocksDB compresses SST blocks (Snappy by default, which Faust keeps), each database
  opened read-only with rocksdict too, every key and value of every column family;
- log files, line by line.
Each place reports what it read, so a clean verdict over nothing read cannot happen. A
place that cannot be read is an AuditError (the CLI exits 2), never a silent skip.
Findings give the location and the masked value (last four), never the number.
"""
from __future__ import annotations

from decimal import Decimal

import asyncio
import gzip
import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from payflow.kafka_security import current as kafka_security
from payflow.stages import cards
from payflow.stages.cards import find_pans, mask_digits
from payflow.warehouse.base import Warehouse

_CVV_FIELD = re.compile(r"""(?i)["']?(cvv|cvc|csc|security_code)["']?\s*[:=]\s*["']?(\d{3,4})(?!\d)""")
_EXPIRY_FIELD = re.compile(r"""(?i)["']?(card_expiry|expiry|exp_date|expiration)["']?\s*[:=]\s*["']?((0[1-9]|1[0-2])\s*/\s*(\d{2}|\d{4}))(?!\d)""")
CVV_COLUMNS = ("cvv_masked",)
EXPIRY_COLUMNS = ("card_expiry_masked",)
MAX_FINDINGS_KEPT = 10_000
# files are read in windows; a hit is taken from the window its first byte falls in, and
# each window reads this much before and after it so no spelling of a PAN is cut in two
_WINDOW = 8 * 2**20
_MARGIN = 4096
# a partition that yields nothing for this long while short of its end offset is an error
TOPIC_STALL_SECONDS = 60.0


class AuditError(Exception):
    """A place could not be read, so the audit cannot say clean (the CLI exits 2)."""


def describe_error(exc: BaseException) -> str:
    """An exception as one short line: its type (unless its text names it) and its text."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if type(exc).__name__ in text else f"{type(exc).__name__}: {text}"


@dataclass(frozen=True)
class Finding:
    kind: str  # pan | cvv | expiry
    location: str
    masked: str


@dataclass
class Place:
    """One place read: what it is, and how much of it was read."""
    kind: str  # topic | warehouse table | state | log
    name: str
    unit: str  # records | rows | files, info log lines, db records | lines
    count: int = 0
    bytes: int = 0
    not_read: int = 0  # records left out by the per-topic bound
    note: str = ""
    explicit: bool = False  # named by the user (a missing one is an error, an empty one is said)

    def line(self) -> str:
        text = f"{self.kind} {self.name}: {self.count} {self.unit}"
        if self.bytes:
            text += f", {self.bytes} bytes"
        if self.not_read:
            text += f"; {self.not_read} NOT READ (bound reached)"
        if self.note:
            text += f" ({self.note})"
        if self.explicit and self.count == 0 and not self.note:
            text += " (EMPTY: nothing to read)"
        return text


@dataclass
class ScanResult:
    findings: list[Finding] = field(default_factory=list)
    places: list[Place] = field(default_factory=list)
    pii_hash_share: float | None = None
    findings_total: int = 0

    def add(self, found: Iterable[Finding]) -> None:
        for f in found:
            self.findings_total += 1
            if len(self.findings) < MAX_FINDINGS_KEPT:
                self.findings.append(f)

    @property
    def ok(self) -> bool:
        return not self.findings_total

    @property
    def scanned(self) -> dict[str, int]:
        """Totals read per kind of place and unit ("topic records": n, ...)."""
        out: dict[str, int] = {}
        for p in self.places:
            key = f"{p.kind} {p.unit}"
            out[key] = out.get(key, 0) + p.count
        return out

    @property
    def read_nothing(self) -> bool:
        return not any(p.count for p in self.places)

    @property
    def not_read(self) -> int:
        return sum(p.not_read for p in self.places)

    @property
    def complete(self) -> bool:
        """Everything it was to read was read: only then can a scan without findings say clean."""
        return not self.read_nothing and not self.not_read

    @property
    def exit_code(self) -> int:
        """The CLI's: 0 clean, 1 card data found, 2 incomplete (nothing read, or records left
        unread by --max-per-topic): an audit that read part of a place cannot say clean."""
        return 1 if not self.ok else 0 if self.complete else 2

    def verdict(self) -> str:
        if not self.ok:
            return f"PCI scan: {self.findings_total} finding(s) of card data"
        if self.read_nothing:
            return "PCI scan: NOTHING READ (0 records, rows, files and lines): cannot say clean"
        read = ", ".join(f"{n} {k}" for k, n in self.scanned.items() if n)
        if self.not_read:
            return (f"PCI scan: INCOMPLETE, cannot say clean: no card data found in {read}, but "
                    f"{self.not_read} topic records were NOT READ (--max-per-topic)")
        return "PCI scan: clean, no card data found in " + read

    def summary(self) -> str:
        lines = [p.line() for p in self.places]
        lines.append("scanned: " + ", ".join(f"{k} {v}" for k, v in self.scanned.items()))
        if self.pii_hash_share is not None:
            lines.append(f"card payments carrying a pii_hash: {self.pii_hash_share:.2%}")
        for f in self.findings[:50]:
            lines.append(f"FINDING {f.kind} at {f.location}: {f.masked}")
        if self.findings_total > 50:
            lines.append(f"... and {self.findings_total - 50} more findings")
        lines.append(self.verdict())
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {"verdict": "findings" if not self.ok else "nothing read" if self.read_nothing
                else "incomplete" if self.not_read else "clean",
                "places": [asdict(p) for p in self.places], "scanned": self.scanned,
                "pii_hash_share": self.pii_hash_share, "findings_total": self.findings_total,
                "findings": [asdict(f) for f in self.findings]}


# -- the detector over text and bytes ------------------------------------------------------
def scan_text(text: str, location: str) -> list[Finding]:
    out = [Finding("pan", location, hit.masked) for hit in find_pans(text)]
    out += [Finding("cvv", location, f"{m.group(1)}=XXX") for m in _CVV_FIELD.finditer(text)]
    out += [Finding("expiry", location, f"{m.group(1)}={m.group(3)}/XX") for m in _EXPIRY_FIELD.finditer(text)]
    return out


def _pan_hits(data: bytes) -> list[tuple[int, str]]:
    """(byte offset, masked) of every PAN in data. Bytes are read as latin-1 (one character a
    byte, so offsets are byte offsets); data that is not ASCII is also read as UTF-8, for
    digits of other scripts."""
    finder = getattr(cards, "find_pans_bytes", None)
    hits = finder(data) if finder is not None else find_pans(data.decode("latin-1"))
    out = [(getattr(h, "start", 0), h.masked) for h in hits]
    if not data.isascii():
        seen = {m for _, m in out}
        text = data.decode("utf-8", "replace")
        out += [(len(text[:h.start].encode()), h.masked) for h in find_pans(text) if h.masked not in seen]
    return out


def scan_bytes(data: bytes, location: Callable[[int], str], accept: Callable[[int], bool] = lambda _: True
               ) -> list[Finding]:
    """Findings in data; `location(offset)` names where, `accept(offset)` filters by offset."""
    out = [Finding("pan", location(off), masked) for off, masked in _pan_hits(data) if accept(off)]
    low = data.lower()
    if any(word in low for word in (b"cv", b"csc", b"security", b"exp")):  # the field names the patterns need
        text = data.decode("latin-1")
        out += [Finding("cvv", location(m.start()), f"{m.group(1)}=XXX")
                for m in _CVV_FIELD.finditer(text) if accept(m.start())]
        out += [Finding("expiry", location(m.start()), f"{m.group(1)}={m.group(3)}/XX")
                for m in _EXPIRY_FIELD.finditer(text) if accept(m.start())]
    return out


# -- Kafka ------------------------------------------------------------------------------
def scan_topics(bootstrap: str, topics: Iterable[str], max_per_topic: int | None, result: ScanResult,
                *, explicit: bool = False) -> None:
    """Each topic from the beginning of each partition to its high-water mark at the topic's
    start, at most `max_per_topic` records (None or 0: no bound)."""
    topics = list(topics)
    try:
        asyncio.run(_scan_topics(bootstrap, topics, max_per_topic or None, result, explicit))
    except AuditError:
        raise
    except Exception as exc:  # connection refused, timeouts, authorisation ...
        from payflow.kafka_security import explain_connection_failure
        raise AuditError(f"cannot read Kafka at {bootstrap}: {describe_error(exc)}; "
                         f"{explain_connection_failure(exc, bootstrap)}") from None


async def topic_partitions(bootstrap: str, topics: list[str] | None = None) -> dict[str, list[int]]:
    """topic -> its partitions (every topic when `topics` is None)."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="payflow-audit", request_timeout_ms=15_000,
                                **kafka_security().client_kwargs())
    await admin.start()
    try:
        names = topics if topics is not None else sorted(await admin.list_topics())
        if not names:
            return {}
        described = await admin.describe_topics(names)
    finally:
        await admin.close()
    return {d["topic"]: sorted(p["partition"] for p in d["partitions"])
            for d in described if d.get("error_code", 0) == 0 and d["partitions"]}


async def _scan_topics(bootstrap: str, topics: list[str], bound: int | None, result: ScanResult,
                       explicit: bool) -> None:
    layout = await topic_partitions(bootstrap, topics)
    missing = [t for t in topics if t not in layout]
    if missing and explicit:
        raise AuditError(f"topic(s) not found at {bootstrap}: {', '.join(missing)}")
    for topic in topics:
        if topic not in layout:
            result.places.append(Place("topic", topic, "records", note="absent"))
            continue
        place = Place("topic", topic, "records", explicit=explicit)
        result.places.append(place)
        await _scan_topic(bootstrap, topic, layout[topic], bound, result, place)


async def _scan_topic(bootstrap: str, topic: str, partitions: list[int], bound: int | None, result: ScanResult,
                      place: Place) -> None:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    # a consumer per topic: one re-assigned from topic to topic read nothing of the later ones
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                                client_id="payflow-audit", max_partition_fetch_bytes=4 * 2**20,
                                isolation_level="read_uncommitted", request_timeout_ms=30_000,
                                **kafka_security().client_kwargs())
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        firsts = await consumer.beginning_offsets(tps)
        ends = await consumer.end_offsets(tps)
        total = sum(max(0, ends[tp] - firsts[tp]) for tp in tps)
        remaining = set()
        for tp in tps:
            if ends[tp] > firsts[tp]:
                consumer.seek(tp, firsts[tp])
                remaining.add(tp)
        last_progress = time.monotonic()
        while remaining and (bound is None or place.count < bound):
            batch = await consumer.getmany(*remaining, timeout_ms=1000, max_records=5000)
            for tp, records in batch.items():
                for rec in records:
                    if rec.offset >= ends[tp] or (bound is not None and place.count >= bound):
                        break
                    _scan_record(topic, tp.partition, rec, result, place)
                    last_progress = time.monotonic()
            for tp in list(remaining):
                # position, not the last record's offset: compaction and transaction markers leave gaps
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
                    consumer.pause(tp)
            if remaining and time.monotonic() - last_progress > TOPIC_STALL_SECONDS:
                tp = min(remaining, key=lambda t: t.partition)
                raise AuditError(f"topic {topic} partition {tp.partition}: no records for "
                                 f"{TOPIC_STALL_SECONDS:.0f} s at offset {await consumer.position(tp)} "
                                 f"of {ends[tp]} ({bootstrap})")
        if bound is not None and place.count >= bound:
            place.not_read = max(0, total - place.count)  # offsets left: an upper bound where compacted
    finally:
        await consumer.stop()


def _scan_record(topic: str, partition: int, rec: Any, result: ScanResult, place: Place) -> None:
    place.count += 1
    where = f"topic {topic}[{partition}]@{rec.offset}"
    parts = [("key", rec.key), ("value", rec.value)]
    parts += [(f"header {name}", value) for name, value in (rec.headers or ())]
    for part, blob in parts:
        if blob:
            place.bytes += len(blob)
            result.add(scan_bytes(bytes(blob), lambda off, part=part: f"{where} {part} +{off}"))
    for name, _ in rec.headers or ():
        result.add(scan_text(name, f"{where} header name"))


# -- the warehouse ----------------------------------------------------------------------


@dataclass(frozen=True)
class TableInfo:
    ref: str  # how a query names it
    strings: list[str]  # the columns scanned: all of them (a number, blob or struct can hold a PAN too)
    columns: list[str]  # all its columns


def warehouse_tables(warehouse: Warehouse) -> dict[str, TableInfo]:
    """Every table in the warehouse's schema, payflow's or not, from its catalogue."""
    if warehouse.name == "duckdb":
        rows = warehouse.query(
            "SELECT c.schema_name, c.table_name, c.column_name, c.data_type FROM duckdb_columns() AS c "
            "JOIN duckdb_tables() AS t ON c.table_oid = t.table_oid "
            "WHERE NOT t.internal AND NOT t.temporary AND t.database_name = current_database() "
            "ORDER BY c.schema_name, c.table_name, c.column_index")
        out: dict[str, TableInfo] = {}
        for r in rows:
            name = r["table_name"] if r["schema_name"] == "main" else f"{r['schema_name']}.{r['table_name']}"
            info = out.setdefault(name, TableInfo(f"`{r['schema_name']}`.`{r['table_name']}`", [], []))
            info.columns.append(r["column_name"])
            info.strings.append(r["column_name"])
        return out
    if warehouse.name == "bigquery":
        from google.cloud import bigquery

        client, project, dataset = warehouse.client, warehouse.project, warehouse.dataset  # type: ignore[attr-defined]
        retry = bigquery.DEFAULT_RETRY.with_deadline(30)
        out = {}
        for item in client.list_tables(f"{project}.{dataset}", retry=retry, timeout=15):
            if item.table_type != "TABLE":  # views read the tables scanned here
                continue
            table = client.get_table(item.reference, retry=retry, timeout=15)
            strings = [f.name for f in table.schema]
            out[item.table_id] = TableInfo(f"`{project}.{dataset}.{item.table_id}`", strings,
                                           [f.name for f in table.schema])
        return out
    return {t: TableInfo(f"`{t}`", cols, cols) for t, cols in warehouse.string_columns().items()}


def scan_warehouse(warehouse: Warehouse, result: ScanResult) -> None:
    from payflow.warehouse import schema

    try:
        tables = warehouse_tables(warehouse)
    except Exception as exc:
        raise AuditError(f"cannot read the {warehouse.name} warehouse's catalogue: {describe_error(exc)}") from None
    keys_of = schema.primary_keys()
    for table, info in tables.items():
        ref, columns = info.ref, info.strings
        place = Place("warehouse table", table, "rows")
        result.places.append(place)
        if not columns:
            place.count, place.note = int(warehouse.query(f"SELECT COUNT(*) AS n FROM {ref}")[0]["n"]), "no string column"
            continue
        keys = [k for k in keys_of.get(table, []) if k in info.columns]
        select = ", ".join(f"`{c}` AS `c{i}`" for i, c in enumerate(columns))
        select += "".join(f", `{k}` AS `k{i}`" for i, k in enumerate(keys))
        for n, row in enumerate(warehouse.query(f"SELECT {select} FROM {ref}")):
            place.count += 1
            row_name: str | None = None
            for i, column in enumerate(columns):
                value = row[f"c{i}"]
                if value is None:
                    continue
                if isinstance(value, (bytes, bytearray, memoryview)):
                    text = bytes(value).decode("latin-1")
                elif isinstance(value, Decimal):
                    # NUMERIC(38, 9) reads back with nine decimal places: the padding zeros
                    # would join the digits into a card-length run ("4532.100000000")
                    text = format(value.normalize(), "f")
                else:
                    text = value if isinstance(value, str) else str(value)
                place.bytes += len(text)
                found = scan_text(text, "")
                if found:
                    if row_name is None:
                        row_name = _row_name(keys, [row[f"k{j}"] for j in range(len(keys))], n)
                    result.add(Finding(f.kind, f"warehouse {table}.{column} [{row_name}]", f.masked) for f in found)
        for column in CVV_COLUMNS:
            if column in columns:
                bad = warehouse.query(f"SELECT COUNT(*) AS n FROM {ref} WHERE {column} IS NOT NULL AND {column} != 'XXX'")
                if bad[0]["n"]:
                    result.add([Finding("cvv", f"warehouse {table}.{column}", f"{bad[0]['n']} unmasked values")])
        for column in EXPIRY_COLUMNS:
            if column in columns:
                bad = warehouse.query(f"SELECT COUNT(*) AS n FROM {ref} WHERE {column} IS NOT NULL "
                                      f"AND NOT REGEXP_CONTAINS({column}, r'^(0[1-9]|1[0-2])/XX$')")
                if bad[0]["n"]:
                    result.add([Finding("expiry", f"warehouse {table}.{column}", f"{bad[0]['n']} full expiries")])
    if "payment_transactions" in tables:
        share = warehouse.query(
            "SELECT COUNTIF(pii_hash IS NOT NULL) AS hashed, COUNT(*) AS n FROM payment_transactions "
            "WHERE credit_card_masked IS NOT NULL")
        result.pii_hash_share = share[0]["hashed"] / share[0]["n"] if share[0]["n"] else None


def _row_name(keys: list[str], values: list[Any], n: int) -> str:
    """The row's key, unless the key itself holds card data (then its position)."""
    if keys:
        text = ", ".join(f"{k}={v}" for k, v in zip(keys, values))
        if not scan_text(text, ""):
            return text
    return f"row #{n + 1}"


# -- files: state directory and logs ----------------------------------------------------
def scan_file_bytes(path: Path, result: ScanResult, place: Place, label: str = "") -> None:
    """Every byte of the file (its size when opened), in overlapping windows."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        start = 0
        while start < size:
            low = max(0, start - _MARGIN)
            f.seek(low)
            data = f.read(min(size, start + _WINDOW + _MARGIN) - low)
            result.add(scan_bytes(data, lambda off, low=low: f"{label}{path} byte {low + off}",
                                  lambda off, low=low, start=start: start <= low + off < start + _WINDOW))
            start += _WINDOW
    place.count += 1
    place.bytes += size


def rocksdb_databases(root: Path) -> list[Path]:
    """Directories under root holding a RocksDB database (a CURRENT file and a MANIFEST)."""
    out = []
    for dirpath, _, filenames in os.walk(root):
        if "CURRENT" in filenames and any(n.startswith("MANIFEST-") for n in filenames):
            out.append(Path(dirpath))
    return sorted(out)


def scan_rocksdb(path: Path, result: ScanResult, place: Place) -> None:
    """Every key and value of every column family, read through RocksDB (so decompressed),
    opened read-only: a running worker keeps its lock and is not disturbed."""
    from rocksdict import AccessType, Options, Rdict

    try:
        families = Rdict.list_cf(str(path), Options(raw_mode=True))
        db = Rdict(str(path), options=Options(raw_mode=True), access_type=AccessType.read_only(),
                   column_families={cf: Options(raw_mode=True) for cf in families if cf != "default"})
    except Exception as exc:
        raise AuditError(f"cannot open the RocksDB database {path} read-only: {describe_error(exc)}") from None
    try:
        for cf in families:
            handle = db if cf == "default" else db.get_column_family(cf)
            for n, (key, value) in enumerate(handle.items()):
                place.count += 1
                for part, blob in (("key", key), ("value", value)):
                    if blob:
                        place.bytes += len(blob)
                        result.add(scan_bytes(bytes(blob), lambda off, cf=cf, n=n, part=part:
                                              f"state db {path} cf {cf} record #{n + 1} {part} +{off}"))
    finally:
        db.close()


# RocksDB's info log (LOG, LOG.old.<micros>) is its own diagnostics: options, statistics,
# file events, no keys or values. Its lines start with a timestamp and a thread id and its
# event records carry microsecond times and memory addresses; those digit runs would read as card numbers (the
# detector looks at every window of a long run), so they are blanked before the detector
# reads the line. Everything else on the line is read.
_ROCKSDB_LOG_NUMBERS = re.compile(
    r"^\d{4}/\d{2}/\d{2}-\d{2}:\d{2}:\d{2}\.\d{6} [0-9a-fA-Fx]+ "
    r"|\d{4}/\d{2}/\d{2}-\d{2}:\d{2}:\d{2}\.\d{6}"
    r'|"time_micros": \d+'
    r"|\b0x[0-9a-fA-F]+")  # memory addresses ("SstFileManager instance 0x55d0...")


def is_rocksdb_info_log(path: Path) -> bool:
    return (path.name == "LOG" or path.name.startswith("LOG.old.")) and (path.parent / "CURRENT").exists()


def scan_rocksdb_info_log(path: Path, result: ScanResult, place: Place) -> None:
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, 1):
            place.count += 1
            place.bytes += len(line)
            text = _ROCKSDB_LOG_NUMBERS.sub(" ", line.decode("latin-1"))
            result.add(scan_text(text, f"state file {path}:{lineno}"))


def scan_state_dir(root: Path, result: ScanResult, *, explicit: bool = False) -> None:
    """Every file under root as bytes (RocksDB's info logs line by line), then every record
    of every RocksDB database under it."""
    root = Path(root)
    files = Place("state", str(root), "files", explicit=explicit)
    info_logs = Place("state", str(root), "info log lines")
    records = Place("state", str(root), "db records", explicit=explicit)
    result.places += [files, info_logs, records]
    if not root.exists():
        if explicit:
            raise AuditError(f"state directory {root} does not exist")
        files.note = info_logs.note = records.note = "absent"
        return
    for dirpath, _, filenames in os.walk(root):
        for name in sorted(filenames):
            path = Path(dirpath) / name
            try:
                if not path.is_file():
                    continue
                if is_rocksdb_info_log(path):
                    scan_rocksdb_info_log(path, result, info_logs)
                else:
                    scan_file_bytes(path, result, files, "state file ")
            except FileNotFoundError:
                continue  # RocksDB deleted it (compaction, an old WAL or info log) while the scan ran
    databases = rocksdb_databases(root)
    for db in databases:
        scan_rocksdb(db, result, records)
    records.note = f"{len(databases)} RocksDB database(s)"


def scan_log_file(path: Path, result: ScanResult, place: Place) -> None:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        for lineno, line in enumerate(f, 1):
            place.count += 1
            place.bytes += len(line)
            result.add(scan_text(line.decode("utf-8", "replace"), f"{path}:{lineno}"))


def _unreadable(path: Path) -> str | None:
    """Why a named log file cannot be scanned, or None: anything that is not a directory
    reads (a character device such as /dev/null, a pipe, a symbolic link to a file)."""
    if not path.exists():
        return f"log file {path} does not exist"
    if path.is_dir():
        return f"log file {path} is a directory (--log-dir scans one)"
    if not os.access(path, os.R_OK):
        return f"log file {path} is not readable"
    return None


def scan_files(paths: Iterable[Path], result: ScanResult, *, explicit: bool = True) -> None:
    """Log files, line by line. A named file that does not exist is an error."""
    for path in map(Path, paths):
        problem = _unreadable(path)
        if problem is not None:
            if explicit:
                raise AuditError(problem)
            continue
        place = Place("log", str(path), "lines", explicit=explicit)
        result.places.append(place)
        scan_log_file(path, result, place)


def scan_log_dir(root: Path, result: ScanResult, skip: Iterable[Path] = ()) -> None:
    """Every file under root (rotated ones too), but those in `skip` (scanned as named)."""
    root = Path(root)
    if not root.is_dir():
        result.places.append(Place("log", f"{root}/", "lines", note="absent"))
        return
    skipped = {p.resolve() for p in skip}
    paths = sorted(Path(d) / n for d, _, names in os.walk(root) for n in names)
    scan_files([p for p in paths if p.is_file() and p.resolve() not in skipped], result, explicit=False)


def scan_all(warehouse: Warehouse | None = None, *, log_files: Iterable[Path] = (), bootstrap: str | None = None,
             topics: Iterable[str] = (), max_per_topic: int | None = 100_000, explicit_topics: bool = False,
             state_dirs: Iterable[Path] = (), worker_state_dir: Path | None = None,
             log_dirs: Iterable[Path] = ()) -> ScanResult:
    """Scan the places given; raises AuditError when one cannot be read. Named log files,
    named topics (`explicit_topics`) and `state_dirs` must exist; `worker_state_dir` and
    `log_dirs` are reported absent when they do not."""
    result = ScanResult()
    log_files = [Path(p) for p in log_files]
    for path in log_files:  # before the long scans: a typo fails at once
        problem = _unreadable(path)
        if problem is not None:
            raise AuditError(problem)
    topics = list(topics)
    if bootstrap and topics:
        scan_topics(bootstrap, topics, max_per_topic, result, explicit=explicit_topics)
    if warehouse is not None:
        scan_warehouse(warehouse, result)
    for root in state_dirs:
        scan_state_dir(Path(root), result, explicit=True)
    if worker_state_dir is not None:
        scan_state_dir(Path(worker_state_dir), result)
    for root in log_dirs:
        scan_log_dir(Path(root), result, skip=log_files)
    scan_files(log_files, result)
    return result


__all__ = ["AuditError", "Finding", "Place", "ScanResult", "scan_all", "scan_text", "scan_bytes", "mask_digits"]
