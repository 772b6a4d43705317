"""Shared helpers for integration, end-to-end and fault tests (real broker, real emulator)."""
from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import string
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import orjson

from payflow.settings import ROOT, grpc_endpoint_beside

# the stack `make test` started (on PAYFLOW_LOCAL_*_PORT when those move it), or a given one
KAFKA = os.environ.get("PAYFLOW_KAFKA_BOOTSTRAP") or f"127.0.0.1:{os.environ.get('PAYFLOW_LOCAL_KAFKA_PORT') or 9092}"
BQ_ENDPOINT = (os.environ.get("PAYFLOW_TEST_BQ_ENDPOINT")
               or f"http://127.0.0.1:{os.environ.get('PAYFLOW_LOCAL_BQ_PORT') or 9050}")
BQ_PROJECT = "payflow-local"
# the emulator's Storage Write API (gRPC), as Settings derives it for the worker
BQ_GRPC = grpc_endpoint_beside(BQ_ENDPOINT)
TEST_HMAC_KEYS = "test-1:" + "5a" * 32


def unique(prefix: str = "t") -> str:
    return prefix + "".join(random.choices(string.ascii_lowercase, k=10))


def free_port() -> int:
    with closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout: float, interval: float = 0.5, what: str = "condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


class Worker:
    """A real `payflow worker` process with its own app id, topics, state dir and web port."""

    def __init__(self, tmp: Path, *, prefix: str, app_id: str | None = None, warehouse: str | None = None,
                 extra_env: dict[str, str] | None = None):
        self.tmp = tmp
        self.prefix = prefix
        self.app_id = app_id or prefix + "app"
        self.web_port = free_port()
        self.warehouse = warehouse or f"duckdb:///{tmp / 'warehouse.duckdb'}"
        self.log_path = tmp / "worker-stdout.log"
        self.env = {
            **os.environ,
            "PAYFLOW_KAFKA_BOOTSTRAP": KAFKA,
            "PAYFLOW_APP_ID": self.app_id,
            "PAYFLOW_TOPIC_PREFIX": prefix,
            "PAYFLOW_WAREHOUSE": self.warehouse,
            "PAYFLOW_DATA_DIR": str(tmp / "data"),
            "PAYFLOW_HMAC_KEYS": TEST_HMAC_KEYS,
            "PAYFLOW_WEB_PORT": str(self.web_port),
            "PAYFLOW_LOG_FORMAT": "json",
            "PAYFLOW_SINK_BATCH_SECONDS": "0.2",
            **(extra_env or {}),
        }
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> "Worker":
        self.starts += 1
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "payflow.cli", "worker", "-l", "info", "--web-port", str(self.web_port)],
            cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no shutdown, no final commit, no flush."""
        if self.alive():
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self, timeout: float = 60) -> int | None:
        if self.alive():
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)
        return self.proc.returncode if self.proc else None

    def lags(self) -> dict[int, int]:
        """partition -> offsets of the raw topic not committed by the worker's group."""
        from payflow.kafka_admin import group_lag
        return asyncio.run(group_lag(KAFKA, self.app_id, self.prefix + "payment-events"))

    def lag(self) -> int:
        return sum(self.lags().values())

    def wait_caught_up(self, timeout: float = 180) -> None:
        """Until the worker's group has committed every offset of the raw topic. The test's
        own lag query can fail while the cluster settles (a broker just restarted: no leader
        yet); such a Kafka error is "not yet", the last one reported if time runs out."""
        from aiokafka.errors import KafkaError
        lags: dict[int, int] = {}
        errors: list[str] = []

        def done():
            assert self.alive(), f"worker exited with {self.proc.returncode}; log tail:\n{self.log_tail()}"
            lags.clear()
            try:
                lags.update(self.lags())
            except KafkaError as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                return False
            return bool(lags) and sum(lags.values()) == 0  # no partition seen is not caught up
        try:
            wait_until(done, timeout, interval=1.0, what="the worker to commit every offset")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; lag per partition: {lags}; lag queries failed {len(errors)} time(s)"
                                 f"{', last: ' + errors[-1] if errors else ''}") from None

    def get(self, path: str) -> tuple[int, bytes]:
        import urllib.error
        import urllib.request
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.web_port}{path}", timeout=5) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def get_json(self, path: str) -> dict:
        import json
        return json.loads(self.get(path)[1])

    def metrics(self) -> dict[tuple[str, tuple], float]:
        """/metrics parsed: (sample name, sorted labels) -> value; {} while the web server starts."""
        from prometheus_client.parser import text_string_to_metric_families
        try:
            status, body = self.get("/metrics")
        except OSError:
            return {}
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for fam in text_string_to_metric_families(body.decode()) for s in fam.samples}

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except FileNotFoundError:
            return "(no log)"


def simulate(prefix: str, manifest: Path, *, partitions: int = 4, **options):
    """Run the simulator in-process against the real broker; returns the manifest dict."""
    from datetime import datetime, timezone

    from payflow.simulator.generator import SimOptions
    from payflow.simulator.producer import simulate as run

    options.setdefault("start_time", datetime(2026, 11, 20, 8, 0, tzinfo=timezone.utc))
    m = asyncio.run(run(SimOptions(**options), bootstrap=KAFKA, topic=prefix + "payment-events", partitions=partitions,
                        manifest_path=manifest, progress=False))
    return m.to_dict()


def dlq_records(topic: str) -> list[dict]:
    """The DLQ topic's records, one per source position. A batch released unacked (a
    rebalance, a stall guard's seek) is read and rejected again, so the topic may hold a
    position twice (at least once, docs/architecture.md); both copies must then say the same."""
    by_position: dict[tuple, dict] = {}
    for record in read_topic(topic):
        doc = orjson.loads(record.value)
        position = (doc.get("source_topic"), doc["source_partition"], doc["source_offset"])
        first = by_position.setdefault(position, doc)
        assert (first["reason"], first["detail"]) == (doc["reason"], doc["detail"]), (first, doc)
    return list(by_position.values())


def read_topic(topic: str, limit: int | None = None) -> list:
    """Every record of a topic, from the beginning up to its end offsets at call time."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    async def run():
        consumer = AIOKafkaConsumer(bootstrap_servers=KAFKA, enable_auto_commit=False,
                                    auto_offset_reset="earliest", max_partition_fetch_bytes=4 * 1024 * 1024)
        await consumer.start()
        try:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic) or set()
            tps = [TopicPartition(topic, p) for p in partitions]
            if not tps:
                return []
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            out = []
            remaining = {tp for tp in tps if ends[tp] > 0}
            while remaining:
                batch = await consumer.getmany(timeout_ms=1000, max_records=5000)
                for tp, records in batch.items():
                    out += records
                    if records and records[-1].offset >= ends[tp] - 1:
                        remaining.discard(tp)
                if limit and len(out) >= limit:
                    break
            return out
        finally:
            await consumer.stop()

    return asyncio.run(run())


def list_topics() -> set[str]:
    from payflow.kafka_admin import list_topics as lt
    return asyncio.run(lt(KAFKA))


def produce(topic: str, records: list[tuple[bytes | None, bytes]], *, partitions: int | None = None,
            aborted: list[tuple[bytes | None, bytes]] = (), committed_tx: list[tuple[bytes | None, bytes]] = ()) -> None:
    """Send records with an idempotent producer (creating the topic first if `partitions`),
    then `aborted` inside a transaction that is aborted and `committed_tx` inside one that
    is committed (each with a transactional producer of its own)."""
    from aiokafka import AIOKafkaProducer

    from payflow.kafka_admin import ensure_topics

    async def in_transaction(batch, commit: bool) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=KAFKA, transactional_id=unique("tx-"))
        await producer.start()
        try:
            await producer.begin_transaction()
            for key, value in batch:
                await producer.send_and_wait(topic, value, key=key)
            await (producer.commit_transaction() if commit else producer.abort_transaction())
        finally:
            await producer.stop()

    async def run() -> None:
        if partitions is not None:
            await ensure_topics(KAFKA, [topic], partitions)
        producer = AIOKafkaProducer(bootstrap_servers=KAFKA, enable_idempotence=True)
        await producer.start()
        try:
            for key, value in records:
                await producer.send_and_wait(topic, value, key=key)
        finally:
            await producer.stop()
        if aborted:
            await in_transaction(aborted, commit=False)
        if committed_tx:
            await in_transaction(committed_tx, commit=True)

    asyncio.run(run())
