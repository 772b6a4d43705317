"""An outside campaign's scenario runner (written by a reviewer who had the promise and the
event contract, not payflow's tests): starts payflow workers in their own sessions, its own
producer, signals workers, records exit codes, then checks every table against the
producer's manifest (check.py). Run through scripts/campaign/run.sh (`make campaign`).
usage: scenario.py NAME --kind rolling|scale|duck|slow|early [--backend bq|duck]"""
import argparse, json, os, signal, subprocess, sys, time
HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
PY = sys.executable
PAYFLOW = os.path.join(os.path.dirname(sys.executable), "payflow")
OUT = os.environ.get("PAYFLOW_CAMPAIGN_DIR", os.path.join(REPO, "var", "campaign"))
KAFKA_PORT = os.environ.get("PAYFLOW_LOCAL_KAFKA_PORT", "19092")
BQ_PORT = os.environ.get("PAYFLOW_LOCAL_BQ_PORT", "19050")
BQ_GRPC_PORT = os.environ.get("PAYFLOW_LOCAL_BQ_GRPC_PORT", "19060")
RUN_DIR = os.environ.get("PAYFLOW_RUN_DIR", os.path.join(OUT, "stack"))
BASE_ENV = dict(PAYFLOW_LOCAL_KAFKA_PORT=KAFKA_PORT, PAYFLOW_LOCAL_BQ_PORT=BQ_PORT,
                PAYFLOW_LOCAL_BQ_GRPC_PORT=BQ_GRPC_PORT, PAYFLOW_RUN_DIR=RUN_DIR)
HMAC = "t1:" + "ab" * 32

def log(*a):
    print(time.strftime("%H:%M:%S"), *a, flush=True)

class Run:
    def __init__(self, name, backend, partitions=6):
        self.name, self.backend, self.parts = name, backend, partitions
        self.dir = f"{OUT}/{name}"; os.makedirs(self.dir, exist_ok=True)
        self.topic = f"{name}-payment-events"; self.group = f"{name}app"
        self.workers = {}; self.events = []; self.seq = 0
    def env(self, wid):
        e = dict(os.environ); e.update(BASE_ENV)
        e.update(PAYFLOW_KAFKA_BOOTSTRAP=f"127.0.0.1:{KAFKA_PORT}", PAYFLOW_APP_ID=self.group, PAYFLOW_TOPIC_PREFIX=f"{self.name}-",
                 PAYFLOW_PARTITIONS=str(self.parts), PAYFLOW_DATA_DIR=f"{self.dir}/data-{wid}", PAYFLOW_HMAC_KEYS=HMAC,
                 PAYFLOW_LOG_FORMAT="json", PAYFLOW_SINK_BATCH_SIZE="500", PAYFLOW_BQ_MIN_LANDING_SECONDS="1",
                 PAYFLOW_BQ_LANDING_BATCHES="2")
        if self.backend == "bq":
            e.update(PAYFLOW_WAREHOUSE=f"bigquery://payflow-local/{self.name}",
                     PAYFLOW_BIGQUERY_ENDPOINT=f"http://127.0.0.1:{BQ_PORT}", PAYFLOW_BIGQUERY_GRPC_ENDPOINT=f"127.0.0.1:{BQ_GRPC_PORT}")
        else:
            e.update(PAYFLOW_WAREHOUSE=f"duckdb:///{self.dir}/w.duckdb")
        return e
    def start(self, wid):
        self.seq += 1
        lf = open(f"{self.dir}/worker-{wid}.{self.seq}.log", "w")
        p = subprocess.Popen([PAYFLOW, "worker", "-l", "info", "--web-port", str(int(os.environ.get("PORTBASE", "16000")) + wid)],
                             cwd=REPO, env=self.env(wid), stdout=lf, stderr=subprocess.STDOUT, start_new_session=True)
        self.workers[wid] = (p, lf.name, time.time())
        log(f"start w{wid} pid={p.pid} log={lf.name}"); self.events.append(("start", wid, time.time(), lf.name))
        return p
    def term(self, wid, sig=signal.SIGTERM):
        p, lf, _ = self.workers[wid]
        os.killpg(p.pid, sig); t = time.time()
        log(f"signal {sig.name} -> w{wid} pid={p.pid}"); self.events.append(("sig", wid, t, sig.name))
        return p
    def wait(self, wid, timeout=90):
        p, lf, _ = self.workers[wid]; t = time.time()
        try:
            rc = p.wait(timeout)
        except subprocess.TimeoutExpired:
            rc = "TIMEOUT"
        log(f"w{wid} exited rc={rc} after {time.time()-t:.1f}s")
        if rc == "TIMEOUT": return rc
        self.events.append(("exit", wid, time.time(), rc, lf))
        del self.workers[wid]
        return rc
    def producer(self, seconds, rate=100, create=0, tag="p"):
        return subprocess.Popen([PY, f"{HERE}/producer.py", self.topic, f"{self.dir}/manifest-{tag}.jsonl", "--rate", str(rate),
                                 "--seconds", str(seconds), "--prefix", f"{self.name}{tag}", "--create", str(create)],
                                stdout=open(f"{self.dir}/producer-{tag}.log", "a"), stderr=subprocess.STDOUT)
    def save(self):
        json.dump(self.events, open(f"{self.dir}/events.json", "w"), default=str, indent=0)

def prepare(r):
    # create the raw topic before workers start
    subprocess.run([PY, f"{HERE}/producer.py", r.topic, f"{r.dir}/manifest-init.jsonl", "--seconds", "0", "--create", str(r.parts),
                    "--prefix", r.name + "i"], check=True)

def rolling(r, rounds=1, gap=25):
    prepare(r)
    for w in (1, 2, 3): r.start(w); time.sleep(3)
    time.sleep(20)
    prod = r.producer(seconds=rounds * 3 * (gap + 10) + 20, rate=80)
    time.sleep(10)
    for rd in range(rounds):
        for w in (1, 2, 3):
            r.term(w); r.wait(w); time.sleep(2); r.start(w); time.sleep(gap)
    prod.wait(); log("producer done")
    time.sleep(15)
    r.save()

def scale(r):
    """two at once, early term (during first rebalance), term during join of another, scale-out/in."""
    prepare(r)
    for w in (1, 2, 3): r.start(w); time.sleep(3)
    time.sleep(20)
    prod = r.producer(seconds=200, rate=80)
    time.sleep(15)
    # two at once
    r.term(1); r.term(2); r.wait(1); r.wait(2)
    time.sleep(15)
    # scale out: w4 joins; SIGTERM w3 while w4 is joining (~5 s after start)
    r.start(4); time.sleep(6); r.term(3); r.wait(3)
    time.sleep(20)
    # SIGTERM right after start (first rebalance/first landing)
    r.start(1); time.sleep(8); r.term(1); r.wait(1)
    time.sleep(10)
    r.start(2); r.start(1); time.sleep(12); r.term(2); r.wait(2)   # term while w1 still joining
    time.sleep(20)
    r.start(3); r.start(2); time.sleep(25)
    # scale in to one
    r.term(4); r.wait(4); time.sleep(10); r.term(3); r.wait(3)
    prod.wait(); log("producer done")
    time.sleep(15)
    r.save()

def duck(r):
    prepare(r)
    r.start(1); time.sleep(20)
    prod = r.producer(seconds=150, rate=80)
    time.sleep(15)
    for i in range(4):
        r.term(1); r.wait(1); time.sleep(1); r.start(1); time.sleep(8 if i % 2 else 25)
    prod.wait(); log("producer done")
    time.sleep(20)
    r.save()

def slow(r):
    """SIGTERM a worker while the BigQuery emulator is frozen (SIGSTOP), short (10 s) then long (45 s > 30 s bound)."""
    bq = int(open(f"{RUN_DIR}/bqemulator/bqemulator.pid").read())
    prepare(r)
    for w in (1, 2, 3): r.start(w); time.sleep(3)
    time.sleep(20)
    prod = r.producer(seconds=130, rate=80)
    time.sleep(15)
    os.kill(bq, signal.SIGSTOP); log("bq emulator SIGSTOP"); r.events.append(("bqstop", 0, time.time()))
    time.sleep(3); r.term(1); time.sleep(7)
    os.kill(bq, signal.SIGCONT); log("bq emulator SIGCONT"); r.events.append(("bqcont", 0, time.time()))
    r.wait(1); time.sleep(20)
    os.kill(bq, signal.SIGSTOP); log("bq emulator SIGSTOP (long)"); r.events.append(("bqstop", 0, time.time()))
    time.sleep(3); r.term(2)
    r.wait(2, timeout=45)
    os.kill(bq, signal.SIGCONT); log("bq emulator SIGCONT"); r.events.append(("bqcont", 0, time.time()))
    if 2 in r.workers: r.wait(2, timeout=30)
    r.start(1); r.start(2)
    prod.wait(); log("producer done")
    time.sleep(15)
    r.save()

def wait_assigned(r, wid, timeout=60):
    lf = r.workers[wid][1]; t = time.time()
    while time.time() - t < timeout:
        for l in open(lf, errors="replace"):
            if "Setting newly assigned partitions" in l and f"topic='{r.topic}'" in l:
                return True
        time.sleep(0.2)
    return False

def early(r):
    """steady 2 workers; a third joins and is SIGTERMed ~2 s after it gets raw partitions; three times."""
    prepare(r)
    for w in (1, 2): r.start(w); time.sleep(3)
    time.sleep(20)
    prod = r.producer(seconds=150, rate=80)
    time.sleep(15)
    for i in range(3):
        r.start(3); ok = wait_assigned(r, 3); log("w3 assigned raw partitions:", ok)
        time.sleep(2.0); r.term(3); r.wait(3); time.sleep(25)
    prod.wait(); log("producer done")
    time.sleep(15)
    r.save()

if __name__ == "__main__":
    ap = argparse.ArgumentParser(); ap.add_argument("name"); ap.add_argument("--backend", default="bq"); ap.add_argument("--kind")
    a = ap.parse_args()
    r = Run(a.name, a.backend)
    try:
        {"rolling": rolling, "scale": scale, "duck": duck, "slow": slow, "early": early}[a.kind](r)
        man = sum((["--manifest", f"{r.dir}/{f}"] for f in os.listdir(r.dir) if f.startswith("manifest-")), [])
        if a.backend == "bq":
            subprocess.run([PY, f"{HERE}/check.py", "--group", r.group, "--topic", r.topic, "--bq", r.name, *man])
        else:
            subprocess.run([PY, f"{HERE}/check.py", "--group", r.group, "--topic", r.topic, "--lagonly", *man])
        for w in list(r.workers): r.term(w)
        for w in list(r.workers): r.wait(w)
        if a.backend != "bq":
            subprocess.run([PY, f"{HERE}/check.py", "--group", r.group, "--topic", r.topic, "--nowait", "--duck", f"{r.dir}/w.duckdb", *man])
    finally:
        r.save()
        log("still running workers:", {w: v[0].pid for w, v in r.workers.items()})
