"""The pipeline's state tables. All are partitioned like the raw topic (key = sender), so a
worker holds, for its partitions, exactly the state those partitions need.

- dedup:      transaction_id -> (partition, offset, event_time) where first seen; 1 h window
- watermarks: partition -> highest event_time seen (µs)
- senders:    sender_account_id -> [partition, recent activity] (velocity, travel, devices)
- cards:      pii_hash -> [partition, recent small payments] (card testing)

Values are compact bytes (struct / orjson), not faust.Record: one changelog write per
key per batch, and no per-event model (de)serialisation.
"""
from __future__ import annotations

from payflow.app import app, settings

_COMMON = dict(key_type=bytes, value_type=bytes,
               partitions=settings.partitions, options={"driver": "rocksdict"})

dedup_table = app.Table("dedup", help="transaction_id -> first seen (partition, offset, event_time)", **_COMMON)
watermark_table = app.Table("watermarks", help="partition -> highest event_time seen", **_COMMON)
sender_table = app.Table("sender-activity", help="sender -> recent activity for fraud signals", **_COMMON)
card_table = app.Table("card-activity", help="pii_hash -> recent small payments (card testing)", **_COMMON)

ALL_TABLES = (dedup_table, watermark_table, sender_table, card_table)
