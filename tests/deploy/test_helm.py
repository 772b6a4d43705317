"""The Helm chart, linted and rendered by a real Helm v3 (built from the Go module proxy by
scripts/helm.sh); the tests read the rendered YAML and check what matters in production."""
from __future__ import annotations

import json
import re
import subprocess
from functools import lru_cache

import pytest
import yaml

from payflow.settings import ROOT, SETTINGS_DOC

CHART = ROOT / "helm" / "payflow"
KEY = "t-1:" + "ab" * 32
# a go-installed helm has no build-time Kubernetes version (it assumes 1.20): name one
KUBE = "1.31.0"
BASE = ["--set", f"secrets.create.hmacKeys={KEY}"]
# the liveness endpoint: the worker's event loop only (not the warehouse, not Kafka)
LIVEZ = "/livez"
WI = "iam\\.gke\\.io/gcp-service-account"
DUCKDB = "duckdb:////var/lib/payflow/payflow.duckdb"
SECURED = ["--set", "kafka.securityProtocol=SASL_SSL", "--set", "kafka.sasl.mechanism=SCRAM-SHA-512",
           "--set", "kafka.sasl.username=payflow", "--set", "kafka.sasl.passwordSecret.name=kafka-payflow",
           "--set", "kafka.sasl.passwordSecret.key=pw", "--set", "kafka.tls.existingSecret=kafka-client",
           "--set", "kafka.tls.certKey=tls.crt", "--set", "kafka.tls.keyKey=tls.key",
           "--set", "kafka.replicationFactor=3", "--set", "kafka.minInsyncReplicas=2"]


@lru_cache(maxsize=1)
def helm() -> str:
    out = subprocess.run([str(ROOT / "scripts" / "helm.sh")], capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1]


def render(*args: str, expect_ok: bool = True) -> list[dict] | str:
    proc = subprocess.run([helm(), "template", "pf", str(CHART), "--kube-version", KUBE, *args], capture_output=True, text=True)
    if not expect_ok:
        assert proc.returncode != 0, "helm template should have refused these values"
        return proc.stderr
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def kinds(docs) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for d in docs:
        out.setdefault(d["kind"], []).append(d)
    return out


def test_helm_lint_is_clean():
    proc = subprocess.run([helm(), "lint", "--strict", "--kube-version", KUBE, str(CHART), *BASE], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 chart(s) failed" in proc.stdout


def test_worker_statefulset_probes_security_and_volumes():
    docs = kinds(render(*BASE, "--set", "replicas=3", "--set", "partitions=6"))
    sts = docs["StatefulSet"][0]
    assert sts["spec"]["replicas"] == 3
    pod = sts["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    (worker,) = pod["containers"]
    sc = worker["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    # liveness: the worker's own event loop only; the warehouse and Kafka go to readiness
    assert worker["livenessProbe"]["httpGet"]["path"] == LIVEZ
    assert worker["startupProbe"]["httpGet"]["path"] == LIVEZ
    assert worker["readinessProbe"]["httpGet"]["path"] == "/readyz"
    mounts = {m["mountPath"]: m["name"] for m in worker["volumeMounts"]}
    # writable state (RocksDB, logs) and tmp; everything else read-only
    assert mounts["/var/lib/payflow"] == "state" and mounts["/tmp"] == "tmp"
    assert [c["metadata"]["name"] for c in sts["spec"]["volumeClaimTemplates"]] == ["state"]
    config = docs["ConfigMap"][0]["data"]
    assert config["PAYFLOW_PARTITIONS"] == "6" and config["PAYFLOW_DATA_DIR"] == "/var/lib/payflow"
    assert config["PAYFLOW_PRODUCTION"] == "true"
    documented = {s.name for s in SETTINGS_DOC}
    assert set(config) <= documented, set(config) - documented
    assert "PAYFLOW_HMAC_KEYS" not in config  # secrets never in the ConfigMap
    env = {e["name"]: e for e in worker["env"]}
    # the key ring as a file, never in the worker's environment
    assert "PAYFLOW_HMAC_KEYS" not in env
    assert env["PAYFLOW_HMAC_KEYS_FILE"]["value"] == "/var/run/secrets/payflow/hmac/keys"
    volumes = {v["name"]: v for v in sts["spec"]["template"]["spec"]["volumes"]}
    assert volumes["hmac-keys"]["secret"] == {"secretName": "pf-payflow", "defaultMode": 0o440,
                                              "items": [{"key": "hmac-keys", "path": "keys"}]}
    assert {m["name"]: m for m in worker["volumeMounts"]}["hmac-keys"] == {
        "name": "hmac-keys", "mountPath": "/var/run/secrets/payflow/hmac", "readOnly": True}
    assert docs["PodDisruptionBudget"][0]["spec"]["maxUnavailable"] == 1
    assert docs["Service"][0]["spec"]["ports"][0]["port"] == 6066


def test_existing_secret_is_referenced_and_no_secret_is_rendered():
    docs = kinds(render("--set", "secrets.existingSecret=vault-payflow",
                        "--set", "secrets.bigqueryCredentialsKey=sa.json"))
    assert "Secret" not in docs
    worker = docs["StatefulSet"][0]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in worker["env"]}
    assert "PAYFLOW_HMAC_KEYS" not in env
    assert env["PAYFLOW_HMAC_KEYS_FILE"]["value"] == "/var/run/secrets/payflow/hmac/keys"
    assert env["GOOGLE_APPLICATION_CREDENTIALS"]["value"] == "/var/run/secrets/payflow/gcp/sa.json"
    volumes = {v["name"]: v for v in docs["StatefulSet"][0]["spec"]["template"]["spec"]["volumes"]}
    assert volumes["hmac-keys"]["secret"]["secretName"] == "vault-payflow"
    assert volumes["gcp-credentials"]["secret"]["secretName"] == "vault-payflow"
    assert volumes["gcp-credentials"]["secret"]["items"] == [{"key": "sa.json", "path": "sa.json"}]
    mounts = {m["name"]: m for m in worker["volumeMounts"]}
    assert mounts["gcp-credentials"]["readOnly"] is True


def test_missing_key_or_too_many_replicas_is_refused():
    assert "hmacKeys" in render(expect_ok=False)
    assert "partitions" in render(*BASE, "--set", "replicas=5", "--set", "partitions=4", expect_ok=False)
    # values.schema.json rejects a warehouse URL payflow cannot open
    assert "warehouse" in render(*BASE, "--set", "warehouse.url=postgres://x", expect_ok=False)


@pytest.mark.parametrize("enabled", [True, False])
def test_optional_parts_render_on_and_off(enabled):
    flag = str(enabled).lower()
    docs = kinds(render(*BASE, "--set", f"serviceMonitor.enabled={flag}", "--set", f"prometheusRule.enabled={flag}",
                        "--set", f"auditCronJob.enabled={flag}", "--set", f"simulator.enabled={flag}",
                        "--set", f"grafanaDashboard.enabled={flag}"))
    assert ("ServiceMonitor" in docs) is enabled
    assert ("PrometheusRule" in docs) is enabled
    assert ("CronJob" in docs) is enabled
    assert "Deployment" not in docs  # the simulator is a Job (see below)
    assert ("Job" in docs) is enabled
    dashboards = [c for c in docs["ConfigMap"] if c["metadata"]["name"].endswith("-dashboard")]
    assert bool(dashboards) is enabled
    if not enabled:
        return
    alerts = {r["alert"]: r["expr"] for r in docs["PrometheusRule"][0]["spec"]["groups"][0]["rules"]}
    assert "> 0.05" in alerts["PayflowDuplicateRateHigh"]
    assert "> 3600" in alerts["PayflowWatermarkLagHigh"]
    assert "payflow_unmasked_pan_detections_total" in alerts["PayflowUnmaskedPanDetected"]
    assert "> 30" in alerts["PayflowConsumerLagHigh"] and "> 60" in alerts["PayflowCommitStalled"]
    assert "PayflowHighRiskShareOutOfBand" in alerts
    job = docs["CronJob"][0]["spec"]["jobTemplate"]["spec"]
    assert job["backoffLimit"] == 0  # a finding fails visibly, not retried away
    assert job["template"]["spec"]["containers"][0]["args"][:3] == ["payflow", "audit", "pci"]
    dashboard = json.loads(dashboards[0]["data"]["payflow.json"])
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    from payflow import metrics as m
    for metric in (m.EVENTS_IN, m.DUPLICATES, m.LATE, m.DLQ, m.UNMASKED_PAN, m.CONSUMER_LAG, m.LAST_COMMIT_AGE,
                   m.SINK_FLUSH, m.WATERMARK_LAG, m.DEDUP_KEYS):
        assert metric._name in exprs, f"dashboard has no panel for {metric._name}"


def exported_names() -> set[str]:
    from prometheus_client.metrics import MetricWrapperBase

    from payflow import metrics
    names = set()
    for obj in vars(metrics).values():
        if isinstance(obj, MetricWrapperBase):
            suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}.get(obj._type, [""])
            names |= {obj._name + x for x in suffixes}
    return names


def test_alert_and_dashboard_metrics_exist_in_the_worker():
    import re
    docs = kinds(render(*BASE, "--set", "prometheusRule.enabled=true"))
    text = json.dumps(docs["PrometheusRule"][0]) + (CHART / "files" / "dashboard.json").read_text()
    used = set(re.findall(r"payflow_[a-z_]+", text))
    assert len(used) > 15
    missing = used - exported_names()
    assert not missing, f"alerts or dashboard use metrics the worker does not export: {missing}"


def pod_specs(docs) -> dict[str, dict]:
    """Every pod template the chart renders, by kind (the helm test Pod included)."""
    out = {}
    for kind, items in docs.items():
        for d in items:
            if kind in ("StatefulSet", "Job"):
                out[kind] = d["spec"]["template"]["spec"]
            elif kind == "CronJob":
                out[kind] = d["spec"]["jobTemplate"]["spec"]["template"]["spec"]
            elif kind == "Pod":
                out[kind] = d["spec"]
    return out


def env_of(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env") or []}


def test_workload_identity_renders_no_key_file_and_an_annotated_service_account():
    docs = kinds(render(*BASE, "--set", f"serviceAccount.annotations.{WI}=payflow@p.iam.gserviceaccount.com",
                        "--set", "simulator.enabled=true"))
    (sa,) = docs["ServiceAccount"]
    assert sa["metadata"]["annotations"] == {"iam.gke.io/gcp-service-account": "payflow@p.iam.gserviceaccount.com"}
    assert sa["automountServiceAccountToken"] is False
    pods = pod_specs(docs)
    assert set(pods) == {"StatefulSet", "CronJob", "Job", "Pod"}
    for kind, pod in pods.items():
        assert pod["automountServiceAccountToken"] is False, kind
        if kind != "Pod":  # the helm test needs no identity
            assert pod["serviceAccountName"] == sa["metadata"]["name"], kind
        for c in pod["containers"]:
            assert "GOOGLE_APPLICATION_CREDENTIALS" not in env_of(c), kind
            assert "gcp-credentials" not in {m["name"] for m in c.get("volumeMounts", [])}, kind
    assert "bigquery" not in json.dumps(docs["Secret"][0]["data"])


def test_a_key_file_sets_credentials_only_where_the_warehouse_is_used(tmp_path):
    values = tmp_path / "key.yaml"
    values.write_text(yaml.safe_dump({"secrets": {"create": {"bigqueryCredentials": '{"type": "service_account"}'}}}))
    docs = kinds(render(*BASE, "-f", str(values), "--set", "simulator.enabled=true"))
    assert "bigquery-credentials.json" in docs["Secret"][0]["data"]
    pods = pod_specs(docs)
    path = "/var/run/secrets/payflow/gcp/bigquery-credentials.json"
    for kind in ("StatefulSet", "CronJob"):
        assert env_of(pods[kind]["containers"][0])["GOOGLE_APPLICATION_CREDENTIALS"]["value"] == path
    assert "GOOGLE_APPLICATION_CREDENTIALS" not in env_of(pods["Job"]["containers"][0])  # the simulator
    # a key named in the chart's own Secret without its content is refused
    assert "bigqueryCredentialsKey" in render(*BASE, "--set", "secrets.bigqueryCredentialsKey=sa.json", expect_ok=False)


def test_an_existing_service_account_is_used_and_not_created():
    docs = kinds(render(*BASE, "--set", "serviceAccount.create=false", "--set", "serviceAccount.name=payflow-wi"))
    assert "ServiceAccount" not in docs
    assert docs["StatefulSet"][0]["spec"]["template"]["spec"]["serviceAccountName"] == "payflow-wi"


KAFKA_ENV = {"PAYFLOW_KAFKA_SECURITY_PROTOCOL", "PAYFLOW_KAFKA_SASL_MECHANISM", "PAYFLOW_KAFKA_SASL_USERNAME",
             "PAYFLOW_KAFKA_SASL_PASSWORD_FILE", "PAYFLOW_KAFKA_SSL_CAFILE", "PAYFLOW_KAFKA_SSL_CERTFILE",
             "PAYFLOW_KAFKA_SSL_KEYFILE", "PAYFLOW_KAFKA_SSL_CHECK_HOSTNAME", "PAYFLOW_KAFKA_REPLICATION_FACTOR",
             "PAYFLOW_KAFKA_MIN_INSYNC_REPLICAS"}


def test_kafka_security_comes_from_existing_secrets_mounted_read_only():
    docs = kinds(render(*BASE, *SECURED, "--set", "simulator.enabled=true"))
    config = docs["ConfigMap"][0]["data"]
    assert KAFKA_ENV <= set(config)
    assert config["PAYFLOW_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert config["PAYFLOW_KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512" and config["PAYFLOW_KAFKA_SASL_USERNAME"] == "payflow"
    assert config["PAYFLOW_KAFKA_SSL_CHECK_HOSTNAME"] == "true"
    assert config["PAYFLOW_KAFKA_REPLICATION_FACTOR"] == "3" and config["PAYFLOW_KAFKA_MIN_INSYNC_REPLICAS"] == "2"
    assert not any("PASSWORD" in k and not k.endswith("_FILE") for k in config)  # never the password itself
    files = {config[k] for k in ("PAYFLOW_KAFKA_SASL_PASSWORD_FILE", "PAYFLOW_KAFKA_SSL_CAFILE",
                                 "PAYFLOW_KAFKA_SSL_CERTFILE", "PAYFLOW_KAFKA_SSL_KEYFILE")}
    for kind, pod in pod_specs(docs).items():
        if kind == "Pod":
            continue
        volumes = {v["name"]: v["secret"] for v in pod["volumes"] if "secret" in v}
        assert volumes["kafka-sasl"]["secretName"] == "kafka-payflow"
        assert volumes["kafka-sasl"]["items"] == [{"key": "pw", "path": "password"}]
        assert volumes["kafka-tls"]["secretName"] == "kafka-client"
        assert {i["path"] for i in volumes["kafka-tls"]["items"]} == {"ca.crt", "tls.crt", "tls.key"}
        mounts = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}
        mounted = set()
        for name in ("kafka-sasl", "kafka-tls"):
            assert mounts[name]["readOnly"] is True, (kind, name)
            mounted |= {f"{mounts[name]['mountPath']}/{i['path']}" for i in volumes[name]["items"]}
        assert files <= mounted, kind
    # plaintext by default: no security settings at all
    plain = kinds(render(*BASE))["ConfigMap"][0]["data"]
    assert not KAFKA_ENV & set(plain)


def test_mtls_without_ca_key_uses_the_trust_store_and_hostname_check_can_be_turned_off():
    docs = kinds(render(*BASE, "--set", "kafka.securityProtocol=SSL", "--set", "kafka.tls.existingSecret=client",
                        "--set", "kafka.tls.caKey=", "--set", "kafka.tls.certKey=tls.crt", "--set", "kafka.tls.keyKey=tls.key",
                        "--set", "kafka.tls.checkHostname=false"))
    config = docs["ConfigMap"][0]["data"]
    assert "PAYFLOW_KAFKA_SSL_CAFILE" not in config and "PAYFLOW_KAFKA_SASL_MECHANISM" not in config
    assert config["PAYFLOW_KAFKA_SSL_CHECK_HOSTNAME"] == "false"


@pytest.mark.parametrize("args, message", [
    (["--set-string", "settings.PAYFLOW_PRODUCTION=false"], "settings.PAYFLOW_PRODUCTION is set by the chart itself"),
    (["--set", "settings.PAYFLOW_WAREHOUSE=duckdb:///x"], "settings.PAYFLOW_WAREHOUSE is set by the chart itself (from warehouse.url)"),
    (["--set", f"settings.PAYFLOW_HMAC_KEYS={KEY}"], "settings.PAYFLOW_HMAC_KEYS is set by the chart itself"),
    (["--set", "settings.PAYFLOW_KAFKA_SASL_PASSWORD=x"], "settings.PAYFLOW_KAFKA_SASL_PASSWORD is set by the chart itself"),
    (["--set", "settings.PAYFLOW_KAFKA_BOOTSTRAP=x:9092"], "(from kafka.bootstrap)"),
    (["--set", f"warehouse.url={DUCKDB}", "--set", "replicas=2", "--set", "auditCronJob.enabled=false"],
     "replicas=2 with a DuckDB warehouse"),
    (["--set", f"warehouse.url={DUCKDB}", "--set", "replicas=1"],
     "auditCronJob.enabled=true with a DuckDB warehouse"),
    (["--set", "warehouse.url=duckdb:///tmp/x.duckdb", "--set", "replicas=1", "--set", "auditCronJob.enabled=false"],
     "must live on the state volume"),
    (["--set", "replicas=5", "--set", "partitions=4"], "replicas (5) > partitions (4)"),
    (["--set", "kafka.securityProtocol=SASL_SSL"], "needs kafka.sasl.mechanism"),
    (["--set", "kafka.tls.existingSecret=x"], "uses no TLS"),
    (["--set", "kafka.securityProtocol=SSL", "--set", "kafka.tls.existingSecret=x", "--set", "kafka.tls.certKey=tls.crt"],
     "go together"),
    (["--set", "kafka.replicationFactor=2", "--set", "kafka.minInsyncReplicas=3"], "minInsyncReplicas (3) > kafka.replicationFactor (2)"),
])
def test_each_refusal_fails_helm_template_with_its_message(args, message):
    err = render(*BASE, *args, expect_ok=False)
    assert message in err, err
    assert "Error:" in err


@pytest.mark.parametrize("args, where", [
    (["--set", "settings.PAYFLOW_SINK_BATCHSIZE=4000"], "'PAYFLOW_SINK_BATCHSIZE' not allowed"),
    (["--set", "replica=3"], "'replica' not allowed"),
    (["--set", "serviceAccount.annotation.x=y"], "'annotation' not allowed"),
    (["--set", "kafka.tls.caFile=x"], "'caFile' not allowed"),
    (["--set", "auditCronJob.shedule=x"], "'shedule' not allowed"),
    (["--set", "settings.PAYFLOW_SINK_BATCH_SIZE=lots"], "PAYFLOW_SINK_BATCH_SIZE"),
    (["--set", "settings.PAYFLOW_LOG_FORMAT=xml"], "PAYFLOW_LOG_FORMAT"),
    (["--set", "kafka.securityProtocol=TLS"], "securityProtocol"),
])
def test_the_schema_refuses_typos_and_bad_values(args, where):
    err = render(*BASE, *args, expect_ok=False)
    assert "schema" in err and where in err, err


def test_numeric_settings_are_accepted_as_numbers_and_rendered_quoted(tmp_path):
    docs = kinds(render(*BASE, "--set", "settings.PAYFLOW_SINK_BATCH_SIZE=4000",
                        "--set", "settings.PAYFLOW_SINK_BATCH_SECONDS=0.25"))
    config = docs["ConfigMap"][0]["data"]
    assert config["PAYFLOW_SINK_BATCH_SIZE"] == "4000" and config["PAYFLOW_SINK_BATCH_SECONDS"] == "0.25"
    # numbers from a values file are floats to Helm: a large one is not written 1e+06
    values = tmp_path / "v.yaml"
    values.write_text("settings:\n  PAYFLOW_MAX_MESSAGE_BYTES: 1000000\n  PAYFLOW_SHUTDOWN_SECONDS: 45.5\n"
                      "  PAYFLOW_SINK_LANDING_BATCHES: \"4\"\n")
    config = kinds(render(*BASE, "-f", str(values)))["ConfigMap"][0]["data"]
    assert config["PAYFLOW_MAX_MESSAGE_BYTES"] == "1000000"
    assert config["PAYFLOW_SHUTDOWN_SECONDS"] == "45.5" and config["PAYFLOW_SINK_LANDING_BATCHES"] == "4"
    assert all(isinstance(v, str) for v in config.values())


def test_settings_schema_covers_every_documented_setting():
    schema = json.loads((CHART / "values.schema.json").read_text())
    settings = schema["properties"]["settings"]
    assert settings["additionalProperties"] is False
    allowed = {k for k, v in settings["properties"].items() if "set by the chart" not in v.get("description", "")}
    documented = {s.name for s in SETTINGS_DOC}
    # every documented setting is either settable here or set by the chart (and refused here)
    assert documented <= set(settings["properties"]), documented - set(settings["properties"])
    assert allowed <= documented, allowed - documented
    assert KAFKA_ENV <= set(settings["properties"]) - allowed


def test_a_changed_secret_or_config_rolls_the_pods():
    def annotations(*args):
        return kinds(render(*args))["StatefulSet"][0]["spec"]["template"]["metadata"]["annotations"]

    base = annotations(*BASE)
    assert re.fullmatch(r"[0-9a-f]{64}", base["checksum/secret"]) and re.fullmatch(r"[0-9a-f]{64}", base["checksum/config"])
    rotated = annotations("--set", "secrets.create.hmacKeys=t-2:" + "cd" * 32 + "\\," + KEY)
    assert rotated["checksum/secret"] != base["checksum/secret"] and rotated["checksum/config"] == base["checksum/config"]
    tuned = annotations(*BASE, "--set", "settings.PAYFLOW_SINK_BATCH_SIZE=4000")
    assert tuned["checksum/config"] != base["checksum/config"] and tuned["checksum/secret"] == base["checksum/secret"]
    extra = annotations(*BASE, "--set-string", "podAnnotations.vault-version=7")
    assert extra["vault-version"] == "7" and extra["checksum/secret"] == base["checksum/secret"]


def test_extra_env_reaches_every_payflow_container():
    docs = kinds(render(*BASE, "--set", "extraEnv[0].name=TZ", "--set", "extraEnv[0].value=UTC",
                        "--set", "simulator.enabled=true"))
    for kind, pod in pod_specs(docs).items():
        if kind != "Pod":
            assert env_of(pod["containers"][0])["TZ"]["value"] == "UTC", kind


def test_the_simulator_is_a_job_that_runs_once():
    docs = kinds(render(*BASE, "--set", "simulator.enabled=true", "--set", "simulator.backoffLimit=1"))
    assert "Deployment" not in docs
    (job,) = docs["Job"]
    assert job["spec"]["backoffLimit"] == 1 and job["spec"]["ttlSecondsAfterFinished"] == 86400
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    (c,) = pod["containers"]
    assert c["args"][:2] == ["payflow", "simulate"]
    assert "PAYFLOW_HMAC_KEYS" not in env_of(c)  # test traffic needs no key
    # Job templates are immutable: each release revision gets its own Job
    assert job["metadata"]["name"].endswith("-simulator-1")


def test_the_audit_scans_what_its_pod_can_reach():
    docs = kinds(render(*BASE))
    pod = docs["CronJob"][0]["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["args"][:3] == ["payflow", "audit", "pci"] and "--no-state" in c["args"]
    # no empty stand-in for the workers' volumes, no key it does not use
    assert {m["mountPath"] for m in c["volumeMounts"]} == {"/tmp"}
    assert "PAYFLOW_HMAC_KEYS" not in env_of(c)
    # a DuckDB warehouse with the audit off renders, with one worker
    docs = kinds(render(*BASE, "--set", f"warehouse.url={DUCKDB}", "--set", "replicas=1",
                        "--set", "auditCronJob.enabled=false"))
    assert "CronJob" not in docs and docs["StatefulSet"][0]["spec"]["replicas"] == 1


def test_alerts_for_internal_errors_absent_workers_and_fraud_precision_have_a_runbook():
    docs = kinds(render(*BASE, "--set", "prometheusRule.enabled=true", "--set", "replicas=3", "--namespace", "pay"))
    rules = {r["alert"]: r for r in docs["PrometheusRule"][0]["spec"]["groups"][0]["rules"]}
    internal, absent = rules["PayflowDlqInternalError"], rules["PayflowWorkerAbsent"]
    precision = rules["PayflowFraudPrecisionLow"]
    assert 'payflow_dlq_events_total{reason="internal_error"}' in internal["expr"]
    assert 'up{namespace="pay", service="pf-payflow"}' in absent["expr"] and absent["expr"].endswith("< 3")
    assert "max(payflow_fraud_label_precision) < 0.5" in precision["expr"]
    assert "max(payflow_fraud_labelled_flagged_payments) >= 50" in precision["expr"]
    readme = (CHART / "README.md").read_text()
    for name, rule in (("PayflowDlqInternalError", internal), ("PayflowWorkerAbsent", absent),
                       ("PayflowFraudPrecisionLow", precision)):
        assert rule["annotations"]["description"] and rule["annotations"]["summary"]
        anchor = rule["annotations"]["runbook_url"].split("#", 1)[1]
        assert anchor == name.lower()
        section = readme.split(f"### {name}\n", 1)
        assert len(section) == 2 and len(section[1].split("###", 1)[0].strip()) > 100, f"no runbook for {name}"


def test_helm_test_hook_checks_readyz_on_every_worker():
    docs = kinds(render(*BASE, "--set", "replicas=3"))
    (pod,) = docs["Pod"]
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    urls = [a for a in pod["spec"]["containers"][0]["command"] if a.startswith("http://")]
    assert urls == [f"http://pf-payflow-{i}.pf-payflow.default.svc:6066/readyz" for i in range(3)]
    assert pod["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True


def test_network_policy_is_on_by_default():
    (policy,) = kinds(render(*BASE))["NetworkPolicy"]
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    assert policy["spec"]["ingress"][0]["ports"] == [{"port": "web"}]
    assert "NetworkPolicy" not in kinds(render(*BASE, "--set", "networkPolicy.enabled=false"))
    docs = kinds(render(*BASE, "--set", "networkPolicy.egress[0].ports[0].port=9093"))
    (policy,) = docs["NetworkPolicy"]
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert policy["spec"]["ingress"][0]["ports"] == [{"port": "web"}]
    assert {"port": 9093} in policy["spec"]["egress"][1]["ports"]


def test_notes_never_put_a_card_number_on_the_command_line():
    notes = (CHART / "templates" / "NOTES.txt").read_text()
    assert "gdpr erase --card - " in notes and "kubectl exec -i " in notes
    assert not re.search(r"--card (?!- )", notes)


def test_readme_values_table_names_every_value():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    readme = (CHART / "README.md").read_text()
    table = "\n".join(line for line in readme.splitlines() if line.startswith("| `"))

    def leaves(d, prefix=""):
        for k, v in d.items():
            path = prefix + k
            if isinstance(v, dict) and v and k not in ("settings", "resources", "labels"):
                yield from leaves(v, path + ".")
            else:
                yield path

    def covered(path):
        parts = path.split(".")
        return f"`{path}`" in table or any(f"`{'.'.join(parts[:i])}.*`" in table for i in range(1, len(parts)))

    missing = [p for p in leaves(values) if not covered(p)]
    assert not missing, f"values missing from the README table: {missing}"


def test_helm_lint_is_clean_with_secured_and_workload_identity_values():
    proc = subprocess.run([helm(), "lint", "--strict", "--kube-version", KUBE, str(CHART), *BASE, *SECURED,
                           "--set", f"serviceAccount.annotations.{WI}=x@p.iam.gserviceaccount.com",
                           "--set", "simulator.enabled=true", "--set", "networkPolicy.enabled=true",
                           "--set", "prometheusRule.enabled=true", "--set", "serviceMonitor.enabled=true"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
