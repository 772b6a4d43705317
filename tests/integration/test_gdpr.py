"""GDPR erasure on both backends: delete and anonymize, audit trail, and replays that must
not bring anything back."""
from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import orjson
import pytest

from payflow.compliance.gdpr import erase, subject_hashes
from payflow.keys import KeyRing
from payflow.stages.batch import RawItem
from tests.fakes import dict_processor
from payflow.settings import Settings
from payflow.simulator.generator import EventStream, SimOptions
from payflow.warehouse.base import build_batch
from tests.helpers import TEST_HMAC_KEYS
from tests.unit.cards_fixtures import event

pytestmark = pytest.mark.integration
# the key ring after a rotation: new key first, the old one still valid for look-ups
OLD_KEYS = TEST_HMAC_KEYS
ROTATED = "test-2:" + "6b" * 32 + "," + TEST_HMAC_KEYS
SUBJECT_PAN, SUBJECT_EXPIRY = "4539578763621486", "11/29"
D0 = datetime(2026, 11, 18, 9, 0, tzinfo=timezone.utc)


def subject_events(start_offset: int, days=(0, 1, 2, 2)) -> list[bytes]:
    out = []
    for i, d in enumerate(days):
        t = (D0 + timedelta(days=d, minutes=7 * i)).isoformat().replace("+00:00", "Z")
        out.append(orjson.dumps(event(SUBJECT_PAN, transaction_id=f"txn_subjectpayment{chr(97 + i + start_offset)}",
                                      event_time=t, card_expiry=SUBJECT_EXPIRY, amount=f"{10 + i}.25",
                                      sender_account_id="acct_subject", user_email="subject@example.org")))
    return out


def landed_batch(ring: KeyRing, extra: list[bytes], offset0: int = 0):
    background = [m.value for m in EventStream(SimOptions(count=400, seed=8, start_time=D0 + timedelta(days=2)))]
    values = extra + background
    bp = dict_processor(keyring=ring, dedup_table={}, watermark_table={}, sender_table={}, card_table={})
    # the subject's payments span days: stream them in event-time order so none is "late"
    r = bp.process([RawItem(0, offset0 + i, v) for i, v in enumerate(values)])
    return build_batch(r.enriched, r.duplicates, r.rejections, r.late, r.watermarks)


def sums(warehouse) -> dict[str, Decimal]:
    return {r["currency"]: Decimal(r["s"]) for r in warehouse.query(
        "SELECT currency, SUM(amount) AS s FROM payment_transactions GROUP BY currency")}


def rows_with(warehouse, value: str) -> dict[str, int]:
    found = defaultdict(int)
    for table, cols in warehouse.string_columns().items():
        if table == "gdpr_erasures":
            continue  # the erasure ledger keeps the keyed hash to block resurrection (README)
        for col in cols:
            n = warehouse.query(f"SELECT COUNT(*) AS n FROM {table} WHERE {col} = '{value}'")[0]["n"]
            if n:
                found[f"{table}.{col}"] += n
    return dict(found)


@pytest.mark.parametrize("mode", ["delete", "anonymize"])
def test_erasure_by_card_after_key_rotation(warehouse, mode):
    old = KeyRing.parse(OLD_KEYS)
    batch = landed_batch(old, subject_events(0))  # hashed before the rotation
    warehouse.land(batch)
    subject_ids = {f"txn_subjectpayment{c}" for c in "abcd"}
    old_hash = old.hashes_for(SUBJECT_PAN, SUBJECT_EXPIRY)[0][1]
    assert rows_with(warehouse, old_hash)
    before = sums(warehouse)
    days = warehouse.query("SELECT COUNT(DISTINCT DATE(event_time)) AS d FROM payment_transactions "
                           f"WHERE pii_hash = '{old_hash}'")[0]["d"]
    assert days == 3

    ring = KeyRing.parse(ROTATED)  # erasure after rotation: every key version is tried
    hashes = subject_hashes(ring, card=SUBJECT_PAN, expiry=SUBJECT_EXPIRY, pii_hash=None)
    result = erase(Settings.from_env(), warehouse, hashes, mode, send_state_requests=False)
    assert result.receipt.rows_affected["payment_transactions"] == 4
    assert result.receipt.rows_affected["pii_masking_audit"] == 4
    assert sorted(result.transaction_ids) == sorted(subject_ids) and result.senders == ["acct_subject"]

    def check(subject_ids=subject_ids, totals=before) -> None:
        assert rows_with(warehouse, old_hash) == {}
        assert rows_with(warehouse, "subject@example.org") == {}
        audit = warehouse.query("SELECT transaction_id, erasure_requested, erasure_timestamp, user_email, pii_hash "
                                "FROM pii_masking_audit WHERE erasure_requested")
        assert {a["transaction_id"] for a in audit} == subject_ids
        assert all(a["erasure_timestamp"] and a["user_email"] is None and a["pii_hash"] is None for a in audit)
        kept = warehouse.query("SELECT transaction_id, credit_card_masked, device_id, ip_address, anonymized_at "
                               "FROM payment_transactions WHERE sender_account_id = 'acct_subject'")
        if mode == "delete":
            assert kept == []
            assert warehouse.query("SELECT COUNT(*) AS n FROM payment_transactions_fraud "
                                   "WHERE sender_account_id = 'acct_subject'")[0]["n"] == 0
        else:
            assert {k["transaction_id"] for k in kept} == subject_ids
            assert all(k["credit_card_masked"] is None and k["device_id"] is None and k["ip_address"] is None
                       and k["anonymized_at"] for k in kept)
            assert sums(warehouse) == totals  # the money still reconciles to the cent
        ledger = warehouse.query("SELECT mode, completed_at FROM gdpr_erasures")
        assert len(ledger) == 2 and all(r["mode"] == mode and r["completed_at"] for r in ledger)

    check()
    # a replay of everything (as after re-reading the topics) brings nothing back
    warehouse.land(batch)
    check()
    # a late duplicate / a payment never landed before, from the same card: not linked again
    late = landed_batch(old, subject_events(4, days=(2,)), offset0=10_000)
    warehouse.land(late)
    if mode == "delete":
        check()
    else:  # the new payment lands, anonymized, and counts in the totals
        check(subject_ids | {"txn_subjectpaymente"}, {**before, "USD": before["USD"] + Decimal("10.25")})
    new_row = warehouse.query("SELECT COUNT(*) AS n FROM payment_transactions WHERE transaction_id = 'txn_subjectpaymente'")
    assert new_row[0]["n"] == (0 if mode == "delete" else 1)


def test_a_delete_erasure_leaves_another_senders_rows_of_the_same_transaction_id(warehouse):
    """Sender D's payment lands; sender S reuses its transaction_id (an id_conflict) and sends
    that payment twice (the copy is a dedup audit row). Erasing D by delete removes D's rows
    only: S's duplicate record once went with D's payment, because the erasure picked dedup
    audit rows by transaction_id alone, and S's payment was then in no table."""
    ring = KeyRing.parse(TEST_HMAC_KEYS)
    msgs = [m for m in EventStream(SimOptions(count=60, seed=17, start_time=datetime(2026, 11, 18, 22, 0,
                                                                                     tzinfo=timezone.utc)))
            if m.kind == "valid"]
    d = orjson.loads(msgs[0].value)
    s = next(doc for doc in map(orjson.loads, (m.value for m in msgs))
             if doc["sender_account_id"] != d["sender_account_id"] and doc["credit_card"] != d["credit_card"])
    s["transaction_id"] = d["transaction_id"]
    bp = dict_processor(keyring=ring, dedup_table={}, watermark_table={}, sender_table={}, card_table={})
    result = bp.process([RawItem(0, 1, orjson.dumps(d)), RawItem(1, 5, orjson.dumps(s)),
                         RawItem(1, 6, orjson.dumps(s))])
    landed = warehouse.land(build_batch(result.enriched, result.duplicates, result.rejections, result.late,
                                        result.watermarks))
    assert [c[:3] for c in landed.conflicts] == [(d["transaction_id"], 1, 5)]
    d_hash = next(e.payment.pii_hash for e in result.enriched if e.payment.source_partition == 0)
    warehouse.erase([("k1", d_hash)], "delete")
    assert warehouse.query("SELECT COUNT(*) AS n FROM payment_transactions")[0]["n"] == 0
    dedup = warehouse.query("SELECT first_partition, first_offset, duplicate_partition, duplicate_offset "
                            "FROM deduplication_audit")
    assert [(r["first_partition"], r["first_offset"], r["duplicate_partition"], r["duplicate_offset"])
            for r in dedup] == [(1, 5, 1, 6)]
    dlq = warehouse.query("SELECT source_partition, source_offset, reason FROM dead_letter_events")
    assert [(r["source_partition"], r["source_offset"], r["reason"]) for r in dlq] == [(1, 5, "id_conflict")]


@pytest.mark.parametrize("mode", ["delete", "anonymize"])
def test_an_erasure_touches_no_row_of_another_subject_with_the_same_transaction_id(bq_endpoint, mode):
    """The subject's rows are found by pii_hash, not by transaction_id alone. On BigQuery an
    id two senders used more than a day of event time apart lands for both (the landing's id
    lookup reads a day either side, docs/bigquery.md): erasing one sender must leave the
    other's payment whole. It once deleted or anonymized both."""
    from payflow.warehouse.bq import BigQueryWarehouse
    from tests.helpers import BQ_GRPC, BQ_PROJECT, unique
    ring = KeyRing.parse(TEST_HMAC_KEYS)
    start = datetime(2026, 11, 18, 22, 0, tzinfo=timezone.utc)
    msgs = [m for m in EventStream(SimOptions(count=60, seed=23, start_time=start)) if m.kind == "valid"]
    d = orjson.loads(msgs[0].value)
    s = next(doc for doc in map(orjson.loads, (m.value for m in msgs))
             if doc["sender_account_id"] != d["sender_account_id"] and doc["credit_card"] != d["credit_card"])
    s["transaction_id"] = d["transaction_id"]
    s["event_time"] = (datetime.fromisoformat(d["event_time"].replace("Z", "+00:00")) + timedelta(days=3)
                       ).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    warehouse = BigQueryWarehouse(BQ_PROJECT, unique("reuse_"), endpoint=bq_endpoint, grpc_endpoint=BQ_GRPC)
    warehouse.ensure_schema()
    try:
        for partition, doc in ((0, d), (1, s)):
            bp = dict_processor(keyring=ring, dedup_table={}, watermark_table={}, sender_table={}, card_table={},
                                now=lambda doc=doc: datetime.fromisoformat(doc["event_time"].replace("Z", "+00:00")))
            result = bp.process([RawItem(partition, 5, orjson.dumps(doc))])
            warehouse.land(build_batch(result.enriched))
            if partition == 0:
                d_hash = result.enriched[0].payment.pii_hash
            else:
                s_hash = result.enriched[0].payment.pii_hash
        assert warehouse.query("SELECT COUNT(*) AS n FROM payment_transactions")[0]["n"] == 2
        warehouse.erase([("k1", d_hash)], mode)
        for table in ("payment_transactions", "payment_transactions_fraud", "pii_masking_audit"):
            rows = warehouse.query(f"SELECT pii_hash FROM {table} WHERE pii_hash IS NOT NULL")
            assert [r["pii_hash"] for r in rows] == [s_hash], table
        assert warehouse.query("SELECT COUNT(*) AS n FROM payment_transactions")[0]["n"] == (
            1 if mode == "delete" else 2)
    finally:
        warehouse.client.delete_dataset(f"{BQ_PROJECT}.{warehouse.dataset}", delete_contents=True,
                                        not_found_ok=True)
        warehouse.close()


def test_a_delete_erasure_removes_the_subjects_dedup_rows_of_a_refused_and_resent_copy(warehouse):
    """The subject's id at offset 0, used again two hours later at 80 (the warehouse refuses it
    as a copy of 0: a dedup audit row) and that payment resent at 81 (the worker's dedup audits
    it against 80). Erasing the subject removes both audit rows, the second one too, whose first
    copy is not the landed payment but the refused copy."""
    from payflow.stages.batch import BatchProcessor
    from payflow.tables.memory import MemoryState

    t0 = datetime(2026, 11, 20, 10, 0, tzinfo=timezone.utc)

    def pay(txn: str, seconds: int) -> bytes:
        t = (t0 + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")
        return orjson.dumps(event("4111111111111111", transaction_id=txn, event_time=t, sender_account_id="acct_1"))

    now = t0 + timedelta(hours=5)
    processor = BatchProcessor(keyring=KeyRing.parse(TEST_HMAC_KEYS), watermark_seconds=3600,
                               committed_offset=lambda p: 0, now=lambda: now,
                               **{t: MemoryState() for t in ("dedup_table", "watermark_table", "sender_table",
                                                             "card_table")})
    items = ([RawItem(0, 0, pay("T", 0))] + [RawItem(0, i, pay(f"t{i}", i * 100)) for i in range(1, 80)]
             + [RawItem(0, 80, pay("T", 7900)), RawItem(0, 81, pay("T", 7900))])
    subject = None
    for chunk in (items[:40], items[40:]):
        result = processor.process(chunk)
        subject = subject or result.enriched[0].payment.pii_hash
        warehouse.land(build_batch(result.enriched, result.duplicates, result.rejections, result.late,
                                   result.watermarks, now))
    audit = warehouse.query("SELECT first_offset, duplicate_offset FROM deduplication_audit")
    assert sorted((r["first_offset"], r["duplicate_offset"]) for r in audit) == [(0, 80), (80, 81)]
    warehouse.erase([("k1", subject)], "delete")
    assert warehouse.query("SELECT COUNT(*) AS n FROM payment_transactions")[0]["n"] == 0
    assert warehouse.query("SELECT COUNT(*) AS n FROM deduplication_audit")[0]["n"] == 0
