"""The import graph is the architecture (docs/architecture.md, "Layers"): import-linter's
contracts in setup.cfg hold over payflow as installed, and break when a stage imports Faust,
the fence imports the pipeline or the app imports its agents."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT = [sys.executable, str(ROOT / "scripts" / "lint_imports.py")]


def lint(root: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([*LINT, str(root)], capture_output=True, text=True, timeout=300)


def said(result: subprocess.CompletedProcess) -> str:
    return " ".join(result.stdout.split())


def test_payflow_keeps_its_layers():
    result = lint()
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "Contracts: 2 kept, 0 broken." in said(result)


@pytest.fixture
def copy_of_payflow(tmp_path: Path) -> Path:
    for folder in ("payflow", "agents", "tables", "sql"):
        shutil.copytree(ROOT / folder, tmp_path / folder,
                        ignore=shutil.ignore_patterns("__pycache__", "*.so", "*.pyc"))
    shutil.copy2(ROOT / "setup.cfg", tmp_path / "setup.cfg")
    return tmp_path


STAGES_BROKEN = ("the stages import nothing of Faust, Kafka, RocksDB, the warehouse, the settings or the "
                 "environment BROKEN")


@pytest.mark.parametrize("module, line, broken", [
    ("payflow/stages/mask.py", "import faust", STAGES_BROKEN),
    ("payflow/stages/fraud.py", "import os", STAGES_BROKEN),
    ("payflow/stages/dedup.py", "import pyarrow", STAGES_BROKEN),
    ("payflow/keys.py", "from payflow.settings import Settings", STAGES_BROKEN),
    ("payflow/runtime/fetch.py", "from payflow.pipeline import checkpoint", "payflow.runtime is not allowed to import payflow.pipeline"),
    ("payflow/app.py", "import payflow.agents.pipeline", "payflow.app is not allowed to import payflow.agents"),
    ("payflow/warehouse/child.py", "from payflow import query", "payflow.warehouse is not allowed to import payflow.query"),
    # agents/ and tables/ are read where they are installed, as payflow.agents and payflow.tables
    ("tables/changelog.py", "from payflow import cli", "payflow.tables is not allowed to import payflow.cli"),
    ("agents/erasure.py", "import payflow.worker_app", "payflow.agents is not allowed to import payflow.worker_app"),
])
def test_an_import_against_the_layers_breaks_the_contract(copy_of_payflow, module, line, broken):
    path = copy_of_payflow / module
    path.write_text(path.read_text() + f"\n{line}  # added by the test\n")
    result = lint(copy_of_payflow)
    assert result.returncode != 0
    assert broken in said(result), result.stdout[-3000:]


def test_a_package_the_wheel_would_leave_out_breaks_the_contract(copy_of_payflow):
    """The layout is the one setup.cfg ships: a package missing from its list is missing here."""
    config = copy_of_payflow / "setup.cfg"
    config.write_text(config.read_text().replace("    payflow.pipeline\n", "", 1))
    result = lint(copy_of_payflow)
    assert result.returncode != 0
    assert "module payflow.pipeline does not exist" in said(result), result.stdout[-3000:]
