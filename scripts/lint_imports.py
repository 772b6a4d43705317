"""Runs import-linter's contracts (setup.cfg, [importlinter]) over payflow as it is installed.

agents/ and tables/ are folders of the repository installed as payflow.agents and
payflow.tables (setup.cfg, package_dir); import-linter finds a package's modules by walking
its folder, so it would not see them. This lays the package out as installed (the .py files
only, in a temporary folder) and runs lint-imports there. Exit status: lint-imports' own.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# package -> the repository folder it is installed from (setup.cfg: packages, package_dir)
INSTALLED_FROM = {"payflow": "payflow", "payflow/agents": "agents", "payflow/tables": "tables"}


def lay_out(target: Path, root: Path = ROOT) -> Path:
    for package, folder in INSTALLED_FROM.items():
        shutil.copytree(root / folder, target / package, dirs_exist_ok=True,
                        ignore=lambda _, names: [n for n in names if not (n.endswith(".py") or (root / folder / n).is_dir())
                                                 or n == "__pycache__"])
    return target


def main(argv: list[str]) -> int:
    with tempfile.TemporaryDirectory(prefix="payflow-layers-") as tmp:
        lay_out(Path(tmp), Path(argv[0]).resolve() if argv else ROOT)
        lint = Path(sys.executable).with_name("lint-imports")
        # the laid-out copy comes first on the path: it is the payflow that lint-imports reads
        return subprocess.run([str(lint), "--config", str(ROOT / "setup.cfg"), "--no-cache"],
                              cwd=tmp, env={"PYTHONPATH": tmp, "PATH": "/usr/bin:/bin"}).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
