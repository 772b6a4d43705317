-- Views for finance, fraud and audit (BigQuery dialect; transpiled for DuckDB).

CREATE OR REPLACE VIEW daily_summary AS
SELECT
  DATE(event_time) AS day,
  currency,
  COUNT(*) AS payments,
  SUM(amount) AS total_amount,
  COUNT(DISTINCT sender_account_id) AS senders
FROM payment_transactions
GROUP BY day, currency;

CREATE OR REPLACE VIEW fraud_summary AS
SELECT
  DATE(event_time) AS day,
  COUNT(*) AS payments,
  COUNTIF(is_high_risk) AS high_risk_payments,
  ROUND(SAFE_DIVIDE(COUNTIF(is_high_risk), COUNT(*)), 4) AS high_risk_share,
  ROUND(AVG(fraud_score), 2) AS avg_fraud_score,
  -- risk flags: docs/fraud.md (VELOCITY_5M/1H, NEW_DEVICE*, DEVICE_BURST, MANY_CARDS...)
  COUNTIF(risk_flags LIKE '%VELOCITY_%') AS velocity_spikes,
  COUNTIF(risk_flags LIKE '%IMPOSSIBLE_TRAVEL%') AS impossible_travel,
  COUNTIF(risk_flags LIKE '%NEW_DEVICE%' OR risk_flags LIKE '%DEVICE_BURST%') AS device_anomalies,
  COUNTIF(risk_flags LIKE '%CARD_TESTING%' OR risk_flags LIKE '%MANY_CARDS%') AS card_testing,
  COUNTIF(risk_flags LIKE '%HIGH_AMOUNT%') AS high_amounts,
  COUNTIF(risk_flags LIKE '%AMOUNT_VS_BASELINE%') AS amounts_unusual_for_sender,
  COUNTIF(risk_flags LIKE '%PAYEE_FAN_OUT%') AS payee_fan_outs,
  COUNTIF(risk_flags LIKE '%NEW_REGION%') AS new_regions
FROM payment_transactions_fraud
GROUP BY day;

CREATE OR REPLACE VIEW deduplication_effectiveness AS
SELECT
  p.day,
  p.unique_payments,
  COALESCE(d.duplicates_dropped, 0) AS duplicates_dropped,
  ROUND(SAFE_DIVIDE(COALESCE(d.duplicates_dropped, 0), p.unique_payments + COALESCE(d.duplicates_dropped, 0)), 4) AS duplicate_rate
FROM (
  SELECT DATE(event_time) AS day, COUNT(*) AS unique_payments
  FROM payment_transactions GROUP BY day
) AS p
LEFT JOIN (
  SELECT DATE(first_event_time) AS day, COUNT(*) AS duplicates_dropped
  FROM deduplication_audit GROUP BY day
) AS d ON p.day = d.day;

-- The fraud labels fed back, the latest per payment (a later decision overrides an earlier
-- one; a record landed twice counts once).
CREATE OR REPLACE VIEW fraud_label_latest AS
SELECT transaction_id, label, source, labelled_at
FROM (
  SELECT transaction_id, label, source, labelled_at,
    ROW_NUMBER() OVER (PARTITION BY transaction_id
                       ORDER BY labelled_at DESC, label_partition DESC, label_offset DESC) AS nth
  FROM fraud_labels
) AS ranked
WHERE nth = 1;

-- Precision and recall of the scoring against the labels, per day of the payments' event
-- time: over labelled payments only (a payment nobody labelled is neither).
CREATE OR REPLACE VIEW fraud_label_quality AS
SELECT
  DATE(f.event_time) AS day,
  COUNT(*) AS labelled_payments,
  COUNTIF(l.label = 'fraud') AS labelled_fraud,
  COUNTIF(f.is_high_risk) AS flagged,
  COUNTIF(f.is_high_risk AND l.label = 'fraud') AS flagged_fraud,
  ROUND(SAFE_DIVIDE(COUNTIF(f.is_high_risk AND l.label = 'fraud'), COUNTIF(f.is_high_risk)), 4) AS label_precision,
  ROUND(SAFE_DIVIDE(COUNTIF(f.is_high_risk AND l.label = 'fraud'), COUNTIF(l.label = 'fraud')), 4) AS label_recall
FROM fraud_label_latest AS l
JOIN payment_transactions_fraud AS f ON f.transaction_id = l.transaction_id
GROUP BY day;
