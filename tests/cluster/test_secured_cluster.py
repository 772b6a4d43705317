"""payflow against a secured 3-node KRaft cluster: SASL_SSL with SCRAM-SHA-512, certificates made at
test time, topics with replication factor 3 and min.insync.replicas=2. Real brokers, real worker
processes; each run ends in an exact reconciliation against the simulator's manifest and a clean
PCI scan. The refusals (bad password, untrusted CA, PLAINTEXT against TLS) are checked by the one
line the worker prints and its exit code."""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import datetime, timezone

import pytest

from payflow.kafka_security import KafkaConnectionFailure, KafkaSecurity, check_connection, current
from payflow.settings import ROOT
from tests.fault.test_faults import assert_reconciled_and_clean, consumed
from tests.helpers import KAFKA, TEST_HMAC_KEYS, Worker, list_topics, unique, wait_until

pytestmark = pytest.mark.integration


async def _describe(topics: list[str]) -> dict[str, dict]:
    """topic -> {"leaders": {partition: broker}, "replicas": {partition: n}, "min_isr": (value, source)}."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    admin = AIOKafkaAdminClient(bootstrap_servers=KAFKA, **current().client_kwargs())
    await admin.start()
    try:
        out = {d["topic"]: {"leaders": {p["partition"]: p["leader"] for p in d["partitions"]},
                            "replicas": {p["partition"]: len(p["replicas"]) for p in d["partitions"]}}
               for d in await admin.describe_topics(topics)}
        resources = [ConfigResource(ConfigResourceType.TOPIC, t, {"min.insync.replicas": None}) for t in topics]
        for response in await admin.describe_configs(resources):
            for _code, _msg, _kind, name, entries, *_ in response.resources:
                for entry in entries:
                    if entry[0] == "min.insync.replicas":
                        # DescribeConfigs v1+: (name, value, read_only, source, ...); source 1 = set on the topic
                        out[name]["min_isr"] = (entry[1], entry[3])
        return out
    finally:
        await admin.close()


def describe(topics: list[str]) -> dict[str, dict]:
    return asyncio.run(_describe(topics))


def own_topics(worker: Worker) -> list[str]:
    return sorted(t for t in list_topics() if t.startswith(worker.prefix) or t.startswith(worker.app_id + "-"))


class Simulator(threading.Thread):
    """The simulator in-process, in a thread of its own: producing while brokers fail."""

    def __init__(self, prefix: str, manifest, *, count: int, seed: int, rate: float | None = None):
        super().__init__(daemon=True)
        self.args = (prefix, manifest, count, seed, rate)
        self.result: dict | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        from payflow.simulator.generator import SimOptions
        from payflow.simulator.producer import simulate

        prefix, manifest, count, seed, rate = self.args
        options = SimOptions(count=count, seed=seed, start_time=datetime(2026, 11, 20, 8, 0, tzinfo=timezone.utc))
        try:
            self.result = asyncio.run(simulate(options, bootstrap=KAFKA, topic=prefix + "payment-events", partitions=4,
                                               manifest_path=manifest, rate=rate, progress=False)).to_dict()
        except BaseException as exc:  # noqa: BLE001 - re-raised by finish()
            self.error = exc

    def finish(self, timeout: float) -> dict:
        self.join(timeout)
        assert not self.is_alive(), "the simulator did not finish"
        if self.error:
            raise self.error
        assert self.result["throughput"]["unconfirmed"] == 0, self.result["throughput"]
        return self.result


def test_end_to_end_over_sasl_ssl_with_replication_factor_3_and_min_insync_2(cluster, tmp):
    """Replication factor: the cluster's default (PAYFLOW_KAFKA_REPLICATION_FACTOR=-1, KIP-464),
    3 here; min.insync.replicas=2 from PAYFLOW_KAFKA_MIN_INSYNC_REPLICAS, set on every topic."""
    assert current().protocol == "SASL_SSL" and current().sasl_mechanism == "SCRAM-SHA-512"
    assert current().replication_factor == -1 and current().min_insync_replicas == 2
    prefix = unique("sec-") + "-"
    sim = Simulator(prefix, tmp / "m.json", count=10_000, seed=41)
    sim.start()
    sim.finish(300)
    worker = Worker(tmp, prefix=prefix, extra_env={"PAYFLOW_SINK_BATCH_SIZE": "1000"}).start()
    try:
        worker.wait_caught_up(timeout=300)
    finally:
        assert worker.stop() == 0, worker.log_tail()
    topics = own_topics(worker)
    changelogs = [t for t in topics if t.endswith("-changelog")]
    assert len(changelogs) == 4 and prefix + "payments-enriched" in topics, topics
    found = describe(topics)
    assert {t: set(d["replicas"].values()) for t, d in found.items()} == {t: {3} for t in topics}
    # every topic payflow declares carries min.insync.replicas=2 itself (source 1: the topic's own
    # config); Faust's one-partition leader-election topic is declared inside Faust and takes the
    # cluster's (also 2 here)
    leader_topic = worker.app_id + "-__assignor-__leader"
    assert {t: d["min_isr"] for t, d in found.items() if t != leader_topic} == {
        t: ("2", 1) for t in topics if t != leader_topic}
    assert_reconciled_and_clean(worker, tmp / "m.json")


def test_broker_leading_most_raw_partitions_sigkilled_mid_run(cluster, tmp):
    """SIGKILL of the broker that leads most raw-topic partitions while the simulator produces and
    the worker consumes; it comes back after 20 s. Nothing lost, nothing doubled."""
    prefix = unique("leader-") + "-"
    raw = prefix + "payment-events"
    sim = Simulator(prefix, tmp / "m.json", count=28_000, seed=42, rate=700)  # about 40 s of traffic
    sim.start()
    wait_until(lambda: raw in list_topics(), 60, what="the raw topic")
    worker = Worker(tmp, prefix=prefix, extra_env={"PAYFLOW_SINK_BATCH_SIZE": "1000",
                                                    "PAYFLOW_KAFKA_REPLICATION_FACTOR": "3"}).start()
    victim, restarted = None, False
    try:
        wait_until(lambda: consumed(worker) >= 3000, 300, interval=0.2, what="3,000 events consumed")
        leaders = Counter(describe([raw])[raw]["leaders"].values())
        victim, led = leaders.most_common(1)[0]
        cluster.node("node-kill", victim)
        down_at = time.monotonic()
        print(f"killed node {victim} (leader of {led} of 4 raw partitions) at {consumed(worker):.0f} consumed")
        while time.monotonic() - down_at < 20:
            assert worker.alive(), worker.log_tail()
            time.sleep(1)
        assert sim.is_alive(), "the simulator finished before the broker came back: the kill was not mid-run"
        during = consumed(worker)
        cluster.node("node-start", victim)
        restarted = True
        m = sim.finish(300)
        worker.wait_caught_up(timeout=600)
        assert worker.alive() and worker.starts == 1, worker.log_tail()
    finally:
        if victim is not None and not restarted:
            cluster.node("node-start", victim)  # the next tests need the whole cluster
        assert worker.stop() == 0, worker.log_tail()
    print(f"{during:.0f} of {m['messages_sent']} events consumed when node {victim} came back")
    new_leaders = describe([raw])[raw]["leaders"]
    assert all(b in (1, 2, 3) for b in new_leaders.values())
    assert_reconciled_and_clean(worker, tmp / "m.json")


def _worker_env(tmp, **changes) -> dict[str, str]:
    env = {**os.environ, "PAYFLOW_APP_ID": unique("refused-"), "PAYFLOW_DATA_DIR": str(tmp / "data"),
           "PAYFLOW_WAREHOUSE": f"duckdb:///{tmp / 'w.duckdb'}", "PAYFLOW_HMAC_KEYS": TEST_HMAC_KEYS,
           "PAYFLOW_LOG_FORMAT": "json"}
    for name, value in changes.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


@pytest.mark.parametrize("case", ["bad_password", "untrusted_ca", "plaintext_against_tls"])
def test_wrong_settings_exit_with_one_line_naming_setting_and_broker(cluster, tmp, case):
    first = cluster.first_broker
    other_ca = cluster.env["PAYFLOW_CLUSTER_OTHER_CAFILE"]
    env, line = {
        "bad_password": (
            _worker_env(tmp, PAYFLOW_KAFKA_SASL_PASSWORD_FILE=None, PAYFLOW_KAFKA_SASL_PASSWORD="not-the-password"),
            f"Kafka authentication failed at {first}: the broker rejected user 'payflow' with SCRAM-SHA-512 "
            "(check PAYFLOW_KAFKA_SASL_USERNAME and PAYFLOW_KAFKA_SASL_PASSWORD)"),
        "untrusted_ca": (
            _worker_env(tmp, PAYFLOW_KAFKA_SSL_CAFILE=other_ca),
            f"Kafka TLS failed at {first}: the broker's certificate is not trusted by "
            f"PAYFLOW_KAFKA_SSL_CAFILE={other_ca} (self-signed certificate in certificate chain)"),
        "plaintext_against_tls": (
            _worker_env(tmp, PAYFLOW_KAFKA_SECURITY_PROTOCOL="PLAINTEXT", PAYFLOW_KAFKA_SASL_MECHANISM=None,
                        PAYFLOW_KAFKA_SASL_USERNAME=None, PAYFLOW_KAFKA_SASL_PASSWORD_FILE=None,
                        PAYFLOW_KAFKA_SSL_CAFILE=None),
            f"Kafka connection failed at {first}: the listener speaks TLS but PAYFLOW_KAFKA_SECURITY_PROTOCOL=PLAINTEXT "
            "(use SSL or SASL_SSL)"),
    }[case]
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "payflow.cli", "worker", "-l", "info"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0, proc.stderr[-2000:]
    # the CLI prints it as "<command>: error: <line>"
    last = proc.stderr.rstrip("\n").splitlines()[-1]
    assert last == line or last.endswith(": error: " + line), proc.stderr[-2000:]
    assert proc.stderr.count(line) == 1 and "Traceback" not in proc.stderr + proc.stdout, proc.stderr[-2000:]
    assert "not-the-password" not in proc.stderr + proc.stdout
    assert time.monotonic() - started < 60  # not a retry loop
    assert not (tmp / "data" / "state").exists()  # refused before Faust started


def test_mtls_listener_takes_the_client_certificate_and_names_a_missing_one(cluster):
    env = cluster.env
    mtls = {"PAYFLOW_KAFKA_SECURITY_PROTOCOL": "SSL", "PAYFLOW_KAFKA_SSL_CAFILE": env["PAYFLOW_CLUSTER_CAFILE"],
            "PAYFLOW_KAFKA_SSL_CERTFILE": env["PAYFLOW_CLUSTER_CLIENT_CERTFILE"],
            "PAYFLOW_KAFKA_SSL_KEYFILE": env["PAYFLOW_CLUSTER_CLIENT_KEYFILE"]}
    bootstrap = env["PAYFLOW_CLUSTER_MTLS_BOOTSTRAP"]
    asyncio.run(check_connection(bootstrap, KafkaSecurity.from_env(mtls)))
    del mtls["PAYFLOW_KAFKA_SSL_CERTFILE"], mtls["PAYFLOW_KAFKA_SSL_KEYFILE"]
    with pytest.raises(KafkaConnectionFailure) as refused:
        asyncio.run(check_connection(bootstrap, KafkaSecurity.from_env(mtls)))
    assert str(refused.value) == (f"Kafka TLS failed at {bootstrap.split(',')[0]}: the broker requires a client "
                                  "certificate (set PAYFLOW_KAFKA_SSL_CERTFILE and PAYFLOW_KAFKA_SSL_KEYFILE)")
