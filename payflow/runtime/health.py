"""Logs that tell the truth about a worker's health: outages and stalls, each said once.

- Broker outage: aiokafka and Faust log a warning or error for every failed connect, fetch,
  heartbeat and metadata request, and Faust's event-path check one per partition every few
  seconds: thousands of lines for a 20 s outage. `LibraryLogFilter` turns them into one line
  when the outage starts, a summary every `summary_seconds` (how many lines, of which kinds)
  and one line when the broker answers again.
- Warehouse outage: the sink logs each retry; the first starts an outage, the rest are
  summarised, and its end is the next landing acknowledged.
- Stall: raw-topic messages taken by the agent and not acknowledged for `stall_seconds`
  (a landing, or a lock it waits for, that does not finish) are logged once, and once more
  when they move again.

The filter sits on the root logger's handlers, put there by the worker's timer on every tick
(Faust's worker replaces the handlers when it configures logging; a process that only
imports the app, a CLI command, gets no filter).
"""
from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Iterable

log = logging.getLogger("payflow.health")

LIBRARIES = ("aiokafka", "faust", "mode", "kafka")
# what a library line says when the broker cannot be reached (message text or exception type)
BROKER_TROUBLE = (
    "unable connect", "connect attempt", "connection", "kafkaconnectionerror", "nodenotready",
    "unable to update metadata", "unable to request metadata", "failed fetch messages", "heartbeat failed",
    "coordinatornotavailable", "coordinator dead", "requesttimedout", "broker stopped responding",
    "stopped fetching", "no active partitions", "refused",
)
WAREHOUSE_TROUBLE = ("warehouse unavailable",)


@dataclass
class Outage:
    """One kind of outage (the broker, the warehouse): start, periodic summary, end."""
    what: str
    summary_seconds: float = 30.0
    emit: Callable[..., None] = log.warning
    quiet_seconds: float = 5.0  # no failure for this long, and the probe says up: ended
    started: float | None = None
    last_failure: float = 0.0
    last_summary: float = 0.0
    suppressed: Counter = field(default_factory=Counter)
    total: int = 0

    @property
    def active(self) -> bool:
        return self.started is not None

    def failed(self, kind: str, detail: str, now: float) -> None:
        """A line saying `what` failed: the first starts the outage, the rest are counted."""
        self.last_failure = now
        if self.started is None:
            self.started = self.last_summary = now
            self.suppressed.clear()
            self.total = 0
            self.emit("%s outage started: %s; further errors about it are summarised every %.0f s "
                      "until it ends", self.what, detail, self.summary_seconds)
            return
        self.suppressed[kind] += 1
        self.total += 1

    def tick(self, now: float) -> None:
        """The periodic summary, while the outage lasts."""
        if self.started is not None and now - self.last_summary >= self.summary_seconds:
            self.last_summary = now
            self.emit("%s outage continues (%.0f s): %d error line(s) suppressed so far%s", self.what,
                      now - self.started, self.total, _kinds(self.suppressed))

    def recovered(self, now: float) -> None:
        """The probe says `what` works again: the outage ends once no failure came for a while."""
        if self.started is None or now - self.last_failure < self.quiet_seconds:
            return
        seconds, self.started = now - self.started, None
        log.warning("%s outage ended after %.0f s: %d error line(s) suppressed%s", self.what, seconds,
                    self.total, _kinds(self.suppressed))


def _kinds(counts: Counter) -> str:
    if not counts:
        return ""
    top = ", ".join(f"{kind}: {n}" for kind, n in counts.most_common(4))
    more = len(counts) - 4
    return f" ({top}{f', {more} more kind(s)' if more > 0 else ''})"


def _kind(record: logging.LogRecord) -> str:
    return f"{record.name} {record.levelname.lower()}"


def _text(record: logging.LogRecord) -> str:
    try:
        text = record.getMessage()
    except Exception:  # noqa: BLE001 - a malformed record: judge it by its template
        text = str(record.msg)
    if record.exc_info and record.exc_info[0] is not None:
        text += " " + record.exc_info[0].__name__
    return text


def _detail(record: logging.LogRecord) -> str:
    first = _text(record).strip().splitlines()
    return f"{record.name}: {first[0][:200] if first else record.levelname}"


class LibraryLogFilter(logging.Filter):
    """Folds the library's repeated warnings and errors about an outage into the Outage lines."""

    def __init__(self, broker: Outage, warehouse: Outage, clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self.broker = broker
        self.warehouse = warehouse
        self.clock = clock

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING or record.levelno >= logging.CRITICAL:
            return True
        decided = getattr(record, "_payflow_health", None)  # judged by another handler already
        if decided is None:
            decided = record._payflow_health = self._judge(record)  # type: ignore[attr-defined]
        return decided

    def _judge(self, record: logging.LogRecord) -> bool:
        name = record.name
        if name.startswith(LIBRARIES):
            if self.broker.active:
                self.broker.failed(_kind(record), "", self.clock())
                return False
            if any(word in _text(record).lower() for word in BROKER_TROUBLE):
                self.broker.failed(_kind(record), _detail(record), self.clock())
                return False
            return True
        if name == "payflow.sink" and str(record.msg).startswith(WAREHOUSE_TROUBLE):
            self.warehouse.failed("warehouse retry", _text(record), self.clock())
            return False
        return True


def attach_filter(flt: logging.Filter) -> None:
    """Put `flt` on every handler of the root logger that lacks it (idempotent)."""
    for handler in logging.getLogger().handlers:
        if flt not in handler.filters:
            handler.addFilter(flt)


@dataclass
class StallWatch:
    """Partitions whose taken messages wait for their acknowledgement longer than `stall_seconds`."""
    stall_seconds: float = 30.0
    _waiting_since: dict[Hashable, tuple[Any, float]] = field(default_factory=dict)
    _reported: set = field(default_factory=set)

    def check(self, in_flight: dict[Hashable, Any], now: float) -> tuple[list, list]:
        """in_flight: partition -> its progress marker (what it has acknowledged so far), for
        partitions with taken, unacknowledged messages. Returns (newly stalled partitions with
        their seconds, partitions moving again with theirs)."""
        stalled, moving = [], []
        for tp in list(self._waiting_since):
            marker, since = self._waiting_since[tp]
            if tp not in in_flight or in_flight[tp] != marker:
                del self._waiting_since[tp]
                if tp in self._reported:
                    self._reported.discard(tp)
                    moving.append((tp, now - since))
        for tp, marker in in_flight.items():
            if tp not in self._waiting_since:
                self._waiting_since[tp] = (marker, now)
                continue
            since = self._waiting_since[tp][1]
            if tp not in self._reported and now - since >= self.stall_seconds:
                self._reported.add(tp)
                stalled.append((tp, now - since))
        return stalled, moving


def _partitions(tps: Iterable[Any]) -> str:
    return ", ".join(str(getattr(tp, "partition", tp)) for tp in sorted(tps, key=lambda t: getattr(t, "partition", 0)))


def report_stalls(stalled: list, moving: list, topic: str, outages: Iterable[Outage] = ()) -> None:
    if stalled:
        during = [o.what for o in outages if o.active]
        log.warning("%s partition(s) %s: messages taken %.0f s ago are still not acknowledged: their "
                    "landing (the warehouse write, the outputs and changelog on Kafka, or a lock they wait "
                    "for) has not finished%s; logged once, and again when they move", topic,
                    _partitions(tp for tp, _ in stalled), max(s for _, s in stalled),
                    f" (during the {' and '.join(during)} outage)" if during else "")
    if moving:
        log.warning("%s partition(s) %s: acknowledged again after %.0f s", topic,
                    _partitions(tp for tp, _ in moving), max(s for _, s in moving))


def in_flight_progress(consumer: Any, topic: str) -> dict:
    """topic's partitions with taken, unacknowledged messages -> (committed offset, acked count)."""
    busy = {m.tp for m in list(consumer._unacked_messages) if m.tp.topic == topic}  # noqa: SLF001
    committed = consumer._committed_offset  # noqa: SLF001
    acked = consumer._acked  # noqa: SLF001
    return {tp: (committed.get(tp), len(acked.get(tp) or ())) for tp in busy}


def broker_reachable(consumer: Any) -> bool:
    """True if the worker's aiokafka consumer holds a live broker connection."""
    try:
        client = consumer._thread._consumer._client  # noqa: SLF001 - aiokafka's client under Faust's
        return any(conn.connected() for conn in client._conns.values())  # noqa: SLF001
    except Exception:  # noqa: BLE001 - not started yet, or stopping
        return False


@dataclass
class Health:
    broker: Outage
    warehouse: Outage
    filter: LibraryLogFilter
    stalls: StallWatch
    last_ack_seen: float = 0.0


def new_health(*, stall_seconds: float = 30.0, summary_seconds: float = 30.0,
               clock: Callable[[], float] = time.monotonic) -> Health:
    broker = Outage("Kafka broker", summary_seconds)
    # the warehouse's end is certain (a landing was acknowledged): no quiet period
    warehouse = Outage("warehouse", summary_seconds, quiet_seconds=0.0)
    return Health(broker, warehouse, LibraryLogFilter(broker, warehouse, clock), StallWatch(stall_seconds))


def watch(app: Any, raw_topic: str, *, interval: float = 2.0, stall_seconds: float = 30.0,
          summary_seconds: float = 30.0, last_ack: Callable[[], float] | None = None) -> Health:
    """Run the outage and stall watch on `app` every `interval` seconds. `last_ack`: the
    time of the warehouse's last acknowledgement (default: the sink's gauge)."""
    health = new_health(stall_seconds=stall_seconds, summary_seconds=summary_seconds)
    # the filter goes on at the first tick: only a running worker ends an outage it saw start
    if last_ack is None:
        from payflow import metrics
        from payflow.runtime.prometheus import value

        def last_ack() -> float:
            return value(metrics.LAST_ACK_TIME)
    health.last_ack_seen = last_ack()

    @app.timer(interval=interval, name="payflow.health")
    async def check_health() -> None:
        tick(health, app.consumer, raw_topic, last_ack(), time.monotonic())

    return health


def tick(health: Health, consumer: Any, raw_topic: str, last_ack: float, now: float) -> None:
    attach_filter(health.filter)  # Faust's worker may have configured logging anew
    if health.broker.active and broker_reachable(consumer):
        health.broker.recovered(now)
    health.broker.tick(now)
    if last_ack > health.last_ack_seen:
        health.last_ack_seen = last_ack
        health.warehouse.recovered(now)
    health.warehouse.tick(now)
    try:
        progress = in_flight_progress(consumer, raw_topic)
    except Exception:  # noqa: BLE001 - consumer not started or rebalancing: look again later
        return
    report_stalls(*health.stalls.check(progress, now), raw_topic, (health.broker, health.warehouse))
