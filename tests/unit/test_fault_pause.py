"""PAYFLOW_FAULT_PAUSE_LANDING: parsed strictly, and only the named landing at the named
moment stops the process group."""
from __future__ import annotations

import signal

import pytest

from payflow import fault


def test_parse_accepts_a_moment_and_a_landing_number_and_refuses_the_rest():
    assert fault.parse("") is None
    assert fault.parse("between_tables:3") == ("between_tables", 3)
    for bad in ("between_tables", "between_tables:0", "after_lunch:1", "before_write:x"):
        with pytest.raises(ValueError):
            fault.parse(bad)


def test_only_the_nth_landing_at_the_named_moment_stops_the_group(monkeypatch):
    stops = []
    monkeypatch.setattr(fault.os, "killpg", lambda group, sig: stops.append(sig))
    monkeypatch.setattr(fault, "_reached", {})
    monkeypatch.setenv(fault.ENV, "before_write:2")
    fault.pause_at("between_tables")
    fault.pause_at("before_write")
    assert stops == []
    fault.pause_at("before_write")
    assert stops == [signal.SIGSTOP]
    fault.pause_at("before_write")
    assert stops == [signal.SIGSTOP]
