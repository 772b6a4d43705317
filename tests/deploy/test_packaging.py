"""The Dockerfile (hadolint) and compose.yaml (parsed: no Docker engine runs here)."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from payflow.settings import ROOT, SETTINGS_DOC

DOCUMENTED = {s.name for s in SETTINGS_DOC}


def test_dockerfile_is_hadolint_clean():
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    proc = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dockerfile_final_stage_is_non_root_with_healthcheck():
    text = (ROOT / "Dockerfile").read_text()
    final = text[text.rindex("\nFROM "):]
    assert "USER 10001" in final and "HEALTHCHECK" in final
    assert not re.search(r"apt-get install|gcc|build-essential", final)  # no compilers in the final image
    assert 'CMD ["payflow", "worker"' in final
    assert all(name in DOCUMENTED for name in re.findall(r"(PAYFLOW_[A-Z_]+)=", final))


def test_compose_agrees_with_the_settings_module():
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    assert {"kafka", "worker", "simulator"} <= set(services)
    kafka = services["kafka"]["environment"]
    assert "broker,controller" in kafka["KAFKA_PROCESS_ROLES"]  # KRaft, no ZooKeeper
    advertised = kafka["KAFKA_ADVERTISED_LISTENERS"].split("//")[1]
    for name in ("worker", "simulator"):
        env = services[name]["environment"]
        assert set(env) <= DOCUMENTED, set(env) - DOCUMENTED
        assert env["PAYFLOW_KAFKA_BOOTSTRAP"] == advertised
        mounts = {v.split(":")[1]: v.split(":")[0] for v in services[name]["volumes"]}
        assert env["PAYFLOW_DATA_DIR"] in mounts, "worker state must live on a volume"
    worker = services["worker"]["environment"]
    assert worker["PAYFLOW_WAREHOUSE"].startswith("duckdb:///" + worker["PAYFLOW_DATA_DIR"])
    assert services["worker"]["ports"] == [f"{worker['PAYFLOW_WEB_PORT']}:{worker['PAYFLOW_WEB_PORT']}"]
    assert services["simulator"]["command"][:2] == ["payflow", "simulate"]
