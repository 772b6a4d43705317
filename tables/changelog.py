"""State tables whose changelog carries one record per partition per batch.

A Faust table sends one changelog message per key change, each with its own producer
future and callback. The pipeline changed ~4 keys per payment (dedup entry, sender and
card history, expiry tombstones), so those messages, not payflow's stages, were most of
its cost. Here a batch's changes to one partition are packed into one record (split
below a record limit derived at the worker's start from the topic's max.message.bytes, the
broker's message.max.bytes and the producer's max request size: configure_record_limits;
one change is never split, and every table's values have a size bound, so the start is
refused if the largest change could not fit) and written locally as one RocksDB WriteBatch at the end of
the batch (reads within the batch see its writes first). Faust's
recovery and standbys still read the changelog and hand records to
`apply_changelog_batch`, which unpacks them, so restart and rebalance work as before.

Expiry: the changelog has cleanup.policy=delete with retention = the state window plus a
day (what Kafka Streams does for window-store changelogs). Old records age out of the log
by themselves, so expiring a key is a local delete with no tombstone; a key recovered
from a record that is still retained but already past the window is harmless, because
every value carries its event time and readers judge it by that.
Erasure deletes are logged (a delete entry), so a recovery never restores an erased key.
"""
from __future__ import annotations

import asyncio
import logging
import struct
from collections import defaultdict
from functools import cached_property
from typing import Any, Iterable, Iterator

import faust
from rocksdict import WriteBatch

from payflow.runtime.internals import is_rocksdb_store, rocksdb_partition, rocksdb_partitions
from payflow.runtime.tables import RetainedChangelogTable
from payflow.stages.state import PartitionedState  # noqa: F401 - the type BatchLoggedTable implements

log = logging.getLogger(__name__)

# One record: MAGIC, then per change: key length, value length (-1 = delete), key, value.
MAGIC = b"PFS1"
_ENTRY = struct.Struct(">Hi")
# the record limit until the broker's limits are read (changelog_record_limits): well under
# Kafka's default 1 MB message limit, and the producer's request size
MAX_RECORD_BYTES = 512 * 1024

# -- the record limit, from the broker's limits ----------------------------------------------
# What a record batch adds around its records: the v2 batch header (61 bytes) and a record's
# own framing (at most 21 bytes); the broker's limit applies to the whole batch.
RECORD_BATCH_OVERHEAD = 61 + 21
SAFE_MARGIN = 1024  # slack for what the estimate above may miss (a key, headers)
# worst-case growth of incompressible bytes (digests, offsets) under each codec: the broker
# checks the compressed batch (snappy's block format can grow n/6, the others ~0.4%)
COMPRESSION_GROWTH = {"none": 0.0, "gzip": 0.01, "lz4": 0.01, "zstd": 0.01, "snappy": 0.17}


class RecordLimitError(RuntimeError):
    """The broker's or producer's limits leave no room for a state change payflow may write."""


def record_limit(max_message_bytes: int, max_request_size: int, compression: str | None = None) -> int:
    """The largest changelog record to send to a topic that takes batches of at most
    `max_message_bytes` (its max.message.bytes, else the broker's message.max.bytes) from a
    producer whose requests are at most `max_request_size` bytes."""
    growth = COMPRESSION_GROWTH.get(compression or "none", max(COMPRESSION_GROWTH.values()))
    return int((min(max_message_bytes, max_request_size) - RECORD_BATCH_OVERHEAD - SAFE_MARGIN) / (1 + growth))


def entry_bytes(key_bytes: int, value_bytes: int) -> int:
    """The size of a record holding one change of a key and value of these sizes."""
    return len(MAGIC) + _ENTRY.size + key_bytes + value_bytes


def check_record_limit(topic: str, limit: int, *, max_key_bytes: int, max_value_bytes: int,
                       max_batch_bytes: int, compression: str | None = None) -> None:
    """Refuse (RecordLimitError) when one change could exceed `limit` (changes are never split),
    when a key could exceed the format's 64 KiB, or when the producer's batches of several
    records (up to `max_batch_bytes`) could exceed what the topic takes."""
    largest = entry_bytes(max_key_bytes, max_value_bytes)
    if max_key_bytes > 0xFFFF:
        raise RecordLimitError(f"state keys may have {max_key_bytes} bytes (PAYFLOW_MAX_MESSAGE_BYTES); the "
                               "changelog format holds keys of at most 65535 bytes: lower PAYFLOW_MAX_MESSAGE_BYTES")
    if largest > limit:
        raise RecordLimitError(
            f"changelog topic {topic}: a state change may take {largest} bytes (a key of up to {max_key_bytes} "
            f"bytes: PAYFLOW_MAX_MESSAGE_BYTES, a value of up to {max_value_bytes}), more than the {limit} "
            "bytes a record may have under the topic's max.message.bytes (or the broker's message.max.bytes) "
            "and the producer's max request size: raise those, or lower PAYFLOW_MAX_MESSAGE_BYTES")
    if max_batch_bytes > limit:
        raise RecordLimitError(
            f"changelog topic {topic}: the producer batches up to {max_batch_bytes} bytes of records "
            f"(producer_max_batch_size), more than the {limit} bytes the topic and producer allow")


async def max_message_bytes(bootstrap: str, topics: list[str]) -> dict[str, int]:
    """Each topic's max.message.bytes; a topic not created yet gets the brokers' (smallest)
    message.max.bytes, which a topic created without an override inherits."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    from payflow.kafka_security import current as kafka_security
    from payflow.runtime.internals import refresh_metadata

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="payflow-admin", **kafka_security().client_kwargs())
    await admin.start()
    try:
        cluster = await refresh_metadata(admin)
        brokers = sorted(b.nodeId for b in cluster.brokers())
        resources = [ConfigResource(ConfigResourceType.BROKER, str(b), {"message.max.bytes": None}) for b in brokers]
        resources += [ConfigResource(ConfigResourceType.TOPIC, t, {"max.message.bytes": None}) for t in topics]
        found: dict[tuple[int, str], int] = {}
        for response in await admin.describe_configs(resources):
            for error_code, _message, kind, name, entries, *_ in response.resources:
                if error_code == 0:
                    for entry in entries:
                        if entry[0] in ("message.max.bytes", "max.message.bytes") and entry[1] is not None:
                            found[(kind, name)] = int(entry[1])
    finally:
        await admin.close()
    broker_limits = [v for (kind, _), v in found.items() if kind == ConfigResourceType.BROKER]
    if not broker_limits:
        raise RecordLimitError(f"could not read message.max.bytes of the brokers at {bootstrap}")
    default = min(broker_limits)
    return {t: found.get((ConfigResourceType.TOPIC, t), default) for t in topics}


def pack_changes(changes: dict[bytes, bytes | None], limit: int = MAX_RECORD_BYTES) -> list[bytes]:
    """Changes as one or more records, each at most `limit` bytes (one entry never splits)."""
    records: list[bytes] = []
    parts: list[bytes] = [MAGIC]
    size = len(MAGIC)
    for key, value in changes.items():
        head = _ENTRY.pack(len(key), -1 if value is None else len(value))
        entry = len(head) + len(key) + (len(value) if value is not None else 0)
        if size + entry > limit and size > len(MAGIC):
            records.append(b"".join(parts))
            parts, size = [MAGIC], len(MAGIC)
        parts.append(head)
        parts.append(key)
        if value is not None:
            parts.append(value)
        size += entry
    if size > len(MAGIC):
        records.append(b"".join(parts))
    return records


def unpack_changes(record: bytes) -> Iterator[tuple[bytes, bytes | None]]:
    """A record's changes, read by the format its 4-byte header names (b"PFS1" today): a
    later format gets a new header and its own reader here, beside this one, so a changelog
    written by an older worker stays readable."""
    reader = _READERS.get(bytes(record[:len(MAGIC)]))
    if reader is None:
        raise ValueError(f"not a payflow state record of a known format (header {bytes(record[:4])!r})")
    return reader(record)


def _unpack_v1(record: bytes) -> Iterator[tuple[bytes, bytes | None]]:
    view = memoryview(record)
    pos = len(MAGIC)
    end = len(record)
    size = _ENTRY.size
    while pos < end:
        key_len, value_len = _ENTRY.unpack_from(view, pos)
        pos += size
        key = bytes(view[pos:pos + key_len])
        pos += key_len
        if value_len < 0:
            yield key, None
        else:
            yield key, bytes(view[pos:pos + value_len])
            pos += value_len


_READERS = {MAGIC: _unpack_v1}  # header -> reader, one per record format


class BatchLoggedTable(RetainedChangelogTable):
    """A Faust table read and written per partition, its changelog one record per batch.

    Works over Faust's RocksDB store (the worker) and its memory store (unit tests under
    Faust's test context). Keys are str (UTF-8 in the store), values bytes.
    """

    def __init__(self, *args: Any, retention_seconds: float, max_value_bytes: int = 0, **kwargs: Any) -> None:
        super().__init__(*args, retention_seconds=retention_seconds, **kwargs)
        # the largest value written to this table, and the changelog record limit
        # (configure_record_limits sets it from the broker's limits at the worker's start)
        self.max_value_bytes = max_value_bytes
        self.record_limit = MAX_RECORD_BYTES
        self._pending: dict[int, dict[bytes, bytes | None]] = defaultdict(dict)
        # written in this batch, not yet in the local store: reads see them first
        self._unapplied: dict[int, dict[bytes, bytes | None]] = defaultdict(dict)

    # -- the local store ------------------------------------------------------------------
    @cached_property
    def _rocksdb(self) -> bool:  # the store's kind never changes (read per state access)
        return is_rocksdb_store(self.data)

    def _write_local(self, partition: int, changes: Iterable[tuple[bytes, bytes | None]]) -> None:
        """Key changes (None: delete) to the local store: RocksDB takes them as one WriteBatch
        (a put each cost ~2.6 µs, a WriteBatch ~0.7 µs per key)."""
        if self._rocksdb:
            batch = WriteBatch(raw_mode=True)  # Faust opens its stores in raw mode
            for k, value in changes:
                if value is None:
                    batch.delete(k)
                else:
                    batch.put(k, value)
            if len(batch):
                rocksdb_partition(self.data, partition).write(batch)
        else:
            store = self.data.data
            for k, value in changes:
                if value is None:
                    store.pop(k, None)
                else:
                    store[k] = value

    def read(self, partition: int, key: str) -> bytes | None:
        k = key.encode()
        unapplied = self._unapplied.get(partition)
        if unapplied and k in unapplied:
            return unapplied[k]
        if self._rocksdb:
            return rocksdb_partition(self.data, partition).get(k)
        return self.data.data.get(k)

    def write(self, partition: int, key: str, value: bytes) -> None:
        """Reaches the local store at apply_writes(), the changelog at take_pending()."""
        k = key.encode()
        self._unapplied[partition][k] = value
        self._pending[partition][k] = value

    def apply_writes(self) -> None:
        """Write what the batch wrote to the local store, once per partition."""
        unapplied, self._unapplied = self._unapplied, defaultdict(dict)
        for partition, changes in unapplied.items():
            self._write_local(partition, changes.items())

    def remove(self, partition: int, key: str) -> bool:
        """Delete a key and log the delete (erasure): a recovery will not bring it back."""
        if self.read(partition, key) is None:
            return False
        k = key.encode()
        self._unapplied[partition].pop(k, None)
        self._write_local(partition, [(k, None)])
        self._pending[partition][k] = None
        return True

    def expire(self, partition: int, keys: Iterable[str]) -> None:
        """Delete locally only: the changelog record ages out by retention."""
        self._write_local(partition, ((key.encode(), None) for key in keys))

    def scan(self) -> Iterator[tuple[str, bytes]]:
        """Every (key, value) held locally, over all assigned partitions."""
        if self._rocksdb:
            for db in rocksdb_partitions(self.data):
                yield from self._db_items(db)
        else:
            for k, v in list(self.data.data.items()):
                yield (k.decode() if isinstance(k, bytes) else str(k)), v

    def scan_partition(self, partition: int) -> Iterator[tuple[str, bytes]]:
        """Every (key, value) held locally for one partition (the memory store: all of them;
        readers tell partitions apart by the value)."""
        if self._rocksdb:
            yield from self._db_items(rocksdb_partition(self.data, partition))
        else:
            yield from self.scan()

    def scan_partition_from(self, partition: int, after: str | None, limit: int) -> list[tuple[str, bytes]]:
        """Up to `limit` (key, value) held locally for one partition whose keys sort after
        `after` (None: from the first), in key order (the memory store: of all partitions)."""
        start = None if after is None else after.encode()
        out: list[tuple[str, bytes]] = []
        if self._rocksdb:
            offset_key = self.data.offset_key
            for k, v in rocksdb_partition(self.data, partition).items(from_key=start):
                if k == offset_key or (start is not None and k <= start):
                    continue
                out.append((k.decode(), v))
                if len(out) >= limit:
                    break
            return out
        keys = sorted(k for k in self.data.data if start is None or k > start)[:limit]
        return [(k.decode() if isinstance(k, bytes) else str(k), self.data.data[k]) for k in keys]

    def _db_items(self, db: Any) -> Iterator[tuple[str, bytes]]:
        offset_key = self.data.offset_key  # Faust's own bookkeeping key, not state
        for k, v in db.items():
            if k != offset_key:
                yield k.decode(), v

    # -- the changelog --------------------------------------------------------------------
    def take_pending(self) -> dict[int, list[bytes]]:
        """This batch's changes as changelog records per partition; clears them."""
        pending, self._pending = self._pending, defaultdict(dict)
        return {p: pack_changes(changes, self.record_limit) for p, changes in pending.items() if changes}

    def discard_pending(self) -> None:
        """Drop the changes not yet sent: their messages are read again (by this worker or
        the partition's new owner), which makes them again."""
        self._pending = defaultdict(dict)

    def note_logged(self, offsets: dict[int, int]) -> None:
        """The changelog acknowledged records up to these offsets: recovery resumes after them
        (the local store already holds everything before)."""
        if self._rocksdb:
            topic = self.changelog_topic.get_topic_name()
            for partition, offset in offsets.items():
                self.data.set_persisted_offset(faust.types.TP(topic, partition), offset)

    def apply_changelog_batch(self, batch: Iterable[Any]) -> None:
        """Recovery and standbys: unpack each record into its key changes, in log order."""
        offsets: dict[Any, int] = {}
        for event in batch:
            msg = event.message
            offsets[msg.tp] = max(offsets.get(msg.tp, -1), msg.offset)
            if not msg.value:
                continue
            self._write_local(msg.partition, unpack_changes(msg.value))
        if self._rocksdb:
            for tp, offset in offsets.items():
                self.data.set_persisted_offset(tp, offset)


def configure_record_limits(tables: Iterable[BatchLoggedTable], topic_limits: dict[str, int], *,
                            max_request_size: int, max_batch_bytes: int, max_key_bytes: int,
                            compression: str | None = None) -> dict[str, int]:
    """Set each table's changelog record limit from its topic's limit (`topic_limits`, as
    max_message_bytes reads them) and the producer's; refuse (RecordLimitError) when a
    table's largest change could not travel. Returns topic -> record limit."""
    limits: dict[str, int] = {}
    for table in tables:
        topic = table.changelog_topic.get_topic_name()
        limit = record_limit(topic_limits[topic], max_request_size, compression)
        check_record_limit(topic, limit, max_key_bytes=max_key_bytes, max_value_bytes=table.max_value_bytes,
                           max_batch_bytes=max_batch_bytes, compression=compression)
        table.record_limit = limits[topic] = limit
    return limits


def apply_broker_limits(tables: Iterable[BatchLoggedTable], *, bootstrap: str, max_request_size: int,
                        max_batch_bytes: int, max_key_bytes: int, compression: str | None = None) -> dict[str, int]:
    """configure_record_limits with the topics' limits read from the brokers (at the worker's
    start, from a thread without an event loop)."""
    tables = list(tables)
    topics = [t.changelog_topic.get_topic_name() for t in tables]
    limits = configure_record_limits(tables, asyncio.run(max_message_bytes(bootstrap, topics)),
                                     max_request_size=max_request_size, max_batch_bytes=max_batch_bytes,
                                     max_key_bytes=max_key_bytes, compression=compression)
    log.info("state changelog record limits (bytes): %s",
             ", ".join(f"{topic}={limit}" for topic, limit in sorted(limits.items())))
    return limits
