-- payflow warehouse, BigQuery dialect: the one source of truth.
-- DuckDB's schema is transpiled from this file by payflow/warehouse/schema.py (sqlglot).
-- No column may hold a PAN, CVV or full expiry (invariant 3); `payflow audit pci` checks.

CREATE TABLE IF NOT EXISTS payment_transactions (
  transaction_id STRING NOT NULL,
  sender_account_id STRING NOT NULL,
  receiver_account_id STRING NOT NULL,
  amount NUMERIC(38, 9) NOT NULL,
  currency STRING NOT NULL,
  credit_card_masked STRING,
  cvv_masked STRING,
  card_expiry_masked STRING,
  card_brand STRING,
  pii_hash STRING,
  pii_key_id STRING,
  merchant_id STRING,
  geo_region STRING,
  device_id STRING,
  ip_address STRING,
  event_time TIMESTAMP NOT NULL,
  masked_at TIMESTAMP,
  ingestion_time TIMESTAMP NOT NULL,
  source_partition INT64,
  source_offset INT64,
  anonymized_at TIMESTAMP,
  PRIMARY KEY (transaction_id) NOT ENFORCED
)
PARTITION BY DATE(event_time)
CLUSTER BY sender_account_id, receiver_account_id, currency;

CREATE TABLE IF NOT EXISTS payment_transactions_fraud (
  transaction_id STRING NOT NULL,
  sender_account_id STRING NOT NULL,
  receiver_account_id STRING NOT NULL,
  amount NUMERIC(38, 9) NOT NULL,
  currency STRING NOT NULL,
  credit_card_masked STRING,
  cvv_masked STRING,
  card_expiry_masked STRING,
  card_brand STRING,
  pii_hash STRING,
  pii_key_id STRING,
  merchant_id STRING,
  geo_region STRING,
  device_id STRING,
  ip_address STRING,
  event_time TIMESTAMP NOT NULL,
  masked_at TIMESTAMP,
  ingestion_time TIMESTAMP NOT NULL,
  source_partition INT64,
  source_offset INT64,
  anonymized_at TIMESTAMP,
  fraud_score INT64 NOT NULL,
  risk_flags STRING,
  geographic_risk INT64,
  velocity_5m INT64,
  distinct_devices_30m INT64,
  is_high_risk BOOL NOT NULL,
  risk_reasons STRING,
  high_risk_above INT64,
  PRIMARY KEY (transaction_id) NOT ENFORCED
)
PARTITION BY DATE(event_time)
CLUSTER BY sender_account_id, receiver_account_id, currency;

CREATE TABLE IF NOT EXISTS pii_masking_audit (
  transaction_id STRING NOT NULL,
  pii_hash STRING,
  pii_key_id STRING,
  masking_timestamp TIMESTAMP NOT NULL,
  masking_reason STRING NOT NULL,
  user_email STRING,
  event_time TIMESTAMP NOT NULL,
  erasure_requested BOOL NOT NULL,
  erasure_timestamp TIMESTAMP,
  PRIMARY KEY (transaction_id) NOT ENFORCED
)
PARTITION BY DATE(event_time)
CLUSTER BY pii_hash;

CREATE TABLE IF NOT EXISTS deduplication_audit (
  transaction_id STRING NOT NULL,
  first_partition INT64 NOT NULL,
  first_offset INT64 NOT NULL,
  first_event_time TIMESTAMP NOT NULL,
  duplicate_partition INT64 NOT NULL,
  duplicate_offset INT64 NOT NULL,
  duplicate_event_time TIMESTAMP NOT NULL,
  detected_at TIMESTAMP NOT NULL,
  PRIMARY KEY (transaction_id, duplicate_partition, duplicate_offset) NOT ENFORCED
)
PARTITION BY DATE(detected_at)
CLUSTER BY transaction_id;

CREATE TABLE IF NOT EXISTS gdpr_erasures (
  request_id STRING NOT NULL,
  pii_hash STRING NOT NULL,
  pii_key_id STRING,
  mode STRING NOT NULL,
  requested_at TIMESTAMP NOT NULL,
  completed_at TIMESTAMP,
  rows_affected STRING,
  PRIMARY KEY (request_id, pii_hash) NOT ENFORCED
)
PARTITION BY DATE(requested_at)
CLUSTER BY pii_hash;

-- Rejected messages (masked remains only) and late events: nothing is silently dropped.
CREATE TABLE IF NOT EXISTS dead_letter_events (
  source_partition INT64 NOT NULL,
  source_offset INT64 NOT NULL,
  reason STRING NOT NULL,
  detail STRING,
  transaction_id STRING,
  rejected_at TIMESTAMP NOT NULL,
  remains STRING,
  PRIMARY KEY (source_partition, source_offset) NOT ENFORCED
)
PARTITION BY DATE(rejected_at)
CLUSTER BY reason;

CREATE TABLE IF NOT EXISTS late_events (
  transaction_id STRING NOT NULL,
  source_partition INT64 NOT NULL,
  source_offset INT64 NOT NULL,
  sender_account_id STRING NOT NULL,
  amount NUMERIC(38, 9) NOT NULL,
  currency STRING NOT NULL,
  pii_hash STRING,
  event_time TIMESTAMP NOT NULL,
  watermark TIMESTAMP,
  received_at TIMESTAMP NOT NULL,
  PRIMARY KEY (source_partition, source_offset) NOT ENFORCED
)
PARTITION BY DATE(received_at)
CLUSTER BY transaction_id;

-- Fraud outcomes fed back (chargebacks, analyst decisions): one row per record of the labels
-- topic payflow-fraud-labels (payflow/pipeline/fraud_labels.py), keyed by its position and its
-- content: read again, a record lands once; a topic created anew, whose positions start over,
-- lands its records beside the old ones instead of taking them for replays.
CREATE TABLE IF NOT EXISTS fraud_labels (
  label_partition INT64 NOT NULL,
  label_offset INT64 NOT NULL,
  transaction_id STRING NOT NULL,
  label STRING NOT NULL,
  source STRING NOT NULL,
  labelled_at TIMESTAMP NOT NULL,
  landed_at TIMESTAMP NOT NULL,
  PRIMARY KEY (label_partition, label_offset, transaction_id, label, source, labelled_at) NOT ENFORCED
)
PARTITION BY DATE(labelled_at)
CLUSTER BY transaction_id;
