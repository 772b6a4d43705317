"""The BigQuery landing of a worker in a consumer group (payflow.warehouse.bq_streams), on the
emulator's real Storage Write API: what it reads, what it writes, and what BigQuery itself
refuses to a writer that lost its partitions.

The group's committed offsets and their metadata are kept in memory here (`Group`): the
decision and Faust's commits are what they write; the real coordinator, its generations and
the workers' processes are exercised by tests/fault/test_zombie.py and the other fault tests.
"""
from __future__ import annotations

import re

import pytest

from payflow.runtime.landing_fence import Fenced
from payflow.warehouse.base import PAYMENT_TABLES, build_batch
from payflow.warehouse.bq import BigQueryWarehouse
from payflow.warehouse.bq_streams import GroupLanding
from payflow.warehouse.bq_write import POSITIONED, AppendError
from tests.helpers import BQ_GRPC, BQ_PROJECT, unique
from tests.integration.test_warehouse import processed

pytestmark = pytest.mark.integration
TOPIC = "raw"


class Group:
    """Committed (offset, metadata) per partition and which member owns it."""

    def __init__(self):
        self.committed: dict[tuple[str, int], tuple[int, str]] = {}
        self.owner: dict[tuple[str, int], str] = {}
        self.carried: dict[tuple[str, int], object] = {}

    def member(self, name: str) -> "Member":
        return Member(self, name)


class Member:
    def __init__(self, group: Group, name: str):
        self.group, self.name = group, name

    def _owns(self, keys) -> None:
        if any(self.group.owner.get(k) != self.name for k in keys):
            raise Fenced(f"{self.name} does not own {sorted(keys)}")

    def pending(self, keys):
        self._owns(keys)
        return {k: self.group.committed[k] for k in keys if k in self.group.committed}

    def decide(self, seen, metadata):
        self._owns(seen)
        for key, offset in seen.items():
            self.group.committed[key] = (offset or 0, metadata if isinstance(metadata, str) else metadata[key])

    def carry(self, key, metadata_at):
        self.group.carried[(self.name, key)] = metadata_at

    def faust_commit(self, key, offset):
        """Faust's commit of acks: empty metadata, with what the landing carries."""
        self._owns([key])
        carry = self.group.carried.get((self.name, key))
        self.group.committed[key] = (offset, carry(offset) if carry else "")


@pytest.fixture
def bq(bq_endpoint):
    warehouse = BigQueryWarehouse(BQ_PROJECT, unique("group_"), endpoint=bq_endpoint, grpc_endpoint=BQ_GRPC)
    warehouse.ensure_schema()
    yield warehouse
    warehouse.client.delete_dataset(f"{BQ_PROJECT}.{warehouse.dataset}", delete_contents=True, not_found_ok=True)
    warehouse.close()


def a_batch(result, positions: slice = slice(None)):
    batch = build_batch(result.enriched, result.duplicates, result.rejections, result.late, result.watermarks)
    partitions = {p for source in batch.sources.values() for p in source.get("source_partition", [])}
    offsets = [o for source in batch.sources.values() for o in source.get("source_offset", [])]
    batch.partitions = {(TOPIC, p) for p in partitions}
    batch.starts = {(TOPIC, p): 0 for p in partitions}
    batch.ends = {(TOPIC, p): max(offsets) + 1 for p in partitions}
    return batch


def owned_by(member: str, result) -> tuple[Group, object]:
    """A group whose `member` owns the partitions of the batch of `result`, and the batch."""
    group, batch = Group(), a_batch(result)
    for key in batch.partitions:
        group.owner[key] = member
    return group, batch


def rows_per_key(warehouse) -> dict[str, int]:
    """table -> keys held more than once."""
    out = {t: warehouse.query(f"SELECT COUNT(*) AS n FROM (SELECT transaction_id FROM {t} GROUP BY 1 "
                              "HAVING COUNT(*) > 1)")[0]["n"] for t in PAYMENT_TABLES}
    for table, (pcol, ocol, _) in POSITIONED.items():
        out[table] = warehouse.query(f"SELECT COUNT(*) AS n FROM (SELECT {pcol}, {ocol} FROM {table} GROUP BY 1, 2 "
                                     "HAVING COUNT(*) > 1)")[0]["n"]
    return out


def landing_of(warehouse, member) -> GroupLanding:
    return GroupLanding(warehouse.storage_landing(), member)


def test_a_landing_reads_no_table_but_payment_transactions_and_the_erasure_ledger(bq, monkeypatch):
    result, valid = processed(count=400)
    group, batch = owned_by("a", result)
    read: list[str] = []
    query = bq.client.query

    def recording(sql, *args, **kwargs):
        read.append(sql)
        return query(sql, *args, **kwargs)

    monkeypatch.setattr(bq.client, "query", recording)
    landing = landing_of(bq, group.member("a"))
    landed = landing.land(batch)
    assert landed["payment_transactions"] == len(valid) and landed["late_events"] == len(result.late)
    assert read, "the landing read nothing: the id lookup is gone or the recorder is not in the path"
    named = {t for sql in read for t in re.findall(r"`[^`]*\.([a-z_]+)`", sql)}
    assert named <= {"payment_transactions", "gdpr_erasures"}, named
    monkeypatch.undo()
    assert rows_per_key(bq) == {t: 0 for t in (*PAYMENT_TABLES, *POSITIONED)}


def test_a_replay_lands_nothing_twice_and_streams_do_not_grow_with_landings(bq):
    result, _ = processed(count=400)
    group, batch = owned_by("a", result)
    landing = landing_of(bq, group.member("a"))
    storage = bq.storage_landing()
    created = storage.last_streams
    first = landing.land(batch)
    streams_first = storage.last_streams - created
    # the same range again (a re-read) before Faust's commit: the decision says it is there
    again = landing.land(a_batch(result))
    assert sum(again.values()) == 0, again
    # Faust commits half-way (a replay below the range's end), then the range comes once more
    member = group.member("a")
    for key in batch.partitions:
        member.faust_commit(key, batch.ends[key] // 2)
    replay = a_batch(result)
    replay.starts = {key: batch.ends[key] // 2 for key in replay.partitions}
    third = landing.land(replay)
    assert sum(third.values()) == 0, third
    assert storage.last_streams - created == streams_first, "a landing opened streams of its own"
    assert max(landing.landings_per_stream.values()) == 1 and sum(first.values()) > 0
    assert rows_per_key(bq) == {t: 0 for t in (*PAYMENT_TABLES, *POSITIONED)}


def test_a_worker_that_lost_its_partitions_mid_landing_is_refused_by_bigquery_itself(bq, monkeypatch):
    """A decides and appends its first table, then stops; B owns the partitions now, seals
    A's streams and lands the rest; A's remaining appends are refused by BigQuery."""
    result, valid = processed(count=400)
    group, batch = owned_by("a", result)
    a = landing_of(bq, group.member("a"))
    storage = bq.storage_landing()
    append = type(storage).append_at
    held_back: list[tuple] = []
    first: list[str] = []

    def stop_after_the_first_table(self, table, stream, offset, rows):
        first[:] = first or [table]
        if held_back or table != first[0]:
            held_back.append((table, stream, offset, rows))
            raise KeyboardInterrupt  # A stops here (SIGSTOP in the fault test)
        return append(self, table, stream, offset, rows)

    monkeypatch.setattr(type(storage), "append_at", stop_after_the_first_table)
    with pytest.raises(KeyboardInterrupt):
        a.land(batch)
    monkeypatch.undo()
    for key in batch.partitions:
        group.owner[key] = "b"
    b = GroupLanding(storage, group.member("b"))
    landed = b.land(a_batch(result))
    assert landed["payment_transactions"] == 0  # A's first table is there: not again
    assert landed["payment_transactions_fraud"] == len(valid)
    table, stream, offset, rows = held_back[0]
    with pytest.raises(AppendError):  # A resumes: its stream is finalized
        storage.append_at(table, stream, offset, rows)
    assert a.land(a_batch(result)).fenced  # and its next landing is refused by the group
    assert rows_per_key(bq) == {t: 0 for t in (*PAYMENT_TABLES, *POSITIONED)}
    n = bq.query("SELECT COUNT(*) AS n FROM payment_transactions_fraud")[0]["n"]
    assert n == len(valid)


@pytest.mark.parametrize("mode", ["delete", "anonymize"])
def test_an_erasure_between_the_decision_and_the_appends_still_erases(bq, monkeypatch, mode):
    result, _ = processed(count=200)
    subject = result.enriched[0].payment.pii_hash
    mine = {e.payment.transaction_id for e in result.enriched if e.payment.pii_hash == subject}
    group, batch = owned_by("a", result)
    storage = bq.storage_landing()
    append = type(storage).append_at
    erased = []

    def append_after_an_erasure(self, table, stream, offset, rows):
        if not erased:
            erased.append(bq.erase([("k1", subject)], mode))
        return append(self, table, stream, offset, rows)

    monkeypatch.setattr(type(storage), "append_at", append_after_an_erasure)
    landing_of(bq, group.member("a")).land(batch)
    monkeypatch.undo()
    rows = [r for r in bq.query("SELECT transaction_id, pii_hash FROM payment_transactions")
            if r["transaction_id"] in mine]
    if mode == "delete":
        assert rows == []
    else:
        assert len(rows) == len(mine) and all(r["pii_hash"] is None for r in rows)


def below(batch, offset: int):
    """The batch's rows from raw offsets below `offset` (its range cut there)."""
    from payflow.warehouse.base import LandingBatch
    out = LandingBatch(partitions=batch.partitions, starts=batch.starts,
                       ends={key: offset for key in batch.partitions})
    for name, source in batch.sources.items():
        column = "source_offset" if "source_offset" in source else "duplicate_offset"
        keep = [i for i, o in enumerate(source[column]) if o < offset]
        out.sources[name] = {c: [v[i] for i in keep] for c, v in source.items()}
    return out


def test_floors_a_takeover_found_survive_a_second_takeover(bq, monkeypatch):
    """A lands the first half completely and stops before its acks; B takes over (its seal
    says every table holds the first half), lands the whole range but stops after its first
    table; C takes over: no table gets the first half again."""
    result, valid = processed(count=400)
    group, batch = owned_by("a", result)
    half = max(batch.ends.values()) // 2
    landing_of(bq, group.member("a")).land(below(batch, half))
    storage = bq.storage_landing()
    append = type(storage).append_at
    first: list[str] = []

    def stop_after_the_first_table(self, table, stream, offset, rows):
        first[:] = first or [table]
        if table != first[0]:
            raise KeyboardInterrupt
        return append(self, table, stream, offset, rows)

    for key in batch.partitions:
        group.owner[key] = "b"
    monkeypatch.setattr(type(storage), "append_at", stop_after_the_first_table)
    with pytest.raises(KeyboardInterrupt):
        GroupLanding(storage, group.member("b")).land(a_batch(result))
    monkeypatch.undo()
    for key in batch.partitions:
        group.owner[key] = "c"
    GroupLanding(storage, group.member("c")).land(a_batch(result))
    assert rows_per_key(bq) == {t: 0 for t in (*PAYMENT_TABLES, *POSITIONED)}
    assert bq.query("SELECT COUNT(*) AS n FROM payment_transactions_fraud")[0]["n"] == len(valid)


def test_a_worker_given_its_partitions_back_after_another_sealed_its_streams_lands_at_once(bq, monkeypatch):
    """A lands the first third and keeps its streams; B takes the partitions over (sealing the
    streams A's decision names, A's own) and lands the second third; the partitions come back
    to A. A's first append goes to a sealed stream: the landing is decided again at once with
    new streams (before: an AppendError, retried by the sink as a warehouse outage, seen in
    every scale-in/out campaign run). Every row lands once."""
    result, valid = processed(count=400)
    group, batch = owned_by("a", result)
    end = max(batch.ends.values())
    a = landing_of(bq, group.member("a"))
    a.land(below(batch, end // 3))
    for key in batch.partitions:
        group.owner[key] = "b"
    GroupLanding(bq.storage_landing(), group.member("b")).land(below(a_batch(result), 2 * end // 3))
    for key in batch.partitions:
        group.owner[key] = "a"
    storage = type(a.landing)
    append = storage.append_at
    refused: list[str] = []

    def recording(self, table, stream, offset, rows):
        try:
            return append(self, table, stream, offset, rows)
        except AppendError as exc:
            refused.append(type(exc).__name__)
            raise

    monkeypatch.setattr(storage, "append_at", recording)
    landed = a.land(a_batch(result))  # no exception: decided again in place
    monkeypatch.undo()
    assert refused == ["StreamRefused"], refused  # A's stale stream was refused, once
    assert 0 < landed["payment_transactions_fraud"] < len(valid)  # the last third
    assert rows_per_key(bq) == {t: 0 for t in (*PAYMENT_TABLES, *POSITIONED)}
    assert bq.query("SELECT COUNT(*) AS n FROM payment_transactions_fraud")[0]["n"] == len(valid)


def test_a_landing_decided_again_after_a_refused_append_still_records_a_copys_conflict(bq, monkeypatch):
    """An id at two raw positions in one batch, the first append refused (StreamRefused: the
    landing is decided again with new streams): the copy not landed is still an id_conflict.
    The second decision once got the batch already reduced to one row per id, which had
    forgotten its copies: the copy was in no table and its offset was acked."""
    from dataclasses import replace
    from types import SimpleNamespace

    from payflow.models import EnrichedPayment
    from payflow.warehouse.bq_write import StreamRefused
    result, _ = processed(count=20, seed=13)
    first = result.enriched[0]
    copy = EnrichedPayment(replace(first.payment, source_partition=first.payment.source_partition + 4,
                                   sender_account_id="acct_reusing_the_id"), first.fraud)
    group, batch = owned_by("a", SimpleNamespace(enriched=[*result.enriched, copy], duplicates=[], rejections=[],
                                                 late=[], watermarks={}))
    landing = landing_of(bq, group.member("a"))
    append = landing.landing.append_at
    refused: list[str] = []

    def refused_once(*args, **kwargs):
        if not refused:
            refused.append("once")
            raise StreamRefused("refused for the test")
        return append(*args, **kwargs)

    monkeypatch.setattr(landing.landing, "append_at", refused_once)
    landed = landing.land(batch)
    assert refused and landed["payment_transactions"] == len(result.enriched)
    assert [c[:3] for c in landed.conflicts] == [(first.payment.transaction_id, copy.payment.source_partition,
                                                   copy.payment.source_offset)]
    dlq = bq.query("SELECT transaction_id, source_partition FROM dead_letter_events WHERE reason = 'id_conflict'")
    assert [(r["transaction_id"], r["source_partition"]) for r in dlq] == [
        (first.payment.transaction_id, copy.payment.source_partition)]


def test_a_group_landing_lands_a_payment_whose_id_an_erased_subjects_copy_has_too(bq):
    """As test_warehouse's test of an id shared with an erased subject, through the group
    landing (its decision reads the ledger before it reduces the batch to one row per id)."""
    from dataclasses import replace
    from types import SimpleNamespace

    from payflow.models import EnrichedPayment
    result, _ = processed(count=20, seed=19)
    erased = result.enriched[0]
    other = next(e for e in result.enriched if e.payment.pii_hash != erased.payment.pii_hash)
    copy = EnrichedPayment(replace(other.payment, transaction_id=erased.payment.transaction_id,
                                   source_partition=erased.payment.source_partition,
                                   source_offset=max(e.payment.source_offset for e in result.enriched) + 1),
                           other.fraud)
    bq.erase([("k1", erased.payment.pii_hash)], "delete")
    group, batch = owned_by("a", SimpleNamespace(enriched=[erased, copy], duplicates=[], rejections=[],
                                                 late=[], watermarks={}))
    landed = landing_of(bq, group.member("a")).land(batch)
    assert landed["payment_transactions"] == 1 and landed.conflicts == []
    rows = bq.query("SELECT transaction_id, sender_account_id FROM payment_transactions")
    assert [(r["transaction_id"], r["sender_account_id"]) for r in rows] == [
        (erased.payment.transaction_id, other.payment.sender_account_id)]
