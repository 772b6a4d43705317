"""A copy of a landed payment from the same sender, refused by the warehouse key because its
dedup state was in another partition (the raw topic grew and the sender's key moved), is a
duplicate in deduplication_audit, not an id_conflict in dead_letter_events; on both backends."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import orjson
import pytest

from payflow.keys import KeyRing
from payflow.stages.batch import RawItem
from payflow.warehouse.base import build_batch
from tests.fakes import dict_processor
from tests.helpers import TEST_HMAC_KEYS
from tests.unit.cards_fixtures import event

pytestmark = pytest.mark.integration
RING = KeyRing.parse(TEST_HMAC_KEYS)


def _payment(txn: str, sender: str, amount: str) -> bytes:
    t = datetime.now(timezone.utc) - timedelta(minutes=30)
    return orjson.dumps(event(transaction_id=txn, sender_account_id=sender, amount=amount,
                              event_time=t.isoformat().replace("+00:00", "Z")))


def _fresh():
    return dict_processor(keyring=RING, dedup_table={}, watermark_table={}, sender_table={}, card_table={})


def _count(warehouse, table: str) -> int:
    return warehouse.query(f"SELECT COUNT(*) AS n FROM {table}")[0]["n"]


def test_a_copy_from_the_same_sender_landed_from_another_partition_is_a_duplicate(warehouse):
    message = _payment("txn_moved", "acct_a", "10.00")
    before = _fresh().process([RawItem(1, 5, message)])   # the sender's partition before the growth
    assert warehouse.land(build_batch(before.enriched))["payment_transactions"] == 1

    after = _fresh().process([RawItem(5, 2, message)])    # after: a new partition, no dedup entry
    assert len(after.enriched) == 1 and not after.duplicates
    batch = build_batch(after.enriched)
    landed = warehouse.land(batch)
    assert landed.conflicts == [("txn_moved", 5, 2, 1, 5)]
    assert [d[:5] for d in landed.duplicates] == [("txn_moved", 5, 2, 1, 5)]
    audit = warehouse.query("SELECT transaction_id, first_partition, first_offset, duplicate_partition, "
                            "duplicate_offset FROM deduplication_audit")
    assert [tuple(r.values()) for r in audit] == [("txn_moved", 1, 5, 5, 2)]
    assert _count(warehouse, "dead_letter_events") == 0
    assert _count(warehouse, "payment_transactions") == 1

    # replayed after a crash: still one row, one audit record
    again = warehouse.land(batch)
    assert [d[:5] for d in again.duplicates] == [("txn_moved", 5, 2, 1, 5)]
    assert _count(warehouse, "deduplication_audit") == 1 and _count(warehouse, "dead_letter_events") == 0

    # both copies in one landing (the old partition lagging), the new one first: one row, the
    # other copy a duplicate of it
    pair = _payment("txn_pair", "acct_b", "7.00")
    old, new = _fresh().process([RawItem(2, 7, pair)]), _fresh().process([RawItem(6, 1, pair)])
    both = build_batch(new.enriched)
    both.extend(build_batch(old.enriched))
    landed = warehouse.land(both)
    assert [d[:5] for d in landed.duplicates] == [("txn_pair", 2, 7, 6, 1)]
    assert _count(warehouse, "payment_transactions") == 2
    assert _count(warehouse, "deduplication_audit") == 2 and _count(warehouse, "dead_letter_events") == 0

    # another sender reusing the id stays an id conflict
    other = _fresh().process([RawItem(3, 4, _payment("txn_moved", "acct_z", "99.00"))])
    landed = warehouse.land(build_batch(other.enriched))
    assert landed.conflicts == [("txn_moved", 3, 4, 1, 5)] and landed.duplicates == []
    assert [r["reason"] for r in warehouse.query("SELECT reason FROM dead_letter_events")] == ["id_conflict"]
