"""The generic state caches take memory of a fixed size whatever the number of keys (1,000,000
distinct senders and transaction ids in the window must not grow the worker by hundreds of
MB), and expiry still deletes every key behind the horizon."""
from __future__ import annotations

import struct
import tracemalloc

from payflow.stages.state import ExpiryIndex
from tests.fakes import DictState

_VALUE = struct.Struct(">id")  # partition, event time: what the index reads of a stored value


def _index(**kw) -> ExpiryIndex:
    return ExpiryIndex(ts_of=lambda v: _VALUE.unpack(v)[1], partition_of=lambda v: _VALUE.unpack(v)[0], **kw)


def test_the_index_memory_does_not_grow_with_the_keys():
    index = _index()
    keys = [f"txn_{i:012d}" for i in range(200_000)]  # made before measuring: the table holds them
    index.note(0, 1.0, "txn_first")  # the partition's filters exist
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i, key in enumerate(keys):
            index.note(0, float(i), key)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 64 * 1024, f"200,000 keys grew the index by {grown} bytes"
    assert all(index.holds(0, k) for k in keys[:1000])
    misses = sum(index.holds(0, f"new_{i}") for i in range(10_000))
    assert misses < 200  # a false "may hold" costs one read; it stays rare
    assert not index.holds(1, keys[0])  # another partition: nothing noted there


def test_the_sweep_deletes_every_expired_key_and_keeps_the_others():
    table = DictState()
    index = _index(min_sweep=500)
    for i in range(5_000):  # two partitions in one dict, as Faust's memory store
        partition = i % 2
        key = f"k{i:05d}"
        table.write(partition, key, _VALUE.pack(partition, float(i)))
        index.note(partition, float(i), key)
    assert index.size() == 5_000  # counted before any pass: the dedup gauge read 0 until one ended
    expired: list[str] = []
    for _ in range(12):  # 2 x 2,500 keys per partition at >= 500 a step: a pass within ~10 steps
        for partition in (0, 1):
            gone = index.expired(partition, 3_000.0, table)
            table.expire(partition, gone)
            expired += gone
    assert sorted(expired) == [f"k{i:05d}" for i in range(3_000)]
    assert len(table.data) == 2_000
    # the filters were rebuilt by the pass: deleted keys are no longer held, the others are
    assert sum(index.holds(i % 2, f"k{i:05d}") for i in range(3_000)) < 100
    assert all(index.holds(i % 2, f"k{i:05d}") for i in range(3_000, 5_000))
    assert index.size() == 2_000


def test_the_sweep_outpaces_the_writes():
    """Keys written faster than the minimum step still all expire: a step reads twice what was
    written since the last one."""
    table = DictState()
    index = _index(min_sweep=10)
    t = 0.0
    for _ in range(50):
        for _ in range(1_000):
            key = f"k{int(t):07d}"
            table.write(0, key, _VALUE.pack(0, t))
            index.note(0, t, key)
            t += 1
        table.expire(0, index.expired(0, t - 2_000, table))
    assert len(table.data) <= 4_000  # the window holds 2,000; at most one pass behind
