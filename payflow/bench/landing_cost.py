"""Landing cost against table size, on the BigQuery emulator: Storage Write API vs MERGE.

    python -m payflow.bench.landing_cost [--sizes 10000,100000,1000000] [--batch 2000] [--repeat 3]

Two fresh datasets (one per landing) are pre-filled to each size, in one run: every payment
table to `size` rows and the position-keyed tables in proportion (SIDE_SHARE), by one
Parquet load job per table and step, event times over a year from HISTORY_START_DAYS ago.
After one untimed small landing and write per landing (connections, the emulator's caches),
at each size and for each landing, `repeat` times, alternately:
  (a) landing one fresh batch: `batch` payments with event times in the history's second
      day (dates every size holds), plus SIDE_SHARE of that in DLQ, late and dedup rows;
  (b) the emulator's floor: the smallest write through the same API to each table (a)
      writes: storage, a 1-row pending stream per table, committed (what the landing does
      with 2,000 rows); merge, a 1-row INSERT job per table (a 1-row MERGE would still join
      the whole target, which is the landing's own cost, so it is shown apart, `merge-1row`).
  (c) = median(a) - median(b): the landing's own cost.
bqemulator copies the whole table into a time-travel snapshot on every write and does not
prune partitions, so (a) and (b) grow with the table on it whatever the landing; (c) is what
the landing adds. Flat means max/min of (c) <= 1.25/0.75 (every size within +-25% of one
value). Needs the emulator (scripts/bqemulator.sh start); PAYFLOW_BENCH_BQ_ENDPOINT (default
http://127.0.0.1:$PAYFLOW_LOCAL_BQ_PORT, 9050) and PAYFLOW_LOCAL_BQ_GRPC_PORT (9060).
"""
from __future__ import annotations

import argparse
import io
import os
import random
import statistics
import string
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, Callable

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from google.cloud import bigquery

from payflow.settings import grpc_endpoint_beside
from payflow.warehouse import schema
from payflow.warehouse.base import (
    ERASABLE, ERASED_AT, ERASED_FLAG, ID_CONFLICT, LANDING_ORDER, NULLED, PAYMENT_TABLES, PAYMENTS, LandingBatch, Landed,
    anonymized, conflict_detail, find_conflicts, to_us,
)
from payflow.warehouse.bq import BigQueryWarehouse
from payflow.warehouse.bq_write import POSITIONED, _ARROW, _arrow

PROJECT = "payflow-local"
_DAY_US = 86_400_000_000
HISTORY_START_DAYS = 366  # the history starts at midnight UTC this many days ago
ROWS_PER_YEAR = 1_000_000  # the n-th payment's event time is n / ROWS_PER_YEAR of a year in
# rows of the position-keyed tables per payment row, pre-filled and in each batch
SIDE_SHARE = {"dead_letter_events": 0.01, "late_events": 0.005, "deduplication_audit": 0.01}
# time columns that follow a row's place in history (the rest of the TIMESTAMPs too, if NOT NULL)
_TIME = {"event_time", "rejected_at", "received_at", "detected_at", "first_event_time", "duplicate_event_time",
         "masked_at", "masking_timestamp", "ingestion_time", "watermark"}


def _endpoint() -> str:
    return os.environ.get("PAYFLOW_BENCH_BQ_ENDPOINT") or os.environ.get("PAYFLOW_TEST_BQ_ENDPOINT") or \
        f"http://127.0.0.1:{os.environ.get('PAYFLOW_LOCAL_BQ_PORT', '9050')}"


def history_start_us(now: datetime | None = None) -> int:
    now = now or datetime.now(timezone.utc)
    day = datetime(now.year, now.month, now.day, tzinfo=timezone.utc) - timedelta(days=HISTORY_START_DAYS)
    return to_us(day)


def _history(table: str, start: int, count: int, t0_us: int, step_us: int) -> pa.Table:
    """Rows start..start+count-1 of `table`'s synthetic history, oldest first: row n at
    t0 + n * step, ids pre-<n>, raw positions (n % 16, n)."""
    n = pa.array(range(start, start + count), type=pa.int64())
    pool = pa.array([f"v{i}" for i in range(997)])
    spread = pool.take(pa.array([i % 997 for i in range(start, start + count)], type=pa.int32()))
    times = pa.array([t0_us + i * step_us for i in range(start, start + count)], type=pa.int64()) \
        .cast(_ARROW["TIMESTAMP"])
    cols = {}
    for c in schema.tables()[table]:
        if c.name == "transaction_id":
            cols[c.name] = pa.array([f"pre-{i:09d}" for i in range(start, start + count)])
        elif c.bq_type == "TIMESTAMP":
            cols[c.name] = times if c.name in _TIME or not c.nullable else pa.nulls(count, _ARROW["TIMESTAMP"])
        elif c.bq_type == "NUMERIC":
            cols[c.name] = pa.repeat(pa.scalar(Decimal("12.34"), _ARROW["NUMERIC"]), count)
        elif c.bq_type == "INT64":
            cols[c.name] = pc.bit_wise_and(n, pa.scalar(15, pa.int64())) if c.name.endswith("partition") else n
        elif c.bq_type == "BOOL":
            cols[c.name] = pa.repeat(pa.scalar(False), count)
        else:
            cols[c.name] = spread
    return pa.table(cols)


def _side_count(table: str, payments: int) -> int:
    return int(payments * SIDE_SHARE[table])


def prefill(wh: BigQueryWarehouse, start: int, count: int, others: tuple[BigQueryWarehouse, ...] = ()) -> None:
    """Payment rows start..start+count-1 (and the position-keyed tables' share of them) into
    `wh` and `others`: one Parquet load job per table, not row by row."""
    from google.cloud import bigquery
    t0 = history_start_us()
    step = 365 * _DAY_US // ROWS_PER_YEAR
    config = bigquery.LoadJobConfig(source_format=bigquery.SourceFormat.PARQUET,
                                    write_disposition=bigquery.WriteDisposition.WRITE_APPEND)
    plan = [(t, start, count, step) for t in PAYMENT_TABLES]
    for table in SIDE_SHARE:  # the side tables' rows spread over the same span of history
        lo, hi = _side_count(table, start), _side_count(table, start + count)
        if hi > lo:
            plan.append((table, lo, hi - lo, int(step / SIDE_SHARE[table])))
    for table, first, rows, row_step in plan:
        buf = io.BytesIO()
        pq.write_table(_history(table, first, rows, t0, row_step), buf)
        for w in (wh, *others):
            buf.seek(0)
            w.client.load_table_from_file(buf, f"{w.project}.{w.dataset}.{table}", job_config=config,
                                          timeout=600).result(timeout=900)


def fresh_batch(size: int, seed: int, *, side: bool = False, side_rows: int | None = None) -> LandingBatch:
    """`size` new payments at new raw positions, event times in the history's second day (a
    date every pre-filled size holds), as the worker would land them; with `side`, the
    batch's share of rejections, late events and duplicates too (`side_rows` each, if given)."""
    rnd = random.Random(seed)
    now_us = to_us(datetime.now(timezone.utc))
    day = history_start_us() + _DAY_US
    tag = "".join(rnd.choices(string.ascii_lowercase, k=8))
    part = seed % 16
    base = seed * 1_000_000  # raw offsets of this batch: after every pre-filled one

    def columns(table_cols: list[schema.Column], n: int, first_offset: int, prefix: str) -> dict[str, list]:
        out: dict[str, list] = {}
        for c in table_cols:
            name = c.name
            if name == "transaction_id":
                out[name] = [f"{prefix}-{tag}-{i}" for i in range(n)]
            elif name in ("source_partition", "duplicate_partition", "first_partition"):
                out[name] = [part] * n
            elif name in ("source_offset", "duplicate_offset"):
                out[name] = list(range(first_offset, first_offset + n))
            elif name == "pii_hash":
                out[name] = [f"h-{prefix}-{tag}-{i}" for i in range(n)]
            elif c.bq_type == "TIMESTAMP":
                if name in ("event_time", "masked_at", "first_event_time", "duplicate_event_time"):
                    out[name] = [day + rnd.randrange(_DAY_US) for _ in range(n)]
                else:
                    out[name] = [now_us] * n if not c.nullable or name in _TIME else [None] * n
            elif c.bq_type == "NUMERIC":
                out[name] = [f"{rnd.randrange(1, 100000)}.{rnd.randrange(100):02d}" for _ in range(n)]
            elif c.bq_type == "INT64":
                out[name] = [rnd.randrange(100) for _ in range(n)]
            elif c.bq_type == "BOOL":
                out[name] = [False] * n
            else:
                out[name] = [f"{name[:3]}-{rnd.randrange(10_000)}" for _ in range(n)]
        return out

    payment_cols = {c.name: c for t in PAYMENT_TABLES for c in schema.tables()[t]}
    payment_cols.pop("masking_timestamp")  # the batch carries it as masked_at
    batch = LandingBatch(sources={PAYMENTS: columns(list(payment_cols.values()), size, base, "new")})
    if side:
        offset = base + size
        for table in SIDE_SHARE:
            n = side_rows if side_rows is not None else max(1, _side_count(table, size))
            batch.sources[table] = columns(schema.tables()[table], n, offset, f"new-{table[:4]}")
            offset += n
    return batch


class MergeLanding(BigQueryWarehouse):
    """The landing payflow had before the Storage Write API, for comparison: one MERGE per
    table and batch from an array-of-struct query parameter, inserting only rows whose key is
    not there yet (subjects on the erasure ledger dropped or anonymized in the statement).
    Its ON clause reads the key column of every partition of the target, so its cost grows
    with the table. Fields are projected one by one from UNNEST(@rows) (the emulator does not
    expand `SELECT *` over a struct array)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.merge_timeout = 30.0
        self._merge_sql: dict[str, str] = {}

    def _merge_statement(self, table: str) -> str:
        if table in self._merge_sql:
            return self._merge_sql[table]
        cols = [c.name for c in schema.tables()[table]]
        keys = schema.primary_keys()[table]
        projected = ", ".join(f"r.{c} AS {c}" for c in cols)
        source = f"(SELECT {projected} FROM UNNEST(@rows) AS r)"
        if table in ERASABLE:
            rendered = {None: "s.{0} AS {0}", NULLED: "IF(e.mode IS NULL, s.{0}, NULL) AS {0}",
                        ERASED_AT: "IF(e.mode IS NULL, s.{0}, CURRENT_TIMESTAMP()) AS {0}",
                        ERASED_FLAG: "e.mode IS NOT NULL AS {0}"}
            select = [rendered[anonymized(table, c)].format(c) for c in cols]
            source = (f"(SELECT {', '.join(select)} FROM {source} AS s "
                      f"LEFT JOIN (SELECT pii_hash, MAX(mode) AS mode FROM {self._t('gdpr_erasures')} "
                      f"GROUP BY pii_hash) AS e ON e.pii_hash = s.pii_hash "
                      f"WHERE e.mode IS NULL OR e.mode = 'anonymize')")
        on = " AND ".join(f"t.{k} = s.{k}" for k in keys)
        sql = (f"MERGE {self._t(table)} AS t USING {source} AS s ON {on} "
               f"WHEN NOT MATCHED THEN INSERT ({', '.join(cols)}) VALUES ({', '.join('s.' + c for c in cols)})")
        self._merge_sql[table] = sql
        return sql

    def _rows_param(self, table: str, rows: list[dict[str, Any]]) -> bigquery.ArrayQueryParameter:
        cols = schema.tables()[table]
        structs = [bigquery.StructQueryParameter(None, *[
            bigquery.ScalarQueryParameter(c.name, c.bq_type, row[c.name]) for c in cols]) for row in rows]
        return bigquery.ArrayQueryParameter("rows", "STRUCT", structs)

    def land(self, batch: LandingBatch) -> Landed:
        batch = batch.first_per_key()
        inserted = Landed()
        for table in LANDING_ORDER:
            rows = batch.rows(table)
            if table == "dead_letter_events" and inserted.conflicts:
                rows = rows + [{"source_partition": p, "source_offset": o, "reason": ID_CONFLICT,
                                "detail": conflict_detail(lp, lo), "transaction_id": txn,
                                "rejected_at": datetime.now(timezone.utc), "remains": None}
                               for txn, p, o, lp, lo in inserted.conflicts]
            if not rows:
                continue
            # short client-side retries: the sink's own retry loop (backoff, jitter, metrics,
            # logs) is the policy, so an outage is visible instead of hidden for ten minutes
            job = self.client.query(self._merge_statement(table), job_config=bigquery.QueryJobConfig(
                query_parameters=[self._rows_param(table, rows)]), retry=self.land_retry, job_retry=None,
                timeout=self.merge_timeout)
            job.result(retry=self.land_retry, timeout=self.merge_timeout / 2)
            inserted[table] = int(job.num_dml_affected_rows or 0)
            if table == "payment_transactions" and (inserted[table] < len(rows) or batch.repeated):
                inserted.conflicts = self._conflicts(rows, batch.repeated)
        return inserted

    def _conflicts(self, rows: list[dict[str, Any]],
                   repeated: dict[str, list[tuple[int, int]]]) -> list[tuple[str, int, int, int, int]]:
        """Some payments were not inserted (replays, erased subjects, id conflicts) or the
        batch has an id from several positions: which positions are not the one the table
        holds (Landed). Only then is the table read."""
        mine = {r["transaction_id"]: [(r["source_partition"], r["source_offset"])] for r in rows}
        mine.update(repeated)
        job = self.client.query(
            f"SELECT transaction_id, source_partition, source_offset FROM {self._t('payment_transactions')} "
            "WHERE transaction_id IN UNNEST(@ids)",
            job_config=bigquery.QueryJobConfig(query_parameters=[
                bigquery.ArrayQueryParameter("ids", "STRING", list(mine))]), retry=self.land_retry, job_retry=None,
            timeout=30)
        landed = [(r["transaction_id"], r["source_partition"], r["source_offset"])
                  for r in job.result(retry=self.land_retry, timeout=15)]
        return find_conflicts(mine, landed)


def _floor_write(wh: BigQueryWarehouse, landing: str, batch: LandingBatch, kind: str = "floor") -> None:
    """The smallest write, through the landing's API, to each table `batch` has rows for:
    storage, a pending stream per table, all committed after (as the landing does); merge,
    an INSERT job per table (kind="floor") or the landing's MERGE statement ("merge-1row")."""
    from google.cloud import bigquery
    tables = [t for t in (*PAYMENT_TABLES, *POSITIONED) if batch.count(t)]
    if landing == "storage":
        sl = wh.storage_landing()
        streams = {t: sl._write_pending(t, _arrow(t, batch.columns(t))) for t in tables}
        for t, stream in streams.items():
            sl.commit_stream(t, stream)
        return
    for t in tables:
        if kind == "floor":
            cols = [c.name for c in schema.tables()[t]]
            sql = (f"INSERT INTO {wh._t(t)} ({', '.join(cols)}) "
                   f"SELECT {', '.join(f'r.{c}' for c in cols)} FROM UNNEST(@rows) AS r")
        else:
            sql = wh._merge_statement(t)
        job = wh.client.query(sql, job_config=bigquery.QueryJobConfig(
            query_parameters=[wh._rows_param(t, batch.rows(t))]), timeout=900)
        job.result(timeout=900)


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def _window_rows(wh: BigQueryWarehouse, batch: LandingBatch) -> tuple[int, int]:
    """(rows of payment_transactions in the DATE(event_time) partitions the storage lookup
    reads for `batch` on BigQuery, rows in the table): what partition pruning leaves."""
    sl = wh.storage_landing()
    times = batch.sources[PAYMENTS]["event_time"]
    lo = datetime.fromtimestamp(min(times) / 1e6, timezone.utc) - sl.window
    hi = datetime.fromtimestamp(max(times) / 1e6, timezone.utc) + sl.window
    r = wh.query("SELECT COUNTIF(DATE(event_time) BETWEEN CAST(@lo AS DATE) AND CAST(@hi AS DATE)) AS w, COUNT(*) AS n "
                 "FROM payment_transactions", {"lo": lo.date().isoformat(), "hi": hi.date().isoformat()})[0]
    return int(r["w"]), int(r["n"])


def measure(sizes: list[int], batch: int = 2000, repeat: int = 3, landings=("storage", "merge"),
            merge_one_row: bool = True, out=print) -> dict[str, Any]:
    """Per landing and size: (a) median landing seconds, (b) median floor seconds, the
    1-row MERGE (merge only), the read jobs' totalBytesProcessed, the rows in the pruned
    window vs the table."""
    endpoint = _endpoint()
    tag = "".join(random.choices(string.ascii_lowercase, k=6))
    whs: dict[str, BigQueryWarehouse] = {}
    for landing in landings:
        wh = (MergeLanding if landing == "merge" else BigQueryWarehouse)(
            PROJECT, f"cost_{landing}_{tag}", endpoint=endpoint,
            grpc_endpoint=grpc_endpoint_beside(endpoint))
        wh.ensure_schema()
        # measured, not cut short by the worker's timeouts
        from google.cloud import bigquery
        wh.land_retry = bigquery.DEFAULT_RETRY.with_deadline(900)
        if isinstance(wh, MergeLanding):
            wh.merge_timeout = 1800.0
        wh.storage_landing().rpc_timeout = 900.0
        # untimed: the first landing and write pay for connections and the emulator's caches
        _floor_write(wh, landing, fresh_batch(1, 9_998, side=True, side_rows=1))
        wh.land(fresh_batch(10, 9_999, side=True, side_rows=1))
        whs[landing] = wh
    res: dict[str, Any] = {k: {"land": {}, "floor": {}, "merge1": {}, "bytes": {}} for k in landings}
    res["window"] = {}
    res["load"] = {}
    filled, seed = 0, 1
    for size in sizes:
        started = time.perf_counter()
        first, *rest = whs.values()
        prefill(first, filled, size - filled, tuple(rest))
        filled = size
        out(f"# pre-filled to {size:,} rows per payment table in {time.perf_counter() - started:.1f} s "
            f"(load average {os.getloadavg()[0]:.1f})")
        for landing, wh in whs.items():
            lands, floors, ones, processed = [], [], [], []
            for _ in range(repeat):
                floors.append(_timed(lambda: _floor_write(wh, landing, fresh_batch(1, seed, side=True,
                                                                                  side_rows=1)))[0])
                seed += 1
                b = fresh_batch(batch, seed, side=True)
                seed += 1
                jobs: list = []
                query = wh.client.query
                wh.client.query = lambda *a, **k: jobs.append(query(*a, **k)) or jobs[-1]
                try:
                    t, landed = _timed(lambda: wh.land(b))
                finally:
                    wh.client.query = query
                lands.append(t)
                assert landed["payment_transactions"] == batch, landed
                assert landed["dead_letter_events"] == b.count("dead_letter_events"), landed
                processed.append([j.total_bytes_processed for j in jobs])
                if landing == "merge" and merge_one_row:
                    ones.append(_timed(lambda: _floor_write(wh, landing, fresh_batch(1, seed, side=True,
                                                                                    side_rows=1), "merge-1row"))[0])
                    seed += 1
            r = res[landing]
            r["land"][size], r["floor"][size] = statistics.median(lands), statistics.median(floors)
            r["bytes"][size] = processed
            if ones:
                r["merge1"][size] = statistics.median(ones)
            out(f"#   {landing}: landing {[round(x, 3) for x in lands]} s, floor {[round(x, 3) for x in floors]} s"
                + (f", 1-row MERGE {[round(x, 3) for x in ones]} s" if ones else ""))
        res["window"][size] = _window_rows(first, fresh_batch(batch, 0))
        res["load"][size] = os.getloadavg()[0]
    return res


def report(res: dict[str, Any], batch: int, landings=("storage", "merge"), out=print) -> dict[str, float]:
    """Prints the table; returns max/min of (c) per landing."""
    sizes = sorted(res["window"])
    head = f"{'':<22}" + "".join(f"{s:>12,}" for s in sizes) + "   max/min"
    out(f"one {batch:,}-payment batch (+{', '.join(f'{v:.1%} {k}' for k, v in SIDE_SHARE.items())}), "
        f"median seconds; target tables pre-filled to:")
    out(head)
    ratios = {}

    def line(label: str, values: list[float]) -> float:
        ratio = max(values) / min(values) if min(values) > 0 else float("inf")
        out(f"{label:<22}" + "".join(f"{v:>12.3f}" for v in values) + f"   {ratio:.2f}")
        return ratio

    for landing in landings:
        r = res[landing]
        a = [r["land"][s] for s in sizes]
        b = [r["floor"][s] for s in sizes]
        line(f"{landing} (a) landing", a)
        line(f"{landing} (b) floor", b)
        ratios[landing] = line(f"{landing} (c) = a - b", [x - y for x, y in zip(a, b)])
        if r["merge1"]:
            line(f"{landing} 1-row MERGE", [r["merge1"][s] for s in sizes])
    out(f"{'load average':<22}" + "".join(f"{res['load'][s]:>12.1f}" for s in sizes))
    for landing in landings:
        verdict = "flat within +-25%" if ratios[landing] <= 1.25 / 0.75 else "NOT flat within +-25%"
        out(f"{landing}: (c) max/min {ratios[landing]:.2f} (flat means <= {1.25 / 0.75:.2f}): {verdict}")
    seen = {v for landing in landings for per in res[landing]["bytes"].values() for job in per for v in job}
    if seen <= {0, None}:
        out("totalBytesProcessed: the emulator reports 0 for every landing query (it has no cost model); "
            "on BigQuery the storage lookup is billed for these partitions only:")
    else:
        out(f"totalBytesProcessed seen: {sorted(v for v in seen if v)}")
    out("payment_transactions rows in the partitions the storage lookup reads / in the table "
        "(the MERGE's ON join reads all): "
        + ", ".join(f"{res['window'][s][0]:,} / {res['window'][s][1]:,}" for s in sizes))
    return ratios


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--batch", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--landings", default="storage,merge")
    ap.add_argument("--no-merge-one-row", action="store_true", help="skip the 1-row MERGE reference")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    landings = tuple(args.landings.split(","))
    res = measure(sizes, args.batch, args.repeat, landings, not args.no_merge_one_row)
    report(res, args.batch, landings)


if __name__ == "__main__":
    main()
