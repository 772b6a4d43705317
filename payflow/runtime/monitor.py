"""A Faust Monitor without the per-event bookkeeping, and Faust's stall detector told the truth.

Faust's Monitor sensor runs hooks for every message, stream event, table operation and
send; on a 2-core machine that was about a fifth of an empty agent's cost. payflow exports
its own Prometheus metrics, so those hooks do nothing here. Rebalance, commit and
assignment hooks stay (rare, and Faust expects their state). One hook is kept cheap:
`on_stream_event_in` still notes when a stream last received an event, which Faust's stall
detector reads for topics that go through Faust's stream (the erasure requests).

Faust's stall detector (`AIOKafkaConsumerThread.verify_event_path`, every 2.5 s per
partition) judges a partition by its stream's inbound time and the time of its last commit
since the worker started. The raw topic's messages do not go through a stream (they reach
the agent as whole fetches, payflow.runtime.fetch) and a partition assigned late has had no
commit "since the worker started": it logged "Stream has not started processing" and "Has not
committed ... at all" every few seconds about partitions being processed. For routed topics
`verify_event_path` keeps Faust's fetch-request check only; payflow.runtime.health watches
their taken-but-unacknowledged messages and logs a stall once.
"""
from __future__ import annotations

from time import monotonic
from typing import Any

from faust.sensors import Monitor

from payflow.runtime import fetch, seams


class LeanMonitor(Monitor):
    def on_message_in(self, *args: Any) -> None:
        pass

    def on_stream_event_in(self, tp: Any, offset: int, stream: Any, event: Any) -> None:
        self.stream_inbound_time[tp] = monotonic()  # read by Faust's stall detector
        return None

    def on_stream_event_out(self, *args: Any, **kwargs: Any) -> None:
        pass

    def on_message_out(self, *args: Any) -> None:
        pass

    def on_table_get(self, *args: Any) -> None:
        pass

    def on_table_set(self, *args: Any) -> None:
        pass

    def on_table_del(self, *args: Any) -> None:
        pass

    def on_send_initiated(self, *args: Any, **kwargs: Any) -> None:
        return None

    def on_send_completed(self, *args: Any) -> None:
        pass


def verify_event_path(self: Any, now: float, tp: Any) -> None:
    """Faust's check of a partition's event path; for a routed topic, its fetch part only."""
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
    if fetch.routed(tp.topic):
        self._verify_aiokafka_event_path(now, tp)  # noqa: SLF001 - fetch requests still sent?
        return None
    return seams.original(AIOKafkaConsumerThread, "verify_event_path")(self, now, tp)


def install() -> None:
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
    seams.require(AIOKafkaConsumerThread, "_verify_aiokafka_event_path")
    seams.replace(AIOKafkaConsumerThread, "verify_event_path", verify_event_path)
