"""One source for the payment's fields: the records (payflow.models) against the DDL (sql/).

The warehouse batch's columns, the enriched JSON and the late JSON are derived from the
dataclasses; these tests fail when a column is added to the DDL and not to the records, or a
field to the records and not to the DDL. Also: the erasure plan renders for both dialects,
and scripts/output_digest.py is stable and sees one changed output byte.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import shutil
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import orjson
import pytest

from payflow.keys import KeyRing
from payflow.models import (
    ENRICHED_FIELDS, DedupAudit, EnrichedPayment, FraudAssessment, MaskedPayment, Rejection,
)
from payflow.settings import ROOT
from payflow.stages.mask import mask
from payflow.stages.validation import ValidatedPayment
from payflow.warehouse import base, schema

NOW = datetime(2026, 1, 5, 10, 0, tzinfo=timezone.utc)
CARD_FIELDS = ("pan", "cvv", "expiry")


def _payment(**changes) -> MaskedPayment:
    values = {f.name: f"v_{f.name}" for f in dataclasses.fields(MaskedPayment)}
    values.update(event_time=NOW, masked_at=NOW, amount=Decimal("12.50"), source_partition=1, source_offset=7)
    values.update(changes)
    return MaskedPayment(**values)


def _batch() -> base.LandingBatch:
    p = _payment()
    dup = DedupAudit("v_transaction_id", 0, 3, NOW, 1, 7, NOW, NOW)
    rej = Rejection("invalid_json", "detail", "remains", source_partition=2, source_offset=5)
    return base.build_batch([EnrichedPayment(p, FraudAssessment(70, ["a", "b"], 10, 2, 1))], [dup], [rej], [p],
                            {1: 5}, NOW)


def mismatches(batch: base.LandingBatch) -> list[str]:
    """Columns of the DDL no record field fills, and record fields no table takes."""
    problems = []
    used: dict[str, set[str]] = {}
    for table in base.LANDING_ORDER:
        source_name = base._source_of(table)
        source = batch.sources[source_name]
        for column in schema.tables()[table]:
            name = base._COLUMN_IN_SOURCE.get((table, column.name), column.name)
            if name not in source:
                problems.append(f"{table}.{column.name}: no record field")
            used.setdefault(source_name, set()).add(name)
    for source_name, source in batch.sources.items():
        problems += [f"{source_name}: field {name} lands nowhere" for name in sorted(set(source) - used[source_name])]
    return problems


def test_every_ddl_column_comes_from_a_record_field_and_every_field_lands():
    assert mismatches(_batch()) == []


@pytest.fixture
def ddl_with_extra_column(tmp_path, monkeypatch):
    """sql/ with one column added to payment_transactions only."""
    for path in (ROOT / "sql").glob("*.sql"):
        shutil.copy(path, tmp_path / path.name)
    ddl = tmp_path / "001_tables.sql"
    ddl.write_text(ddl.read_text().replace("  anonymized_at TIMESTAMP,\n", "  anonymized_at TIMESTAMP,\n  loyalty_tier STRING,\n", 1))
    monkeypatch.setenv("PAYFLOW_SQL_DIR", str(tmp_path))
    for cached in (schema.parsed, schema.tables, schema.primary_keys):
        cached.cache_clear()
    yield
    monkeypatch.delenv("PAYFLOW_SQL_DIR")
    for cached in (schema.parsed, schema.tables, schema.primary_keys):
        cached.cache_clear()


def test_a_column_added_to_the_ddl_alone_is_caught(ddl_with_extra_column):
    assert mismatches(_batch()) == ["payment_transactions.loyalty_tier: no record field"]


def test_a_field_added_to_the_payment_alone_is_caught(monkeypatch):
    extended = dataclasses.make_dataclass("Extended", [("loyalty_tier", str, dataclasses.field(default=""))],
                                          bases=(MaskedPayment,), slots=True)
    others = {k: v for k, v in _batch().sources.items() if k != base.PAYMENTS}
    monkeypatch.setattr(base, "_PAYMENT_PLAN", base._plan(extended))
    p = extended(**{f.name: getattr(_payment(), f.name) for f in dataclasses.fields(MaskedPayment)},
                 loyalty_tier="gold")
    batch = base.build_batch([EnrichedPayment(p, FraudAssessment(1, [], 0, 1, 1))], now=NOW)
    batch.sources.update(others)
    assert mismatches(batch) == ["payments: field loyalty_tier lands nowhere"]


def test_the_enriched_record_is_the_payment_without_the_email_plus_the_published_scores():
    p = _payment()
    doc = orjson.loads(EnrichedPayment(p, FraudAssessment(70, ["a"], 10, 2, 1)).to_enriched_json())
    assert tuple(doc) == ENRICHED_FIELDS
    assert "user_email" not in doc and doc["schema_version"] == 1 and doc["is_high_risk"] is True
    assert doc["amount"] == "12.50" and doc["masked_at"] == "2026-01-05T10:00:00+00:00"
    for f in dataclasses.fields(MaskedPayment):
        if f.type == "str" and f.name != "user_email":
            assert doc[f.name] == getattr(p, f.name)
    # masked_at given as text is written as that text
    assert orjson.loads(EnrichedPayment(p, FraudAssessment(0, [], 0, 1, 1)).to_enriched_json("T"))["masked_at"] == "T"
    # every field of the record but the envelope is a warehouse column (or the masking audit's)
    columns = {c.name for t in base.PAYMENT_TABLES for c in schema.tables()[t]}
    assert set(ENRICHED_FIELDS) - {"schema_version"} <= columns | {"masking_reason"}


def test_mask_carries_every_validated_field_but_the_card_data():
    validated = ValidatedPayment(
        transaction_id="txn_1", event_time=NOW, sender_account_id="acct_a", receiver_account_id="acct_b",
        amount=Decimal("3.20"), currency="EUR", ip_address="10.0.0.1", geo_region="EU", device_id="dev_1",
        merchant_id="m_1", user_email="a@example.com", pan="4" + "0" * 14 + "2", cvv="123", expiry="12/30")
    masked = mask(validated, KeyRing.parse("t-1:" + "ab" * 32).active, NOW)
    # card_like is mask's instruction (which fields to tokenize), carried as masking_reason's flag
    carried = [f.name for f in dataclasses.fields(ValidatedPayment) if f.name not in (*CARD_FIELDS, "card_like")]
    assert {f.name for f in dataclasses.fields(MaskedPayment)} >= set(carried)
    assert [getattr(masked, f) for f in carried] == [getattr(validated, f) for f in carried]


def test_the_erasure_plan_renders_for_both_dialects_and_covers_every_erasable_table():
    from payflow.compliance.gdpr import LEDGER_COMPLETE, LEDGER_INSERT, SUBJECT_TRANSACTIONS, erasure_plan
    for mode in ("delete", "anonymize"):
        plan = erasure_plan(mode)
        assert set(base.ERASABLE) <= {t for t, _ in plan}
        for _, sql in plan + [("", LEDGER_INSERT), ("", SUBJECT_TRANSACTIONS), ("", LEDGER_COMPLETE)]:
            assert "@" not in schema.render_sql(sql, "duckdb")
            assert "`p-1`.ds." in schema.render_sql(sql, "bigquery", project="p-1", dataset="ds")
    assert "deduplication_audit" in {t for t, _ in erasure_plan("delete")}
    with pytest.raises(ValueError):
        erasure_plan("shred")


def _digest_module():
    spec = importlib.util.spec_from_file_location("output_digest", ROOT / "scripts" / "output_digest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_output_digest_is_stable_and_sees_one_changed_byte(monkeypatch):
    od = _digest_module()
    first = od.digest(events=3_000, replay=300)
    assert first == od.digest(events=3_000, replay=300)
    real = od.enriched_records

    def one_byte_changed(result):
        records = real(result)
        if records and not getattr(one_byte_changed, "done", False):
            txn, p, o, key, value = records[0]
            records[0] = (txn, p, o, key, value.replace(b'"schema_version":1', b'"schema_version":2', 1))
            one_byte_changed.done = True
        return records

    monkeypatch.setattr(od, "enriched_records", one_byte_changed)
    assert od.digest(events=3_000, replay=300) != first


def test_high_risk_is_judged_by_the_one_threshold():
    from payflow.models import HIGH_RISK_ABOVE
    from payflow.stages import fraud
    assert fraud.HIGH_RISK_ABOVE == HIGH_RISK_ABOVE
    assert not FraudAssessment(HIGH_RISK_ABOVE, [], 0, 1, 1).is_high_risk
    assert FraudAssessment(HIGH_RISK_ABOVE + 1, [], 0, 1, 1).is_high_risk
    assert base.to_us(NOW + timedelta(microseconds=1)) - base.to_us(NOW) == 1
