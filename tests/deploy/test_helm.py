"""The Helm chart, linted and rendered by a real Helm v3 (built from the Go module proxy by
scripts/helm.sh); the tests read the rendered YAML and check what matters in production."""
from __future__ import annotations

import json
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
    assert worker["livenessProbe"]["httpGet"]["path"] == "/healthz"
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
    assert env["PAYFLOW_HMAC_KEYS"]["valueFrom"]["secretKeyRef"] == {"name": "pf-payflow", "key": "hmac-keys"}
    assert docs["PodDisruptionBudget"][0]["spec"]["maxUnavailable"] == 1
    assert docs["Service"][0]["spec"]["ports"][0]["port"] == 6066


def test_existing_secret_is_referenced_and_no_secret_is_rendered():
    docs = kinds(render("--set", "secrets.existingSecret=vault-payflow"))
    assert "Secret" not in docs
    worker = docs["StatefulSet"][0]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in worker["env"]}
    assert env["PAYFLOW_HMAC_KEYS"]["valueFrom"]["secretKeyRef"]["name"] == "vault-payflow"
    volumes = {v["name"]: v for v in docs["StatefulSet"][0]["spec"]["template"]["spec"]["volumes"]}
    assert volumes["credentials"]["secret"]["secretName"] == "vault-payflow"


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
    assert ("Deployment" in docs) is enabled  # the simulator
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
