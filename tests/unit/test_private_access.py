"""Faust, mode, aiokafka, prometheus_client and click internals are touched only inside
payflow/runtime/ (version-guarded, each access marked `# noqa: SLF001`). Outside it, no
private attribute of another object is read: our own objects' privates only through self."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUTSIDE_RUNTIME = [p for d in ("payflow", "agents", "tables") for p in sorted((ROOT / d).rglob("*.py"))
                   if "runtime" not in p.relative_to(ROOT).parts]
# `x._name` where x is not self/cls/super() and not one of payflow's own modules or objects
PRIVATE = re.compile(r"(?<![\w.])(?!self\b|cls\b|os\b|heapq\b)([A-Za-z_][\w]*(?:\(\))?)\._[a-z][a-z0-9_]*")
OWN = {"wh", "sl", "factory", "handler", "record", "batch_stage", "runtime"}  # payflow's own objects


def test_the_runtime_package_is_the_only_home_of_private_access():
    marked = [f"{p.relative_to(ROOT)}:{n}" for p in OUTSIDE_RUNTIME
              for n, line in enumerate(p.read_text().splitlines(), 1) if "SLF001" in line]
    assert marked == [], marked
    found = []
    for path in OUTSIDE_RUNTIME:
        for n, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            for m in PRIVATE.finditer(code):
                if m.group(1) not in OWN and not m.group(1).startswith("super"):
                    found.append(f"{path.relative_to(ROOT)}:{n}: {m.group(0)}")
    assert found == [], "private access outside payflow/runtime/:\n" + "\n".join(found)
