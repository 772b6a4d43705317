"""The Faust app: `faust -A payflow.app worker -l info` or `payflow worker`.

Agents live in agents/, tables in tables/; importing them here registers them.
"""
from __future__ import annotations

import faust

from payflow.runtime import commit_offsets
from payflow.runtime import fetch
from payflow.runtime import stall_guard, worker
from payflow.runtime.process import limit_malloc_arenas
from payflow.runtime.monitor import LeanMonitor
from payflow.logs import configure_logging, worker_logging_config
from payflow.settings import Settings, kafka_url

settings = Settings.from_env()
configure_logging(settings)

if settings.processing_guarantee != "at_least_once":
    raise SystemExit(
        "PAYFLOW_PROCESSING_GUARANTEE=exactly_once is not offered: see docs/architecture.md, "
        "'Processing guarantee' for what the fault tests found; at_least_once with offset-aware "
        "dedup and the idempotent sink gives one warehouse row per payment"
    )

commit_offsets.install()  # never commit over an offset that was not acked (faust#606)
fetch.install()  # raw-topic messages reach the pipeline agent as whole fetches
worker.install(settings.shutdown_seconds)  # read_committed; SIGTERM ends within a bound
limit_malloc_arenas()  # before Faust, RocksDB and the executors start their threads

app = faust.App(
    settings.app_id,
    broker=kafka_url(settings.kafka_bootstrap),
    store="rocksdb://",
    datadir=str(settings.data_dir / "state"),
    topic_partitions=settings.partitions,
    topic_replication_factor=1,
    processing_guarantee=settings.processing_guarantee,
    consumer_auto_offset_reset="earliest",
    broker_commit_every=settings.batch_size,
    broker_commit_interval=1.0,
    broker_max_poll_records=2000,
    broker_session_timeout=settings.session_timeout_seconds,
    # a raw topic created after the worker started is subscribed within seconds, not after
    # aiokafka's default five minutes (one small metadata request per interval)
    consumer_metadata_max_age_ms=5000,
    broker_heartbeat_interval=max(1.0, settings.session_timeout_seconds / 5),
    stream_buffer_maxsize=4 * settings.batch_size,
    producer_acks=-1,
    producer_linger_ms=5,
    producer_max_batch_size=256 * 1024,
    producer_compression_type=settings.producer_compression,
    web_port=settings.web_port,
    web_host="0.0.0.0",
    web_in_thread=False,
    table_cleanup_interval=60.0,
    autodiscover=False,
    monitor=LeanMonitor(),
    logging_config=worker_logging_config(settings),
    key_serializer="raw",
    value_serializer="raw",
)

raw_events = app.topic(settings.topics.raw, key_type=bytes, value_type=bytes,
                       key_serializer="raw", value_serializer="raw", partitions=settings.partitions)


def _register() -> None:
    # imported for their side effect of registering tables, agents and web views
    import payflow.agents.erasure  # noqa: F401
    import payflow.agents.pipeline  # noqa: F401
    import payflow.web  # noqa: F401
    import payflow.tables.definitions  # noqa: F401


_register()
stall_guard.register(app, settings.topics.raw)  # un-sticks partitions Faust stopped delivering (faust#596)
