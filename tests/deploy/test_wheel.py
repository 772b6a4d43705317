"""The wheel works on its own: built from the source tree, installed into a fresh venv outside
the checkout, it simulates, runs a worker and reconciles against the local broker, with every
default path under the working directory and the DDL read from the package."""
from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from payflow.settings import ROOT
from tests.helpers import KAFKA, TEST_HMAC_KEYS, free_port, unique, wait_until

pytestmark = pytest.mark.integration


def _source_copy(dest: Path) -> Path:
    """What the build reads, copied: the build writes build/ and *.egg-info next to the
    sources, which must not race other work in the checkout."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("setup.cfg", "setup.py", "pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, dest / name)
    for folder in ("payflow", "agents", "tables", "sql"):
        shutil.copytree(ROOT / folder, dest / folder, ignore=shutil.ignore_patterns("__pycache__", "*.so", "*.c"))
    return dest


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    src = _source_copy(tmp / "src")
    env = {**os.environ, "PAYFLOW_PURE_PYTHON": "1"}  # the compiled build is checked by make install
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check", "--no-deps",
                    "-w", str(tmp / "dist"), str(src)], env=env, check=True, timeout=600)
    (built,) = (tmp / "dist").glob("payflow-*.whl")
    return built


def test_the_wheel_carries_the_ddl_and_the_renamed_packages(wheel: Path):
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {n.rsplit("/", 1)[1] for n in names if n.startswith("payflow/sql/")}
    assert shipped == {p.name for p in (ROOT / "sql").glob("*.sql")} and shipped
    assert "payflow/agents/pipeline.py" in names and "payflow/tables/definitions.py" in names
    # every package of payflow/ ships (setup.cfg lists them one by one)
    packages = {p.parent.relative_to(ROOT).as_posix() for p in (ROOT / "payflow").rglob("__init__.py")}
    assert {p for p in packages if f"{p}/__init__.py" not in names} == set()
    assert not any(n.startswith(("agents/", "tables/", "sql/", "tests/")) for n in names)
    metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
    text = zipfile.ZipFile(wheel).read(metadata).decode()
    # the worker does not need Faker: it is the simulator's extra
    assert "requires-dist: faker" in text.lower() and "extra == \"simulate\"" in text


def test_installed_wheel_simulates_runs_a_worker_and_reconciles(kafka, wheel: Path, tmp_path: Path):
    from payflow.kafka_admin import group_lag

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    # the image's lock (runtime + the simulate extra, hash-checked), then the wheel; the
    # dry run shows the lock satisfies the wheel's own requirements with its extra
    lock = ["--require-hashes", "-r", str(ROOT / "requirements" / "lock-image.txt")]
    uv = Path(os.environ.get("PAYFLOW_CACHE_DIR", ROOT / ".cache")) / "uv-venv" / "bin" / "uv"  # made by `make`
    if uv.is_file():
        subprocess.run([str(uv), "pip", "install", "-q", "--python", str(venv / "bin" / "python"), *lock],
                       check=True, timeout=900)
    else:
        subprocess.run([*pip, *lock], check=True, timeout=900)
    subprocess.run([*pip, "--no-deps", str(wheel)], check=True, timeout=300)
    subprocess.run([*pip, "--dry-run", "--no-index", f"payflow[simulate] @ {wheel.as_uri()}"], check=True, timeout=300)

    work = tmp_path / "work"  # the user's working directory, outside the checkout
    work.mkdir()
    # installed as payflow.agents and payflow.tables: the import names agents and tables stay free
    names = subprocess.run([str(venv / "bin" / "python"), "-c",
                            "import importlib.util, payflow.agents, payflow.tables; "
                            "print(importlib.util.find_spec('agents'), importlib.util.find_spec('tables'))"],
                           cwd=work, capture_output=True, text=True, timeout=120)
    assert names.returncode == 0 and names.stdout.split() == ["None", "None"], names.stdout + names.stderr
    prefix = unique("whl") + "-"
    web_port = free_port()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PAYFLOW_") and k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(PAYFLOW_KAFKA_BOOTSTRAP=KAFKA, PAYFLOW_TOPIC_PREFIX=prefix, PAYFLOW_APP_ID=prefix + "app",
               PAYFLOW_HMAC_KEYS=TEST_HMAC_KEYS, PAYFLOW_WEB_PORT=str(web_port), PAYFLOW_LOG_FORMAT="json",
               PAYFLOW_SINK_BATCH_SECONDS="0.2")
    payflow = str(venv / "bin" / "payflow")

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([payflow, *args], cwd=work, env=env, capture_output=True, text=True, timeout=300)

    sim = run("simulate", "--count", "1500", "--seed", "31", "--manifest", "manifest.json", "--quiet")
    assert sim.returncode == 0, sim.stdout + sim.stderr
    log = open(tmp_path / "worker.log", "wb")
    worker = subprocess.Popen([payflow, "worker", "-l", "info", "--web-port", str(web_port)], cwd=work, env=env,
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def caught_up() -> bool:
            assert worker.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
            lag = asyncio.run(group_lag(KAFKA, prefix + "app", prefix + "payment-events"))
            return bool(lag) and sum(lag.values()) == 0
        wait_until(caught_up, 240, interval=1.0, what="the installed worker to commit every offset")
    finally:
        os.killpg(worker.pid, 15)
        worker.wait(timeout=90)
    rec = run("reconcile", "--manifest", "manifest.json")
    assert rec.returncode == 0, rec.stdout + rec.stderr

    # every default path resolved under the working directory, nothing inside the venv
    assert (work / "var" / "payflow.duckdb").is_file()
    assert (work / "var" / "state").is_dir()
    site = next((venv / "lib").glob("python3.*/site-packages"))
    assert not list(site.rglob("*.duckdb")) and not (site / "var").exists()
