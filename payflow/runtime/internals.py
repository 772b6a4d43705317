"""Faust's, aiokafka's and Faust's RocksDB store's private state, for code outside the runtime.

Code outside payflow/runtime/ calls these instead of reaching into library objects, so every
private access sits where the version check (payflow.runtime.seams) fences it.
"""
from __future__ import annotations

from functools import partial
from typing import Any, Callable, Iterable, Mapping


# -- Faust's consumer and producer -----------------------------------------------------------
def committed_offsets(app: Any) -> Mapping[Any, int | None]:
    """TP -> the committed position (next offset to read) Faust last committed or sought to."""
    return app.consumer._committed_offset  # noqa: SLF001


def committed_position(app: Any, tp: Any) -> int | None:
    """tp's committed position, or None when nothing is known (consumer not started yet)."""
    try:
        return app.consumer._committed_offset.get(tp)  # noqa: SLF001
    except Exception:  # noqa: BLE001 - consumer not started yet: nothing known to be committed
        return None


def committed_position_of(app: Any, topic: str) -> Callable[[int], int | None]:
    """partition -> `topic`'s committed position there (committed_position)."""
    return partial(_committed_in, app, topic)


def _committed_in(app: Any, topic: str, partition: int) -> int | None:
    return committed_position(app, (topic, partition))  # a plain tuple finds Faust's TP (a NamedTuple)


def kafka_producer(app: Any) -> Any:
    """The aiokafka producer under Faust's (started by Faust; call once the worker runs)."""
    return app.producer._ensure_producer()  # noqa: SLF001


def topic_partition_count(app: Any, topic: str) -> int | None:
    """The partitions of `topic` in the consumer's last metadata (None: not known to it)."""
    try:
        return app.consumer.topic_partitions(topic)
    except Exception:  # noqa: BLE001 - consumer not started yet
        return None


def kafka_producer_of(app: Any) -> Callable[[], Any]:
    """A getter for `kafka_producer(app)`, for code built before Faust starts its producer."""
    return partial(kafka_producer, app)


# -- aiokafka --------------------------------------------------------------------------------
def partition_for(producer: Any, topic: str, key: bytes | None, value: bytes) -> int:
    """The partition aiokafka's producer would pick for (key, value) (its partitioner;
    the topic's metadata must be known: `await producer.partitions_for(topic)` first)."""
    return producer._partition(topic, None, key, value, key, value)  # noqa: SLF001


def kafka_client(admin_or_consumer: Any) -> Any:
    """The AIOKafkaClient under an aiokafka admin client or consumer."""
    return admin_or_consumer._client  # noqa: SLF001


async def refresh_metadata(admin_or_consumer: Any) -> Any:
    """Fetch cluster metadata now (aiokafka's client refreshes it only every metadata_max_age)."""
    client = kafka_client(admin_or_consumer)
    await client.force_metadata_update()
    return client.cluster


# -- Faust's RocksDB store -------------------------------------------------------------------
def is_rocksdb_store(store: Any) -> bool:
    """True for Faust's RocksDB store (one database per partition), False for its memory store."""
    return hasattr(store, "_db_for_partition")


def rocksdb_partition(store: Any, partition: int) -> Any:
    """The partition's rocksdict database (opened raw) under Faust's RocksDB store."""
    return store._db_for_partition(partition)  # noqa: SLF001


def rocksdb_partitions(store: Any) -> Iterable[Any]:
    """The databases of every partition the store has open."""
    return list(store._dbs.values())  # noqa: SLF001
