"""The state tables' changelog format: one record per partition per batch, split under a limit."""
from __future__ import annotations

import pytest

from payflow.tables.changelog import MAGIC, pack_changes, unpack_changes


def test_changes_round_trip_with_deletes_in_order():
    changes = {b"txn_a": b"\x00\x01first", b"txn_b": None, b"acct_\xc3\xa9": b"", b"k" * 300: b"v" * 70_000}
    records = pack_changes(changes)
    assert len(records) == 1 and records[0].startswith(MAGIC)
    assert list(unpack_changes(records[0])) == list(changes.items())


def test_a_large_batch_splits_into_records_under_the_limit_and_nothing_is_lost():
    changes = {f"txn_{i:06d}".encode(): i.to_bytes(8, "big") * 4 for i in range(5_000)}
    records = pack_changes(changes, limit=16 * 1024)
    assert len(records) > 10
    assert all(len(r) <= 16 * 1024 for r in records)
    assert dict(kv for r in records for kv in unpack_changes(r)) == changes


def test_an_entry_larger_than_the_limit_still_travels_alone():
    big = {b"a": b"x" * 100, b"b": b"y" * 5_000, b"c": b"z"}
    records = pack_changes(big, limit=1_000)
    assert [len(list(unpack_changes(r))) for r in records] == [1, 1, 1]


def test_no_changes_no_record():
    assert pack_changes({}) == []


def test_a_foreign_record_is_refused():
    with pytest.raises(ValueError):
        list(unpack_changes(b'{"not": "ours"}'))


def _rocksdb_table(tmp_path):
    import faust

    from payflow.tables.changelog import BatchLoggedTable
    app = faust.App("state-log-test", store="rocksdb://", datadir=str(tmp_path), autodiscover=False)
    return BatchLoggedTable(app, name="t", retention_seconds=60, partitions=2, key_type=bytes, value_type=bytes)


def test_rocksdb_writes_reach_the_store_at_apply_and_reads_see_them_before(tmp_path):
    table = _rocksdb_table(tmp_path)
    db = table.data._db_for_partition(1)
    table.write(1, "txn_a", b"first")
    table.write(1, "txn_a", b"second")
    assert table.read(1, "txn_a") == b"second"  # the batch sees its own write
    assert db.get(b"txn_a") is None  # not yet in the local store
    table.apply_writes()
    assert db.get(b"txn_a") == b"second"
    assert table.read(0, "txn_a") is None  # partitions stay apart
    assert table.take_pending() == {1: pack_changes({b"txn_a": b"second"})}

    assert table.remove(1, "txn_a") and table.read(1, "txn_a") is None
    table.write(1, "txn_b", b"b")
    table.apply_writes()
    table.expire(1, ["txn_b", "txn_never_written"])
    assert db.get(b"txn_b") is None and dict(table.scan()) == {}


def test_a_record_names_its_format_and_an_unknown_format_is_refused_by_name():
    record = pack_changes({b"k": b"v"})[0]
    assert record[:4] == MAGIC == b"PFS1"
    assert dict(unpack_changes(record)) == {b"k": b"v"}
    with pytest.raises(ValueError, match=r"known format \(header b'PFS9'\)"):
        list(unpack_changes(b"PFS9" + record[4:]))
