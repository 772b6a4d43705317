"""One SHA-256 over everything the pipeline's pure part outputs for a fixed simulated stream.

A fixed-seed stream (duplicates, late events, malformed messages, fraud scenarios) runs
through the BatchProcessor in batches, without Kafka or a warehouse, and then part of it
again from a restarted processor over the same state (a replay from an older committed
position). Each batch's outputs are hashed in order: the enriched records (key and JSON),
the DLQ, late and dedup-audit records (output_records), and the warehouse landing batch's
rows column by column for every table (build_batch). Two subjects are on the erasure
ledger (one delete, one anonymize, one of them under an older key of the ring).

The same digest before and after a refactoring shows it left these bytes alone. Works on
the layout before the restructure (payflow.pipeline) and after it (payflow.stages.batch):
    python scripts/output_digest.py [--events 40000] [--replay 4000]
"""
from __future__ import annotations

import argparse
import hashlib
import sys
import zlib
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterable

import payflow

# Chosen by the tree payflow was imported from, not by trying imports: an editable install
# of the other layout would resolve a missing subpackage (payflow.stages) from its own tree.
if (Path(payflow.__file__).parent / "stages").is_dir():  # the layout since the restructure
    from payflow.stages.batch import BatchProcessor, RawItem
    from payflow.stages.mask import ErasedSubjects
else:  # the layout before it
    from payflow.pipeline import BatchProcessor, RawItem  # type: ignore[no-redef]
    from payflow.masking import ErasedSubjects  # type: ignore[no-redef]
if (Path(payflow.__file__).parent / "pipeline" / "outputs.py").is_file():  # the pipeline package's
    from payflow.pipeline.outputs import enriched_records, landed_records, output_records
else:  # before it
    from payflow.outputs import enriched_records, landed_records, output_records  # type: ignore[no-redef]
import orjson

from payflow.keys import KeyRing
from payflow.settings import Topics
from payflow.simulator.generator import EventStream, SimOptions
from payflow.warehouse.base import LANDING_ORDER, build_batch

SEED = 2026
START = datetime(2026, 1, 5, 9, 0, tzinfo=timezone.utc)
PARTITIONS = 4
BATCH = 500
# two keys, the first active: an erasure under the older one is found after the "rotation"
KEYS = "digest-2:" + "cd" * 32 + ",digest-1:" + "ab" * 32


class PartitionState:
    """A state table as the processor sees it (payflow.stages.state.PartitionedState), one dict per
    partition as RocksDB has one database per partition; written through at once."""

    def __init__(self) -> None:
        self.data: dict[int, dict[str, bytes]] = {}

    def read(self, partition: int, key: str) -> bytes | None:
        return self.data.get(partition, {}).get(key)

    def write(self, partition: int, key: str, value: bytes) -> None:
        self.data.setdefault(partition, {})[key] = value

    def remove(self, partition: int, key: str) -> bool:
        return self.data.get(partition, {}).pop(key, None) is not None

    def apply_writes(self) -> None:
        pass

    def expire(self, partition: int, keys: Iterable[str]) -> None:
        for key in keys:
            self.data.get(partition, {}).pop(key, None)

    def scan_partition(self, partition: int) -> list[tuple[str, bytes]]:
        return list(self.data.get(partition, {}).items())

    def scan_partition_from(self, partition: int, after: str | None, limit: int) -> list[tuple[str, bytes]]:
        data = self.data.get(partition, {})
        return [(k, data[k]) for k in sorted(k for k in data if after is None or k > after)[:limit]]


def _feed(h: Any, *parts: Any) -> None:
    """Each value length-prefixed, so no two different sequences hash alike."""
    for part in parts:
        data = part if isinstance(part, bytes) else repr(part).encode()
        h.update(len(data).to_bytes(8, "big"))
        h.update(data)


def _run_batch(h: Any, processor: Any, items: list, keys: dict, now: datetime, topics: Topics) -> None:
    result = processor.process(items)
    pending = enriched_records(result)
    for record in pending:
        _feed(h, "enriched", *record)
    for record in landed_records(pending, [], topics, now):
        _feed(h, "landed", *record)
    for record in output_records(result, keys, topics, now):
        _feed(h, "output", *record)
    batch = build_batch(result.enriched, result.duplicates, result.rejections, result.late, result.watermarks, now)
    for table in LANDING_ORDER:
        for name, values in batch.columns(table).items():
            _feed(h, "row", table, name, values)
    _feed(h, "counts", result.replays, sorted(result.watermarks.items()), sorted(result.start_watermarks.items()))
    processor.expire(result.start_watermarks)


def digest(events: int = 40_000, replay: int = 4_000, batch_size: int = BATCH,
           progress: Callable[[str], None] | None = None) -> str:
    options = SimOptions(count=events, seed=SEED, start_time=START)
    stream = EventStream(options)
    messages = list(stream)
    keyring = KeyRing.parse(KEYS)
    older = keyring.keys[1]
    # the cards of the first two valid payments' senders: erased by delete under the active
    # key and by anonymize under the older one
    cards = []
    for m in messages:
        if m.kind == "valid":
            doc = orjson.loads(m.value)
            if all(doc["sender_account_id"] != sender for sender, _, _ in cards):
                cards.append((doc["sender_account_id"], doc["credit_card"], doc["card_expiry"]))
        if len(cards) == 2:
            break
    erasures = []
    for (_, pan, expiry), key, mode in zip(cards, (keyring.active, older), ("delete", "anonymize")):
        erasures += [(key_id, h, mode) for key_id, h in keyring.hashes_for(pan, expiry) if key_id == key.key_id]

    offsets = [0] * PARTITIONS
    items: list[tuple[int, int, bytes | None, bytes]] = []  # partition, offset, key, value
    for m in messages:
        partition = zlib.crc32(m.key or b"") % PARTITIONS
        items.append((partition, offsets[partition], m.key, m.value))
        offsets[partition] += 1

    tables = {name: PartitionState() for name in ("dedup", "watermark", "sender", "card")}
    clock = {"now": START}
    topics = Topics()

    def processor() -> Any:
        erased = ErasedSubjects(keyring)
        erased.add(erasures)
        return BatchProcessor(keyring=keyring, dedup_table=tables["dedup"], watermark_table=tables["watermark"],
                              sender_table=tables["sender"], card_table=tables["card"],
                              now=lambda: clock["now"], erased=erased)

    h = hashlib.sha256()
    # the stream's event time ends at START + events / business_tps; the worker's clock a
    # minute after, advancing a second per batch
    base = START + timedelta(seconds=events / options.business_tps + 60)
    runs = [("stream", processor(), items), ("replay", processor(), items[len(items) - replay:] if replay else [])]
    n = 0
    for label, proc, run in runs:
        for i in range(0, len(run), batch_size):
            chunk = run[i:i + batch_size]
            clock["now"] = base + timedelta(seconds=n)
            n += 1
            raw = [RawItem(p, o, v) for p, o, _, v in chunk]
            keys = {(p, o): k for p, o, k, _ in chunk}
            _run_batch(h, proc, raw, keys, clock["now"], topics)
        if progress:
            progress(f"{label}: {len(run)} messages")
    return h.hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=40_000)
    parser.add_argument("--replay", type=int, default=4_000, help="the last N messages are processed again")
    parser.add_argument("--batch", type=int, default=BATCH)
    args = parser.parse_args(argv)
    used = [sys.modules[m].__file__ for m in (BatchProcessor.__module__, enriched_records.__module__,
                                               build_batch.__module__)]
    print("modules: " + " ".join(used), file=sys.stderr)
    print(digest(args.events, args.replay, args.batch, progress=lambda s: print(s, file=sys.stderr)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
