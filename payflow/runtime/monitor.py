"""A Faust Monitor without the per-event bookkeeping.

Faust's Monitor sensor runs hooks for every message, stream event, table operation and
send; on a 2-core machine that was about a fifth of an empty agent's cost. payflow exports
its own Prometheus metrics, so those hooks do nothing here. Rebalance, commit and
assignment hooks stay (rare, and Faust expects their state), and the agent keeps
`stream_inbound_time` current once per batch for Faust's stalled-stream detector.
"""
from __future__ import annotations

from typing import Any

from faust.sensors import Monitor


class LeanMonitor(Monitor):
    def on_message_in(self, *args: Any) -> None:
        pass

    def on_stream_event_in(self, *args: Any) -> None:
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
