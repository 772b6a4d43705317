"""Own producer: valid payments, exact duplicates, malformed messages; manifest as JSON lines.
usage: producer.py TOPIC MANIFEST --rate R --seconds S --prefix P [--create N]"""
import argparse, os, asyncio, json, random, string, sys, time
from datetime import datetime, timezone, timedelta
from decimal import Decimal
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

BOOT = "127.0.0.1:" + os.environ.get("PAYFLOW_LOCAL_KAFKA_PORT", "19092")

def luhn_complete(body: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            if d > 9: d -= 9
        total += d
    return body + str((10 - total % 10) % 10)

def luhn_ok(num):
    return luhn_complete(num[:-1]) == num

def ts(dt):
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"

def rid(n=6):
    return "".join(random.choice(string.ascii_lowercase) for _ in range(n))

async def create(topic, n):
    a = AIOKafkaAdminClient(bootstrap_servers=BOOT)
    await a.start()
    try:
        existing = await a.list_topics()
        if topic not in existing:
            await a.create_topics([NewTopic(topic, n, 1)])
            print("created", topic, n, flush=True)
    finally:
        await a.close()

async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("topic"); ap.add_argument("manifest")
    ap.add_argument("--rate", type=float, default=100)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--prefix", default="a")
    ap.add_argument("--create", type=int, default=0)
    ap.add_argument("--dup", type=float, default=0.03)
    ap.add_argument("--bad", type=float, default=0.02)
    ap.add_argument("--seed", type=int, default=None)
    a = ap.parse_args()
    random.seed(a.seed)
    if a.create:
        await create(a.topic, a.create)
    senders = [f"acct{a.prefix}{i:04d}" for i in range(300)]
    last_t = {}
    prod = AIOKafkaProducer(bootstrap_servers=BOOT, acks="all", enable_idempotence=True, linger_ms=5)
    await prod.start()
    out = open(a.manifest, "a")
    recent = []  # (key, bytes, txn, cur, amt) of valid sends for duplicates
    n = 0; counts = {"valid": 0, "dup": 0, "bad": 0}
    t0 = time.monotonic()
    pending = []
    async def send(key, val, rec):
        md = await (await prod.send(a.topic, val, key=key))
        rec["p"] = md.partition; rec["o"] = md.offset
        out.write(json.dumps(rec) + "\n")
    try:
        while time.monotonic() - t0 < a.seconds:
            target = t0 + n / a.rate
            d = target - time.monotonic()
            if d > 0:
                await asyncio.sleep(d)
            n += 1
            r = random.random()
            if r < a.dup and recent:
                key, val, txn, cur, amt = random.choice(recent)
                rec = {"kind": "dup", "txn": txn, "cur": cur, "amt": amt}
                counts["dup"] += 1
            elif r < a.dup + a.bad:
                s = random.choice(senders)
                key = s.encode()
                kind = random.randrange(5)
                base = {"schema_version": 1, "transaction_id": f"{a.prefix}B{n}{rid()}", "event_time": ts(datetime.now(timezone.utc)),
                        "sender_account_id": s, "receiver_account_id": random.choice(senders), "ip_address": "10.0.0.1",
                        "geo_region": "EU", "device_id": "dev" + rid(), "merchant_id": "m" + rid(), "amount": "10.00",
                        "currency": "USD", "credit_card": luhn_complete("411111" + "".join(random.choice("0123456789") for _ in range(9))),
                        "cvv": "123", "card_expiry": "08/29"}
                if kind == 0:
                    val = b"{not json" + rid().encode()
                elif kind == 1:
                    del base["amount"]; val = json.dumps(base).encode()
                elif kind == 2:
                    cc = base["credit_card"]; cc = cc[:-1] + str((int(cc[-1]) + 1) % 10)
                    assert not luhn_ok(cc)
                    base["credit_card"] = cc; val = json.dumps(base).encode()
                elif kind == 3:
                    base["amount"] = "-5.00"; val = json.dumps(base).encode()
                else:
                    base["currency"] = "XXX"; val = json.dumps(base).encode()
                rec = {"kind": "bad", "sub": kind}
                counts["bad"] += 1
            else:
                s = random.choice(senders)
                now = datetime.now(timezone.utc) - timedelta(milliseconds=random.randint(0, 300))
                now = max(now, last_t.get(s, now)); last_t[s] = now
                cur = random.choice(["USD", "EUR", "GBP", "JPY"])
                amt = str(random.randint(1, 50000)) if cur == "JPY" else f"{random.randint(1, 99999) / 100:.2f}"
                txn = f"{a.prefix}T{n}{rid()}"
                ev = {"schema_version": 1, "transaction_id": txn, "event_time": ts(now),
                      "sender_account_id": s, "receiver_account_id": random.choice(senders),
                      "ip_address": f"10.{random.randint(0,255)}.{random.randint(0,255)}.{random.randint(1,254)}",
                      "geo_region": random.choice(["EU", "US", "APAC"]), "device_id": "dev" + rid(),
                      "merchant_id": "m" + rid(), "amount": amt, "currency": cur,
                      "credit_card": luhn_complete("411111" + "".join(random.choice("0123456789") for _ in range(9))),
                      "cvv": "123", "card_expiry": "08/29"}
                if random.random() < 0.5:
                    ev["user_email"] = f"{rid()}@example.com"
                key = s.encode(); val = json.dumps(ev).encode()
                rec = {"kind": "valid", "txn": txn, "cur": cur, "amt": amt}
                recent.append((key, val, txn, cur, amt)); recent = recent[-200:]
                counts["valid"] += 1
            pending.append(asyncio.ensure_future(send(key, val, rec)))
            if len(pending) > 200:
                await asyncio.gather(*pending); pending = []
                out.flush()
        await asyncio.gather(*pending)
    finally:
        await prod.stop()
        out.close()
    print("produced", n, counts, flush=True)

asyncio.run(main())
