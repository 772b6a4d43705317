"""GDPR erasure in the mask step: an erased subject's payment is dropped (delete) or goes on
without links (anonymize), under whichever key of the ring it was erased, and the erasure
agent's request parsing never raises anything but InvalidErasureRequest."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import orjson
import pytest

from payflow.compliance.gdpr import (
    InvalidErasureRequest, parse_request, refresh_erased_subjects, subject_hashes,
)
from payflow.keys import KeyRing
from payflow.stages.mask import ERASED_SUBJECT, ErasedSubjects
from payflow.stages.batch import BatchProcessor, RawItem
from tests.fakes import dict_processor
from payflow.stages.validation import REASONS
from tests.unit.cards_fixtures import event

OLD = KeyRing.parse("k1:" + "11" * 32)
ROTATED = KeyRing.parse("k2:" + "33" * 32 + ",k1:" + "11" * 32)  # new key first, the old one kept
PAN, EXPIRY, OTHER_PAN = "4539578763621486", "11/29", "4111111111111111"
T0 = datetime(2026, 11, 20, 10, 0, tzinfo=timezone.utc)


def payment(txn: str, pan: str = PAN, minutes: float = 0, sender: str = "acct_subject") -> bytes:
    t = (T0 + timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")
    return orjson.dumps(event(pan, transaction_id=txn, event_time=t, card_expiry=EXPIRY,
                              sender_account_id=sender, user_email="subject@example.org",
                              device_id="dev_subject", ip_address="9.8.7.6"))


def processor(ring: KeyRing, ledger: list[tuple[str, str, str]]) -> tuple[BatchProcessor, dict]:
    tables = {name: {} for name in ("dedup_table", "watermark_table", "sender_table", "card_table")}
    erased = ErasedSubjects(ring)
    erased.add(ledger)
    return dict_processor(keyring=ring, erased=erased, **tables), tables


def erased_under_old_key(mode: str = "delete") -> list[tuple[str, str, str]]:
    # erasure by card before the rotation: the subject's hash under every key of that ring
    return [(k, h, mode) for k, h in subject_hashes(OLD, card=PAN, expiry=EXPIRY, pii_hash=None)]


def test_erased_subject_is_dropped_after_a_key_rotation_with_nothing_of_the_person():
    bp, tables = processor(ROTATED, erased_under_old_key())
    assert [k.key_id for k in bp.erased.other_keys] == ["k1"]
    out = bp.process([RawItem(0, 0, payment("txn_subject_a")), RawItem(0, 1, payment("txn_other", OTHER_PAN,
                                                                                        sender="acct_other")),
                      RawItem(0, 2, payment("txn_subject_b", minutes=1))])
    assert [e.payment.transaction_id for e in out.enriched] == ["txn_other"]
    assert [(r.reason, r.transaction_id, r.remains) for r in out.rejections] == [
        (ERASED_SUBJECT, "txn_subject_a", ""), (ERASED_SUBJECT, "txn_subject_b", "")]
    dlq = b"".join(r.to_dlq_json(T0) for r in out.rejections)
    for value in (b"subject@example.org", b"dev_subject", b"9.8.7.6", b"acct_subject", PAN.encode(), b"1486"):
        assert value not in dlq
    for h in (ROTATED.hashes_for(PAN, EXPIRY)):
        assert h[1].encode() not in dlq
    # no state of the subject: not deduplicated, no sender or card history
    assert "acct_subject" not in tables["sender_table"]
    assert set(tables["dedup_table"]) == {"txn_other"}
    assert ROTATED.active.key_id == "k2" and ROTATED.hashes_for(PAN, EXPIRY)[0][1] not in tables["card_table"]
    # a late copy is dropped too, not sent to the late topic
    late = bp.process([RawItem(0, 3, payment("txn_next", OTHER_PAN, minutes=300, sender="acct_other")),
                       RawItem(0, 4, payment("txn_subject_a"))])
    assert out.late == [] and late.late == []
    assert [(r.reason, r.transaction_id) for r in late.rejections] == [(ERASED_SUBJECT, "txn_subject_a")]


def test_without_the_mask_step_check_a_rotated_subject_would_pass():
    # the old key's hash of the card is what the ledger holds; the rotated ring hashes anew
    old_hash = OLD.hashes_for(PAN, EXPIRY)[0][1]
    bp, _ = processor(ROTATED, [])
    out = bp.process([RawItem(0, 0, payment("txn_subject_a"))])
    assert out.enriched[0].payment.pii_hash != old_hash  # why the landing filter alone cannot see it


def test_the_usual_cost_stays_one_hmac():
    # entries under the active key only: no other key is hashed per payment
    bp, _ = processor(ROTATED, [(k, h, "delete") for k, h in ROTATED.hashes_for(PAN, EXPIRY)[:1]])
    assert bp.erased.other_keys == []
    out = bp.process([RawItem(0, 0, payment("txn_subject_a")), RawItem(0, 1, payment("txn_o", OTHER_PAN))])
    assert [r.reason for r in out.rejections] == [ERASED_SUBJECT]
    assert [e.payment.transaction_id for e in out.enriched] == ["txn_o"]


def test_an_entry_without_key_id_is_checked_under_every_key_and_a_missing_key_is_noted():
    erased = ErasedSubjects(ROTATED)
    erased.add([("", OLD.hashes_for(PAN, EXPIRY)[0][1], "delete"), ("gone-0", "a" * 64, "delete")])
    assert [k.key_id for k in erased.other_keys] == ["k1"] and erased.missing_key_ids == {"gone-0"}
    bp = dict_processor(keyring=ROTATED, erased=erased, dedup_table={}, watermark_table={}, sender_table={},
                        card_table={})
    assert [r.reason for r in bp.process([RawItem(0, 0, payment("txn_subject_a"))]).rejections] == [ERASED_SUBJECT]


def test_anonymize_mode_lets_the_money_through_without_links():
    bp, tables = processor(ROTATED, erased_under_old_key("anonymize"))
    out = bp.process([RawItem(0, 0, payment("txn_subject_a"))])
    assert out.rejections == []
    p = out.enriched[0].payment
    old_hash = OLD.hashes_for(PAN, EXPIRY)[0][1]
    # the ledger's hash, so the landing (which joins the ledger) lands it anonymized
    assert (p.pii_hash, p.pii_key_id) == (old_hash, "k1")
    assert (p.device_id, p.ip_address, p.user_email, p.credit_card_masked, p.card_expiry_masked) == ("", "", None, "", "")
    assert str(p.amount) == "125.50"


def test_delete_wins_over_anonymize_and_entries_only_accumulate():
    erased = ErasedSubjects(ROTATED)
    h = OLD.hashes_for(PAN, EXPIRY)[0][1]
    assert refresh_erased_subjects(erased, [("k1", h, "anonymize")]) == 1
    assert refresh_erased_subjects(erased, [("k1", h, "delete")]) == 0
    assert erased.modes[h] == "delete"
    assert refresh_erased_subjects(erased, []) == 0 and len(erased) == 1


def test_the_dlq_reason_is_in_the_vocabulary():
    assert ERASED_SUBJECT in REASONS


GOOD = {"request_id": "r1", "sender_account_id": "acct_a", "pii_hashes": ["a" * 64, "b" * 64],
        "pii_key_ids": ["k2", "k1"], "mode": "delete", "transaction_ids": ["txn_1"]}


@pytest.mark.parametrize("raw", [
    None, b"", b"{not json", b"\xff\xfe", b"[1, 2]", b'"text"', b"null", b"42",
    orjson.dumps({k: v for k, v in GOOD.items() if k != "sender_account_id"}),
    orjson.dumps({k: v for k, v in GOOD.items() if k != "pii_hashes"}),
    orjson.dumps({**GOOD, "request_id": 7}),
    orjson.dumps({**GOOD, "sender_account_id": ["acct_a"]}),
    orjson.dumps({**GOOD, "pii_hashes": "a" * 64}),
    orjson.dumps({**GOOD, "pii_hashes": [1, 2]}),
    orjson.dumps({**GOOD, "pii_hashes": ["4539578763621486"]}),
    orjson.dumps({**GOOD, "transaction_ids": {"a": 1}}),
    orjson.dumps({**GOOD, "pii_key_ids": ["k2"]}),
    orjson.dumps({**GOOD, "mode": "shred"}),
])
def test_a_malformed_erasure_request_is_named_never_raised_otherwise(raw):
    with pytest.raises(InvalidErasureRequest) as info:
        parse_request(raw)
    assert "4539578763621486" not in str(info.value) and "acct_a" not in str(info.value)


def test_a_valid_request_and_one_from_an_older_sender():
    r = parse_request(orjson.dumps(GOOD))
    assert r.ledger_entries() == [("k2", "a" * 64, "delete"), ("k1", "b" * 64, "delete")]
    older = parse_request(orjson.dumps({k: v for k, v in GOOD.items() if k not in ("pii_key_ids", "mode")}))
    assert older.pii_key_ids == ["", ""] and older.ledger_entries() == []
