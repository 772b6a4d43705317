"""All settings, read from environment variables with the PAYFLOW_ prefix.

Every setting has a default that works on a developer machine with `make up`.
SETTINGS_DOC below documents them; docs/settings.md is generated from it
(`python -m payflow.settings > docs/settings.md`) and a test holds the two equal.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Setting:
    name: str
    default: str
    meaning: str


SETTINGS_DOC: tuple[Setting, ...] = (
    Setting("PAYFLOW_KAFKA_BOOTSTRAP", "127.0.0.1:9092", "Kafka bootstrap servers; when set in the environment, the local scripts start no broker (unset: the local broker, on PAYFLOW_LOCAL_KAFKA_PORT if that is set)"),
    Setting("PAYFLOW_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT", "PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL, for every Kafka client payflow makes (payflow/kafka_security.py)"),
    Setting("PAYFLOW_KAFKA_SASL_MECHANISM", "", "PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (with a SASL_ protocol)"),
    Setting("PAYFLOW_KAFKA_SASL_USERNAME", "", "SASL user name"),
    Setting("PAYFLOW_KAFKA_SASL_PASSWORD", "", "SASL password (prefer PAYFLOW_KAFKA_SASL_PASSWORD_FILE); never logged"),
    Setting("PAYFLOW_KAFKA_SASL_PASSWORD_FILE", "", "file holding the SASL password (a mounted secret)"),
    Setting("PAYFLOW_KAFKA_SSL_CAFILE", "", "CA bundle (PEM) that signed the brokers' certificates; empty = the system's CAs"),
    Setting("PAYFLOW_KAFKA_SSL_CERTFILE", "", "client certificate (PEM) for mutual TLS"),
    Setting("PAYFLOW_KAFKA_SSL_KEYFILE", "", "client private key (PEM) for mutual TLS"),
    Setting("PAYFLOW_KAFKA_SSL_CHECK_HOSTNAME", "true", "verify that a broker's certificate names the host connected to"),
    Setting("PAYFLOW_KAFKA_REPLICATION_FACTOR", "-1", "replication factor of every topic payflow creates, changelogs included; -1 = the cluster's default.replication.factor"),
    Setting("PAYFLOW_KAFKA_MIN_INSYNC_REPLICAS", "", "min.insync.replicas of every topic payflow creates; empty = the cluster's default"),
    Setting("PAYFLOW_APP_ID", "payflow", "Faust app id: consumer group and prefix of changelog topics"),
    Setting("PAYFLOW_TOPIC_PREFIX", "", "prefix for every topic name (several pipelines, or tests, on one cluster)"),
    Setting("PAYFLOW_PARTITIONS", "4", "partitions of the topics payflow creates"),
    Setting("PAYFLOW_WAREHOUSE", "duckdb:///var/payflow.duckdb", "warehouse URL: duckdb:///PATH or bigquery://PROJECT/DATASET"),
    Setting("PAYFLOW_BIGQUERY_ENDPOINT", "", "BigQuery API endpoint override (the emulator: http://127.0.0.1:9050); empty = Google"),
    Setting("PAYFLOW_BIGQUERY_GRPC_ENDPOINT", "", "the emulator's Storage Write API (gRPC) as HOST:PORT; empty = the host of PAYFLOW_BIGQUERY_ENDPOINT on PAYFLOW_LOCAL_BQ_GRPC_PORT (9060, the local scripts' emulator); unused with Google's API"),
    Setting("PAYFLOW_DATA_DIR", "var", "worker state: RocksDB tables, logs"),
    Setting("PAYFLOW_PRODUCTION", "false", "production mode: refuse to start without an HMAC key from the environment"),
    Setting("PAYFLOW_HMAC_KEYS", "", "HMAC keys for pii_hash as KEY_ID:HEX_SECRET[,KEY_ID:HEX_SECRET...]; the first is active"),
    Setting("PAYFLOW_HMAC_KEYS_FILE", "", "a file holding the value of PAYFLOW_HMAC_KEYS (a mounted secret; the chart's way), read when PAYFLOW_HMAC_KEYS is empty: the keys then stay out of the process environment"),
    Setting("PAYFLOW_HMAC_KEY_FILE", "var/hmac-keys", "where the demo's generated local key is kept when PAYFLOW_HMAC_KEYS is empty (not in production)"),
    Setting("PAYFLOW_WATERMARK_SECONDS", "3600", "events older than the highest event_time seen minus this go to payment-events-late"),
    Setting("PAYFLOW_SINK_BATCH_SIZE", "2000", "events per pipeline batch (and warehouse write)"),
    Setting("PAYFLOW_SINK_BATCH_SECONDS", "0.5", "longest wait to fill a batch"),
    Setting("PAYFLOW_SINK_LANDING_BATCHES", "2", "while the warehouse is busy, up to this many processed batches wait and then land together; beyond it the worker waits (bounds memory)"),
    Setting("PAYFLOW_SINK_TARGET_LANDING_SECONDS", "10", "a landing slower than this halves how much the next may gather (down to one batch), one four times faster doubles it back (up to PAYFLOW_SINK_LANDING_BATCHES): a slow warehouse gets smaller landings"),
    Setting("PAYFLOW_BQ_MIN_LANDING_SECONDS", "5", "BigQuery: a worker starts a landing at most this often (each opens 3-6 write streams; the CreateWriteStream quota is per project and hour: docs/bigquery.md sizes it for N workers)"),
    Setting("PAYFLOW_BQ_LANDING_FENCE", "on", "`on`: a BigQuery landing in a consumer group is decided by a generation-fenced Kafka offset commit that names its COMMITTED write streams and row offsets (leaving the offsets where they are); the next owner of a partition finalizes the streams of a decision it did not see complete, so BigQuery refuses a worker evicted mid-landing (paused past its session: a GC pause, a frozen node, CPU throttling), and nothing is read to know what a table holds (payflow.warehouse.bq_streams, docs/bigquery.md). `off`: each landing reads what the tables hold and commits its own PENDING streams; two writers of one partition (a worker paused past its session and its successor) can both commit: rows twice"),
    Setting("PAYFLOW_BQ_LANDING_BATCHES", "25", "BigQuery: batches one landing may gather (PAYFLOW_SINK_LANDING_BATCHES for DuckDB): enough for the landing cadence at full speed"),
    Setting("PAYFLOW_PRODUCER_COMPRESSION", "none", "compression of what the worker publishes: none, lz4, zstd, gzip or snappy (lz4 cost ~7% of the worker's CPU at full load)"),
    Setting("PAYFLOW_MAX_BUFFERED_BYTES", "67108864", "processed work (rows, outputs and messages of batches not yet landed) a worker holds at most, in bytes (estimated); at the bound it stops fetching until a landing commits (backpressure, nothing lost); one batch always goes through"),
    Setting("PAYFLOW_READY_BROKER_SECONDS", "10", "the worker is not ready (/readyz 503) and logs a Kafka broker outage when no broker has answered its probe (an ApiVersions request every 2 s, each given 5 s) for this long: a frozen broker too, not only a closed connection"),
    Setting("PAYFLOW_READY_LANDING_STALL_SECONDS", "30", "the worker is not ready (/readyz 503, payflow_sink_up 0) and logs a warehouse outage while a landing has been failing or hanging for longer than this (the retries go on for PAYFLOW_SINK_MAX_RETRY_SECONDS), or every landing has been refused by the consumer group (BigQuery) for longer"),
    Setting("PAYFLOW_SINK_MAX_RETRY_SECONDS", "300", "how long transient warehouse errors are retried (backoff with jitter) before the sink stops loudly"),
    Setting("PAYFLOW_PROCESSING_GUARANTEE", "at_least_once", "at_least_once (with offset-aware dedup and idempotent sink)"),
    Setting("PAYFLOW_SESSION_TIMEOUT_SECONDS", "10", "Kafka consumer session timeout: how soon a killed worker's partitions move on"),
    Setting("PAYFLOW_WEB_PORT", "6066", "worker web port: /metrics, /healthz, /readyz"),
    Setting("PAYFLOW_QUERY_TIMEOUT_SECONDS", "60", "a read through `payflow query` (or another process's read through the worker) is interrupted after this long, the fetching of its rows included"),
    Setting("PAYFLOW_QUERY_MAX_ROWS", "1000000", "a read returning more rows than this is stopped with a message (add a LIMIT or aggregate)"),
    Setting("PAYFLOW_DUCKDB_MEMORY_LIMIT", "256MB", "DuckDB's memory limit for `payflow query` on a file (beyond it DuckDB spills to disk or stops the read)"),
    Setting("PAYFLOW_DUCKDB_LANDING_CACHE_MB", "48", "the worker's DuckDB landing process: memory DuckDB may use beyond its key index (cached table blocks, the reads it answers); the index, which DuckDB cannot evict, grows with the table and is added to it (with half the index, if more); the landing process is replaced by one with a larger limit when the index has grown into half of the margin"),
    Setting("PAYFLOW_LOG_FORMAT", "json", "json (one object a line) or text"),
    Setting("PAYFLOW_LOG_LEVEL", "info", "debug, info, warn, error"),
    Setting("PAYFLOW_ERASURE_REFRESH_SECONDS", "30", "how often each worker re-reads the erasure ledger (gdpr_erasures) into the set of erased subjects its mask step drops; a worker learns an erasure at once only for the sender partitions it owns"),
    Setting("PAYFLOW_MAX_MESSAGE_BYTES", "65536", "raw messages larger than this go to the DLQ as oversized"),
    Setting("PAYFLOW_SQL_DIR", "sql", "the warehouse DDL (BigQuery dialect) the schema is built from; the image sets /app/sql"),
    Setting("PAYFLOW_MAX_FUTURE_SECONDS", "900", "event_time further ahead than this of the record's Kafka timestamp (or the worker's clock, if earlier) goes to the DLQ"),
    Setting("PAYFLOW_FRAUD_HIGH_RISK_ABOVE", "48", "fraud operating point: a payment whose fraud score (0-100, docs/fraud.md) is above this is high risk (is_high_risk); docs/fraud.md has the recall and false-positive rate at each"),
    Setting("PAYFLOW_FRAUD_SMALL_USD", "10", "fraud scoring: payments under this many USD count as card-testing attempts when several cards are tried"),
    Setting("PAYFLOW_FRAUD_TRAVEL_MAX_KMH", "900", "fraud scoring: travel between two regions' centroids faster than this is impossible travel"),
    Setting("PAYFLOW_FRAUD_ACCOUNT_KINDS_FILE", "", "JSON object sender_account_id -> account type (payroll, payout, marketplace, billing), read at the worker's start before the compacted topic payflow-account-types (which the worker reads whole and follows; its records win): bulk senders are not judged on velocity, fan-out or absolute amount; empty = none"),
    Setting("PAYFLOW_FRAUD_QUALITY_REFRESH_SECONDS", "900", "how often the worker holding partition 0 of payflow-fraud-labels reads the view fraud_label_quality (the fraud labels fed back, joined with the scores) into payflow_fraud_label_precision and payflow_fraud_label_recall, the alert's input; 0 = never"),
    Setting("PAYFLOW_FRAUD_QUALITY_WINDOW_DAYS", "30", "the days of payments (by event date, up to today) those gauges are computed over"),
    Setting("PAYFLOW_SHUTDOWN_SECONDS", "30", "longest graceful stop after SIGTERM (the landing in flight gets up to half of it to finish and commit); then the worker exits (code 75) and what was in flight is read again at restart"),
)

# Settings for the fault tests only: never set in a deployment (the chart, compose and the
# README's table leave them out).
FAULT_SETTINGS_DOC: tuple[Setting, ...] = (
    Setting("PAYFLOW_FAULT_EXIT_AFTER_LAND", "0", "fault tests: the worker exits (code 86) right after its Nth landing, before acking its offsets (payflow.pipeline.checkpoint); 0 = never"),
    Setting("PAYFLOW_FAULT_PAUSE_LANDING", "", "fault tests: `<moment>:<N>` stops the worker's process group (SIGSTOP) when its Nth landing reaches the moment: before_write, between_tables or before_offset_commit (payflow.fault); empty = never"),
)


class SettingError(SystemExit):
    """An invalid setting, as one line naming the variable, its value and what is allowed.
    A SystemExit: uncaught (the worker) it prints that line and exits 1; the CLI exits 2."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def _bad(name: str, value: str, allowed: str) -> SettingError:
    return SettingError(f"{name}={value!r} is not valid: {allowed}")


def _int(name: str, low: int, high: int) -> int:
    raw = _env(name).strip()
    try:
        value = int(raw)
    except ValueError:
        raise _bad(name, raw, f"an integer from {low} to {high}") from None
    if not low <= value <= high:
        raise _bad(name, raw, f"an integer from {low} to {high}")
    return value


def _float(name: str, low: float, high: float, *, low_open: bool = False) -> float:
    raw = _env(name).strip()
    allowed = (f"a number of seconds above {low:g}, at most {high:g}" if low_open
               else f"a number of seconds from {low:g} to {high:g}")
    try:
        value = float(raw)
    except ValueError:
        raise _bad(name, raw, allowed) from None
    if not (low < value <= high if low_open else low <= value <= high):  # NaN fails both
        raise _bad(name, raw, allowed)
    return value


def _choice(name: str, allowed: tuple[str, ...], *, fold: bool = True) -> str:
    raw = _env(name).strip()
    value = raw.lower() if fold else raw
    if value not in allowed:
        raise _bad(name, raw, "one of " + ", ".join(allowed))
    return value


_BOOLS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}
_TOPIC_CHARS = re.compile(r"[A-Za-z0-9._-]*")
_HOST_PORT = re.compile(r"\[?[A-Za-z0-9.:_-]+\]?:(\d{1,5})")
_DUCKDB_URL = re.compile(r"duckdb://(/.+|:memory:)")
_BIGQUERY_URL = re.compile(r"bigquery://[A-Za-z0-9.:_-]+/[A-Za-z0-9_]+")
_HTTP_URL = re.compile(r"https?://[A-Za-z0-9.\[\]:_-]+(:\d{1,5})?(/\S*)?")
WAREHOUSE_SHAPES = "duckdb:///RELATIVE/PATH, duckdb:////ABSOLUTE/PATH or bigquery://PROJECT/DATASET"
LOG_LEVELS = ("debug", "info", "warn", "warning", "error", "crit", "critical")


def local_bootstrap() -> str:
    """The local broker the scripts start (scripts/kafka.sh: PAYFLOW_LOCAL_KAFKA_PORT, 9092)."""
    return f"127.0.0.1:{os.environ.get('PAYFLOW_LOCAL_KAFKA_PORT', '').strip() or '9092'}"


def _bootstrap() -> str:
    raw = (os.environ.get("PAYFLOW_KAFKA_BOOTSTRAP") or local_bootstrap()).strip()
    parts = [p.strip() for p in raw.split(",")]
    for p in parts:
        m = _HOST_PORT.fullmatch(p)
        if m is None or not 1 <= int(m.group(1)) <= 65535:
            raise _bad("PAYFLOW_KAFKA_BOOTSTRAP", raw, "HOST:PORT[,HOST:PORT...] with ports 1 to 65535")
    return ",".join(parts)


def validate_warehouse_url(url: str, name: str = "PAYFLOW_WAREHOUSE") -> str:
    """The URL if it has a warehouse URL's shape, else SettingError naming `name`."""
    if not (_DUCKDB_URL.fullmatch(url) or _BIGQUERY_URL.fullmatch(url)):
        raise _bad(name, url, WAREHOUSE_SHAPES)
    return url


def resolve_warehouse_url(url: str) -> str:
    """duckdb:///RELATIVE/PATH made absolute the way every path setting is (resolve_path)."""
    if url.startswith("duckdb:///") and not url.startswith("duckdb:////"):
        return "duckdb:///" + str(resolve_path(url[len("duckdb:///"):]))
    return url


@dataclass(frozen=True)
class WarehouseURL:
    """A warehouse URL, parsed once: an embedded DuckDB (`path`: a file made absolute, or
    ":memory:") or a BigQuery dataset (`project`, `dataset`)."""
    url: str
    path: str = ""
    project: str = ""
    dataset: str = ""

    @classmethod
    def parse(cls, url: str, name: str = "PAYFLOW_WAREHOUSE") -> "WarehouseURL":
        """SettingError naming `name` unless `url` has a warehouse URL's shape."""
        url = resolve_warehouse_url(validate_warehouse_url(url, name))
        if url.startswith("duckdb://"):
            rest = url[len("duckdb://"):]  # ":memory:", or an absolute path after resolving
            return cls(url, path=":memory:" if rest in ("", ":memory:") else "/" + rest.lstrip("/"))
        project, _, dataset = url[len("bigquery://"):].partition("/")
        return cls(url, project=project, dataset=dataset)

    @classmethod
    def of(cls, url: "str | WarehouseURL") -> "WarehouseURL":
        """`url` parsed for a caller in code: ValueError (not a settings exit) if malformed."""
        if isinstance(url, WarehouseURL):
            return url
        try:
            return cls.parse(url, "warehouse URL")
        except SettingError as exc:
            raise ValueError(str(exc.code)) from None

    @property
    def is_duckdb(self) -> bool:
        return bool(self.path)

    @property
    def is_bigquery(self) -> bool:
        return not self.path


def _hmac_keys() -> str:
    spec = _env("PAYFLOW_HMAC_KEYS").strip()
    source = "PAYFLOW_HMAC_KEYS"
    keys_file = _env("PAYFLOW_HMAC_KEYS_FILE").strip()
    if not spec and keys_file:
        source = "PAYFLOW_HMAC_KEYS_FILE"
        try:
            spec = resolve_path(keys_file).read_text().strip()
        except OSError as exc:
            raise SettingError(f"PAYFLOW_HMAC_KEYS_FILE={keys_file!r} cannot be read: {exc.strerror or exc}") from None
        if not spec:
            raise SettingError(f"PAYFLOW_HMAC_KEYS_FILE={keys_file!r} is empty: expected KEY_ID:HEX_SECRET[,...]")
    if spec:
        from payflow.keys import KeyConfigError, KeyRing
        try:
            KeyRing.parse(spec)
        except KeyConfigError as exc:
            # the value is a secret: named, never shown
            reason = str(exc).replace("PAYFLOW_HMAC_KEYS ", "")
            raise SettingError(f"{source} is not valid ({reason}; the value is a secret, not shown): "
                               "expected KEY_ID:HEX_SECRET[,KEY_ID:HEX_SECRET...], secrets of at least 32 bytes "
                               "(64 hex digits), unique key ids") from None
    return spec


_SIZE = re.compile(r"\d+(\.\d+)?\s*(KB|MB|GB|TB|KiB|MiB|GiB|TiB)", re.IGNORECASE)


def _size(name: str) -> str:
    raw = _env(name).strip()
    if not _SIZE.fullmatch(raw):
        raise _bad(name, raw, "a size like 512MB or 2GiB")
    return raw


def _compression(name: str) -> str | None:
    value = _choice("PAYFLOW_PRODUCER_COMPRESSION", ("none", "lz4", "zstd", "gzip", "snappy"))
    return None if value == "none" else value


def _env(name: str) -> str:
    for s in SETTINGS_DOC + FAULT_SETTINGS_DOC:
        if s.name == name:
            return os.environ.get(name, s.default)
    raise KeyError(name)


def _path(value: str) -> Path:
    return resolve_path(value)


def resolve_path(value: str) -> Path:
    """A relative path setting is relative to the checkout when payflow runs from one (make
    demo, the tests), else to the working directory: never inside site-packages."""
    p = Path(value)
    if p.is_absolute():
        return p
    return (ROOT if (ROOT / "setup.cfg").is_file() else Path.cwd()) / p


def _flag(name: str) -> bool:
    raw = _env(name).strip()
    if raw.lower() not in _BOOLS:
        raise _bad(name, raw, "true or false (also 1/0, yes/no, on/off)")
    return _BOOLS[raw.lower()]


def _name(name: str, *, empty_ok: bool) -> str:
    raw = _env(name)
    if (not raw and not empty_ok) or not _TOPIC_CHARS.fullmatch(raw) or len(raw) > 200:
        raise _bad(name, raw, ("up to" if empty_ok else "1 to") + " 200 characters of A-Z a-z 0-9 . _ - (Kafka topic names)")
    return raw


def _not_empty(name: str) -> str:
    raw = _env(name)
    if not raw.strip():
        raise _bad(name, raw, "a path, not empty")
    return raw


def _endpoint() -> str:
    raw = _env("PAYFLOW_BIGQUERY_ENDPOINT").strip()
    if raw and not _HTTP_URL.fullmatch(raw):
        raise _bad("PAYFLOW_BIGQUERY_ENDPOINT", raw, "empty (Google's API) or a URL like http://HOST:PORT")
    return raw


def grpc_endpoint_beside(rest_endpoint: str) -> str:
    """The emulator's Storage Write API (gRPC) beside its REST endpoint: the same host, on
    PAYFLOW_LOCAL_BQ_GRPC_PORT (9060, the local scripts' emulator)."""
    from urllib.parse import urlparse
    return f"{urlparse(rest_endpoint).hostname or '127.0.0.1'}:{os.environ.get('PAYFLOW_LOCAL_BQ_GRPC_PORT') or 9060}"


def _grpc_endpoint(rest_endpoint: str) -> str:
    """PAYFLOW_BIGQUERY_GRPC_ENDPOINT, else beside the REST endpoint (empty with Google's API)."""
    explicit = _env("PAYFLOW_BIGQUERY_GRPC_ENDPOINT").strip()
    return explicit if explicit or not rest_endpoint else grpc_endpoint_beside(rest_endpoint)


@dataclass(frozen=True)
class Settings:
    kafka_bootstrap: str
    app_id: str
    partitions: int
    warehouse_url: str
    bigquery_endpoint: str
    data_dir: Path
    production: bool
    hmac_keys: str
    hmac_key_file: Path
    watermark_seconds: int
    batch_size: int
    batch_seconds: float
    landing_batches: int
    target_landing_seconds: float
    bq_min_landing_seconds: float
    bq_landing_batches: int
    producer_compression: str | None
    sink_max_retry_seconds: float
    processing_guarantee: str
    session_timeout_seconds: float
    web_port: int
    log_format: str
    log_level: str
    max_message_bytes: int
    max_future_seconds: int
    topic_prefix: str = ""
    erasure_refresh_seconds: float = 30.0
    shutdown_seconds: float = 30.0
    fault_exit_after_land: int = 0
    max_buffered_bytes: int = 64 * 2**20
    ready_broker_seconds: float = 10.0
    ready_landing_stall_seconds: float = 30.0
    query_timeout_seconds: float = 60.0
    query_max_rows: int = 1_000_000
    duckdb_memory_limit: str = "256MB"
    duckdb_landing_cache_mb: int = 48
    fraud_high_risk_above: int = 48
    fraud_small_usd: float = 10.0
    fraud_quality_refresh_seconds: float = 900.0
    fraud_quality_window_days: int = 30
    fraud_travel_max_kmh: float = 900.0
    fraud_account_kinds_file: str = ""
    bq_landing_fence: bool = True
    bigquery_grpc_endpoint: str = ""

    @property
    def warehouse(self) -> WarehouseURL:
        """PAYFLOW_WAREHOUSE, parsed."""
        return WarehouseURL.parse(self.warehouse_url)

    @property
    def topics(self) -> "Topics":
        return Topics.with_prefix(self.topic_prefix)

    @classmethod
    def from_env(cls) -> "Settings":
        warehouse = WarehouseURL.parse(_env("PAYFLOW_WAREHOUSE").strip()).url
        guarantee = _choice("PAYFLOW_PROCESSING_GUARANTEE", ("at_least_once", "exactly_once"), fold=False)
        log_format = _choice("PAYFLOW_LOG_FORMAT", ("json", "text"))
        _fault_pause()
        return cls(
            kafka_bootstrap=_bootstrap(),
            app_id=_name("PAYFLOW_APP_ID", empty_ok=False),
            partitions=_int("PAYFLOW_PARTITIONS", 1, 10_000),
            warehouse_url=warehouse,
            bigquery_endpoint=_endpoint(),
            bigquery_grpc_endpoint=_grpc_endpoint(_endpoint()),
            data_dir=_path(_not_empty("PAYFLOW_DATA_DIR")),
            production=_flag("PAYFLOW_PRODUCTION"),
            hmac_keys=_hmac_keys(),
            hmac_key_file=_path(_not_empty("PAYFLOW_HMAC_KEY_FILE")),
            watermark_seconds=_int("PAYFLOW_WATERMARK_SECONDS", 1, 366 * 86400),
            batch_size=_int("PAYFLOW_SINK_BATCH_SIZE", 1, 1_000_000),
            batch_seconds=_float("PAYFLOW_SINK_BATCH_SECONDS", 0, 3600, low_open=True),
            landing_batches=_int("PAYFLOW_SINK_LANDING_BATCHES", 1, 1000),
            target_landing_seconds=_float("PAYFLOW_SINK_TARGET_LANDING_SECONDS", 0, 3600, low_open=True),
            bq_min_landing_seconds=_float("PAYFLOW_BQ_MIN_LANDING_SECONDS", 0, 3600),
            bq_landing_batches=_int("PAYFLOW_BQ_LANDING_BATCHES", 1, 1000),
            producer_compression=_compression("PAYFLOW_PRODUCER_COMPRESSION"),
            sink_max_retry_seconds=_float("PAYFLOW_SINK_MAX_RETRY_SECONDS", 0, 7 * 86400),
            processing_guarantee=guarantee,
            session_timeout_seconds=_float("PAYFLOW_SESSION_TIMEOUT_SECONDS", 1, 3600),
            web_port=_int("PAYFLOW_WEB_PORT", 0, 65535),
            log_format=log_format,
            log_level=_choice("PAYFLOW_LOG_LEVEL", LOG_LEVELS),
            max_message_bytes=_int("PAYFLOW_MAX_MESSAGE_BYTES", 1024, 100 * 2**20),
            max_future_seconds=_int("PAYFLOW_MAX_FUTURE_SECONDS", 0, 366 * 86400),
            topic_prefix=_name("PAYFLOW_TOPIC_PREFIX", empty_ok=True),
            erasure_refresh_seconds=_float("PAYFLOW_ERASURE_REFRESH_SECONDS", 0, 86400, low_open=True),
            shutdown_seconds=_float("PAYFLOW_SHUTDOWN_SECONDS", 0, 3600, low_open=True),
            fault_exit_after_land=_int("PAYFLOW_FAULT_EXIT_AFTER_LAND", 0, 1_000_000),
            max_buffered_bytes=_int("PAYFLOW_MAX_BUFFERED_BYTES", 1 * 2**20, 2**40),
            ready_broker_seconds=_float("PAYFLOW_READY_BROKER_SECONDS", 0, 3600, low_open=True),
            ready_landing_stall_seconds=_float("PAYFLOW_READY_LANDING_STALL_SECONDS", 0, 86400, low_open=True),
            query_timeout_seconds=_float("PAYFLOW_QUERY_TIMEOUT_SECONDS", 0, 86400, low_open=True),
            query_max_rows=_int("PAYFLOW_QUERY_MAX_ROWS", 1, 10**12),
            duckdb_memory_limit=_size("PAYFLOW_DUCKDB_MEMORY_LIMIT"),
            duckdb_landing_cache_mb=_int("PAYFLOW_DUCKDB_LANDING_CACHE_MB", 16, 1 << 20),
            fraud_high_risk_above=_int("PAYFLOW_FRAUD_HIGH_RISK_ABOVE", 0, 100),
            fraud_small_usd=_float("PAYFLOW_FRAUD_SMALL_USD", 0, 1_000_000),
            fraud_quality_refresh_seconds=_float("PAYFLOW_FRAUD_QUALITY_REFRESH_SECONDS", 0, 7 * 86400),
            fraud_quality_window_days=_int("PAYFLOW_FRAUD_QUALITY_WINDOW_DAYS", 1, 3660),
            fraud_travel_max_kmh=_float("PAYFLOW_FRAUD_TRAVEL_MAX_KMH", 0, 1_000_000, low_open=True),
            fraud_account_kinds_file=_env("PAYFLOW_FRAUD_ACCOUNT_KINDS_FILE").strip(),
            bq_landing_fence=_choice("PAYFLOW_BQ_LANDING_FENCE", ("off", "on")) == "on",
        )


def _fault_pause() -> None:
    """PAYFLOW_FAULT_PAUSE_LANDING is read where the landing runs (payflow.fault);
    a wrong value is refused at start, not at the landing it names."""
    from payflow import fault
    try:
        fault.parse(os.environ.get(fault.ENV, ""))
    except ValueError as exc:
        raise SettingError(str(exc)) from None


@dataclass(frozen=True)
class Topics:
    raw: str = "payment-events"
    dlq: str = "payment-events-dlq"
    late: str = "payment-events-late"
    enriched: str = "payments-enriched"
    dedup_audit: str = "payflow-dedup-audit"
    erasure_requests: str = "payflow-erasure-requests"
    account_types: str = "payflow-account-types"  # compacted reference data (pipeline/account_types.py)
    fraud_labels: str = "payflow-fraud-labels"  # outcomes fed back: chargebacks, analyst decisions

    @classmethod
    def with_prefix(cls, prefix: str) -> "Topics":
        base = cls()
        return cls(**{f: prefix + getattr(base, f) for f in base.__dataclass_fields__})


def kafka_url(bootstrap: str) -> list[str]:
    """Faust wants kafka:// URLs; aiokafka wants host:port."""
    return [f"kafka://{h.strip()}" for h in bootstrap.split(",") if h.strip()]


def settings_markdown() -> str:
    """docs/settings.md: every setting with its default and meaning."""
    def table(settings: tuple[Setting, ...]) -> list[str]:
        rows = ["| setting | default | meaning |", "| --- | --- | --- |"]
        rows += [f"| `{s.name}` | {f'`{s.default}`' if s.default else '(empty)'} | {s.meaning} |" for s in settings]
        return rows
    lines = ["# Settings", "",
             "Every setting is an environment variable, read and checked once at start "
             "(`payflow/settings.py`; an invalid value stops the process with one line naming it). "
             "The defaults work on a developer machine. Generated by `python -m payflow.settings`.", "",
             *table(SETTINGS_DOC), "", "## For the fault tests only", "", *table(FAULT_SETTINGS_DOC)]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(settings_markdown(), end="")
