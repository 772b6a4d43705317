"""observe_many is Histogram.observe for many values at once: the same exposed samples."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram

from payflow.metrics import observe_many

BUCKETS = (0.025, 0.05, 0.1, 0.5, 1.0, 2.0, 10.0)


def _samples(histogram: Histogram) -> dict:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for metric in histogram.collect() for s in metric.samples if not s.name.endswith("_created")}


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(BUCKETS),  # values on a bound: `<=` picks that bucket
                          st.floats(min_value=-5, max_value=100, allow_nan=False)), max_size=60))
def test_observe_many_exposes_what_observe_does(amounts):
    one_by_one = Histogram("one_by_one", "per value", buckets=BUCKETS, registry=CollectorRegistry())
    at_once = Histogram("at_once", "all at once", buckets=BUCKETS, registry=CollectorRegistry())
    for a in amounts:
        one_by_one.observe(a)
    observe_many(at_once, amounts)
    expected = {(n.replace("one_by_one", "at_once"), labels): v for (n, labels), v in _samples(one_by_one).items()}
    got = _samples(at_once)
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert abs(got[key] - value) <= 1e-9 * max(1.0, abs(value)), key


def test_the_consumer_lag_is_kafka_s_highwater_minus_the_committed_position():
    """kafka-consumer-groups' LAG: log end offset - current (committed) offset."""
    from payflow.web import consumer_lag

    assert consumer_lag(10, 10) == 0  # caught up: committed the position after the last record
    assert consumer_lag(10, 9) == 1   # one record, offset 9, not yet committed
    assert consumer_lag(10, None) == 10
    assert consumer_lag(10, 12) == 0
