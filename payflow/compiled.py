"""The per-event stages compiled by mypyc (setup.py): which are in use, and that none is stale.

A compiled module shadows its .py (Python imports the extension first), so one built
before its source last changed would run the old code without a word.
"""
from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).parent
# a wheel's files are written one after another at install time: not a change of source
_INSTALL_SLACK_SECONDS = 2.0


class StaleCompiledModule(ImportError):
    pass


def compiled_modules(package_dir: Path = PACKAGE_DIR) -> dict[str, Path]:
    """module name -> its compiled extension, for the package's modules that have one."""
    return {so.name.split(".", 1)[0]: so for so in sorted(package_dir.glob("*.so"))}


def refuse_stale(package_dir: Path = PACKAGE_DIR) -> None:
    for name, extension in compiled_modules(package_dir).items():
        source = package_dir / f"{name}.py"
        if source.exists() and source.stat().st_mtime > extension.stat().st_mtime + _INSTALL_SLACK_SECONDS:
            raise StaleCompiledModule(
                f"{source} changed after it was compiled to {extension.name}, which would run instead: "
                "run `make install` to compile it again (or delete the .so files to run the stages as Python)")
