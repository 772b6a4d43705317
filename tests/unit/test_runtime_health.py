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


def consumer(connected: bool, in_flight=(), committed=None, acked=None):
    conn = SimpleNamespace(connected=lambda: connected)
    client = SimpleNamespace(_conns={1: conn})
    return SimpleNamespace(_thread=SimpleNamespace(_consumer=SimpleNamespace(_client=client)),
                           _unacked_messages=list(in_flight), _committed_offset=committed or {},
                           _acked=acked or {})


def test_a_broker_outage_is_a_start_a_summary_and_an_end_not_thousands_of_lines(monkeypatch):
    lines, state, clock = setup(monkeypatch)
    logging.getLogger("aiokafka.consumer.group_coordinator").warning("Topic x not found")  # no outage: passes
    assert lines.texts() == ["Topic x not found"]
    lines.records.clear()
    for second in range(40):  # a 40 s outage: 4 library lines every 10 ms
        connection_errors(100)
        clock.now += 1
        health.tick(state, consumer(connected=False), "raw", 0.0, clock.now)
    assert state.broker.active
    clock.now += 15  # the broker is back: no more errors, the consumer connects again
    health.tick(state, consumer(connected=True), "raw", 0.0, clock.now)
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
    health.tick(state, consumer(connected=True), "raw", 0.0, clock.now)  # a connection flickers up
    assert state.broker.active


def test_payflow_s_own_lines_and_critical_ones_always_pass(monkeypatch):
    lines, state, clock = setup(monkeypatch)
    connection_errors(3)
    logging.getLogger("payflow.pipeline").error("the pipeline's own error")
    logging.getLogger("aiokafka").critical("a critical library line")
    assert lines.texts()[1:] == ["the pipeline's own error", "a critical library line"]


def test_a_warehouse_outage_ends_with_the_next_acknowledged_landing(monkeypatch):
    lines, state, clock = setup(monkeypatch)
    sink = logging.getLogger("payflow.sink")
    for attempt in range(1, 40):
        sink.warning("warehouse unavailable (%s), retry %d", "TransientWarehouseError", attempt)
        clock.now += 2
        health.tick(state, consumer(connected=True), "raw", 0.0, clock.now)
    health.tick(state, consumer(connected=True), "raw", 5.0, clock.now)  # a landing acknowledged
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
    stuck = consumer(True, in_flight=taken, committed={tp: 100}, acked={tp: []})
    for _ in range(30):  # a landing that hangs for a minute: checked every 2 s
        clock.now += 2
        health.tick(state, stuck, "raw", 0.0, clock.now)
    assert lines.texts() == ["raw partition(s) 2: messages taken 30 s ago are still not acknowledged: their landing "
                             "(the warehouse write, the outputs and changelog on Kafka, or a lock they wait for) "
                             "has not finished; logged once, and again when they move"]
    clock.now += 2
    health.tick(state, consumer(True, in_flight=taken, committed={tp: 100}, acked={tp: [100]}), "raw", 0.0, clock.now)
    assert lines.texts()[-1] == "raw partition(s) 2: acknowledged again after 60 s"


def test_busy_partitions_that_keep_acknowledging_are_no_stall():
    watch = health.StallWatch(stall_seconds=30)
    for second in range(0, 120, 2):
        assert watch.check({"p0": (second // 4, 0)}, float(second)) == ([], [])  # progress every 4 s


def test_a_stall_during_an_outage_names_it(monkeypatch):
    lines, state, clock = setup(monkeypatch)
    connection_errors(1)
    tp = TP("raw", 0)
    stuck = consumer(False, in_flight=[SimpleNamespace(tp=tp)], committed={tp: 5}, acked={tp: []})
    for _ in range(16):
        clock.now += 2
        health.tick(state, stuck, "raw", 0.0, clock.now)
    assert lines.texts()[-1].endswith("has not finished (during the Kafka broker outage); logged once, "
                                      "and again when they move")


def test_each_tick_puts_the_filter_back_on_handlers_faust_configured_anew(monkeypatch):
    lines, state, clock = setup(monkeypatch)
    fresh = Lines()
    monkeypatch.setattr(logging.getLogger(), "handlers", [fresh])  # the worker configured logging
    health.tick(state, consumer(connected=True), "raw", 0.0, clock.now)
    assert fresh.filters == [state.filter]
