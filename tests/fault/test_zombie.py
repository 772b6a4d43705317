"""Zombie writer: worker A stops (SIGSTOP, as a GC pause, a frozen node or CPU throttling
would) with a landing in flight, stays stopped past the session timeout, worker B takes its
partitions and re-lands them; then A continues (SIGCONT) from exactly where it stopped, no
longer a member. The stop comes at three moments of A's landing (payflow.fault):
before it writes, between two tables' commits, and after its last table commit before its
offsets are committed. Afterwards every table must hold exactly one row per payment (per
raw position for the position-keyed tables) and the sums per currency the manifest's.

BigQuery (the emulator): the workers share one dataset. The landing's decision
(PAYFLOW_BQ_LANDING_FENCE=on, the default; payflow.runtime.landing_fence, docs/bigquery.md)
refuses the resumed zombie; without it a zombie stopped before its write or between two
tables' commits landed its rows a second time (939 and 937 payments in all three payment
tables, one run each). DuckDB has no such case: its file is held by one worker's landing process for that
worker's life (a second worker cannot open it), so a group of workers never lands two writers
into one DuckDB file.

PAYFLOW_TEST_KEEP_DATASETS=1 keeps the BigQuery dataset for a look after the run."""
from __future__ import annotations

import os
import signal
import time

import psutil
import pytest

from payflow.runtime.worker import SHUTDOWN_TIMED_OUT_EXIT
from payflow.warehouse.bq import BigQueryWarehouse
from payflow.warehouse.bq_write import POSITIONED
from tests.fault.test_faults import assert_reconciled_and_clean
from tests.helpers import BQ_GRPC, BQ_PROJECT, Worker, simulate, unique, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.fault]
PAYMENT_TABLES = ("payment_transactions", "payment_transactions_fraud", "pii_masking_audit")


def stopped(worker: Worker) -> bool:
    try:
        return psutil.Process(worker.proc.pid).status() == psutil.STATUS_STOPPED
    except psutil.NoSuchProcess:
        return False


def repeated_keys(warehouse) -> dict[str, int]:
    """table -> keys held more than once (transaction_id; raw position for the position-keyed)."""
    out = {}
    for table in PAYMENT_TABLES:
        out[table] = warehouse.query(
            f"SELECT COUNT(*) AS n FROM (SELECT transaction_id FROM {table} GROUP BY transaction_id "
            "HAVING COUNT(*) > 1)")[0]["n"]
    for table, (pcol, ocol, _) in POSITIONED.items():
        out[table] = warehouse.query(
            f"SELECT COUNT(*) AS n FROM (SELECT {pcol}, {ocol} FROM {table} GROUP BY {pcol}, {ocol} "
            "HAVING COUNT(*) > 1)")[0]["n"]
    return out


def paused_pair(tmp, prefix: str, url: str, env: dict, moment: str) -> tuple[Worker, Worker]:
    """Workers A and B of one group landing in one warehouse; A is started and has stopped
    itself (SIGSTOP) at `moment` of its third landing."""
    (tmp / "a").mkdir()
    (tmp / "b").mkdir()
    a = Worker(tmp / "a", prefix=prefix, app_id=prefix + "app", warehouse=url,
               extra_env={**env, "PAYFLOW_FAULT_PAUSE_LANDING": f"{moment}:3"})
    b = Worker(tmp / "b", prefix=prefix, app_id=prefix + "app", warehouse=url, extra_env=env)
    a.start()
    wait_until(lambda: stopped(a) or not a.alive(), 300, interval=0.2, what=f"A stopped at {moment}")
    assert a.alive(), a.log_tail()
    return a, b


def resume(worker: Worker) -> None:
    """SIGCONT, if it is stopped."""
    if worker.alive() and stopped(worker):
        os.killpg(worker.proc.pid, signal.SIGCONT)


# make chaos runs every moment; make test leaves out the ones a neighbour covers: on BigQuery
# before_write (paused before its first append; between_tables, paused after one, meets the
# same fence with more at stake), on
# DuckDB all but one (the file lock makes the three alike)
ONLY_IN_CHAOS = pytest.mark.chaos_only


@pytest.mark.parametrize("moment", [pytest.param("before_write", marks=ONLY_IN_CHAOS), "between_tables",
                                    "before_offset_commit"])
def test_a_worker_stopped_mid_landing_past_its_session_lands_nothing_twice(kafka, bq_endpoint, tmp, moment):
    prefix = unique("zombie-") + "-"
    simulate(prefix, tmp / "m.json", count=6_000, seed=51, partitions=4, late_ratio=0.01)
    dataset = unique("zombie_")
    env = {"PAYFLOW_BIGQUERY_ENDPOINT": bq_endpoint, "PAYFLOW_SINK_BATCH_SIZE": "500",
           "PAYFLOW_BQ_MIN_LANDING_SECONDS": "0", "PAYFLOW_BQ_LANDING_BATCHES": "2"}
    a, b = paused_pair(tmp, prefix, f"bigquery://{BQ_PROJECT}/{dataset}", env, moment)
    try:
        b.start()  # joins; A misses its heartbeats and is evicted after the session timeout
        b.wait_caught_up(timeout=600)  # B re-landed A's in-flight range and committed everything
        assert stopped(a), "A ran on while it should be stopped"
        resume(a)  # A finishes its landing as a zombie
        wait_until(lambda: not stopped(a), 30, interval=0.2, what="A running again")
        time.sleep(20)  # its landing's remaining writes, its refused decision, its rejoin
        wait_until(lambda: b.alive() and a.alive() and b.lag() == 0, 600, interval=1.0,
                   what="the group caught up again")
    finally:
        resume(a)
        codes = {"a": a.stop(), "b": b.stop()}
    # A stops cleanly. B gets A's partitions as it is SIGTERMed (A's leaving is a rebalance):
    # an assignment that arrives while Faust's consumer thread stops can hold the stop until
    # the bound, exit 75, within the contract (nothing unlanded is acked); it is read again
    assert codes["a"] == 0 and codes["b"] in (0, SHUTDOWN_TIMED_OUT_EXIT), \
        f"{codes}\n" + a.log_tail() + "\n" + b.log_tail()
    warehouse = BigQueryWarehouse(BQ_PROJECT, dataset, endpoint=bq_endpoint, grpc_endpoint=BQ_GRPC)
    try:
        assert repeated_keys(warehouse) == {t: 0 for t in (*PAYMENT_TABLES, *POSITIONED)}
        assert_reconciled_and_clean(b, tmp / "m.json", warehouse, data_dir=tmp / "b" / "data")
    finally:
        if not os.environ.get("PAYFLOW_TEST_KEEP_DATASETS"):
            warehouse.client.delete_dataset(f"{BQ_PROJECT}.{dataset}", delete_contents=True, not_found_ok=True)
        warehouse.close()



@pytest.mark.parametrize("moment", [pytest.param("before_write", marks=ONLY_IN_CHAOS), "between_tables",
                                    pytest.param("before_offset_commit", marks=ONLY_IN_CHAOS)])
def test_on_duckdb_a_worker_stopped_mid_landing_past_its_session_lands_nothing_twice(kafka, tmp, moment):
    """DuckDB: the landing process holds the file for the worker's life, so a second worker on
    the same file is refused by DuckDB's own lock (it exits with the file's holder named),
    and the evicted worker is the only one that can finish the landing. Resumed, its landing
    goes on, its offset commit is refused (stale generation), it joins again and reads from
    the committed offsets: the rows it landed come back as replays, which the warehouse's
    keys (transaction_id, raw position) take once."""
    prefix = unique("zombie-duck-") + "-"
    simulate(prefix, tmp / "m.json", count=6_000, seed=52, partitions=4, late_ratio=0.01)
    shared = tmp / "warehouse.duckdb"
    env = {"PAYFLOW_SINK_BATCH_SIZE": "500", "PAYFLOW_SINK_LANDING_BATCHES": "1"}
    a, b = paused_pair(tmp, prefix, f"duckdb:///{shared}", env, moment)
    try:
        b.start()  # the same group and the same file: DuckDB refuses B's landing process
        wait_until(lambda: not b.alive(), 120, interval=0.5, what="B refused by the file's lock")
        assert b.proc.returncode != 0
        assert "lock" in b.log_tail(200).lower(), b.log_tail()
        time.sleep(15)  # past A's session timeout (10 s): the coordinator evicts A
        assert stopped(a), "A ran on while it should be stopped"
        resume(a)  # A finishes its landing as an evicted writer
        a.wait_caught_up(timeout=600)
    finally:
        resume(a)
        code = a.stop()
        b.stop()
    assert code == 0, a.log_tail()
    assert "fault injection" in a.log_tail(10_000)
    from payflow.warehouse.duck import DuckDBWarehouse
    warehouse = DuckDBWarehouse(str(shared))
    try:
        assert repeated_keys(warehouse) == {t: 0 for t in (*PAYMENT_TABLES, *POSITIONED)}
        assert_reconciled_and_clean(a, tmp / "m.json", warehouse, data_dir=tmp / "a" / "data")
    finally:
        warehouse.close()
