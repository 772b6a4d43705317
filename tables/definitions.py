"""The pipeline's state tables. All are partitioned like the raw topic (key = sender), so a
worker holds, for its partitions, exactly the state those partitions need.

- dedup:      transaction_id -> (partition, offset, event_time) where first seen; 1 h window
- watermarks: partition -> highest event_time seen (µs)
- senders:    sender_account_id -> fraud state: long-memory profile and the last hour (docs/fraud.md)
- cards:      pii_hash -> recent small payments (an older format; no longer written, expires)

Values are compact bytes (struct), not faust.Record, each of a bounded size (per sender
and card: payflow.stages.batch.history_value_bound). Each table's changelog gets one record
per partition per batch (payflow.tables.changelog), kept for the state window plus a day and then
deleted by Kafka's retention; configure_changelog_limits sizes those records from the
broker's limits at the worker's start.
"""
from __future__ import annotations

from payflow.stages import dedup
from payflow.stages import state
from payflow.app import app, settings
from payflow.kafka_security import current as kafka_security
from payflow.pipeline.assemble import StateTables
from payflow.stages.batch import history_value_bound
from payflow.stages.fraud import PROFILE_IDLE_S
from payflow.tables.changelog import BatchLoggedTable, apply_broker_limits

DAY = 86_400


def _table(name: str, help: str, max_value_bytes: int, retention_seconds: float | None = None) -> BatchLoggedTable:
    # A fresh options dict per table: Faust's store pops keys from it. RocksDB's defaults
    # (64 MB memtables x 3, a 2 GB block cache) are per partition database: four tables x
    # N partitions of them would be most of the pod's memory. The state is small (keys
    # expire after an hour of event time), so small buffers bound RSS without costing speed.
    options = {"driver": "rocksdict", "write_buffer_size": 2 * 2**20, "max_write_buffer_number": 2,
               "target_file_size_base": 8 * 2**20, "block_cache_size": 2 * 2**20}
    table = BatchLoggedTable(app, name=name, help=help, key_type=bytes, value_type=bytes,
                             partitions=settings.partitions, options=options, beacon=app.tables.beacon,
                             retention_seconds=retention_seconds or settings.watermark_seconds + DAY, max_value_bytes=max_value_bytes,
                             extra_topic_configs=kafka_security().topic_config().config)  # min.insync.replicas
    return app.tables.add(table)


dedup_table = _table("dedup", "transaction_id -> first seen (partition, offset, event_time)",
                     len(dedup.FirstSeen(0, 0, 0).pack()))
watermark_table = _table("watermarks", "partition -> highest event_time seen",
                         state.MAX_ENTRIES * len(state.WatermarkLog([(0, 0)]).pack()))
# a sender's fraud profile lives for weeks (payflow.stages.fraud.PROFILE_IDLE_S): its changelog too
sender_table = _table("sender-activity", "sender -> fraud profile (long memory) and last hour", history_value_bound(),
                      retention_seconds=PROFILE_IDLE_S + DAY)
# no longer written (card testing is judged per sender: docs/fraud.md); older values expire
card_table = _table("card-activity", "pii_hash -> recent small payments (format 2, expiring)", history_value_bound())



def configure_changelog_limits() -> dict[str, int]:
    """At the worker's start (before the first batch): each table's changelog record limit
    from its topic's max.message.bytes (else the broker's message.max.bytes) and the
    producer's max request size; refuses to start (tables/changelog.py: RecordLimitError) when a state
    change could not fit. A key is a string field of one raw message: at most
    PAYFLOW_MAX_MESSAGE_BYTES less the smallest JSON object around it."""
    return apply_broker_limits(ALL_TABLES, bootstrap=settings.kafka_bootstrap,
                               max_request_size=app.conf.producer_max_request_size,
                               max_batch_bytes=app.conf.producer_max_batch_size,
                               max_key_bytes=settings.max_message_bytes - len(b'{"":""}'),
                               compression=settings.producer_compression)


# the tables as the pipeline's assembly takes them (payflow.pipeline.assemble)
STATE_TABLES = StateTables(dedup=dedup_table, watermarks=watermark_table, senders=sender_table, cards=card_table,
                           configure_changelog_limits=configure_changelog_limits)
ALL_TABLES = STATE_TABLES.all
