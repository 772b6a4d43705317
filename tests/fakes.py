"""Test doubles: state tables over dicts, recorded outputs, the pipeline agent's runtime under
Faust's test context, and the checkpoint's collaborators (no Kafka, no warehouse)."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime
from types import SimpleNamespace
from typing import Any, Iterable

import orjson

from payflow.models import dumps
from payflow.pipeline.outputs import landed_records
from payflow.pipeline.checkpoint import Checkpoint, Landing
from payflow.settings import Topics


# -- state ---------------------------------------------------------------------------------
class DictState:
    """A PartitionedState over a plain dict (unit tests of the batch processor).

    One dict for all partitions, as Faust's memory store is; the processor still looks a
    key up only in the partition it was written from (its expiry index is per partition),
    as over RocksDB, where each partition is a database of its own. Feed it items
    partitioned by key, as the raw topic is."""

    def __init__(self, data: dict | None = None):
        self.data: dict[str, bytes] = {} if data is None else data

    def read(self, partition: int, key: str) -> bytes | None:
        return self.data.get(key)

    def write(self, partition: int, key: str, value: bytes) -> None:
        self.data[key] = value

    def remove(self, partition: int, key: str) -> bool:
        return self.data.pop(key, None) is not None

    def apply_writes(self) -> None:
        pass  # written through at once

    def expire(self, partition: int, keys: Iterable[str]) -> None:
        for key in keys:
            self.data.pop(key, None)

    def scan(self) -> Iterable[tuple[str, bytes]]:
        return list(self.data.items())

    def scan_partition(self, partition: int) -> Iterable[tuple[str, bytes]]:
        return self.scan()  # one dict for all partitions: the values say which

    def scan_partition_from(self, partition: int, after: str | None, limit: int) -> list[tuple[str, bytes]]:
        keys = sorted(k for k in self.data if after is None or k > after)[:limit]
        return [(k, self.data[k]) for k in keys]


# -- the pipeline agent under Faust's test context -----------------------------------------
class RecordingPublisher:
    """Keeps the records sent (the changelog's, from the checkpoint); nothing to wait for."""

    def __init__(self, published: dict[str, list]):
        self.published = published

    async def send(self, records: Iterable[tuple]) -> list[Any]:
        self.published["state"] += [(topic, partition, value) for topic, partition, _, value in records]
        return []


class RecordingOutputs:
    """Keeps what would be published, for unit tests of the agent (no Kafka involved).
    published["state"] holds (changelog topic, partition, record)."""

    def __init__(self) -> None:
        self.published: dict[str, list] = {"enriched": [], "dlq": [], "late": [], "dedup_audit": [], "state": []}
        self.publisher = RecordingPublisher(self.published)

    async def send(self, result: Any, keys: dict, now: datetime) -> list[Any]:
        """Record the outputs; nothing to wait for."""
        self.published["dlq"] += [orjson.loads(r.to_dlq_json(now)) for r in result.rejections]
        self.published["late"] += [orjson.loads(p.to_masked_json()) for p in result.late]
        self.published["dedup_audit"] += [orjson.loads(dumps(d)) for d in result.duplicates]
        return []

    async def send_landed(self, pending: list, conflicts: list, now: datetime, duplicates: Any = ()) -> list[Any]:
        topics = Topics()
        for topic, _, _, value in landed_records(pending, conflicts, topics, now, duplicates):
            kind = {topics.enriched: "enriched", topics.dedup_audit: "dedup_audit"}.get(topic, "dlq")
            self.published[kind].append(orjson.loads(value))
        return []


def reraise(what: str, exc: BaseException) -> None:
    """A test runtime's failure handling: the test sees the error (the worker would stop)."""
    raise exc


def agent_runtime(processor: Any, outputs: Any, sink: Any) -> Any:
    """The pipeline agent's runtime over these collaborators, for Faust's test context: set it
    as the app's `pipeline_runtime` before the agent starts."""
    from payflow.app import app, settings
    from payflow.pipeline.assemble import new_checkpoint
    from payflow.pipeline.runtime import PipelineRuntime
    from payflow.tables.definitions import ALL_TABLES

    return PipelineRuntime(processor, outputs, sink,
                           new_checkpoint(app, settings, ALL_TABLES, processor, outputs, sink),
                           app.monitor, fail_stop=reraise)


# -- the checkpoint's collaborators -----------------------------------------------------------
@dataclass
class FakeMessage:
    name: str
    timestamp: float = 0.0


@dataclass
class FakeBatch:
    """What lands: the names of the processed batches in it."""
    names: list[str]

    def extend(self, later: "FakeBatch") -> None:
        self.names += later.names


class FakeSink:
    """Landings wait until the test acks or fails them (`landings`: batch, future)."""

    def __init__(self, journal: list):
        self.journal = journal
        self.landings: list[tuple[FakeBatch, asyncio.Future]] = []

    def start(self, batch: FakeBatch) -> asyncio.Future:
        self.journal.append(("land", "+".join(batch.names)))
        future = asyncio.get_running_loop().create_future()
        self.landings.append((batch, future))
        return future

    def in_flight(self) -> int:
        return sum(1 for _, f in self.landings if not f.done())

    def ack(self, index: int = -1, conflicts: list | None = None) -> None:
        batch, future = self.landings[index]
        self.journal.append(("warehouse ack", "+".join(batch.names)))
        future.set_result(SimpleNamespace(conflicts=conflicts or []))

    def refuse(self, index: int = -1) -> None:
        """The group refused the landing's decision (payflow.runtime.landing_fence)."""
        batch, future = self.landings[index]
        self.journal.append(("warehouse refused", "+".join(batch.names)))
        future.set_result(SimpleNamespace(conflicts=[], fenced=True))

    def fail(self, index: int = -1) -> None:
        from payflow.pipeline.sink import SinkStopped
        self.landings[index][1].set_exception(SinkStopped("the warehouse refused"))


class Held:
    """Futures that complete when the test releases them (or at once, with hold=False)."""

    def __init__(self) -> None:
        self.hold = True
        self.futures: list[tuple[asyncio.Future, Any]] = []

    def future(self, result: Any) -> asyncio.Future:
        future = asyncio.get_running_loop().create_future()
        if self.hold:
            self.futures.append((future, result))
        else:
            future.set_result(result)
        return future

    def unfinished(self) -> int:
        return sum(1 for f, _ in self.futures if not f.done())

    def release(self) -> None:
        for future, result in self.futures:
            if not future.done():
                future.set_result(result)


class HeldPublisher(Held):
    """The changelog's records (sent by the checkpoint through the outputs' publisher)."""

    def __init__(self, journal: list):
        super().__init__()
        self.journal = journal

    async def send(self, records: list) -> list[asyncio.Future]:
        self.journal.append(("changelog sent", len(records)))
        return [self.future(SimpleNamespace(topic=topic, partition=partition, offset=offset))
                for offset, (topic, partition, _, _) in enumerate(records)]


class HeldOutputs(Held):
    """The outputs of processing (Landing.published) and of a landing (send_landed)."""

    def __init__(self, journal: list):
        super().__init__()
        self.journal = journal
        self.publisher = HeldPublisher(journal)

    async def send_landed(self, pending: list, conflicts: list, now: datetime,
                          duplicates: Any = ()) -> list[asyncio.Future]:
        self.journal.append(("publish enriched", [p[0] for p in pending]))
        return [self.future("enriched")]


class FakeIndex:
    def size(self) -> int:
        return 0


class FakeProcessor:
    def __init__(self, journal: list):
        self.journal = journal
        self.dedup_index = FakeIndex()

    def expire(self, start_watermarks: dict[int, int]) -> None:
        self.journal.append(("expire", dict(start_watermarks)))


class FakeTable:
    """A state table with one pending changelog record per commit."""

    def __init__(self, name: str, journal: list):
        self.name = name
        self.journal = journal
        self.changelog_topic = SimpleNamespace(get_topic_name=lambda: f"app-{name}-changelog")

    def take_pending(self) -> dict[int, list[bytes]]:
        return {0: [b"changes"]}

    def note_logged(self, offsets: dict[int, int]) -> None:
        self.journal.append(("changelog logged", self.name))

    def discard_pending(self) -> None:
        self.journal.append(("changes discarded", self.name))


@dataclass
class CheckpointParts:
    """A Checkpoint over doubles that write what happens, in order, to `journal`."""
    journal: list = field(default_factory=list)

    def __post_init__(self) -> None:
        self.sink = FakeSink(self.journal)
        self.outputs = HeldOutputs(self.journal)
        self.processor = FakeProcessor(self.journal)
        self.tables = [FakeTable("dedup", self.journal)]

    def ack(self, messages: list) -> None:
        self.journal.append(("ack", [m.name for m in messages]))

    def checkpoint(self, max_pending: int = 100, fault_exit_after_land: int = 0, confirm: Any = None) -> Checkpoint:
        return Checkpoint(sink=self.sink, outputs=self.outputs, processor=self.processor, tables=self.tables,
                          ack=self.ack, max_pending=max_pending, fault_exit_after_land=fault_exit_after_land,
                          exit_=lambda code: self.journal.append(("exit", code)), read_again=self.read_again,
                          confirm=confirm, release=self.release)

    async def read_again(self, messages: list) -> None:
        self.journal.append(("read again", [m.name for m in messages]))

    def release(self, messages: list) -> None:
        self.journal.append(("release", [m.name for m in messages]))

    def landing(self, name: str, messages: int = 1, start_watermarks: dict[int, int] | None = None) -> Landing:
        """A processed batch: `messages` messages, one output future still on its way."""
        return Landing(FakeBatch([name]), [FakeMessage(f"{name}{i}") for i in range(messages)],
                       dict(start_watermarks or {}), [self.outputs.future(f"outputs of {name}")], [(name,)])

    def release_all(self) -> None:
        self.outputs.release()
        self.outputs.publisher.release()

    def acked(self) -> list:
        return [entry[1] for entry in self.journal if entry[0] == "ack"]

    def expired(self) -> list:
        return [entry[1] for entry in self.journal if entry[0] == "expire"]


def dict_processor(**kwargs: Any) -> Any:
    """A BatchProcessor whose tables given as dicts become DictStates over those dicts (the
    test can go on reading them)."""
    from payflow.stages.batch import BatchProcessor

    for name in ("dedup_table", "watermark_table", "sender_table", "card_table"):
        if isinstance(kwargs.get(name), dict):
            kwargs[name] = DictState(kwargs[name])
    return BatchProcessor(**kwargs)
