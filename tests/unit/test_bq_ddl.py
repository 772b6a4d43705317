"""The one transformation the emulator's DDL gets (bq.emulator_ddl), and the pure helpers of
the Storage Write landing (bq_write)."""
from __future__ import annotations

from datetime import datetime, timezone

import pyarrow as pa

from payflow.warehouse import schema
from payflow.warehouse.bq import emulator_ddl
from payflow.warehouse.bq_write import MAX_REQUEST_BYTES, _chunks, _without_erased


def test_emulator_ddl_drops_only_the_key_clause():
    for production in schema.bigquery_statements("p", "d"):
        emulated = emulator_ddl(production)
        assert "NOT ENFORCED" not in emulated and "PRIMARY KEY" not in emulated
        if "PRIMARY KEY" not in production:
            assert emulated == production  # views: untouched
            continue
        # everything else is the production statement, character for character
        start = production.index(", PRIMARY KEY")
        end = production.index("NOT ENFORCED", start) + len("NOT ENFORCED")
        assert emulated == production[:start] + production[end:]
        assert ("PARTITION BY" in production) == ("PARTITION BY" in emulated)
        assert ("CLUSTER BY" in production) == ("CLUSTER BY" in emulated)


def test_erased_subjects_are_dropped_or_unlinked_before_landing():
    now = datetime(2026, 1, 2, tzinfo=timezone.utc)
    cols = {c.name: [None, None, None] for c in schema.tables()["payment_transactions"]}
    cols.update(transaction_id=["a", "b", "c"], pii_hash=["h_del", "h_anon", "h_kept"],
                device_id=["d1", "d2", "d3"], anonymized_at=[None, None, None])
    out = _without_erased("payment_transactions", cols, {"h_del": "delete", "h_anon": "anonymize"}, now)
    assert out["transaction_id"] == ["b", "c"]
    assert out["pii_hash"] == [None, "h_kept"] and out["device_id"] == [None, "d3"]
    assert out["anonymized_at"][0] is not None and out["anonymized_at"][1] is None


def test_append_requests_stay_under_the_request_limit():
    big = pa.table({"s": pa.array(["x" * 1000] * 20_000)})  # ~20 MB
    chunks = _chunks(big)
    assert len(chunks) > 1 and sum(c.num_rows for c in chunks) == 20_000
    assert all(c.nbytes <= MAX_REQUEST_BYTES for c in chunks)
