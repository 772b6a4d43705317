"""Logs that tell the truth (payflow.runtime.health): a broker or warehouse outage is one line
when it starts, a summary now and then, one line when it ends; a stall is logged once."""
from __future__ import annotations

import logging
from types import SimpleNamespace

from faust.types import TP

from payflow.runtime import health


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class Lines(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)

    def texts(self, level=logging.WARNING):
        return [r.getMessage() for r in self.records if r.levelno >= level]


def setup(monkeypatch):
    """A root handler with the health filter, as on a worker; returns (lines, health, clock)."""
    clock, lines = Clock(), Lines()
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [lines])
    monkeypatch.setattr(root, "level", logging.INFO)
    state = health.new_health(stall_seconds=30, summary_seconds=30, clock=clock)
    state.probe = health.BrokerProbe("127.0.0.1:1", clock=clock)
    state.probe.answered_at = clock.now
    health.attach_filter(state.filter)
    health.attach_filter(state.filter)  # idempotent
    assert lines.filters == [state.filter]
    return lines, state, clock


def connection_errors(n: int) -> None:
    for i in range(n):
        logging.getLogger("aiokafka").error("Unable connect to node with id %s: [Errno 111] Connect call failed", 1)
        logging.getLogger("aiokafka.consumer.fetcher").error("Failed fetch messages from 1: NodeNotReadyError")
        logging.getLogger("aiokafka.producer.sender").warning("Got error produce response: NodeNotReadyError")
        logging.getLogger("faust.transport.drivers.aiokafka").error("Aiokafka stopped fetching from %r", "tp")


def consumer(in_flight=(), committed=None, acked=None):
    return SimpleNamespace(_unacked_messages=list(in_flight), _committed_offset=committed or {}, _acked=acked or {})


def tick(state, clock, *, broker_answers: bool, last_ack: float = 0.0, consumer_=None, sink=None) -> None:
    """A health tick; the broker probe answered just before it, or not."""
    if broker_answers:
        state.probe.answered_at = clock.now
    health.tick(state, consumer_ or consumer(), "raw", last_ack, clock.now, sink)


def test_a_broker_outage_is_a_start_a_summary_and_an_end_not_thousands_of_lines(monkeypatch):
    lines, state, clock = setup(monkeypatch)
    logging.getLogger("aiokafka.consumer.group_coordinator").warning("Topic x not found")  # no outage: passes
    assert lines.texts() == ["Topic x not found"]
    lines.records.clear()
    for second in range(40):  # a 40 s outage: 4 library lines every 10 ms
        connection_errors(100)
        clock.now += 1
        tick(state, clock, broker_answers=False)
    assert state.broker.active
    clock.now += 15  # the broker is back: no more errors, the probe is answered again
    tick(state, clock, broker_answers=True)
    texts = lines.texts()
    assert len(texts) == 3, texts
    assert texts[0].startswith("Kafka broker outage started: aiokafka: Unable connect to node")
    assert texts[1].startswith("Kafka broker outage continues (30 s): ")
    assert texts[2].startswith("Kafka broker outage ended after 55 s: 15999 error line(s) suppressed (")
    assert not state.broker.active
    logging.getLogger("aiokafka").error("Unable connect to node with id 1")  # a new outage starts anew
    assert lines.texts()[-1].startswith("Kafka broker outage started")


def test_the_outage_does_not_end_while_errors_still_come(monkeypatch):
    lines, state, clock = setup(monkeypatch)
    connection_errors(1)
    clock.now += 2
    connection_errors(1)
    tick(state, clock, broker_answers=True)  # the broker answers once
    assert state.broker.active


def test_payflow_s_own_lines_and_critical_ones_always_pass(monkeypatch):
    lines, state, clock = setup(monkeypatch)
    connection_errors(3)
    logging.getLogger("payflow.pipeline").error("the pipeline's own error")
    logging.getLogger("aiokafka").critical("a critical library line")
    assert lines.texts()[1:] == ["the pipeline's own error", "a critical library line"]


def test_a_warehouse_outage_ends_with_the_next_acknowledged_landing(monkeypatch):
    from payflow.pipeline.sink import log as sink  # the sink's own logger, whatever its name

    lines, state, clock = setup(monkeypatch)
    for attempt in range(1, 40):
        sink.warning("warehouse unavailable (%s), retry %d", "TransientWarehouseError", attempt)
        clock.now += 2
        tick(state, clock, broker_answers=True)
    tick(state, clock, broker_answers=True, last_ack=5.0)  # a landing acknowledged
    texts = lines.texts()
    assert texts[0] == ("warehouse outage started: warehouse unavailable (TransientWarehouseError), retry 1; "
                        "further errors about it are summarised every 30 s until it ends")
    assert [t.split(":")[0] for t in texts[1:-1]] == ["warehouse outage continues (30 s)",
                                                       "warehouse outage continues (60 s)"]
    assert texts[-1].startswith("warehouse outage ended after 78 s: 38 error line(s) suppressed")


def test_a_stall_is_logged_once_and_once_more_when_it_moves(monkeypatch):
    lines, state, clock = setup(monkeypatch)
    tp = TP("raw", 2)
    taken = [SimpleNamespace(tp=tp)]
    stuck = consumer(in_flight=taken, committed={tp: 100}, acked={tp: []})
    for _ in range(30):  # a landing that hangs for a minute: checked every 2 s
        clock.now += 2
        tick(state, clock, broker_answers=True, consumer_=stuck)
    assert lines.texts() == ["raw partition(s) 2: messages taken 30 s ago are still not acknowledged: their landing "
                             "(the warehouse write, the outputs and changelog on Kafka, or a lock they wait for) "
                             "has not finished; logged once, and again when they move"]
    clock.now += 2
    tick(state, clock, broker_answers=True, consumer_=consumer(in_flight=taken, committed={tp: 100}, acked={tp: [100]}))
    assert lines.texts()[-1] == "raw partition(s) 2: acknowledged again after 60 s"


def test_busy_partitions_that_keep_acknowledging_are_no_stall():
    watch = health.StallWatch(stall_seconds=30)
    for second in range(0, 120, 2):
        assert watch.check({"p0": (second // 4, 0)}, float(second)) == ([], [])  # progress every 4 s


def test_a_stall_during_an_outage_names_it(monkeypatch):
    lines, state, clock = setup(monkeypatch)
    connection_errors(1)
    tp = TP("raw", 0)
    stuck = consumer(in_flight=[SimpleNamespace(tp=tp)], committed={tp: 5}, acked={tp: []})
    for _ in range(16):
        clock.now += 2
        tick(state, clock, broker_answers=False, consumer_=stuck)
    assert lines.texts()[-1].endswith("has not finished (during the Kafka broker outage); logged once, "
                                      "and again when they move")


def test_each_tick_puts_the_filter_back_on_handlers_faust_configured_anew(monkeypatch):
    lines, state, clock = setup(monkeypatch)
    fresh = Lines()
    monkeypatch.setattr(logging.getLogger(), "handlers", [fresh])  # the worker configured logging
    tick(state, clock, broker_answers=True)
    assert fresh.filters == [state.filter]


def test_rebalance_and_eviction_lines_are_not_a_broker_outage(monkeypatch):
    lines, state, clock = setup(monkeypatch)
    coordinator = logging.getLogger("aiokafka.consumer.group_coordinator")
    coordinator.warning("Heartbeat failed for group %s because it is rebalancing", "g")
    coordinator.warning("Heartbeat failed for group %s: generation id is not  current.", "g")
    coordinator.warning("Heartbeat failed: local member_id was not recognized; resetting and re-joining group")
    coordinator.error("Heartbeat session expired - marking coordinator dead")
    assert not state.broker.active
    assert len(lines.texts()) == 4 and not any("outage" in t for t in lines.texts())


def test_a_broker_that_stops_answering_without_a_line_is_an_outage_once_silent_for_the_bound(monkeypatch):
    lines, state, clock = setup(monkeypatch)
    state.broker_seconds = 10
    for _ in range(4):  # frozen: the probe gets no answer, the libraries say nothing yet
        clock.now += 2
        tick(state, clock, broker_answers=False)
    assert state.broker_ready(clock.now) and not state.broker.active
    for _ in range(2):
        clock.now += 2
        tick(state, clock, broker_answers=False)
    assert not state.broker_ready(clock.now)
    assert lines.texts() == ["Kafka broker outage started: no broker answered for 12 s (no answer yet); further "
                             "errors about it are summarised every 30 s until it ends"]
    clock.now += 60
    tick(state, clock, broker_answers=False)
    assert state.broker.active
    clock.now += 2
    tick(state, clock, broker_answers=True)  # it answers again: the end, once quiet for a while
    assert state.broker_ready(clock.now)
    clock.now += 6
    tick(state, clock, broker_answers=True)
    assert not state.broker.active
    assert lines.texts()[-1].startswith("Kafka broker outage ended after 68 s")


def test_the_probe_of_a_frozen_broker_fails_within_its_timeout():
    """A listening socket that never answers: TCP connects, the request gets no reply."""
    import asyncio
    import socket
    import time as time_

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    try:
        probe = health.BrokerProbe(f"127.0.0.1:{silent.getsockname()[1]}", timeout=1.0, client_kwargs={})
        started = time_.monotonic()
        assert asyncio.run(probe.probe()) is False
        assert time_.monotonic() - started < 3
        assert probe.answered_at is None and probe.last_error
    finally:
        silent.close()


def test_no_silence_is_counted_before_the_first_probe():
    """A worker that waits out its old membership before its loop runs has asked nothing:
    that is no broker outage (a false one was logged 11 s into such a start)."""
    import asyncio

    now = [100.0]
    probe = health.BrokerProbe("127.0.0.1:1", timeout=0.5, client_kwargs={}, clock=lambda: now[0])
    now[0] += 30
    assert probe.silent_for(now[0]) == 0
    assert asyncio.run(probe.probe()) is False
    now[0] += 12
    assert probe.silent_for(now[0]) == 12


class StalledSink:
    def __init__(self, seconds: float, healthy: bool = True):
        self.seconds, self.healthy = seconds, healthy

    def landing_seconds(self, now=None) -> float:
        return self.seconds

    def up(self, stall_seconds: float, now=None) -> bool:
        return self.healthy and self.seconds <= stall_seconds


def test_a_landing_that_hangs_is_a_warehouse_outage_when_it_starts_and_the_sink_is_down(monkeypatch):
    from payflow import metrics

    lines, state, clock = setup(monkeypatch)
    state.landing_stall_seconds = 30
    sink = StalledSink(12)
    tick(state, clock, broker_answers=True, sink=sink)
    assert metrics.value(metrics.SINK_UP) == 1 and state.warehouse_ready(sink, clock.now)
    sink.seconds = 31  # no retry line yet: the attempt has not even timed out
    clock.now += 2
    tick(state, clock, broker_answers=True, sink=sink)
    assert metrics.value(metrics.SINK_UP) == 0 and not state.warehouse_ready(sink, clock.now)
    assert lines.texts() == ["warehouse outage started: a landing has not been acknowledged for 31 s; further "
                             "errors about it are summarised every 30 s until it ends"]
    sink.seconds = 0
    clock.now += 40
    tick(state, clock, broker_answers=True, sink=sink, last_ack=5.0)  # landed
    assert metrics.value(metrics.SINK_UP) == 1
    assert lines.texts()[-1].startswith("warehouse outage ended after 40 s")


def test_the_worker_log_handlers_carry_the_outage_filter_from_the_start(monkeypatch, tmp_path):
    """Faust's worker configures logging from worker_logging_config before anything connects."""
    import logging.config

    from payflow.logs import worker_logging_config

    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])
    settings = SimpleNamespace(log_format="text", data_dir=tmp_path, log_level="info")
    logging.config.dictConfig(worker_logging_config(settings))
    try:
        assert root.handlers and all(health.process_filter() in h.filters for h in root.handlers)
    finally:
        for h in root.handlers:
            h.close()
