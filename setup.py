"""Compiles payflow's per-event stages to C extensions with mypyc; metadata is in setup.cfg.

The stages (payflow/stages/: decode, mask, dedup, fraud and the batch loop over them) are
plain typed Python, run once per payment on the worker's one busy core; mypyc compiles every
module of that folder unchanged (docs/performance.md has the gain). Everything else stays
interpreted: it runs once per batch or subclasses Faust classes mypyc cannot compile.
PAYFLOW_PURE_PYTHON=1 installs without compiling (no C compiler needed); the code is the same.
"""
import os
from pathlib import Path

from setuptools import setup

# the per-event path, by folder (payflow/runtime/process.py refuses to import one older than its source)
COMPILED_DIRS = ("payflow/stages",)
COMPILED_MODULES = sorted(str(p) for d in COMPILED_DIRS for p in Path(d).glob("*.py") if p.name != "__init__.py")

ext_modules = []
if os.environ.get("PAYFLOW_PURE_PYTHON") != "1":
    from mypyc.build import mypycify

    # mypyc type-checks what it compiles. Third-party packages are Any, whether or not they
    # are installed yet (pip builds before it installs the dependencies), and modules that
    # are imported but not compiled are read for their types, not checked.
    ext_modules = mypycify(["--no-site-packages", "--ignore-missing-imports", "--follow-imports=silent",
                            *COMPILED_MODULES], opt_level="3", group_name="payflow_stages")

setup(ext_modules=ext_modules)
