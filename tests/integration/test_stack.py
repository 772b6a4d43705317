"""Foundation: the real broker and the real BigQuery emulator, driven by the real clients."""
from __future__ import annotations

import asyncio
import subprocess
import sys
from decimal import Decimal

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from payflow.kafka_admin import ensure_topics
from payflow.settings import ROOT
from tests.helpers import unique

pytestmark = pytest.mark.integration


def test_idempotent_producer_and_consumer_round_trip(kafka):
    topic = unique("roundtrip-")

    async def run():
        await ensure_topics(kafka, [topic], 3)
        producer = AIOKafkaProducer(bootstrap_servers=kafka, enable_idempotence=True, acks="all")
        await producer.start()
        try:
            sent = [f"message-{i}".encode() for i in range(500)]
            futures = [await producer.send(topic, v, key=str(i % 7).encode()) for i, v in enumerate(sent)]
            await asyncio.gather(*futures)
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=kafka, auto_offset_reset="earliest",
                                    enable_auto_commit=False, group_id=unique("g-"))
        await consumer.start()
        got = []
        try:
            while len(got) < len(sent):
                batch = await consumer.getmany(timeout_ms=2000)
                if not batch:
                    break
                for records in batch.values():
                    got += [r.value for r in records]
        finally:
            await consumer.stop()
        return sent, got

    sent, got = asyncio.run(run())
    assert sorted(got) == sorted(sent)


def test_bigquery_client_round_trip_against_emulator(bq_client):
    from google.cloud import bigquery

    dataset = unique("ds_")
    bq_client.create_dataset(dataset)
    table = f"{bq_client.project}.{dataset}.roundtrip"
    bq_client.query(f"CREATE TABLE `{table}` (id STRING, amount NUMERIC)").result()
    errors = bq_client.insert_rows_json(table, [{"id": "a", "amount": "12.34"}, {"id": "b", "amount": "0.01"}])
    assert errors == []
    rows = list(bq_client.query(f"SELECT id, amount FROM `{table}` ORDER BY id").result())
    assert [(r.id, r.amount) for r in rows] == [("a", Decimal("12.34")), ("b", Decimal("0.01"))]
    job = bq_client.query(f"DELETE FROM `{table}` WHERE id = @id", job_config=bigquery.QueryJobConfig(
        query_parameters=[bigquery.ScalarQueryParameter("id", "STRING", "a")]))
    job.result()
    assert job.num_dml_affected_rows == 1
    bq_client.delete_dataset(dataset, delete_contents=True)


def test_cli_entry_points_run():
    faust = subprocess.run([sys.executable, "-m", "faust", "-A", "payflow.worker_app", "worker", "--help"],
                           cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert faust.returncode == 0, faust.stderr[-2000:]
    assert "Start worker instance" in faust.stdout
    cli = subprocess.run([sys.executable, "-m", "payflow.cli", "--help"], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert cli.returncode == 0 and "simulate" in cli.stdout and "worker" in cli.stdout


def test_the_settings_document_is_generated_from_the_settings_module():
    from payflow.settings import SETTINGS_DOC, settings_markdown

    doc = (ROOT / "docs" / "settings.md").read_text()
    assert doc == settings_markdown(), "docs/settings.md is stale: python -m payflow.settings > docs/settings.md"
    assert all(f"`{s.name}`" in doc for s in SETTINGS_DOC)


def test_stack_status_works_without_a_venv_and_names_every_service():
    # scripts/stack.sh status must work without a venv (plain bash + python3)
    out = subprocess.run(["bash", str(ROOT / "scripts" / "stack.sh"), "status"], capture_output=True, text=True)
    assert out.returncode == 0
    assert "kafka:" in out.stdout and "bqemulator:" in out.stdout


def test_rewind_group_puts_a_groups_committed_offsets_back_to_the_start(kafka):
    """What the demo does after re-creating its topic (old committed offsets made a fresh
    worker skip nearly all events once)."""
    from aiokafka import TopicPartition

    from payflow.kafka_admin import group_lag, rewind_group

    topic, group = unique("rewind-"), unique("rewind-g-")

    async def run():
        await ensure_topics(kafka, [topic], 2)
        producer = AIOKafkaProducer(bootstrap_servers=kafka)
        await producer.start()
        try:
            await asyncio.gather(*[await producer.send(topic, b"x", partition=i % 2) for i in range(10)])
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(bootstrap_servers=kafka, group_id=group, enable_auto_commit=False)
        await consumer.start()
        try:
            tps = [TopicPartition(topic, 0), TopicPartition(topic, 1)]
            consumer.assign(tps)
            await consumer.commit({tp: 5 for tp in tps})  # as a previous run left it: at the end
        finally:
            await consumer.stop()
        before = await group_lag(kafka, group, topic)
        await rewind_group(kafka, group, topic)
        return before, await group_lag(kafka, group, topic)

    before, after = asyncio.run(run())
    assert sum(before.values()) == 0
    assert after == {0: 5, 1: 5}
