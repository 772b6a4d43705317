"""Prometheus metrics (prometheus_client), named by Prometheus conventions."""
from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# bulk observation and counter reads use prometheus_client internals: they live in the runtime
from payflow.runtime.prometheus import observe_many, value  # noqa: F401 - part of this module's interface

EVENTS_IN = Counter("payflow_stage_events_in_total", "Events entering a stage", ["stage"])
EVENTS_OUT = Counter("payflow_stage_events_out_total", "Events leaving a stage towards the next", ["stage"])
DUPLICATES = Counter("payflow_duplicates_dropped_total", "Duplicates dropped by dedup (audited)")
REPLAYS = Counter("payflow_replays_passed_total", "Same message read again after a restart, passed through")
LATE = Counter("payflow_late_events_total", "Events older than the watermark, sent to the late topic")
DLQ = Counter("payflow_dlq_events_total", "Messages sent to the dead-letter topic", ["reason"])
BQ_STREAMS_CREATED = Counter("payflow_bigquery_write_streams_created_total",
                             "Storage Write API streams created (CreateWriteStream is a quota per project and hour)")
BQ_APPENDS = Counter("payflow_bigquery_appends_total", "AppendRows requests sent to BigQuery")
ROWS_LANDED = Counter("payflow_warehouse_rows_landed_total", "Rows newly inserted into the warehouse", ["table"])
HIGH_RISK = Counter("payflow_high_risk_payments_total", "Payments scored above the operating point (PAYFLOW_FRAUD_HIGH_RISK_ABOVE)")
SCORED = Counter("payflow_scored_payments_total", "Payments scored by fraud enrichment")
UNMASKED_PAN = Counter("payflow_unmasked_pan_detections_total",
                       "Card numbers caught by the last-line scrubbers in logs or outputs (must stay 0)")
DEDUP_KEYS = Gauge("payflow_dedup_table_keys", "Keys held in the dedup table index")
WATERMARK_LAG = Gauge("payflow_watermark_lag_seconds", "Wall clock minus the watermark", ["partition"])
CONSUMER_LAG = Gauge("payflow_consumer_lag_messages", "High-water mark minus the committed offset", ["partition"])
CONSUMER_LAG_SECONDS = Gauge("payflow_consumer_lag_seconds", "Seconds a partition has been behind (0 when caught up)", ["partition"])
HIGH_RISK_SHARE = Gauge("payflow_high_risk_share", "High-risk payments / scored payments since the worker started")
LAST_ACK_TIME = Gauge("payflow_sink_last_ack_timestamp_seconds", "Unix time of the last warehouse acknowledgement")
LAST_COMMIT_AGE = Gauge("payflow_last_commit_age_seconds", "Seconds since the sink's offsets were last acknowledged")
SINK_BATCH = Histogram("payflow_sink_batch_rows", "Rows per warehouse batch",
                       buckets=(1, 10, 50, 100, 250, 500, 1000, 2000, 5000, 10000))
SINK_FLUSH = Histogram("payflow_sink_flush_seconds", "Warehouse batch latency, retries included",
                       buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
STAGE_SECONDS = Counter("payflow_stage_seconds_total", "CPU-bound seconds spent per pipeline stage", ["stage"])
# produce (Kafka record timestamp) to warehouse acknowledgement, per landed event
END_TO_END = Histogram("payflow_produce_to_land_seconds", "Seconds from produce to warehouse acknowledgement",
                       buckets=(0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.75, 1.0, 1.25,
                                1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 7.5, 10.0, 20.0, 60.0))
STALL_RECOVERIES = Counter("payflow_stall_recoveries_total", "Partitions sought back to their committed offset because commits were stuck behind undelivered offsets")
COMMIT_REFUSED = Counter("payflow_commit_refused_total",
                         "Offset commits refused because they would pass an offset neither acked nor known to be skipped",
                         ["reason"])
COMMIT_REFUSED.labels(reason="unacked_offset")  # exposed at 0 from the start
REFERENCE_RECORDS_REJECTED = Counter("payflow_reference_records_rejected_total",
                                     "Reference records (account types) skipped: no key, or not a JSON object "
                                     "with account_type, nor a tombstone", ["topic"])
ACCOUNT_TYPES = Gauge("payflow_account_types", "Senders' account types held from the reference topic (and the seed file)")
SINK_RETRIES = Counter("payflow_sink_retries_total", "Transient warehouse errors retried")
SINK_UP = Gauge("payflow_sink_up", "1 while the warehouse sink is healthy: not stopped, and no landing failing or "
                "hanging longer than PAYFLOW_READY_LANDING_STALL_SECONDS; 0 otherwise")
SINK_UP.set(1)
BUFFERED_BYTES = Gauge("payflow_buffered_bytes", "Bytes (estimated) of processed batches held until they land: "
                       "the landing in flight and what waits for the next (bounded by PAYFLOW_MAX_BUFFERED_BYTES)")
BUFFER_FULL = Counter("payflow_buffer_full_total", "Times the worker stopped taking batches because "
                      "PAYFLOW_MAX_BUFFERED_BYTES was reached (backpressure until a landing commits)")
FRAUD_LABELS_LANDED = Counter("payflow_fraud_labels_landed_total",
                              "Fraud labels (chargebacks, analyst decisions) newly landed in fraud_labels")
# the fraud labels' verdict on the scoring (view fraud_label_quality, last PAYFLOW_FRAUD_QUALITY_WINDOW_DAYS),
# set by the worker holding partition 0 of the labels topic; NaN until there is something to divide by
FRAUD_LABEL_PRECISION = Gauge("payflow_fraud_label_precision",
                              "Of the labelled payments scored high risk, the share labelled fraud")
FRAUD_LABEL_RECALL = Gauge("payflow_fraud_label_recall",
                           "Of the payments labelled fraud, the share scored high risk")
FRAUD_LABELLED = Gauge("payflow_fraud_labelled_payments", "Labelled payments the two gauges above are computed over")
FRAUD_LABELLED_FLAGGED = Gauge("payflow_fraud_labelled_flagged_payments",
                               "Of those, the ones scored high risk: what the precision divides by")
for _gauge in (FRAUD_LABEL_PRECISION, FRAUD_LABEL_RECALL):
    _gauge.set(float("nan"))
