"""A record for a partition the producer's metadata does not know yet (a topic grown a moment
ago, by this worker or another) is sent once the metadata knows it, not refused by aiokafka's
assertion, which stopped every worker of a fleet started together (real broker)."""
from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewPartitions

from payflow.kafka_admin import ensure_topics, partition_counts
from payflow.pipeline.outputs import BatchPublisher
from tests.helpers import KAFKA, unique, wait_until

pytestmark = pytest.mark.integration


def test_a_record_for_a_partition_added_after_the_producer_learnt_the_topic_is_sent(kafka):
    topic = unique("grown-") + "-changelog"
    asyncio.run(ensure_topics(KAFKA, [topic], 2))
    wait_until(lambda: asyncio.run(partition_counts(KAFKA, [topic])) == {topic: 2}, 30, what="the topic created")

    async def scenario() -> list[tuple[int, bytes]]:
        producer = AIOKafkaProducer(bootstrap_servers=KAFKA, enable_idempotence=True)
        await producer.start()
        try:
            publisher = BatchPublisher(lambda: producer)
            # the producer learns the topic with 2 partitions
            await asyncio.gather(*await publisher.send([(topic, 1, b"k", b"before")]))
            admin = AIOKafkaAdminClient(bootstrap_servers=KAFKA)
            await admin.start()
            try:
                await admin.create_partitions({topic: NewPartitions(total_count=4)})
            finally:
                await admin.close()
            # partition 3 exists now; the producer's metadata still says 2 partitions
            await asyncio.gather(*await publisher.send([(topic, 3, b"k", b"after"), (topic, 0, b"k", b"also")]))
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=KAFKA, auto_offset_reset="earliest",
                                    enable_auto_commit=False, group_id=None)
        await consumer.start()
        try:
            got = []
            while len(got) < 3:
                batch = await asyncio.wait_for(consumer.getmany(timeout_ms=1000), 30)
                got += [(m.partition, m.value) for records in batch.values() for m in records]
            return sorted(got)
        finally:
            await consumer.stop()

    assert asyncio.run(scenario()) == [(0, b"also"), (1, b"before"), (3, b"after")]
