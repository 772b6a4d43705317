"""The Faust app, configured from the settings, with the runtime's seams installed. The agents
(agents/), tables (tables/) and web views declare themselves on it; payflow.worker_app
imports them, attaches the runtime's timers, and is what the worker runs.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import faust

from payflow import runtime
from payflow.runtime import process
from payflow.runtime.monitor import LeanMonitor
from payflow.kafka_security import current as kafka_security
from payflow.logs import configure_logging, worker_logging_config
from payflow.settings import Settings, kafka_url

if TYPE_CHECKING:
    from payflow.pipeline.runtime import PipelineRuntime


class PayflowApp(faust.App):
    """Faust's App, holding the running pipeline's collaborators (`pipeline_runtime`): the
    pipeline agent sets them once started (a test sets them before), the web views, the
    erasure agent and the health watch read them from the app they are given."""
    pipeline_runtime: Optional["PipelineRuntime"] = None

    def worker_init(self) -> None:
        """Faust's CLI calls this before any command: this module declares the app only, and
        a worker started from it would run no agent (payflow.worker_app brings them in)."""
        if not self.agents:
            raise SystemExit("payflow.app declares the app without its agents, tables and views: run "
                             "`payflow worker`, or `faust -A payflow.worker_app worker`")
        super().worker_init()

    async def on_stop(self) -> None:
        """A graceful stop lets the landing in flight finish and commit before Faust's own
        stop takes the consumer out of the group (payflow.pipeline.checkpoint, `close`):
        half the shutdown bound, the other half is Faust's."""
        if self.pipeline_runtime is not None:
            await self.pipeline_runtime.checkpoint.close(timeout=settings.shutdown_seconds / 2)
        await super().on_stop()


settings = Settings.from_env()
configure_logging(settings)

if settings.processing_guarantee != "at_least_once":
    raise SystemExit(
        "PAYFLOW_PROCESSING_GUARANTEE=exactly_once is not offered: see docs/architecture.md, "
        "'Processing guarantee' for what the fault tests found; at_least_once with offset-aware "
        "dedup and the idempotent sink gives one warehouse row per payment"
    )

# refuses library versions the seams were not audited against; then every Faust seam
# (whole fetches, the commit fix, read_committed, bounded shutdown, the stall detector)
runtime.install(shutdown_seconds=settings.shutdown_seconds)
process.limit_malloc_retention()  # before Faust, RocksDB and the executors start their threads

app = PayflowApp(
    settings.app_id,
    broker=kafka_url(settings.kafka_bootstrap),
    broker_credentials=kafka_security().faust_broker_credentials(),
    store="rocksdb://",
    datadir=str(settings.data_dir / "state"),
    topic_partitions=settings.partitions,
    # Faust takes no -1 here: `payflow worker` sets the cluster's default.replication.factor
    # (kafka_security.preflight) before the worker declares any topic
    topic_replication_factor=max(1, kafka_security().replication_factor),
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
    # Faust's own views would show table values by key (a dedup oracle), the partition map,
    # sensor counters and the service graph to anyone who reaches the port: payflow serves
    # only its own endpoints (payflow/web.py; the warehouse ones take the owner file's token)
    web_tables_enabled=False,
    web_router_enabled=False,
    web_stats_enabled=False,
    web_graph_enabled=False,
    web_metrics_enabled=False,
    table_cleanup_interval=60.0,
    autodiscover=False,
    monitor=LeanMonitor(),
    logging_config=worker_logging_config(settings),
    key_serializer="raw",
    value_serializer="raw",
)

raw_events = app.topic(settings.topics.raw, key_type=bytes, value_type=bytes,
                       key_serializer="raw", value_serializer="raw", partitions=settings.partitions,
                       config=kafka_security().topic_config().config)


@app.timer(interval=10.0, name="payflow.return_free_memory")
async def return_free_memory() -> None:
    """What landed batches freed goes back to the kernel (payflow.runtime.process)."""
    process.return_free_memory()

