"""The per-event stages are pure: importing them loads nothing of Faust, mode, Kafka clients,
RocksDB, the warehouses' clients or payflow's environment settings. Each is imported in a
fresh interpreter and what it brought into sys.modules is checked."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

STAGES = ["payflow.stages.batch", "payflow.stages.cards", "payflow.stages.currencies", "payflow.stages.dedup",
          "payflow.stages.fraud", "payflow.stages.mask", "payflow.stages.redact", "payflow.stages.state",
          "payflow.stages.validation"]
FORBIDDEN = ("faust", "mode", "aiokafka", "kafka", "rocksdict", "google", "duckdb", "payflow.settings",
             "payflow.runtime", "payflow.warehouse", "payflow.app")
# payflow's package checks, at import, that no compiled stage is older than its source
# (payflow.runtime.process); the runtime package's own init loads only its version guard
# (seams: inspect and importlib.metadata), never Faust
ALLOWED = ("payflow.runtime", "payflow.runtime.process", "payflow.runtime.seams")


@pytest.mark.parametrize("module", STAGES)
def test_a_stage_imports_nothing_of_the_runtime_or_the_environment(module):
    code = f"import json, sys; import {module}; print(json.dumps(sorted(sys.modules)))"
    loaded = json.loads(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                                       text=True).stdout)
    brought = [m for m in loaded if m not in ALLOWED and any(m == f or m.startswith(f + ".") for f in FORBIDDEN)]
    assert brought == [], f"{module} imports {brought}"
