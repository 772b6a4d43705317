"""Running `payflow worker` as a child process until it has committed every offset of the raw
topic (and of any other topics named), then stopping it: what the demo and the fraud evaluation do with the real worker."""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from payflow.kafka_admin import group_lag
from payflow.settings import Settings


class CatchUpFailed(Exception):
    """The worker exited, or did not catch up in time."""


def worker_stdout_log(settings: Settings) -> Path:
    """Where run_worker_until_caught_up writes the worker's output."""
    return settings.data_dir / "worker-stdout.log"


def run_worker_until_caught_up(settings: Settings, *, timeout: float, interval: float = 2.0,
                               topics: tuple[str, ...] = ()) -> float:
    """Starts the worker (its output in worker_stdout_log), prints the raw topic's
    uncommitted messages every `interval` seconds, stops the worker once there are none.
    Returns the seconds it took; raises CatchUpFailed."""
    log_path = worker_stdout_log(settings)
    with open(log_path, "wb") as log:
        worker = subprocess.Popen([sys.executable, "-m", "payflow.cli", "worker", "-l", "info"],
                                  stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    started = time.monotonic()
    try:
        while True:
            if worker.poll() is not None:
                raise CatchUpFailed(f"the worker exited with {worker.returncode}; see {log_path}")
            lag = sum(sum(asyncio.run(group_lag(settings.kafka_bootstrap, settings.app_id, topic)).values())
                      for topic in (settings.topics.raw, *topics))
            print(f"  {time.monotonic() - started:5.1f} s  messages not yet committed: {lag}", flush=True)
            if lag == 0:
                return time.monotonic() - started
            if time.monotonic() - started > timeout:
                raise CatchUpFailed(f"the worker did not catch up within {timeout / 60:.0f} minutes; see {log_path}")
            time.sleep(interval)
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGTERM)
            worker.wait(timeout=60)
