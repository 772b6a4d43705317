"""Topic creation with aiokafka's admin client (idempotent)."""
from __future__ import annotations

import logging

from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, NewTopic
from aiokafka.errors import (
    CoordinatorLoadInProgressError, GroupCoordinatorNotAvailableError, InvalidPartitionsError,
    NotCoordinatorForGroupError, TopicAlreadyExistsError,
)
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_fixed

from payflow.kafka_security import current as kafka_security
from payflow.runtime.internals import refresh_metadata

log = logging.getLogger(__name__)
_COORDINATOR_LOADING = (GroupCoordinatorNotAvailableError, CoordinatorLoadInProgressError, NotCoordinatorForGroupError)


async def ensure_topics(bootstrap: str, names: list[str], partitions: int,
                        configs: dict[str, dict[str, str]] | None = None) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="payflow-admin", **kafka_security().client_kwargs())
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        durable = kafka_security().topic_config()
        new = [NewTopic(n, partitions, 1, topic_configs={**durable.config, **(configs or {}).get(n, {})})
               for n in names if n not in existing]
        for topic in new:
            # -1: the cluster's default.replication.factor (KIP-464); NewTopic refuses -1 without
            # a replica assignment, the broker takes it
            topic.replication_factor = durable.replication_factor
        if new:
            try:
                await admin.create_topics(new)
            except TopicAlreadyExistsError:
                pass
            log.info("created topics %s", ", ".join(t.name for t in new))
    finally:
        await admin.close()


class PartitionsAhead(RuntimeError):
    """A topic that must follow the raw topic's partitioning has more partitions than it."""


async def partition_counts(bootstrap: str, names: list[str]) -> dict[str, int]:
    """topic -> its partition count, read from the cluster's metadata now (topics that do not
    exist are left out)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="payflow-admin", **kafka_security().client_kwargs())
    await admin.start()
    try:
        cluster = await refresh_metadata(admin)
        counts = {n: len(cluster.partitions_for_topic(n) or ()) for n in names}
        return {n: c for n, c in counts.items() if c}
    finally:
        await admin.close()


async def follow_partitions(bootstrap: str, source: str, followers: list[str]) -> int | None:
    """Grow every existing topic of `followers` to the partition count of `source` (the raw
    topic): its state changelogs and the erasure requests are keyed like it, and a sender's
    state must sit in the partition its payments arrive on. Idempotent: any worker may call
    it at any time (a topic another worker grew meanwhile is left as it is). Raises
    PartitionsAhead when a follower has more partitions than `source` (Kafka cannot shrink a
    topic). Returns the partition count of `source` (None: it does not exist yet)."""
    counts = await partition_counts(bootstrap, [source, *followers])
    target = counts.get(source)
    if target is None:
        return None
    ahead = {n: c for n, c in counts.items() if c > target}
    if ahead:
        name, count = max(ahead.items(), key=lambda item: item[1])
        raise PartitionsAhead(
            f"topic {name} has {count} partitions, more than the {target} of {source}: grow {source} "
            f"to {count} (kafka-topics.sh --alter --topic {source} --partitions {count}); Kafka cannot "
            f"shrink {name}")
    behind = {n: c for n, c in counts.items() if n != source and c < target}
    if not behind:
        return target
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="payflow-admin", **kafka_security().client_kwargs())
    await admin.start()
    grown: dict[str, int] = {}
    try:
        for name in sorted(behind):
            try:
                await admin.create_partitions({name: NewPartitions(total_count=target)})
            except InvalidPartitionsError:
                # another worker grew it first (the broker refuses a count the topic has);
                # the brokers' metadata may show the old count for a moment
                async for attempt in AsyncRetrying(retry=retry_if_exception_type(InvalidPartitionsError),
                                                   wait=wait_fixed(0.5), stop=stop_after_delay(10), reraise=True):
                    with attempt:
                        if (await partition_counts(bootstrap, [name])).get(name, 0) != target:
                            raise
                continue
            grown[name] = target
    finally:
        await admin.close()
    if grown:
        log.warning("%s has %d partitions: grew %s to match (their keys follow the raw topic's)",
                    source, target, ", ".join(f"{n} ({behind[n]} -> {target})" for n in sorted(grown)))
    return target


async def delete_topics(bootstrap: str, names: list[str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="payflow-admin", **kafka_security().client_kwargs())
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        doomed = [n for n in names if n in existing]
        if doomed:
            await admin.delete_topics(doomed)
    finally:
        await admin.close()


async def rewind_group(bootstrap: str, group: str, topic: str) -> None:
    """Commit offset 0 on every partition of `topic` for `group` (which must have no
    members): a topic deleted and created again can find the group's old committed
    offsets still there (seen with the demo: a fresh worker started at the old end and
    skipped all but 2 of 20,000 events)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, client_id="payflow-admin",
                                enable_auto_commit=False, **kafka_security().client_kwargs())
    await consumer.start()
    try:
        await refresh_metadata(consumer)
        partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        if tps:
            consumer.assign(tps)
            await consumer.commit({tp: 0 for tp in tps})
    finally:
        await consumer.stop()


async def list_topics(bootstrap: str) -> set[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="payflow-admin", **kafka_security().client_kwargs())
    await admin.start()
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()


async def group_lag(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    """partition -> messages not yet committed by the consumer group (end offset - committed)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="payflow-admin", **kafka_security().client_kwargs())
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, client_id="payflow-lag", enable_auto_commit=False,
                                **kafka_security().client_kwargs())
    await admin.start()
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic)
        if partitions is None:
            await refresh_metadata(consumer)
            partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        ends = await consumer.end_offsets(tps) if tps else {}
        # right after a broker (re)start the group coordinator is still loading: retry
        async for attempt in AsyncRetrying(retry=retry_if_exception_type(_COORDINATOR_LOADING),
                                           wait=wait_fixed(0.5), stop=stop_after_delay(60), reraise=True):
            with attempt:
                committed = await admin.list_consumer_group_offsets(group, partitions=tps) if tps else {}
        lag = {}
        for tp in tps:
            meta = committed.get(tp)
            done = meta.offset if meta is not None and meta.offset >= 0 else 0
            lag[tp.partition] = max(0, ends[tp] - done)
        return lag
    finally:
        await consumer.stop()
        await admin.close()
