"""Logs that tell the truth about a worker's health: outages and stalls, each said once.

- Broker outage: aiokafka and Faust log a warning or error for every failed connect, fetch,
  heartbeat and metadata request, and Faust's event-path check one per partition every few
  seconds: thousands of lines for a 20 s outage. `LibraryLogFilter` turns them into one line
  when the outage starts, a summary every `summary_seconds` (how many lines, of which kinds)
  and one line when the broker answers again. A broker that is frozen (its sockets open, no
  answers: a stopped process, a hung host) makes no library line for a long while, and
  Faust's connections to it still count as connected: `BrokerProbe` asks the brokers for
  their API versions every `interval` seconds through a client of its own (the security
  settings of payflow.kafka_security), each probe given `timeout` seconds; no answer for
  `broker_seconds` starts the outage and makes the worker not ready. The probe does not
  read Faust's or aiokafka's consumer state: a consumer that stops fetching because the
  warehouse is behind, or rebalances, is no broker outage. Rebalance and eviction lines
  (a heartbeat refused because the group rebalances, an unknown member, an expired
  session) are not broker trouble either: they are logged as they come.
- Warehouse outage: the sink logs each retry; the first starts an outage, the rest are
  summarised, and its end is the next landing acknowledged. A landing that hangs makes no
  line until its attempt times out: one not acknowledged for `landing_stall_seconds`
  starts the outage too, and makes the worker not ready (`payflow_sink_up` 0).
- Stall: raw-topic messages taken by the agent and not acknowledged for `stall_seconds`
  (a landing, or a lock it waits for, that does not finish) are logged once, and once more
  when they move again.

The filter sits on the worker's log handlers from the moment Faust's worker configures
logging (payflow.logs.worker_logging_config), before anything connects, and the watch
(`HealthWatch`, a service started first with the app) runs from then on, through a start
that waits for the broker; each tick puts the filter back on handlers configured anew. A
process that only imports the app, a CLI command, gets no filter.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Iterable

from mode import Service

log = logging.getLogger("payflow.health")

LIBRARIES = ("aiokafka", "faust", "mode", "kafka")
# what a library line says when the broker cannot be reached (message text or exception type)
BROKER_TROUBLE = (
    "unable connect", "connect attempt", "connection", "kafkaconnectionerror", "nodenotready",
    "unable to update metadata", "unable to request metadata", "failed fetch messages", "heartbeat failed",
    "coordinatornotavailable", "coordinator dead", "requesttimedout", "broker stopped responding",
    "refused",
)
# a group changing shape, or this worker evicted from it: not the broker's fault, logged as it comes
GROUP_CHURN = (
    "because it is rebalancing", "generation id is not", "member_id was not recognized",
    "heartbeat session expired", "no active partitions", "rebalanceinprogress", "illegalgeneration",
    "unknownmemberid",
)
# the consumer not fetching: what a full batch buffer does while the warehouse is behind
FETCH_PAUSED = ("stopped fetching",)
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

    def still_failing(self, now: float) -> None:
        """The outage goes on without a line to count (a probe still unanswered)."""
        if self.started is not None:
            self.last_failure = now

    def over_limit(self, kind: str, detail: Callable[[], str], now: float) -> None:
        """A periodic check found `what` failing (no broker answer, no landing acknowledged):
        the first time starts the outage with `detail()`, later checks only keep it going."""
        if self.started is None:
            self.failed(kind, detail(), now)
        self.still_failing(now)

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
            text = _text(record).lower()
            if any(word in text for word in GROUP_CHURN):
                return True
            if any(word in text for word in FETCH_PAUSED):
                if self.warehouse.active:
                    self.warehouse.failed(_kind(record), "", self.clock())
                    return False
                return True
            if any(word in text for word in BROKER_TROUBLE):
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


class BrokerProbe:
    """Is the cluster answering? An ApiVersions request to every known broker every
    `interval` seconds, each probe bounded by `timeout`, through a client of its own."""

    def __init__(self, bootstrap: str, *, interval: float = 2.0, timeout: float = 5.0,
                 client_kwargs: dict | None = None, clock: Callable[[], float] = time.monotonic):
        self.bootstrap = bootstrap
        self.interval = interval
        self.timeout = timeout
        self.client_kwargs = client_kwargs
        self.clock = clock
        self.started: float | None = None  # the first probe: before it, no silence is counted
        self.answered_at: float | None = None
        self.last_error = "no answer yet"
        self._client: Any = None

    def silent_for(self, now: float) -> float:
        """Seconds since a broker last answered (since the first probe, if none has; 0 before
        it: a worker still starting, or waiting out its old membership, has asked nothing)."""
        if self.answered_at is not None:
            return now - self.answered_at
        return 0.0 if self.started is None else now - self.started

    def answering(self, now: float, within: float) -> bool:
        return self.answered_at is not None and now - self.answered_at <= within

    async def probe(self) -> bool:
        """One probe: True if a broker answered within `timeout`."""
        if self.started is None:
            self.started = self.clock()
        try:
            await asyncio.wait_for(self._ask(), self.timeout)
        except Exception as exc:  # noqa: BLE001 - any failure is "no answer"; the next probe starts afresh
            self.last_error = f"{type(exc).__name__}: {exc}".strip().rstrip(":") if str(exc) else type(exc).__name__
            await self._drop_client()
            return False
        self.answered_at = self.clock()
        return True

    async def _ask(self) -> None:
        from aiokafka.client import AIOKafkaClient
        from aiokafka.protocol.admin import ApiVersionRequest

        if self._client is None:
            if self.client_kwargs is None:
                from payflow.kafka_security import current
                self.client_kwargs = current().client_kwargs()
            client = AIOKafkaClient(bootstrap_servers=self.bootstrap, client_id="payflow-health",
                                    request_timeout_ms=int(self.timeout * 1000), **self.client_kwargs)
            self._client = client
            await client.bootstrap()
        client = self._client
        nodes = [b.nodeId for b in client.cluster.brokers()]
        if not nodes:
            raise ConnectionError("no broker known")
        # any broker answering is the cluster answering: a single broker frozen in a replicated
        # cluster is the cluster's to fail over; the first answer ends the probe
        asks = [asyncio.ensure_future(client.send(node, ApiVersionRequest())) for node in nodes]
        try:
            for ask in asyncio.as_completed(asks):
                try:
                    await ask
                    return
                except Exception as exc:  # noqa: BLE001 - another broker may still answer
                    error = exc
            raise error
        finally:
            for ask in asks:
                if not ask.done():
                    ask.cancel()
                ask.add_done_callback(_retrieved)

    async def _drop_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                await asyncio.wait_for(client.close(), self.timeout)
            except Exception:  # noqa: BLE001 - closing a client to a dead broker: nothing to save
                pass

    async def close(self) -> None:
        await self._drop_client()


def _retrieved(future: asyncio.Future) -> None:
    if not future.cancelled():
        future.exception()


@dataclass
class Health:
    broker: Outage
    warehouse: Outage
    filter: LibraryLogFilter
    stalls: StallWatch
    last_ack_seen: float = 0.0
    probe: BrokerProbe | None = None
    broker_seconds: float = 10.0  # no broker answer for this long: outage, not ready
    landing_stall_seconds: float = 30.0  # a landing unacknowledged for this long: outage, not ready

    def broker_ready(self, now: float) -> bool:
        return self.probe is not None and self.probe.answering(now, self.broker_seconds)

    def warehouse_ready(self, sink: Any, now: float) -> bool:
        return sink is not None and sink.up(self.landing_stall_seconds, now)


def new_health(*, stall_seconds: float = 30.0, summary_seconds: float = 30.0,
               clock: Callable[[], float] = time.monotonic) -> Health:
    broker = Outage("Kafka broker", summary_seconds)
    # the warehouse's end is certain (a landing was acknowledged): no quiet period
    warehouse = Outage("warehouse", summary_seconds, quiet_seconds=0.0)
    return Health(broker, warehouse, LibraryLogFilter(broker, warehouse, clock), StallWatch(stall_seconds))


_process_health: Health | None = None


def process_health() -> Health:
    """The worker process's one Health: its filter goes on the log handlers at start."""
    global _process_health
    if _process_health is None:
        _process_health = new_health()
    return _process_health


def process_filter() -> LibraryLogFilter:
    """The process's library log filter (a logging dictConfig filter factory)."""
    return process_health().filter


class HealthWatch(Service):
    """Runs the probe and the tick on the worker's event loop from the app's start on, not
    only once the worker is ready (Faust starts its timers after recovery): a mode Service,
    made a dependency of the app before it starts."""

    def __init__(self, health: Health, tick_once: Callable[[float], None], interval: float):
        super().__init__()
        self.health = health
        self.tick_once = tick_once
        self.interval = interval

    async def on_start(self) -> None:
        self.add_future(self._ticks())
        if self.health.probe is not None:
            self.add_future(self._probes(self.health.probe))

    async def on_stop(self) -> None:
        if self.health.probe is not None:
            await self.health.probe.close()

    async def _probes(self, probe: BrokerProbe) -> None:
        while not self.should_stop:
            started = time.monotonic()
            await probe.probe()
            await self.sleep(max(0.0, probe.interval - (time.monotonic() - started)))

    async def _ticks(self) -> None:
        while not self.should_stop:
            try:
                self.tick_once(time.monotonic())
            except Exception:  # noqa: BLE001 - a health tick must never stop the worker
                log.debug("health tick failed", exc_info=True)
            await self.sleep(self.interval)


def watch(app: Any, raw_topic: str, *, interval: float = 2.0, stall_seconds: float = 30.0,
          summary_seconds: float = 30.0, last_ack: Callable[[], float] | None = None,
          bootstrap: str | None = None, broker_seconds: float = 10.0, landing_stall_seconds: float = 30.0,
          sink: Callable[[], Any] = lambda: None) -> Health:
    """Run the outage and stall watch on `app` every `interval` seconds from the app's start.
    `last_ack`: the time of the warehouse's last acknowledgement (default: the sink's gauge);
    `sink`: the running WarehouseSink, or None before the pipeline started."""
    health = process_health()
    health.stalls.stall_seconds = stall_seconds
    health.broker.summary_seconds = health.warehouse.summary_seconds = summary_seconds
    health.broker_seconds = broker_seconds
    health.landing_stall_seconds = landing_stall_seconds
    if bootstrap is not None:
        health.probe = BrokerProbe(bootstrap, interval=interval)
    if last_ack is None:
        from payflow import metrics
        from payflow.runtime.prometheus import value

        def last_ack() -> float:
            return value(metrics.LAST_ACK_TIME)
    health.last_ack_seen = last_ack()

    def tick_once(now: float) -> None:
        tick(health, app.consumer, raw_topic, last_ack(), now, sink())

    app.add_dependency(HealthWatch(health, tick_once, interval))
    return health


def tick(health: Health, consumer: Any, raw_topic: str, last_ack: float, now: float, sink: Any = None) -> None:
    attach_filter(health.filter)  # Faust's worker may have configured logging anew
    probe = health.probe
    if probe is not None:
        silent = probe.silent_for(now)
        if silent > health.broker_seconds:
            health.broker.over_limit(
                "broker probe", lambda: f"no broker answered for {silent:.0f} s ({probe.last_error})", now)
        elif health.broker.active and probe.answered_at is not None and probe.answered_at > health.broker.started:
            health.broker.recovered(now)
    health.broker.tick(now)
    if sink is not None:
        stalled = sink.landing_seconds(now)
        if stalled > health.landing_stall_seconds:
            health.warehouse.over_limit(
                "landing stalled", lambda: f"a landing has not been acknowledged for {stalled:.0f} s", now)
        from payflow import metrics
        metrics.SINK_UP.set(1 if health.warehouse_ready(sink, now) else 0)
    if last_ack > health.last_ack_seen:
        health.last_ack_seen = last_ack
        health.warehouse.recovered(now)
    health.warehouse.tick(now)
    try:
        progress = in_flight_progress(consumer, raw_topic)
    except Exception:  # noqa: BLE001 - consumer not started or rebalancing: look again later
        return
    report_stalls(*health.stalls.check(progress, now), raw_topic, (health.broker, health.warehouse))
