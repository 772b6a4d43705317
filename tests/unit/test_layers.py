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


def test_payflow_keeps_its_layers():
    result = lint()
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "2 kept, 0 broken" in result.stdout
    # the installed layout was read: the agents and tables folders are inside the graph
    assert "Analyzed" in result.stdout


@pytest.fixture
def copy_of_payflow(tmp_path: Path) -> Path:
    for folder in ("payflow", "agents", "tables"):
        shutil.copytree(ROOT / folder, tmp_path / folder,
                        ignore=shutil.ignore_patterns("__pycache__", "*.so", "*.pyc"))
    return tmp_path


@pytest.mark.parametrize("module, line, broken", [
    ("payflow/stages/mask.py", "import faust", "the stages import nothing of Faust"),
    ("payflow/stages/fraud.py", "import os", "the stages import nothing of Faust"),
    ("payflow/runtime/fetch.py", "from payflow.pipeline import checkpoint", "payflow.runtime is not allowed to import payflow.pipeline"),
    ("payflow/app.py", "import payflow.agents.pipeline", "payflow.app is not allowed to import payflow.agents"),
    ("payflow/warehouse/child.py", "from payflow import query", "payflow.warehouse is not allowed to import payflow.query"),
    ("tables/changelog.py", "from payflow import cli", "payflow.tables is not allowed to import payflow.cli"),
])
def test_an_import_against_the_layers_breaks_the_contract(copy_of_payflow, module, line, broken):
    path = copy_of_payflow / module
    path.write_text(path.read_text() + f"\n{line}  # added by the test\n")
    result = lint(copy_of_payflow)
    assert result.returncode != 0
    assert broken in " ".join(result.stdout.split()), result.stdout[-3000:]
