"""Wait until the group has consumed everything, then check the promise against the manifest(s).
usage: check.py --group G --topic T --manifest M [--manifest M2] (--bq DATASET | --duck PATH) [--timeout S]"""
import argparse, os, asyncio, json, sys, time
from collections import Counter, defaultdict
from decimal import Decimal
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka import AIOKafkaConsumer, TopicPartition

BOOT = "127.0.0.1:" + os.environ.get("PAYFLOW_LOCAL_KAFKA_PORT", "19092")

async def lag(group, topic):
    adm = AIOKafkaAdminClient(bootstrap_servers=BOOT); await adm.start()
    c = AIOKafkaConsumer(bootstrap_servers=BOOT); await c.start()
    try:
        md = await adm.describe_topics([topic])
        parts = [p["partition"] for p in md[0]["partitions"]]
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        ends = await c.end_offsets(tps)
        com = await adm.list_consumer_group_offsets(group)
        res = {}
        for tp in tps:
            m = com.get(tp)
            res[tp.partition] = (m.offset if m else -1, ends[tp])
        return res
    finally:
        await c.stop(); await adm.close()

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--group"); ap.add_argument("--topic"); ap.add_argument("--manifest", action="append")
    ap.add_argument("--bq"); ap.add_argument("--duck"); ap.add_argument("--timeout", type=float, default=300)
    ap.add_argument("--nowait", action="store_true"); ap.add_argument("--lagonly", action="store_true")
    a = ap.parse_args()
    t0 = time.time()
    while not a.nowait:
        r = asyncio.run(lag(a.group, a.topic))
        behind = {p: (c, e) for p, (c, e) in r.items() if c != e}
        if not behind:
            print("lag 0 on all", len(r), "partitions", flush=True); break
        if time.time() - t0 > a.timeout:
            print("STALL? still behind after", a.timeout, "s:", behind, flush=True); break
        print("behind:", behind, flush=True); time.sleep(10)
    if a.lagonly:
        return
    recs = []
    for m in a.manifest:
        recs += [json.loads(l) for l in open(m) if l.strip()]
    valid = {r["txn"]: r for r in recs if r["kind"] == "valid"}
    sums = defaultdict(Decimal)
    for r in valid.values():
        sums[r["cur"]] += Decimal(r["amt"])
    nbad = sum(1 for r in recs if r["kind"] == "bad"); ndup = sum(1 for r in recs if r["kind"] == "dup")
    print(f"manifest: {len(recs)} messages, {len(valid)} valid unique, {ndup} exact dups (expect that many deduplication_audit rows), {nbad} malformed (expect that many dead_letter_events rows)")

    if a.bq:
        from google.cloud import bigquery
        import google.auth.credentials
        cl = bigquery.Client(project="payflow-local", client_options={"api_endpoint": "http://127.0.0.1:" + os.environ.get("PAYFLOW_LOCAL_BQ_PORT", "19050")},
                             credentials=google.auth.credentials.AnonymousCredentials())
        pre = f"`payflow-local.{a.bq}."
        def q(sql):
            return [tuple(r.values()) for r in cl.query(sql.replace("T.", pre)).result()]
    else:
        import duckdb
        con = duckdb.connect(a.duck, read_only=True)
        def q(sql):
            return con.execute(sql.replace("T.", "").replace("`", "")).fetchall()
    ok = True
    for t in ["payment_transactions", "payment_transactions_fraud", "pii_masking_audit"]:
        rows = q(f"SELECT transaction_id, COUNT(*) FROM T.{t}` GROUP BY transaction_id")
        got = {tid: c for tid, c in rows}
        doubled = {k: c for k, c in got.items() if c > 1}
        missing = set(valid) - set(got)
        extra = set(got) - set(valid)
        total = sum(got.values())
        print(f"{t}: rows={total} distinct={len(got)} doubled={len(doubled)} missing={len(missing)} extra={len(extra)}")
        if doubled or missing or extra:
            ok = False
            print("   doubled sample:", list(doubled.items())[:10]); print("   missing sample:", sorted(missing)[:10]); print("   extra sample:", sorted(extra)[:10])
    rows = q("SELECT currency, CAST(SUM(amount) AS STRING), COUNT(*) FROM T.payment_transactions` GROUP BY currency")
    for cur, s, c in rows:
        exp = sums.get(cur, Decimal(0))
        flag = "OK" if Decimal(s) == exp else "MISMATCH"
        if flag != "OK": ok = False
        print(f"sum {cur}: warehouse={Decimal(s)} produced={exp} rows={c} {flag}")
    for t, pc, oc in [("dead_letter_events", "source_partition", "source_offset"), ("late_events", "source_partition", "source_offset"),
                      ("deduplication_audit", "duplicate_partition", "duplicate_offset")]:
        rows = q(f"SELECT {pc}, {oc}, COUNT(*) FROM T.{t}` GROUP BY {pc}, {oc}")
        d = [(p, o, c) for p, o, c in rows if c > 1]
        total = sum(c for _, _, c in rows)
        print(f"{t}: rows={total} positions={len(rows)} positions_with_>1_row={len(d)}" + (f" sample={d[:10]}" if d else ""))
        if d: ok = False
    print("VERDICT:", "HELD" if ok else "BROKEN")

main()
