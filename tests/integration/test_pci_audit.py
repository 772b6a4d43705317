"""`payflow audit pci` reads every place card data could leak to, on a real broker, a real
DuckDB file, the BigQuery emulator, real RocksDB databases and log files: each place
planted with a generated test PAN (in several spellings) fails the audit and is named; a
clean run says how much it read; a place that cannot be read is an error (exit 2)."""
from __future__ import annotations

import asyncio
import json
import os
import random
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from payflow.stages.cards import luhn_check_digit
from payflow.settings import ROOT, Topics
from payflow.tables.changelog import pack_changes
from payflow.warehouse import schema
from tests.helpers import BQ_GRPC, BQ_PROJECT, KAFKA, free_port, unique

pytestmark = pytest.mark.integration
PARTITIONS = 4
CLEAN_PER_PARTITION = 3


def make_pan(prefix: str) -> str:
    """A Luhn-valid 16-digit test PAN starting with prefix (15 digits)."""
    return prefix + luhn_check_digit(prefix)


def spell(pan: str, how: str) -> str:
    if how == "plain":
        return pan
    if how == "dotted":  # 4.4.4.4
        return ".".join(pan[i:i + 4] for i in range(0, 16, 4))
    if how == "mixed":  # mixed separators, odd grouping
        return f"{pan[:2]} {pan[2:6]}-{pan[6:9]}.{pan[9:14]} {pan[14:]}"
    raise ValueError(how)


def assert_masked(out: str, pan: str) -> None:
    for how in ("plain", "dotted", "mixed"):
        assert spell(pan, how) not in out
    assert "X" * 12 + pan[-4:] in out


# -- places ---------------------------------------------------------------------------
class World:
    """Non-empty, clean places of every kind, named apart from every other test's."""

    def __init__(self, tmp: Path):
        self.prefix = unique("pci-") + "-"
        self.app_id = unique("pciapp")
        self.topics = Topics.with_prefix(self.prefix)
        self.changelog = f"{self.app_id}-dedup-changelog"
        self.data = tmp / "data"
        self.duckdb = tmp / "warehouse.duckdb"
        self.env = {**os.environ, "PAYFLOW_KAFKA_BOOTSTRAP": KAFKA, "PAYFLOW_TOPIC_PREFIX": self.prefix,
                    "PAYFLOW_APP_ID": self.app_id, "PAYFLOW_DATA_DIR": str(self.data),
                    "PAYFLOW_WAREHOUSE": f"duckdb:///{self.duckdb}", "PAYFLOW_LOG_FORMAT": "json"}

    @property
    def scanned_topics(self) -> list[str]:
        t = self.topics
        return [t.dlq, t.late, t.enriched, t.dedup_audit, t.erasure_requests, self.changelog]

    def build(self) -> "World":
        asyncio.run(self._fill_topics())
        self._fill_duckdb()
        self._fill_state()
        logs = self.data / "logs"
        logs.mkdir(parents=True)
        (logs / "worker.log").write_text("".join(
            json.dumps({"ts": "2026-11-20T08:00:00.123456+00:00", "level": "info", "msg": f"batch {i} landed",
                        "amount": "1234.56"}) + "\n" for i in range(20)))
        return self

    async def _fill_topics(self) -> None:
        from payflow.kafka_admin import ensure_topics
        await ensure_topics(KAFKA, [*self.scanned_topics, self.topics.raw], PARTITIONS)
        for topic in self.scanned_topics:
            await produce(topic, [(p, b"acct_" + bytes(random.choices(b"abcdef", k=8)), clean_value(topic), [])
                                  for p in range(PARTITIONS) for _ in range(CLEAN_PER_PARTITION)])
        # the raw topic holds card data by design and is not in the default scan
        raw = json.dumps({"credit_card": make_pan("400000000000000"), "card_expiry": "12/29"}).encode()
        await produce(self.topics.raw, [(0, b"acct_raw", raw, [])])

    def _fill_duckdb(self) -> None:
        import duckdb
        con = duckdb.connect(str(self.duckdb))
        try:
            for statement in schema.duckdb_statements():
                con.execute(statement)
            for table in schema.tables():
                for n in range(3):
                    con.execute(insert_sql(table, n))
        finally:
            con.close()

    def _fill_state(self) -> None:
        for name in ("dedup", "sender-activity"):
            for partition in range(2):
                rocksdb(self.data / "state" / "tables" / f"{name}-{partition}.db",
                        {f"txn_{letters(10)}".encode(): struct.pack(">iqq", partition, n, 1795776262981673)
                         for n in range(50)})

    def audit(self, *args: str, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "payflow.cli", "audit", "pci", *args], cwd=ROOT,
                              capture_output=True, text=True, env={**self.env, **env}, timeout=300)


def letters(n: int) -> str:
    return "".join(random.choices("abcdefghijklmnopqrstuvwxyz", k=n))


def clean_value(topic: str) -> bytes:
    if topic.endswith("-changelog"):
        return pack_changes({f"txn_{letters(8)}".encode(): struct.pack(">iqq", 1, 42, 1795776262981673)})[0]
    return json.dumps({"transaction_id": f"txn_{letters(8)}", "amount": "12.50", "currency": "EUR",
                       "credit_card_masked": "XXXXXXXXXXXX1111", "event_time": "2026-11-20T08:00:00+00:00",
                       "source_partition": 1, "source_offset": 12345}).encode()


async def produce(topic: str, records: list[tuple[int, bytes | None, bytes, list]]) -> list[int]:
    """Send (partition, key, value, headers) records; their offsets."""
    from aiokafka import AIOKafkaProducer
    producer = AIOKafkaProducer(bootstrap_servers=KAFKA, acks="all")
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=key, partition=p, headers=headers)
                   for p, key, value, headers in records]
        return [(await f).offset for f in futures]
    finally:
        await producer.stop()


def rocksdb(path: Path, items: dict[bytes, bytes]) -> None:
    """A RocksDB database as Faust's rocksdict driver writes one (raw mode, default
    compression: Snappy), flushed to an SST file and closed."""
    from rocksdict import Options, Rdict
    path.parent.mkdir(parents=True, exist_ok=True)
    db = Rdict(str(path), options=Options(raw_mode=True))
    for k, v in items.items():
        db[k] = v
    db.flush()
    db.close()


_LITERAL = {"NUMERIC": "NUMERIC '12.50'", "INT64": "{n}", "BOOL": "FALSE",
            "TIMESTAMP": "TIMESTAMP '2026-11-20 08:00:00+00'"}
_CLEAN_STRING = {"cvv_masked": "XXX", "card_expiry_masked": "12/XX", "credit_card_masked": "XXXXXXXXXXXX1111"}


def insert_sql(table: str, n: int, plant: tuple[str, str] | None = None, ref: str | None = None) -> str:
    """An INSERT (BigQuery dialect, which DuckDB accepts here) of one clean row; `plant`:
    (column, text) put in that string column."""
    cols = schema.tables()[table]
    values = []
    for c in cols:
        if c.bq_type == "STRING":
            text = plant[1] if plant and plant[0] == c.name else _CLEAN_STRING.get(c.name, f"{c.name}_{letters(6)}_{'abc'[n % 3]}")
            values.append("'" + text.replace("'", "''") + "'")
        else:
            values.append(_LITERAL[c.bq_type].format(n=n))
    return f"INSERT INTO {ref or table} ({', '.join(c.name for c in cols)}) VALUES ({', '.join(values)})"


@pytest.fixture
def world(kafka, tmp_path) -> World:
    return World(tmp_path).build()


def report(proc: subprocess.CompletedProcess) -> dict:
    assert proc.stdout.lstrip().startswith("{"), proc.stdout + proc.stderr
    return json.loads(proc.stdout)


# -- a clean run reads everything ----------------------------------------------------------
def test_clean_places_pass_and_the_report_counts_what_was_read(world):
    proc = world.audit("--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = report(proc)
    assert out["verdict"] == "clean" and out["findings_total"] == 0
    places = {(p["kind"], p["name"], p["unit"]): p for p in out["places"]}
    for topic in world.scanned_topics:
        assert places[("topic", topic, "records")]["count"] == PARTITIONS * CLEAN_PER_PARTITION, places
    assert not any(name == world.topics.raw for _, name, _ in places), "the raw topic is excluded by design"
    for table in schema.tables():
        assert places[("warehouse table", table, "rows")]["count"] == 3
    state = str(world.data / "state")
    assert places[("state", state, "files")]["count"] >= 4 * 5  # 4 databases: CURRENT, MANIFEST, OPTIONS, SST, ...
    assert places[("state", state, "db records")]["count"] == 4 * 50
    assert places[("log", str(world.data / "logs" / "worker.log"), "lines")]["count"] == 20

    text = world.audit()
    assert text.returncode == 0, text.stdout + text.stderr
    assert "PCI scan: clean, no card data found in" in text.stdout
    assert f"topic {world.topics.dlq}: {PARTITIONS * CLEAN_PER_PARTITION} records" in text.stdout


# -- each kind of topic --------------------------------------------------------------------
TOPIC_KINDS = ["dlq", "enriched", "late", "dedup_audit", "erasure_requests", "changelog"]


@pytest.mark.parametrize("kind", TOPIC_KINDS)
def test_a_pan_on_any_payflow_topic_fails_the_default_audit(world, kind):
    topic = world.changelog if kind == "changelog" else getattr(world.topics, kind)
    pan = make_pan("453957876362148")
    value = pack_changes({b"txn_planted": f"note {pan}".encode()})[0] if kind == "changelog" \
        else json.dumps({"detail": f"card {spell(pan, 'plain')}"}).encode()
    [offset] = asyncio.run(produce(topic, [(3, b"acct_planted", value, [])]))
    proc = world.audit()
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"FINDING pan at topic {topic}[3]@{offset} value" in proc.stdout
    assert_masked(proc.stdout, pan)


def test_keys_and_headers_are_read_and_every_named_topic_is_read_whole(world):
    key_pan, header_pan, late_pan = make_pan("455673012345678"), make_pan("510510510510510"), make_pan("601100099990001")
    asyncio.run(produce(world.topics.enriched, [(1, f"k {spell(key_pan, 'dotted')}".encode(), b"{}", [])]))
    asyncio.run(produce(world.topics.dlq, [(2, b"k", b"{}", [("x-note", spell(header_pan, "mixed").encode())])]))
    asyncio.run(produce(world.topics.late, [(0, b"k", spell(late_pan, "plain").encode(), [])]))
    # named in this order, the old scan read the first topic only
    proc = world.audit("--topic", world.topics.dedup_audit, "--topic", world.topics.enriched,
                       "--topic", world.topics.dlq, "--topic", world.topics.late, "--no-warehouse", "--no-state", "--json")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    out = report(proc)
    where: dict[str, set[str]] = {}
    for f in out["findings"]:
        where.setdefault(f["location"].split(" +")[0], set()).add(f["masked"])
    assert "X" * 12 + key_pan[-4:] in where[f"topic {world.topics.enriched}[1]@{CLEAN_PER_PARTITION} key"]
    assert "X" * 12 + header_pan[-4:] in where[f"topic {world.topics.dlq}[2]@{CLEAN_PER_PARTITION} header x-note"]
    assert "X" * 12 + late_pan[-4:] in where[f"topic {world.topics.late}[0]@{CLEAN_PER_PARTITION} value"]
    counts = {p["name"]: p["count"] for p in out["places"] if p["kind"] == "topic"}
    assert counts == {world.topics.dedup_audit: 12, world.topics.enriched: 13, world.topics.dlq: 13, world.topics.late: 13}


def test_the_per_topic_bound_is_reported(world):
    proc = world.audit("--topic", world.topics.dlq, "--max-per-topic", "5", "--no-warehouse", "--no-state")
    # issue 26: records left unread cannot be called clean (exit 2, not 0)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    total = PARTITIONS * CLEAN_PER_PARTITION
    assert f"topic {world.topics.dlq}: 5 records" in proc.stdout
    assert f"{total - 5} NOT READ (bound reached)" in proc.stdout
    assert f"{total - 5} topic records were NOT READ" in proc.stdout
    assert "INCOMPLETE" in proc.stdout and "clean, no card data" not in proc.stdout


# -- the warehouse -----------------------------------------------------------------------
def _string_column(table: str) -> str:
    return next(c.name for c in reversed(schema.tables()[table]) if c.bq_type == "STRING"
                and c.name not in _CLEAN_STRING)


@pytest.mark.parametrize("table", sorted(schema.tables()))
def test_a_pan_in_any_warehouse_table_fails_the_audit(world, table):
    import duckdb
    pan = make_pan("455673012345678")
    column = _string_column(table)
    how = ["plain", "dotted", "mixed"][sorted(schema.tables()).index(table) % 3]
    con = duckdb.connect(str(world.duckdb))
    try:
        con.execute(insert_sql(table, 7, plant=(column, f"see {spell(pan, how)} here")))
    finally:
        con.close()
    proc = world.audit("--no-topics")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"FINDING pan at warehouse {table}.{column} [" in proc.stdout
    assert_masked(proc.stdout, pan)


def test_a_table_outside_payflows_schema_is_read_too(world):
    import duckdb
    pan = make_pan("601100099990001")
    con = duckdb.connect(str(world.duckdb))
    try:
        con.execute("CREATE TABLE scratch_notes (id INTEGER, note VARCHAR)")
        con.execute("INSERT INTO scratch_notes VALUES (1, 'fine'), (2, ?)", [spell(pan, "dotted")])
    finally:
        con.close()
    proc = world.audit("--no-topics")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "warehouse table scratch_notes: 2 rows" in proc.stdout
    assert "FINDING pan at warehouse scratch_notes.note [row #2]" in proc.stdout
    assert_masked(proc.stdout, pan)


def bq_ref(wh, table: str) -> str:
    return f"`{wh.project}.{wh.dataset}.{table}`"


def test_bigquery_warehouse_clean_then_planted(kafka, bq_endpoint, tmp_path):
    from payflow.warehouse.bq import BigQueryWarehouse
    world = World(tmp_path)
    world.data.mkdir(parents=True)
    wh = BigQueryWarehouse(BQ_PROJECT, unique("pci_"), endpoint=bq_endpoint, grpc_endpoint=BQ_GRPC)
    wh.ensure_schema()
    try:
        for table in ("payment_transactions", "dead_letter_events"):
            wh.client.query(insert_sql(table, 1, ref=bq_ref(wh, table))).result()
        env = {"PAYFLOW_WAREHOUSE": f"bigquery://{BQ_PROJECT}/{wh.dataset}", "PAYFLOW_BIGQUERY_ENDPOINT": bq_endpoint}
        clean = world.audit("--no-topics", **env)
        assert clean.returncode == 0, clean.stdout + clean.stderr
        assert "warehouse table payment_transactions: 1 rows" in clean.stdout
        assert "warehouse table dead_letter_events: 1 rows" in clean.stdout

        pan, other = make_pan("455673012345678"), make_pan("510510510510510")
        wh.client.query(insert_sql("dead_letter_events", 2, plant=("remains", f"x {spell(pan, 'mixed')}"),
                                   ref=bq_ref(wh, "dead_letter_events"))).result()
        wh.client.query(f"CREATE TABLE {bq_ref(wh, 'extra_notes')} (note STRING)").result()
        wh.client.query(f"INSERT INTO {bq_ref(wh, 'extra_notes')} (note) VALUES ('{spell(other, 'dotted')}')").result()
        dirty = world.audit("--no-topics", **env)
        assert dirty.returncode == 1, dirty.stdout + dirty.stderr
        assert "FINDING pan at warehouse dead_letter_events.remains [source_partition=2, source_offset=2]" in dirty.stdout
        assert "FINDING pan at warehouse extra_notes.note [row #1]" in dirty.stdout
        assert_masked(dirty.stdout, pan)
        assert_masked(dirty.stdout, other)
    finally:
        wh.client.delete_dataset(f"{wh.project}.{wh.dataset}", delete_contents=True, not_found_ok=True)


# -- the worker's state directory ----------------------------------------------------------
def test_a_pan_in_rocksdb_state_is_found_in_the_files_and_through_rocksdb(world):
    state = world.data / "state" / "tables"
    plain = make_pan("455673012345678")
    rocksdb(state / "card-activity-0.db", {b"acct_plain": f"note {plain}".encode()})
    # compression hides this one from the files: the value's first 12 digits repeat in the
    # block, so Snappy stores them as a back-reference and only the last four as literal
    hidden = make_pan("453957876362148")
    items = {f"k{i:05d}".encode(): f'{{"ref": "{hidden[:12]}", "n": {i}}}'.encode() for i in range(300)}
    items[b"k00150"] = f'{{"ref": "{hidden}", "n": 150}}'.encode()
    rocksdb(state / "card-activity-1.db", items)
    files = b"".join(p.read_bytes() for p in (state / "card-activity-1.db").iterdir() if p.is_file())
    assert hidden.encode() not in files, "the test needs a PAN that compression hides"

    proc = world.audit("--no-topics")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    db0, db1 = state / "card-activity-0.db", state / "card-activity-1.db"
    assert f"FINDING pan at state file {db0}/" in proc.stdout  # the plain one, in the SST's bytes
    assert f"FINDING pan at state db {db0} cf default record #1 value +5" in proc.stdout
    assert f"FINDING pan at state db {db1} cf default record #151 value +9" in proc.stdout
    assert f"state file {db1}/" not in proc.stdout
    assert f"state {world.data / 'state'}: {4 * 50 + 1 + 300} db records" in proc.stdout
    assert_masked(proc.stdout, plain)
    assert_masked(proc.stdout, hidden)


def test_a_pan_in_the_wal_of_an_open_database_is_found(kafka, tmp_path):
    """A database held open by its writer, as a running worker holds its tables: the value
    is in the write-ahead log only, and the audit opens the database read-only beside it."""
    from rocksdict import Options, Rdict
    world = World(tmp_path)
    pan = make_pan("510510510510510")
    path = tmp_path / "elsewhere" / "x-0.db"
    db = Rdict(str(path), options=Options(raw_mode=True))
    try:
        db[b"k"] = spell(pan, "dotted").encode()
        wal = [p for p in path.iterdir() if p.suffix == ".log"]
        assert wal and any(spell(pan, "dotted").encode() in p.read_bytes() for p in wal)
        assert not [p for p in path.iterdir() if p.suffix == ".sst"]
        proc = world.audit("--no-topics", "--no-warehouse", "--state-dir", str(tmp_path / "elsewhere"))
    finally:
        db.close()
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"FINDING pan at state file {wal[0]} byte" in proc.stdout
    assert f"FINDING pan at state db {path} cf default record #1 value +0" in proc.stdout
    assert_masked(proc.stdout, pan)


# -- logs -------------------------------------------------------------------------------
def test_a_pan_in_a_log_fails_the_audit_with_file_and_line(world, tmp_path):
    rotated = world.data / "logs" / "worker.log.1"
    pan, other = make_pan("455673012345678"), make_pan("601100099990001")
    rotated.write_text("ok\nok\n" + json.dumps({"msg": f"retry card {spell(pan, 'dotted')}"}) + "\n")
    named = tmp_path / "elsewhere.log"
    named.write_text(f"card {spell(other, 'mixed')}\n")
    proc = world.audit("--no-topics", "--log-file", str(named))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"FINDING pan at {rotated}:3" in proc.stdout
    assert f"FINDING pan at {named}:1" in proc.stdout
    assert_masked(proc.stdout, pan)
    assert_masked(proc.stdout, other)


# -- what cannot be read is an error ---------------------------------------------------
def test_an_unreachable_broker_is_an_error_naming_it(tmp_path):
    world = World(tmp_path)
    address = f"127.0.0.1:{free_port()}"
    proc = world.audit(PAYFLOW_KAFKA_BOOTSTRAP=address)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and address in lines[0] and "Traceback" not in proc.stderr, proc.stderr
    assert "clean" not in proc.stdout


def test_a_missing_named_log_file_or_topic_is_an_error(world, tmp_path):
    missing = tmp_path / "nope.log"
    proc = world.audit("--log-file", str(missing))
    assert proc.returncode == 2 and str(missing) in proc.stderr, proc.stdout + proc.stderr
    proc = world.audit("--topic", world.prefix + "no-such-topic")
    assert proc.returncode == 2 and world.prefix + "no-such-topic" in proc.stderr, proc.stdout + proc.stderr


def test_a_missing_duckdb_file_is_an_error_and_is_not_created(kafka, tmp_path):
    world = World(tmp_path)
    path = tmp_path / "missing" / "w.duckdb"
    proc = world.audit("--no-topics", "--warehouse", f"duckdb:///{path}")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert str(path) in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not path.exists() and not path.parent.exists()


def test_nothing_read_is_never_clean(kafka, tmp_path):
    world = World(tmp_path)
    proc = world.audit("--no-topics", "--no-warehouse")  # no state dir, no log dir: nothing there
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "NOTHING READ" in proc.stdout and "clean, no card data" not in proc.stdout
