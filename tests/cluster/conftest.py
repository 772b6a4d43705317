"""The secured 3-node cluster tests: run by scripts/test_cluster.sh (make test-cluster), which
starts the cluster and exports its settings (PAYFLOW_CLUSTER_ENV and the PAYFLOW_KAFKA_* security
variables). Without it these tests are not collected, so `make test` on one PLAINTEXT broker
does not try them; with it, a cluster that does not answer fails them, never skips them."""
from __future__ import annotations

import asyncio
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from payflow.settings import ROOT

collect_ignore_glob = [] if os.environ.get("PAYFLOW_CLUSTER_ENV") else ["test_*.py"]


@dataclass(frozen=True)
class Cluster:
    env: dict[str, str]  # cluster.env: bootstrap addresses, CA and client files, user, password file

    @property
    def bootstrap(self) -> str:
        return self.env["PAYFLOW_CLUSTER_BOOTSTRAP"]

    @property
    def first_broker(self) -> str:
        return self.bootstrap.split(",")[0]

    def node(self, action: str, node: int) -> None:
        """scripts/kafka_cluster.sh node-kill N (SIGKILL) or node-start N (and wait until it serves)."""
        proc = subprocess.run([str(ROOT / "scripts" / "kafka_cluster.sh"), action, str(node)],
                              capture_output=True, text=True, timeout=180,
                              env={**os.environ, "PAYFLOW_RUN_DIR": self.env["PAYFLOW_CLUSTER_RUN_DIR"],
                                   "PAYFLOW_CLUSTER_PORT_BASE": self.env["PAYFLOW_CLUSTER_PORT_BASE"]})
        assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.fixture(scope="session")
def cluster() -> Cluster:
    path = Path(os.environ["PAYFLOW_CLUSTER_ENV"])
    env = dict(line.rstrip("\n").split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    from payflow.kafka_security import KafkaConnectionFailure, check_connection
    try:
        asyncio.run(check_connection(env["PAYFLOW_CLUSTER_BOOTSTRAP"], timeout=30))
    except KafkaConnectionFailure as exc:
        pytest.fail(f"the secured cluster does not answer ({exc}): run scripts/test_cluster.sh")
    return Cluster(env)
