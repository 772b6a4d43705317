"""GDPR erasure survives a key rotation, on real workers, Kafka and DuckDB.

A subject is erased by card; the key is rotated (a new active key first, the old one kept);
then a late copy of one of its payments, a new payment with the same card, and a replay of
the whole raw topic by a new consumer group bring nothing of it back: not in the warehouse,
not on payments-enriched or the late topic, not in the sender or card state. And a
malformed erasure request goes to the DLQ while the erasure agent goes on."""
from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import orjson
import pytest

from payflow.keys import KeyRing
from payflow.settings import ROOT
from payflow.simulator.generator import EventStream, SimOptions
from payflow.tables.changelog import unpack_changes
from payflow.warehouse.duck import DuckDBWarehouse
from tests import helpers
from tests.helpers import TEST_HMAC_KEYS, Worker, dlq_records, list_topics, read_topic, unique, wait_until
from tests.unit.cards_fixtures import event

pytestmark = pytest.mark.integration
ROTATED = "test-2:" + "6b" * 32 + "," + TEST_HMAC_KEYS  # new key first, the old one kept
PAN, EXPIRY, EMAIL, SENDER = "4539578763621486", "11/29", "subject@example.org", "acct_erasedsubject"
DEVICE, IP = "dev_erasedsubject", "203.0.113.77"
D0 = (datetime.now(timezone.utc) - timedelta(days=3)).replace(minute=0, second=0, microsecond=0)


def subject_payment(txn: str, minutes: float) -> tuple[bytes, bytes]:
    t = (D0 + timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")
    return SENDER.encode(), orjson.dumps(event(PAN, transaction_id=txn, event_time=t, card_expiry=EXPIRY,
                                               sender_account_id=SENDER, user_email=EMAIL, device_id=DEVICE,
                                               ip_address=IP, amount="42.10"))


def other_payment(txn: str, minutes: float) -> tuple[bytes, bytes]:
    t = (D0 + timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")
    return b"acct_bystander", orjson.dumps(event("4111111111111111", transaction_id=txn, event_time=t,
                                                 sender_account_id="acct_bystander"))


def produce(topic: str, records: list[tuple[bytes | None, bytes]], partitions: int = 4) -> None:
    helpers.produce(topic, records, partitions=partitions)


def query(worker: Worker, sql: str) -> list[dict]:
    w = DuckDBWarehouse(worker.warehouse[len("duckdb:///"):])
    try:
        return w.query(sql)
    finally:
        w.close()


def cli(worker: Worker, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "payflow.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          env=worker.env, timeout=300)


def worker_log(worker: Worker) -> str:
    path = Path(worker.env["PAYFLOW_DATA_DIR"]) / "logs" / "worker.log"
    return path.read_text() if path.exists() else ""


def subject_values(ring: KeyRing) -> list[bytes]:
    """What would identify the subject in an output: hashes under both keys, email, device,
    IP, sender account."""
    return [h.encode() for _, h in ring.hashes_for(PAN, EXPIRY)] + [
        EMAIL.encode(), DEVICE.encode(), IP.encode(), SENDER.encode()]


def changelog_entries(app_id: str, after: dict[tuple[str, int], int] | None = None) -> list[tuple[str, bytes, bytes | None]]:
    """Every state change in the group's changelogs (after the given offsets)."""
    out = []
    for topic in sorted(t for t in list_topics() if t.startswith(app_id + "-") and t.endswith("-changelog")):
        for record in read_topic(topic):
            if after and record.offset < after.get((topic, record.partition), 0):
                continue
            if record.value and record.value.startswith(b"PFS1"):
                out += [(topic, k, v) for k, v in unpack_changes(record.value)]
    return out


def end_offsets(app_id: str) -> dict[tuple[str, int], int]:
    ends: dict[tuple[str, int], int] = {}
    for topic in (t for t in list_topics() if t.startswith(app_id + "-") and t.endswith("-changelog")):
        for record in read_topic(topic):
            ends[(topic, record.partition)] = max(ends.get((topic, record.partition), 0), record.offset + 1)
    return ends


def test_erasure_survives_key_rotation_late_copy_new_payment_and_replay(kafka, tmp_path):
    prefix = unique("erot-") + "-"
    raw = prefix + "payment-events"
    subject = [subject_payment(f"txn_erasedsubj{c}", m) for c, m in zip("abcd", (0, 10, 20, 300))]
    background = [(m.key, m.value) for m in EventStream(SimOptions(count=300, seed=8, start_time=D0,
                                                                   malformed_ratio=0.0))]
    produce(raw, subject[:3] + background + subject[3:] + [other_payment("txn_bystander1", 301)])
    old, rotated = KeyRing.parse(TEST_HMAC_KEYS), KeyRing.parse(ROTATED)
    subject_ids = {f"txn_erasedsubj{c}" for c in "abcd"} | {"txn_erasedsubjnew"}

    worker = Worker(tmp_path, prefix=prefix).start()
    try:
        worker.wait_caught_up(timeout=240)
    finally:
        assert worker.stop() == 0, worker.log_tail()
    old_hash = old.hashes_for(PAN, EXPIRY)[0][1]
    assert query(worker, f"SELECT COUNT(*) AS n FROM payment_transactions WHERE pii_hash = '{old_hash}'")[0]["n"] == 4
    assert query(worker, f"SELECT COUNT(*) AS n FROM pii_masking_audit WHERE user_email = '{EMAIL}'")[0]["n"] == 4

    erased = cli(worker, "gdpr", "erase", "--card", PAN, "--expiry", EXPIRY, "--mode", "delete")
    assert erased.returncode == 0, erased.stdout + erased.stderr
    assert PAN not in erased.stdout + erased.stderr
    enriched_before = [r for r in read_topic(prefix + "payments-enriched") if SENDER.encode() in r.value]
    assert len(enriched_before) == 4  # published before the erasure (Kafka keeps them until retention)
    state_mark = end_offsets(worker.app_id)

    # the key rotation: the same group restarts with a new active key, the old one kept
    worker.env["PAYFLOW_HMAC_KEYS"] = ROTATED
    worker.start()
    try:
        wait_until(lambda: "stage gdpr: erasure" in worker_log(worker), 120, what="the erasure request")
        # a late copy of one of the subject's payments, a new payment with the same card
        produce(raw, [subject[0], subject_payment("txn_erasedsubjnew", 310), other_payment("txn_bystander2", 311)])
        worker.wait_caught_up(timeout=240)
    finally:
        assert worker.stop() == 0, worker.log_tail()

    # a new consumer group replays the whole raw topic into the same warehouse, rotated keys
    replay = Worker(tmp_path, prefix=prefix, app_id=unique("erot-replay-"), warehouse=worker.warehouse,
                    extra_env={"PAYFLOW_HMAC_KEYS": ROTATED, "PAYFLOW_DATA_DIR": str(tmp_path / "replay-data")})
    replay.log_path = tmp_path / "replay.log"
    replay.start()
    try:
        replay.wait_caught_up(timeout=240)
    finally:
        assert replay.stop() == 0, replay.log_tail()

    # the warehouse: nothing of the subject in any table but the ledger, the rest went on
    ids = ", ".join(f"'{t}'" for t in sorted(subject_ids))
    for table in ("payment_transactions", "payment_transactions_fraud", "late_events"):
        assert query(worker, f"SELECT COUNT(*) AS n FROM {table} WHERE transaction_id IN ({ids}) "
                             f"OR sender_account_id = '{SENDER}'")[0]["n"] == 0, table
    audit = query(worker, f"SELECT transaction_id, user_email, pii_hash, erasure_requested FROM pii_masking_audit "
                          f"WHERE transaction_id IN ({ids})")
    assert {a["transaction_id"] for a in audit} == subject_ids - {"txn_erasedsubjnew"}  # the erased, marked so
    assert all(a["user_email"] is None and a["pii_hash"] is None and a["erasure_requested"] for a in audit)
    strings = DuckDBWarehouse(worker.warehouse[len("duckdb:///"):])
    try:
        for table, cols in strings.string_columns().items():
            if table == "gdpr_erasures":
                continue  # the ledger keeps the keyed hashes, to block exactly this
            for col in cols:
                for value in subject_values(rotated):
                    n = strings.query(f"SELECT COUNT(*) AS n FROM {table} WHERE {col} = '{value.decode()}'")[0]["n"]
                    assert n == 0, f"{table}.{col} holds the subject"
    finally:
        strings.close()
    assert query(worker, "SELECT COUNT(*) AS n FROM payment_transactions "
                         "WHERE transaction_id IN ('txn_bystander1', 'txn_bystander2')")[0]["n"] == 2
    # accounted for: each dropped payment is a DLQ row with its id and reason, nothing else
    dropped = query(worker, "SELECT transaction_id, remains FROM dead_letter_events WHERE reason = 'erased_subject'")
    assert {d["transaction_id"] for d in dropped} == subject_ids and all(not d["remains"] for d in dropped)

    # the topics: nothing published for the subject after the erasure
    assert [r for r in read_topic(prefix + "payments-enriched") if SENDER.encode() in r.value] == enriched_before
    for topic in ("payment-events-late", "payment-events-dlq", "payments-enriched"):
        for record in read_topic(prefix + topic):
            if record in enriched_before:
                continue
            for value in subject_values(rotated)[:-1]:  # hashes, email, device, IP
                assert value not in record.value, f"{topic} carries the subject"
    dlq = [orjson.loads(r.value) for r in read_topic(prefix + "payment-events-dlq")]
    assert {d["transaction_id"] for d in dlq if d["reason"] == "erased_subject"} == subject_ids

    # the state: the replay group never held the subject; the first group only deleted it
    hashes = [h.encode() for _, h in rotated.hashes_for(PAN, EXPIRY)]
    for _, key, _ in changelog_entries(replay.app_id):
        assert key not in (SENDER.encode(), *hashes) and key.decode() not in subject_ids
    after = changelog_entries(worker.app_id, state_mark)
    assert any(key == SENDER.encode() and value is None for _, key, value in after)  # the erasure's delete
    for topic, key, value in after:
        if key in (SENDER.encode(), *hashes) or key.decode() in subject_ids:
            assert value is None, f"{topic}: the subject's state came back"


def test_a_malformed_erasure_request_goes_to_the_dlq_and_the_agent_goes_on(kafka, tmp_path):
    prefix = unique("ereq-") + "-"
    raw = prefix + "payment-events"
    produce(raw, [subject_payment("txn_erasedsubja", 0), other_payment("txn_bystander1", 1)])
    worker = Worker(tmp_path, prefix=prefix).start()
    try:
        worker.wait_caught_up(timeout=180)
        h = KeyRing.parse(TEST_HMAC_KEYS).hashes_for(PAN, EXPIRY)[0]
        good = {"request_id": "req-valid", "sender_account_id": SENDER, "pii_hashes": [h[1]],
                "pii_key_ids": [h[0]], "mode": "delete", "transaction_ids": ["txn_erasedsubja"]}
        bad = [b"{not json", b"[1, 2, 3]", orjson.dumps({"request_id": "req-missing"}),
               orjson.dumps({**good, "request_id": "req-types", "pii_hashes": [7], "transaction_ids": "x"}),
               orjson.dumps({**good, "request_id": "req-sender", "sender_account_id": {"a": 1}})]
        produce(prefix + "payflow-erasure-requests", [(SENDER.encode(), b) for b in bad] +
                [(SENDER.encode(), orjson.dumps(good))])
        wait_until(lambda: "erasure req-valid removed" in worker_log(worker), 120, what="the valid request")
        assert worker.alive()
        # the agent did not crash (Faust would restart it, and log the crash)
        assert "Crashed" not in worker_log(worker) and "Crashed" not in worker.log_path.read_text()
        removed = [line for line in worker_log(worker).splitlines() if "erasure req-valid removed" in line]
        assert "removed 0 state" not in removed[0]
        # the subject's next payment is dropped at once, before any ledger refresh
        produce(raw, [subject_payment("txn_erasedsubjb", 2)])
        worker.wait_caught_up(timeout=120)
    finally:
        assert worker.stop() == 0, worker.log_tail()
    dlq = dlq_records(prefix + "payment-events-dlq")
    invalid = [d for d in dlq if d["reason"] == "invalid_erasure_request"]
    assert len(invalid) == len(bad)
    assert all(d["source_topic"] == prefix + "payflow-erasure-requests" and d["detail"] and not d["remains"]
               for d in invalid)
    assert sorted(d["source_offset"] for d in invalid) == list(range(len(bad)))
    assert [d["transaction_id"] for d in dlq if d["reason"] == "erased_subject"] == ["txn_erasedsubjb"]


def test_the_ledger_reads_back_for_the_worker_on_both_backends(warehouse):
    """What a worker loads at start and at each refresh: every hash of every erasure, with its
    key id and mode (erased by --pii-hash alone: the key id its rows carry)."""
    from payflow.compliance.gdpr import erase, load_erased_subjects, subject_hashes
    from payflow.settings import Settings

    old, rotated = KeyRing.parse(TEST_HMAC_KEYS), KeyRing.parse(ROTATED)
    erase(Settings.from_env(), warehouse, subject_hashes(rotated, card=PAN, expiry=EXPIRY, pii_hash=None), "delete",
          send_state_requests=False)
    other = "b" * 64
    erase(Settings.from_env(), warehouse, [("", other)], "anonymize", send_state_requests=False)
    entries = sorted(warehouse.erased_subjects())
    assert entries == sorted([(k, h, "delete") for k, h in rotated.hashes_for(PAN, EXPIRY)] +
                             [("", other, "anonymize")])
    erased = load_erased_subjects(KeyRing.parse("test-3:" + "7c" * 32 + "," + ROTATED), warehouse)
    assert len(erased) == 3 and {k.key_id for k in erased.other_keys} == {"test-1", "test-2"}
    assert erased.match(_validated(), "x" * 64) == old.hashes_for(PAN, EXPIRY)[0][1] or \
        erased.match(_validated(), "x" * 64) == rotated.hashes_for(PAN, EXPIRY)[0][1]


def _validated():
    from payflow.stages.validation import decode
    return decode(subject_payment("txn_x", 0)[1], now=datetime.now(timezone.utc))
