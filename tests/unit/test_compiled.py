"""The per-event stages run compiled (setup.py, mypyc) wherever they were built, and a
compiled module older than its source is refused rather than run."""
from __future__ import annotations

import importlib
import os
import re
from pathlib import Path

import pytest

from payflow.runtime import process

ROOT = Path(__file__).resolve().parents[2]


def _compiled_by_setup() -> list[str]:
    """The module names setup.py hands to mypyc: every module of the folders it names."""
    text = (ROOT / "setup.py").read_text()
    folders = re.findall(r'"(payflow/[a-z_]+)"', re.search(r"COMPILED_DIRS = \((.*?)\)", text, re.S).group(1))
    assert folders == ["payflow/stages"]
    return sorted(p.stem for p in (ROOT / "payflow/stages").glob("*.py") if p.name != "__init__.py")


def test_the_stages_in_use_are_the_compiled_ones_unless_built_as_pure_python():
    names = _compiled_by_setup()
    assert {"validation", "mask", "dedup", "fraud", "batch"} <= set(names)
    loaded = {name: importlib.import_module(f"payflow.stages.{name}").__file__ for name in names}
    if os.environ.get("PAYFLOW_PURE_PYTHON") == "1":
        assert all(path.endswith(".py") for path in loaded.values()), loaded
    else:  # what `make install` builds, and what `make bench` measures
        assert all(path.endswith(".so") for path in loaded.values()), loaded
        assert sorted(process.compiled_modules()) == names


def _package(tmp_path: Path, source_age: float, extension_age: float) -> Path:
    (tmp_path / "fraud.py").write_text("# source\n")
    from importlib.machinery import EXTENSION_SUFFIXES  # this interpreter's: .cpython-3XX-...so
    extension = tmp_path / f"fraud{EXTENSION_SUFFIXES[0]}"
    (tmp_path / "fraud.cpython-39-x86_64-linux-gnu.so").write_bytes(b"")  # another Python's: not ours
    extension.write_bytes(b"\x7fELF")
    now = 1_800_000_000
    os.utime(tmp_path / "fraud.py", (now - source_age, now - source_age))
    os.utime(extension, (now - extension_age, now - extension_age))
    return tmp_path


def test_a_module_compiled_after_its_source_changed_is_used(tmp_path):
    process.refuse_stale(_package(tmp_path, source_age=60, extension_age=30))
    assert list(process.compiled_modules(tmp_path)) == ["fraud"]


def test_files_written_together_by_an_install_are_not_stale(tmp_path):
    process.refuse_stale(_package(tmp_path, source_age=30, extension_age=30.5))


def test_a_source_changed_after_it_was_compiled_is_refused(tmp_path):
    with pytest.raises(process.StaleCompiledModule, match=r"fraud\.py changed after it was compiled.*make install"):
        process.refuse_stale(_package(tmp_path, source_age=10, extension_age=600))


def test_a_compiled_module_whose_source_is_gone_is_refused(tmp_path):
    # a module merged into another: its old extension would still import under the old name
    package = _package(tmp_path, source_age=60, extension_age=30)
    (package / "fraud.py").unlink()
    with pytest.raises(process.StaleCompiledModule, match=r"has no source fraud\.py.*make install"):
        process.refuse_stale(package)
