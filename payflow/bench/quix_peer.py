"""The Quix Streams peer for `make bench`: payflow's job written idiomatically in Quix Streams.

The same topic, the same broker, one process, Quix's public API only:

- decode the JSON and validate the required fields (strings present, amount a positive
  decimal, event_time RFC 3339 with a zone, a 13-19 digit card number); a bad message goes
  to a DLQ topic with its reason (a branch of the dataframe);
- HMAC-SHA256 the card number and expiry (the pii_hash), mask the PAN, drop the CVV;
- dedup by transaction_id in Quix state (RocksDB, changelogged), one hour of event time: an
  id seen again within the hour from another offset is dropped, the same offset (a replay
  after a crash) passes;
- a per-sender velocity count (payments in the last five minutes of event time), in state;
- the enriched record produced to a topic, and rows landed in DuckDB through a
  `BatchingSink` subclass (INSERT OR IGNORE on a transaction_id key: a replayed row lands
  once), flushed at each checkpoint before the offsets commit: at-least-once.

docs/performance.md lists every way this differs from payflow's work. Run by the benchmark
as `python -m payflow.bench.quix_peer`, configured by BENCH_* variables; writes its figures
(events, wall seconds, CPU seconds, rows landed) to BENCH_RESULT as JSON.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import resource
import time
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import Any

import duckdb
import orjson
import pyarrow as pa
from quixstreams import Application, State, message_context
from quixstreams.kafka.configuration import ConnectionConfig
from quixstreams.sinks import BatchingSink, SinkBatch

from payflow.kafka_security import current as kafka_security
from payflow.keys import KeyRing

REQUIRED = ("transaction_id", "event_time", "sender_account_id", "receiver_account_id", "amount", "currency",
            "credit_card", "cvv", "card_expiry", "ip_address", "geo_region", "device_id", "merchant_id")
DEDUP_WINDOW_MS = 3_600_000
VELOCITY_WINDOW_MS = 300_000

LANDED_COLUMNS = ("transaction_id", "event_ms", "sender_account_id", "receiver_account_id", "amount",
                  "currency", "credit_card_masked", "card_expiry_masked", "pii_hash", "ip_address",
                  "geo_region", "device_id", "merchant_id", "velocity_5m", "source_partition", "source_offset")
_ARROW = pa.schema([(c, pa.int64() if c in ("velocity_5m", "source_partition", "source_offset", "event_ms")
                     else pa.string()) for c in LANDED_COLUMNS])


class Progress:
    """What the run has consumed, and when it started (for the figures)."""
    consumed = 0
    started_wall: float | None = None
    started_cpu: float | None = None


def connection(bootstrap: str) -> ConnectionConfig:
    """payflow's Kafka security settings as librdkafka's (every client honours them)."""
    sec = kafka_security()
    config: dict[str, Any] = {"bootstrap_servers": bootstrap, "security_protocol": sec.protocol}
    if sec.sasl:
        config.update(sasl_mechanism=sec.sasl_mechanism, sasl_username=sec.username, sasl_password=sec.password)
    if sec.tls:
        config.update(ssl_ca_location=sec.cafile, ssl_certificate_location=sec.certfile,
                      ssl_key_location=sec.keyfile,
                      ssl_endpoint_identification_algorithm="https" if sec.check_hostname else "none")
    return ConnectionConfig(**{k: v for k, v in config.items() if v is not None})


def decode(raw: bytes | None) -> dict[str, Any]:
    """The payment, or {"reason": ...} for the DLQ."""
    if Progress.started_wall is None:
        Progress.started_wall, Progress.started_cpu = time.perf_counter(), time.process_time()
    Progress.consumed += 1
    try:
        doc = orjson.loads(raw or b"")
    except orjson.JSONDecodeError:
        return {"reason": "invalid_json"}
    if not isinstance(doc, dict):
        return {"reason": "not_an_object"}
    for name in REQUIRED:
        if not isinstance(doc.get(name), str):
            return {"reason": "missing_field", "transaction_id": None}
    try:
        amount = Decimal(doc["amount"])
    except InvalidOperation:
        return {"reason": "invalid_amount", "transaction_id": doc["transaction_id"]}
    if not amount.is_finite() or amount <= 0:
        return {"reason": "invalid_amount", "transaction_id": doc["transaction_id"]}
    try:
        event_time = datetime.fromisoformat(doc["event_time"])
    except ValueError:
        return {"reason": "invalid_event_time", "transaction_id": doc["transaction_id"]}
    if event_time.tzinfo is None:
        return {"reason": "invalid_event_time", "transaction_id": doc["transaction_id"]}
    pan = doc["credit_card"].replace(" ", "").replace("-", "")
    if not (pan.isdigit() and 13 <= len(pan) <= 19):
        return {"reason": "invalid_card", "transaction_id": doc["transaction_id"]}
    doc["credit_card"] = pan
    doc["event_ms"] = int(event_time.timestamp() * 1000)
    return doc


def is_rejected(value: dict[str, Any]) -> bool:
    return "reason" in value


def is_payment(value: dict[str, Any]) -> bool:
    return "reason" not in value


def masker(key: bytes, key_id: str):
    keyed = hmac.new(key, digestmod=hashlib.sha256)

    def mask(doc: dict[str, Any]) -> dict[str, Any]:
        pan, expiry = doc.pop("credit_card"), doc.pop("card_expiry")
        doc.pop("cvv")
        h = keyed.copy()
        h.update(f"{pan}|{expiry}".encode())
        doc["pii_hash"] = h.hexdigest()
        doc["pii_key_id"] = key_id
        doc["credit_card_masked"] = "XXXX-XXXX-XXXX-" + pan[-4:]
        doc["card_expiry_masked"] = expiry[:2] + "/XX"
        doc["cvv_masked"] = "XXX"
        return doc
    return mask


def dedup_and_velocity(doc: dict[str, Any], state: State) -> dict[str, Any]:
    """State is per message key (the sender): every copy of a transaction is in it."""
    ctx = message_context()
    at = doc["event_ms"]
    seen_key = "seen:" + doc["transaction_id"]
    first = state.get(seen_key)
    if first is not None and at - first[0] < DEDUP_WINDOW_MS and (first[1], first[2]) != (ctx.partition, ctx.offset):
        doc["duplicate"] = True
        return doc
    if first is None or at - first[0] >= DEDUP_WINDOW_MS:
        state.set(seen_key, [at, ctx.partition, ctx.offset])
    recent = [t for t in state.get("velocity", []) if at - t < VELOCITY_WINDOW_MS]
    recent.append(at)
    state.set("velocity", recent)
    doc["velocity_5m"] = len(recent)
    doc["source_partition"], doc["source_offset"] = ctx.partition, ctx.offset
    return doc


def not_duplicate(doc: dict[str, Any]) -> bool:
    return "duplicate" not in doc


class DuckDBSink(BatchingSink):
    """Rows landed in DuckDB at each checkpoint, one transaction per topic partition; a
    replayed row is ignored by the key."""

    def __init__(self, path: str, expected: int, result: str, app: Application):
        super().__init__()
        self.path, self.expected, self.result, self.app = path, expected, result, app
        self.landed = 0
        self.con: duckdb.DuckDBPyConnection | None = None

    def setup(self) -> None:
        self.con = duckdb.connect(self.path)
        self.con.execute("SET threads = 1")
        self.con.execute(
            "CREATE TABLE IF NOT EXISTS payments (transaction_id VARCHAR PRIMARY KEY, event_time TIMESTAMPTZ, "
            "sender_account_id VARCHAR, receiver_account_id VARCHAR, amount DECIMAL(38, 9), currency VARCHAR, "
            "credit_card_masked VARCHAR, card_expiry_masked VARCHAR, pii_hash VARCHAR, ip_address VARCHAR, "
            "geo_region VARCHAR, device_id VARCHAR, merchant_id VARCHAR, velocity_5m BIGINT, "
            "source_partition BIGINT, source_offset BIGINT)")

    def write(self, batch: SinkBatch) -> None:
        assert self.con is not None
        rows = pa.Table.from_pylist([item.value for item in batch], schema=_ARROW)
        self.con.register("landing", rows)
        try:
            self.con.execute("BEGIN TRANSACTION")
            self.con.execute(
                "INSERT OR IGNORE INTO payments SELECT transaction_id, make_timestamp(event_ms * 1000), "
                "sender_account_id, receiver_account_id, CAST(amount AS DECIMAL(38, 9)), currency, "
                "credit_card_masked, card_expiry_masked, pii_hash, ip_address, geo_region, device_id, "
                "merchant_id, velocity_5m, source_partition, source_offset FROM landing")
            self.con.execute("COMMIT")
        finally:
            self.con.unregister("landing")
        self.landed += rows.num_rows

    def flush(self) -> None:
        super().flush()
        if Progress.consumed >= self.expected and Progress.started_wall is not None:
            seconds = time.perf_counter() - Progress.started_wall
            cpu = time.process_time() - (Progress.started_cpu or 0.0)
            assert self.con is not None
            rows = self.con.execute("SELECT count(*) FROM payments").fetchone()[0]
            with open(self.result, "w") as f:
                json.dump({"events": Progress.consumed, "seconds": seconds, "cpu_seconds": cpu,
                           "rows_landed": rows,
                           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}, f)
            self.app.stop()


def main() -> None:
    env = os.environ
    expected = int(env["BENCH_COUNT"])
    key = KeyRing.parse(env["PAYFLOW_HMAC_KEYS"]).active
    app = Application(broker_address=connection(env["BENCH_KAFKA"]), consumer_group=env["BENCH_APP_ID"],
                      auto_offset_reset="earliest", processing_guarantee="at-least-once",
                      commit_interval=float(env.get("BENCH_COMMIT_SECONDS", "1.0")),
                      state_dir=env["BENCH_DATADIR"], loglevel="WARNING")
    source = app.topic(env["BENCH_TOPIC"], key_deserializer="bytes", value_deserializer="bytes")
    enriched = app.topic(env["BENCH_ENRICHED_TOPIC"], key_serializer="bytes", value_serializer="json")
    dlq = app.topic(env["BENCH_DLQ_TOPIC"], key_serializer="bytes", value_serializer="json")

    sdf = app.dataframe(source).apply(decode)
    sdf.filter(is_rejected).to_topic(dlq)
    sdf = sdf.filter(is_payment).apply(masker(key.secret, key.key_id))
    sdf = sdf.apply(dedup_and_velocity, stateful=True).filter(not_duplicate)
    sdf.to_topic(enriched)
    sdf.sink(DuckDBSink(env["BENCH_WAREHOUSE"], expected, env["BENCH_RESULT"], app))
    app.run()


if __name__ == "__main__":
    main()
