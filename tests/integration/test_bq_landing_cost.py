"""The BigQuery landing's work is bounded by the batch, not the table (issue 20), on the
emulator with the official clients. Timing is not asserted (shared, noisy machines, and the
emulator copies a whole table for time travel on every write, whatever the landing): the
test holds what the landing sends instead. At 5,000 and 50,000 target rows it must send the
same statements and streams, no DML, and read the payment tables only through the
DATE(event_time) partitions of the batch. `python -m payflow.bench.landing_cost` gives the
times."""
from __future__ import annotations

import re

import pytest

from payflow.bench.landing_cost import fresh_batch, prefill
from payflow.warehouse.bq import BigQueryWarehouse
from tests.helpers import BQ_GRPC, BQ_PROJECT, unique

pytestmark = pytest.mark.integration
DML = re.compile(r"^\s*(MERGE|INSERT|UPDATE|DELETE)\b", re.I)


def _landing_footprint(wh: BigQueryWarehouse, seed: int) -> tuple[list[str], int]:
    sent: list[str] = []
    query = wh.client.query

    def recording(sql, *args, **kwargs):
        sent.append(sql)
        return query(sql, *args, **kwargs)

    wh.client.query = recording
    try:
        landed = wh.land(fresh_batch(2000, seed))
    finally:
        wh.client.query = query
    assert landed["payment_transactions"] == landed["payment_transactions_fraud"] == 2000
    assert landed["pii_masking_audit"] == 2000 and landed.conflicts == []
    assert not [s for s in sent if DML.match(s)], "a landing must run no DML"
    return sent, wh.storage_landing().last_streams


def test_landing_work_does_not_grow_with_the_table(bq_endpoint):
    # the landing (storage); the benchmark's MergeLanding fails this
    wh = BigQueryWarehouse(BQ_PROJECT, unique("cost_"), endpoint=bq_endpoint, grpc_endpoint=BQ_GRPC)
    wh.ensure_schema()
    footprints = []
    filled = 0
    for seed, size in enumerate((5_000, 50_000), start=1):
        prefill(wh, filled, size - filled)
        filled = size
        footprints.append(_landing_footprint(wh, seed))
    (small, streams_small), (large, streams_large) = footprints
    assert [re.sub(r"\s+", " ", s) for s in small] == [re.sub(r"\s+", " ", s) for s in large]
    assert streams_small == streams_large == 3  # one pending stream per payment table
    for sql in small:
        for table in ("payment_transactions", "payment_transactions_fraud", "pii_masking_audit"):
            for read in re.findall(rf"FROM `[^`]*\.{table}` WHERE ([^)]*?)(?: UNION ALL|$)", sql):
                assert "event_time >= @lo AND event_time <= @hi" in read, read
    # the landed rows are the table's: erasable by DML at once
    n = wh.query("SELECT COUNT(*) AS n FROM payment_transactions WHERE transaction_id LIKE 'new-%'")[0]["n"]
    assert n == 4000
