"""payflow's runtime: every piece that touches Faust, mode, aiokafka or prometheus_client internals.

Each seam, what it replaces, and why (the module docstrings say more):

  fetch           Consumer._drain_messages    raw-topic records reach the agent a fetch at a time;
                  Consumer.seek,              seeks counted and run in the consumer thread: a fetch
                  ThreadDelegateConsumer._seek  in flight during a seek is dropped, not delivered
  take            (calls Stream internals)    batches with manual acks, idle ticks, no blocking
  commit_offsets  Consumer._new_offset,       never commit over an offset that was not acked
                  Consumer.perform_seek       (faust#606), checked at the point of commit; a
                                              first offset for new partitions; the generation
                                              whose assignment is sought
  landing_fence   (calls the group            a BigQuery landing decided by a generation-fenced
                  coordinator, Faust's        offset commit naming its write streams; a refused
                  pending acks)               landing read again
  worker          AIOKafkaConsumerThread.     read_committed whatever the guarantee; a bounded
                  _create_worker_consumer,    shutdown after SIGTERM/SIGINT
                  Worker._on_sigterm/_sigint
  monitor         AIOKafkaConsumerThread.     no false stall errors about routed partitions;
                  verify_event_path           a Monitor without per-event hooks
  stall_guard     (reads Consumer state)      seeks back partitions Faust stopped delivering
  health          (log filter, broker probe)  outages and stalls logged once, then summarised;
                                              readiness that tells a frozen broker or warehouse
  tables          Table._new_changelog_topic  state changelogs deleted by retention, not compacted
  internals, prometheus                       private reads for code outside the runtime

`install()` checks the library versions first (payflow.runtime.seams) and puts every seam
in place through `seams.replace`, which refuses if a replaced method is gone; `attach(app)`
starts the runtime's timers once the app exists. Every private access is marked
`# noqa: SLF001`.
"""
from __future__ import annotations

from typing import Any

from payflow.runtime.seams import MissingSeam, UnauditedVersion, check_versions, original, replace, require

__all__ = ["MissingSeam", "UnauditedVersion", "attach", "check_versions", "install", "original", "refuse_unaudited",
           "replace", "require"]


def refuse_unaudited(tool: str) -> None:
    """For a tool run outside the CLI (the demo, the benchmark, the fraud evaluation): the
    version guard, as one line on stderr and exit status 2."""
    import sys
    try:
        check_versions()
    except UnauditedVersion as exc:
        print(f"{tool}: error: {exc}", file=sys.stderr)
        sys.exit(2)


def install(*, shutdown_seconds: float) -> None:
    """Refuse unaudited library versions, then install every seam (idempotent)."""
    check_versions()
    from payflow.runtime import commit_offsets, fetch, monitor, take, worker

    fetch.install()
    take.install()
    commit_offsets.install()
    worker.install(shutdown_seconds)
    monitor.install()


def attach(app: Any, *, raw_topic: str, settings: Any = None) -> None:
    """The runtime's timers on `app`: the stall guard (faust#596) and the health watch (with
    `settings`: its broker probe and the readiness bounds)."""
    from payflow.runtime import health, stall_guard

    def sink() -> Any:
        running = getattr(app, "pipeline_runtime", None)  # set by the pipeline agent once started
        return running.sink if running is not None else None

    stall_guard.register(app, raw_topic)
    if settings is None:
        health.watch(app, raw_topic, sink=sink)
    else:
        health.watch(app, raw_topic, sink=sink, bootstrap=settings.kafka_bootstrap,
                     broker_seconds=settings.ready_broker_seconds,
                     landing_stall_seconds=settings.ready_landing_stall_seconds)
