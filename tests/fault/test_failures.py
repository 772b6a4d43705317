"""A failure never commits what was not processed and never hides: the worker stops with a
non-zero exit and a clear line (a full state disk), SIGTERM ends within its bound even with
a landing wedged on a silent warehouse, and after the restart every payment reconciles
exactly. Real broker, real worker processes, a real full filesystem (tmpfs), a real
silent endpoint in front of the BigQuery emulator."""
from __future__ import annotations

import asyncio
import socket
import subprocess
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest

from payflow.warehouse.bq import BigQueryWarehouse
from tests.fault.test_faults import assert_reconciled_and_clean, consumed
from tests.helpers import BQ_GRPC, BQ_PROJECT, KAFKA, Worker, simulate, unique, wait_until
from tests.outage_proxy import OutageProxy

pytestmark = [pytest.mark.integration, pytest.mark.fault]


@pytest.fixture
def small_disk(tmp: Path):
    """A 48 MB tmpfs: the worker's state directory on a disk that can really fill up."""
    mount = tmp / "small-disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    assert done.returncode == 0, f"this fault test mounts a tmpfs (needs root): {done.stderr}"
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(mount: Path) -> Path:
    """Write a file until the filesystem has no byte left."""
    filler = mount / "filler"
    chunk = b"\0" * (1 << 20)
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(chunk)
        except OSError:
            pass
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass
    return filler


def test_a_full_state_disk_stops_the_worker_and_the_restart_reconciles_exactly(kafka, tmp, small_disk):
    prefix = unique("disk-") + "-"
    worker = Worker(tmp, prefix=prefix, extra_env={"PAYFLOW_DATA_DIR": str(small_disk / "data"),
                                                    "PAYFLOW_SINK_BATCH_SIZE": "500"})
    manifest: dict = {}

    def produce() -> None:  # steady traffic, so the disk fills up under a running pipeline
        from datetime import datetime, timezone

        from payflow.simulator.generator import SimOptions
        from payflow.simulator.producer import simulate as run
        options = SimOptions(count=24_000, seed=41, start_time=datetime(2026, 11, 20, 8, 0, tzinfo=timezone.utc))
        m = asyncio.run(run(options, bootstrap=KAFKA, topic=prefix + "payment-events", partitions=4,
                            manifest_path=tmp / "m.json", progress=False, rate=1500))
        manifest.update(m.to_dict())

    producer = threading.Thread(target=produce)
    producer.start()
    worker.start()
    try:
        wait_until(lambda: consumed(worker) >= 3000, 180, interval=0.2, what="3,000 events consumed")
        filler = _fill(small_disk)
        # the worker stops by itself: one clear line, a non-zero exit, no restart loop
        wait_until(lambda: not worker.alive(), 120, interval=0.5, what="the worker to stop on the full disk")
        assert worker.proc.returncode == 70, worker.log_tail()
        log = worker.log_path.read_text(errors="replace")
        assert "stopping the worker (exit 70)" in log, worker.log_tail()
        assert "cannot rollback" not in log
        filler.unlink()  # the operator frees the disk; the orchestrator restarts the worker
        producer.join(timeout=300)
        worker.start()
        worker.wait_caught_up(timeout=300)
    finally:
        producer.join(timeout=300)
        assert worker.stop() == 0, worker.log_tail()
    assert manifest["messages_sent"] == 24_000
    assert_reconciled_and_clean(worker, tmp / "m.json", data_dir=small_disk / "data")


class SilentEndpoint:
    """Accepts TCP connections in the kernel's backlog and never answers: a warehouse that
    hangs rather than refuses."""

    def __init__(self, port: int):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(512)

    def close(self) -> None:
        self.sock.close()


@pytest.mark.alone
def test_sigterm_ends_within_its_bound_while_a_landing_hangs(kafka, bq_endpoint, tmp):
    prefix = unique("term-") + "-"
    simulate(prefix, tmp / "m.json", count=6_000, seed=42)
    emulator = urlparse(bq_endpoint)
    proxy = OutageProxy(emulator.hostname, emulator.port).up()
    dataset = unique("term_")
    worker = Worker(tmp, prefix=prefix, warehouse=f"bigquery://{BQ_PROJECT}/{dataset}",
                    extra_env={"PAYFLOW_BIGQUERY_ENDPOINT": f"http://127.0.0.1:{proxy.port}",
                               "PAYFLOW_SINK_BATCH_SIZE": "500", "PAYFLOW_SHUTDOWN_SECONDS": "8"}).start()
    silent = None
    try:
        wait_until(lambda: consumed(worker) >= 1000, 300, interval=0.2, what="1,000 events consumed")
        proxy.down()
        silent = SilentEndpoint(proxy.port)
        time.sleep(5)  # the next landing is now waiting on a warehouse that never answers
        assert worker.alive(), worker.log_tail()
        started = time.monotonic()
        code = worker.stop(timeout=60)
        took = time.monotonic() - started
        assert took < 8 + 12, f"SIGTERM took {took:.0f} s"
        assert code in (0, 75), worker.log_tail()
        silent.close()
        silent = None
        proxy.up()
        worker.start()
        worker.wait_caught_up(timeout=600)
    finally:
        if silent is not None:
            silent.close()
        assert worker.stop() == 0, worker.log_tail()
        proxy.stop()
    warehouse = BigQueryWarehouse(BQ_PROJECT, dataset, endpoint=bq_endpoint, grpc_endpoint=BQ_GRPC)
    try:
        assert_reconciled_and_clean(worker, tmp / "m.json", warehouse)
    finally:
        warehouse.client.delete_dataset(f"{BQ_PROJECT}.{dataset}", delete_contents=True, not_found_ok=True)
        warehouse.close()
