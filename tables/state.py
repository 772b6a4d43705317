"""The pipeline's state tables. All are partitioned like the raw topic (key = sender), so a
worker holds, for its partitions, exactly the state those partitions need.

- dedup:      transaction_id -> (partition, offset, event_time) where first seen; 1 h window
- watermarks: partition -> highest event_time seen (µs)
- senders:    sender_account_id -> [partition, recent activity] (velocity, travel, devices)
- cards:      pii_hash -> [partition, recent small payments] (card testing)

Values are compact bytes (struct / orjson), not faust.Record. Each table's changelog gets
one record per partition per batch (payflow.state_log), kept for the state window plus a
day and then deleted by Kafka's retention.
"""
from __future__ import annotations

from payflow.app import app, settings
from payflow.state_log import BatchLoggedTable

DAY = 86_400


def _table(name: str, help: str) -> BatchLoggedTable:
    # A fresh options dict per table: Faust's store pops keys from it. RocksDB's defaults
    # (64 MB memtables x 3, a 2 GB block cache) are per partition database: four tables x
    # N partitions of them would be most of the pod's memory. The state is small (keys
    # expire after an hour of event time), so small buffers bound RSS without costing speed.
    options = {"driver": "rocksdict", "write_buffer_size": 2 * 2**20, "max_write_buffer_number": 2,
               "target_file_size_base": 8 * 2**20, "block_cache_size": 2 * 2**20}
    table = BatchLoggedTable(app, name=name, help=help, key_type=bytes, value_type=bytes,
                             partitions=settings.partitions, options=options, beacon=app.tables.beacon,
                             retention_seconds=settings.watermark_seconds + DAY)
    return app.tables.add(table)


dedup_table = _table("dedup", "transaction_id -> first seen (partition, offset, event_time)")
watermark_table = _table("watermarks", "partition -> highest event_time seen")
sender_table = _table("sender-activity", "sender -> recent activity for fraud signals")
card_table = _table("card-activity", "pii_hash -> recent small payments (card testing)")

ALL_TABLES = (dedup_table, watermark_table, sender_table, card_table)
