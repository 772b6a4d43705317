"""Compiles payflow's per-event stages to C extensions with mypyc; metadata is in setup.cfg.

The stages (decode, mask, dedup, fraud and the batch loop over them) are plain typed Python,
run once per payment on the worker's one busy core. mypyc compiles them unchanged: ~15% less
CPU in them (README "Performance"). Everything else stays interpreted: it runs once per
batch, subclasses Faust classes mypyc cannot compile, or gained nothing compiled (models.py).
PAYFLOW_PURE_PYTHON=1 installs without compiling (no C compiler needed); the code is the same.
"""
import os

from setuptools import setup

# the per-event path (payflow/compiled.py refuses to import one older than its source)
COMPILED_MODULES = (
    "payflow/validation.py", "payflow/cards.py", "payflow/masking_remains.py", "payflow/currencies.py",
    "payflow/masking.py", "payflow/dedup.py", "payflow/fraud.py", "payflow/state.py",
    "payflow/watermarks.py", "payflow/pipeline.py",
)

ext_modules = []
if os.environ.get("PAYFLOW_PURE_PYTHON") != "1":
    from mypyc.build import mypycify

    # mypyc type-checks what it compiles. Third-party packages are Any, whether or not they
    # are installed yet (pip builds before it installs the dependencies), and modules that
    # are imported but not compiled are read for their types, not checked.
    ext_modules = mypycify(["--no-site-packages", "--ignore-missing-imports", "--follow-imports=silent",
                            *COMPILED_MODULES], opt_level="3", group_name="payflow_stages")

setup(ext_modules=ext_modules)
