"""An erasure that reaches the ledger after a BigQuery landing read it, and runs its DML before
the landing commits, must not leave the subject's rows behind: the landing reads the ledger
again after its commits and applies the erasure to what it just landed."""
from __future__ import annotations

import pytest

from payflow.warehouse.base import build_batch
from payflow.warehouse.bq import BigQueryWarehouse
from payflow.warehouse.bq_write import StorageWriteLanding
from tests.helpers import BQ_GRPC, BQ_PROJECT, unique
from tests.integration.test_warehouse import processed

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("mode", ["delete", "anonymize"])
def test_an_erasure_between_the_lookup_and_the_commit_still_erases(bq_endpoint, monkeypatch, mode):
    warehouse = BigQueryWarehouse(BQ_PROJECT, unique("erase_race_"), endpoint=bq_endpoint, grpc_endpoint=BQ_GRPC)
    warehouse.ensure_schema()
    try:
        result, _ = processed(count=200)
        subject = result.enriched[0].payment.pii_hash
        mine = [e.payment.transaction_id for e in result.enriched if e.payment.pii_hash == subject]
        commit = StorageWriteLanding.commit_stream
        erased = []

        def commit_after_an_erasure(self, table, stream, **options):
            if not erased:  # the erasure runs while this landing is between lookup and commit
                erased.append(warehouse.erase([("k1", subject)], mode))
            return commit(self, table, stream, **options)

        monkeypatch.setattr(StorageWriteLanding, "commit_stream", commit_after_an_erasure)
        warehouse.land(build_batch(result.enriched))
        assert erased and sum(erased[0].rows_affected.values()) == 0  # its DML ran before the rows were there
        rows = [r for r in warehouse.query("SELECT transaction_id, pii_hash FROM payment_transactions")
                if r["transaction_id"] in mine]
        if mode == "delete":
            assert rows == []
        else:
            assert len(rows) == len(mine) and all(r["pii_hash"] is None for r in rows)
        others = warehouse.query("SELECT count(*) AS n FROM payment_transactions")[0]["n"]
        assert others == len(result.enriched) - (len(mine) if mode == "delete" else 0)
    finally:
        warehouse.client.delete_dataset(f"{BQ_PROJECT}.{warehouse.dataset}", delete_contents=True, not_found_ok=True)
        warehouse.close()
