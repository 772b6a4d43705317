"""State reads the batch processor skips, and the verdicts that must not change because of it.

The expiry index knows every key the store holds for a partition the processor has
loaded, so a transaction id, sender or card it does not know is new without a store read.
Wrong, that would let a duplicate through: these tests hold the verdicts across a
restart, a rebalance and an erasure, and count the reads.
"""
from datetime import datetime, timedelta, timezone

import orjson

from payflow.keys import KeyRing
from payflow.stages.batch import BatchProcessor, RawItem
from tests.fakes import DictState
from tests.unit.cards_fixtures import event

RING = KeyRing.parse("t-1:" + "ab" * 32)
START = datetime(2026, 11, 20, 8, 0, tzinfo=timezone.utc)
NOW = lambda: datetime(2026, 11, 21, tzinfo=timezone.utc)  # noqa: E731


class CountingState(DictState):
    def __init__(self, data: dict):
        super().__init__(data)
        self.reads: list[str] = []

    def read(self, partition: int, key: str) -> bytes | None:
        self.reads.append(key)
        return super().read(partition, key)


def item(offset: int, txn: str, sender: str = "acct_a", pan: str = "4111111111111111", partition: int = 0) -> RawItem:
    t = START + timedelta(seconds=offset)
    doc = event(pan=pan, transaction_id=txn, sender_account_id=sender, amount="2.00",  # small: card history kept
                event_time=t.isoformat(timespec="milliseconds").replace("+00:00", "Z"))
    return RawItem(partition, offset, orjson.dumps(doc))


def processor(data: dict) -> tuple[BatchProcessor, dict[str, CountingState]]:
    tables = {name: CountingState(data.setdefault(name, {}))
              for name in ("dedup_table", "watermark_table", "sender_table", "card_table")}
    return BatchProcessor(keyring=RING, now=NOW, **tables), tables


def test_new_keys_are_not_read_and_known_ones_are():
    bp, tables = processor({})
    out = bp.process([item(0, "txn_one"), item(1, "txn_two", sender="acct_b")])
    assert len(out.enriched) == 2
    assert tables["dedup_table"].reads == [] and tables["sender_table"].reads == [] \
        and tables["card_table"].reads == []
    out = bp.process([item(2, "txn_one"), item(3, "txn_three")])  # a duplicate, then a new id
    assert [d.transaction_id for d in out.duplicates] == ["txn_one"]
    assert tables["dedup_table"].reads == ["txn_one"]  # the known id only
    assert tables["sender_table"].reads == ["acct_a"]  # known from the first batch
    assert tables["card_table"].reads == []  # no longer read (card testing is judged per sender)


def test_a_duplicate_of_a_transaction_seen_before_a_restart_is_found():
    data: dict = {}
    first, _ = processor(data)
    first.process([item(0, "txn_one"), item(1, "txn_two")])
    restarted, tables = processor(data)  # the tables as recovered from the changelog
    out = restarted.process([item(2, "txn_two"), item(3, "txn_new")])
    assert [d.transaction_id for d in out.duplicates] == ["txn_two"]
    assert [e.payment.transaction_id for e in out.enriched] == ["txn_new"]
    # and the sender's history came back: the velocity counts the payments before the restart
    assert out.enriched[0].fraud.velocity_5m == 3


def test_a_duplicate_of_a_transaction_another_worker_saw_is_found_after_a_rebalance():
    data: dict = {}
    a, _ = processor(data)
    b, _ = processor(data)
    a.assigned([0, 1], generation=1)
    a.process([item(0, "txn_a", partition=1)])
    a.assigned([1], generation=2)  # partition 0 goes to B, which sees txn_b there
    b.process([item(0, "txn_b")])
    a.assigned([0, 1], generation=3)  # and comes back to A
    out = a.process([item(1, "txn_b")])
    assert [d.transaction_id for d in out.duplicates] == ["txn_b"]


def test_an_erased_key_reads_as_nothing():
    data: dict = {}
    bp, tables = processor(data)
    bp.process([item(0, "txn_one")])
    tables["sender_table"].remove(0, "acct_a")  # a GDPR erasure of the sender's state
    out = bp.process([item(1, "txn_two")])
    assert tables["sender_table"].reads == ["acct_a"]
    assert out.enriched[0].fraud.velocity_5m == 1  # the erased history is gone
