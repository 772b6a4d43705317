"""Runs import-linter's contracts (setup.cfg, [importlinter]) over payflow as it is installed.

agents/ and tables/ are folders of the repository installed as payflow.agents and
payflow.tables (setup.cfg, package_dir); import-linter finds a package's modules by walking
its folder, so it would not see them. This lays out, in a temporary folder, the packages
setup.cfg ships (`packages`, from the folders `package_dir` names; their .py files), and runs
lint-imports there: a package the wheel would leave out is missing here too, and a contract
naming it fails. Exit status: lint-imports' own.

    python scripts/lint_imports.py [CHECKOUT]
"""
from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def shipped_packages(root: Path = ROOT) -> dict[str, Path]:
    """package -> the folder setuptools builds it from (setup.cfg: packages, package_dir)."""
    options = configparser.ConfigParser()
    options.read(root / "setup.cfg")
    packages = options["options"]["packages"].split()
    package_dir = dict(line.split("=", 1) for line in options["options"].get("package_dir", "").strip().splitlines())
    package_dir = {k.strip(): v.strip() for k, v in package_dir.items()}
    folders = {}
    for package in packages:
        mapped = max((p for p in package_dir if package == p or package.startswith(p + ".")), key=len, default=None)
        if mapped is None:
            folders[package] = root / package.replace(".", "/")
        else:
            folders[package] = root / package_dir[mapped] / package[len(mapped) + 1:].replace(".", "/")
    return folders


def lay_out(target: Path, root: Path = ROOT) -> Path:
    """The .py files of every package setup.cfg ships, where an installed payflow has them."""
    for package, folder in shipped_packages(root).items():
        destination = target / package.replace(".", "/")
        destination.mkdir(parents=True, exist_ok=True)
        for source in folder.glob("*.py"):
            shutil.copy2(source, destination / source.name)
    return target


def main(argv: list[str]) -> int:
    checkout = Path(argv[0]).resolve() if argv else ROOT
    with tempfile.TemporaryDirectory(prefix="payflow-layers-") as tmp:
        lay_out(Path(tmp), checkout)
        # import-linter of this Python, whatever its scripts folder; the laid-out copy comes
        # first on the path: it is the payflow that lint-imports reads
        return subprocess.run([sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command;"
                               " sys.argv[0] = 'lint-imports'; sys.exit(lint_imports_command())",
                               str(checkout / "setup.cfg"), "--no-cache"],
                              cwd=tmp, env={"PYTHONPATH": tmp, "PATH": "/usr/bin:/bin"}).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
