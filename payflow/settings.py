"""All settings, read from environment variables with the PAYFLOW_ prefix.

Every setting has a default that works on a developer machine with `make up`.
The README's settings table is generated from SETTINGS_DOC below (tests check they agree).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Setting:
    name: str
    default: str
    meaning: str


SETTINGS_DOC: tuple[Setting, ...] = (
    Setting("PAYFLOW_KAFKA_BOOTSTRAP", "127.0.0.1:9092", "Kafka bootstrap servers; when set in the environment, the local scripts start no broker"),
    Setting("PAYFLOW_APP_ID", "payflow", "Faust app id: consumer group and prefix of changelog topics"),
    Setting("PAYFLOW_TOPIC_PREFIX", "", "prefix for every topic name (several pipelines, or tests, on one cluster)"),
    Setting("PAYFLOW_PARTITIONS", "4", "partitions of the topics payflow creates"),
    Setting("PAYFLOW_WAREHOUSE", "duckdb:///var/payflow.duckdb", "warehouse URL: duckdb:///PATH or bigquery://PROJECT/DATASET"),
    Setting("PAYFLOW_BIGQUERY_ENDPOINT", "", "BigQuery API endpoint override (the emulator: http://127.0.0.1:9050); empty = Google"),
    Setting("PAYFLOW_DATA_DIR", "var", "worker state: RocksDB tables, logs"),
    Setting("PAYFLOW_PRODUCTION", "false", "production mode: refuse to start without an HMAC key from the environment"),
    Setting("PAYFLOW_HMAC_KEYS", "", "HMAC keys for pii_hash as KEY_ID:HEX_SECRET[,KEY_ID:HEX_SECRET...]; the first is active"),
    Setting("PAYFLOW_HMAC_KEY_FILE", "var/hmac-keys", "where the demo's generated local key is kept when PAYFLOW_HMAC_KEYS is empty (not in production)"),
    Setting("PAYFLOW_WATERMARK_SECONDS", "3600", "events older than the highest event_time seen minus this go to payment-events-late"),
    Setting("PAYFLOW_SINK_BATCH_SIZE", "2000", "events per pipeline batch (and warehouse write)"),
    Setting("PAYFLOW_SINK_BATCH_SECONDS", "0.5", "longest wait to fill a batch"),
    Setting("PAYFLOW_SINK_LANDING_BATCHES", "3", "while the warehouse is busy, up to this many processed batches wait and then land together; beyond it the worker waits (bounds memory)"),
    Setting("PAYFLOW_PRODUCER_COMPRESSION", "none", "compression of what the worker publishes: none, lz4, zstd, gzip or snappy (lz4 cost ~7% of the worker's CPU at full load)"),
    Setting("PAYFLOW_SINK_MAX_RETRY_SECONDS", "300", "how long transient warehouse errors are retried (backoff with jitter) before the sink stops loudly"),
    Setting("PAYFLOW_PROCESSING_GUARANTEE", "at_least_once", "at_least_once (with offset-aware dedup and idempotent sink)"),
    Setting("PAYFLOW_SESSION_TIMEOUT_SECONDS", "10", "Kafka consumer session timeout: how soon a killed worker's partitions move on"),
    Setting("PAYFLOW_WEB_PORT", "6066", "worker web port: /metrics, /healthz, /readyz"),
    Setting("PAYFLOW_LOG_FORMAT", "json", "json (one object a line) or text"),
    Setting("PAYFLOW_LOG_LEVEL", "info", "debug, info, warn, error"),
    Setting("PAYFLOW_ERASURE_REFRESH_SECONDS", "30", "how often each worker re-reads the erasure ledger (gdpr_erasures) into the set of erased subjects its mask step drops; a worker learns an erasure at once only for the sender partitions it owns"),
    Setting("PAYFLOW_MAX_MESSAGE_BYTES", "65536", "raw messages larger than this go to the DLQ as oversized"),
    Setting("PAYFLOW_SQL_DIR", "sql", "the warehouse DDL (BigQuery dialect) the schema is built from; the image sets /app/sql"),
    Setting("PAYFLOW_MAX_FUTURE_SECONDS", "900", "event_time further ahead than this of the record's Kafka timestamp (or the worker's clock, if earlier) goes to the DLQ"),
    Setting("PAYFLOW_SHUTDOWN_SECONDS", "30", "longest graceful stop after SIGTERM; then the worker exits (code 75) and what was in flight is read again at restart"),
)


def _compression(name: str) -> str | None:
    name = name.strip().lower()
    if name not in ("none", "lz4", "zstd", "gzip", "snappy"):
        raise SystemExit(f"PAYFLOW_PRODUCER_COMPRESSION must be none, lz4, zstd, gzip or snappy, not {name!r}")
    return None if name == "none" else name


def _env(name: str) -> str:
    for s in SETTINGS_DOC:
        if s.name == name:
            return os.environ.get(name, s.default)
    raise KeyError(name)


def _path(value: str) -> Path:
    p = Path(value)
    return p if p.is_absolute() else ROOT / p


def _bool(value: str) -> bool:
    return value.strip().lower() in {"1", "true", "yes", "on"}


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

    @property
    def topics(self) -> "Topics":
        return Topics.with_prefix(self.topic_prefix)

    @classmethod
    def from_env(cls) -> "Settings":
        warehouse = _env("PAYFLOW_WAREHOUSE")
        if warehouse.startswith("duckdb:///") and not warehouse.startswith("duckdb:////"):
            # relative DuckDB paths are relative to the project, not the caller's cwd
            warehouse = "duckdb:///" + str(_path(warehouse[len("duckdb:///"):]))
        guarantee = _env("PAYFLOW_PROCESSING_GUARANTEE")
        if guarantee not in {"at_least_once", "exactly_once"}:
            raise ValueError(f"PAYFLOW_PROCESSING_GUARANTEE must be at_least_once or exactly_once, not {guarantee!r}")
        log_format = _env("PAYFLOW_LOG_FORMAT")
        if log_format not in {"json", "text"}:
            raise ValueError(f"PAYFLOW_LOG_FORMAT must be json or text, not {log_format!r}")
        return cls(
            kafka_bootstrap=_env("PAYFLOW_KAFKA_BOOTSTRAP"),
            app_id=_env("PAYFLOW_APP_ID"),
            partitions=int(_env("PAYFLOW_PARTITIONS")),
            warehouse_url=warehouse,
            bigquery_endpoint=_env("PAYFLOW_BIGQUERY_ENDPOINT"),
            data_dir=_path(_env("PAYFLOW_DATA_DIR")),
            production=_bool(_env("PAYFLOW_PRODUCTION")),
            hmac_keys=_env("PAYFLOW_HMAC_KEYS"),
            hmac_key_file=_path(_env("PAYFLOW_HMAC_KEY_FILE")),
            watermark_seconds=int(_env("PAYFLOW_WATERMARK_SECONDS")),
            batch_size=int(_env("PAYFLOW_SINK_BATCH_SIZE")),
            batch_seconds=float(_env("PAYFLOW_SINK_BATCH_SECONDS")),
            landing_batches=max(1, int(_env("PAYFLOW_SINK_LANDING_BATCHES"))),
            producer_compression=_compression(_env("PAYFLOW_PRODUCER_COMPRESSION")),
            sink_max_retry_seconds=float(_env("PAYFLOW_SINK_MAX_RETRY_SECONDS")),
            processing_guarantee=guarantee,
            session_timeout_seconds=float(_env("PAYFLOW_SESSION_TIMEOUT_SECONDS")),
            web_port=int(_env("PAYFLOW_WEB_PORT")),
            log_format=log_format,
            log_level=_env("PAYFLOW_LOG_LEVEL"),
            max_message_bytes=int(_env("PAYFLOW_MAX_MESSAGE_BYTES")),
            max_future_seconds=int(_env("PAYFLOW_MAX_FUTURE_SECONDS")),
            topic_prefix=_env("PAYFLOW_TOPIC_PREFIX"),
            erasure_refresh_seconds=float(_env("PAYFLOW_ERASURE_REFRESH_SECONDS")),
            shutdown_seconds=float(_env("PAYFLOW_SHUTDOWN_SECONDS")),
        )


@dataclass(frozen=True)
class Topics:
    raw: str = "payment-events"
    dlq: str = "payment-events-dlq"
    late: str = "payment-events-late"
    enriched: str = "payments-enriched"
    dedup_audit: str = "payflow-dedup-audit"
    erasure_requests: str = "payflow-erasure-requests"

    @classmethod
    def with_prefix(cls, prefix: str) -> "Topics":
        base = cls()
        return cls(**{f: prefix + getattr(base, f) for f in base.__dataclass_fields__})


def kafka_url(bootstrap: str) -> list[str]:
    """Faust wants kafka:// URLs; aiokafka wants host:port."""
    return [f"kafka://{h.strip()}" for h in bootstrap.split(",") if h.strip()]
