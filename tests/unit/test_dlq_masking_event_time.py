"""Event times at the edges of datetime's range go to the DLQ as invalid_event_time (issue 17:
year 1 or 9999 with an offset raised OverflowError, which the pipeline filed as internal_error)."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from payflow.stages.dedup import FirstSeen
from payflow.models import Rejection
from payflow.stages.validation import EARLIEST_EVENT_TIME, ValidatedPayment, decode
from payflow.warehouse.base import to_us
from tests.unit.cards_fixtures import event

NOW = datetime(2026, 11, 20, 10, 30, tzinfo=timezone.utc)


@pytest.mark.parametrize("text", [
    "0001-01-01T00:00:00+01:00", "0001-01-01T00:59:59.999999+23:59", "0001-01-01T00:00:00Z",
    "0001-01-01T00:00:00-01:00", "9999-12-31T23:59:59-01:00", "9999-12-31T23:59:59.999999-23:59",
    "1969-12-31T23:59:59.999999Z", "1970-01-01T00:30:00+01:00",
])
def test_event_times_out_of_range_are_invalid(text):
    result = decode(orjson.dumps(event(event_time=text)), now=NOW)
    assert isinstance(result, Rejection) and result.reason == "invalid_event_time", result
    assert "1970-01-01T00:00:00Z" in result.detail


@pytest.mark.parametrize("text,reason", [("9999-12-31T23:59:59Z", "event_time_in_future"),
                                         ("9999-12-31T23:59:59+14:00", "event_time_in_future"),
                                         ("1970-01-01T00:00:00Z", None), ("1970-01-01T01:00:00+01:00", None)])
def test_the_edges_inside_the_range(text, reason):
    result = decode(orjson.dumps(event(event_time=text)), now=NOW)
    if reason is None:
        assert isinstance(result, ValidatedPayment) and result.event_time == EARLIEST_EVENT_TIME
    else:
        assert isinstance(result, Rejection) and result.reason == reason


@settings(max_examples=1500, deadline=None)
@given(st.datetimes() | st.datetimes(min_value=datetime(1969, 12, 30), max_value=datetime(2026, 11, 21)),
       st.integers(-(24 * 60 - 1), 24 * 60 - 1), st.sampled_from(["isoformat", "Z"]))
def test_no_event_time_raises_and_an_accepted_one_survives_the_stages_arithmetic(local, offset_minutes, style):
    tz = timezone(timedelta(minutes=offset_minutes))
    text = local.replace(tzinfo=tz).isoformat()
    if style == "Z" and offset_minutes == 0:
        text = text.replace("+00:00", "Z")
    result = decode(orjson.dumps(event(event_time=text)), now=NOW)
    if isinstance(result, Rejection):
        assert result.reason in ("invalid_event_time", "event_time_in_future"), result
        return
    t = result.event_time
    assert EARLIEST_EVENT_TIME <= t <= NOW + timedelta(minutes=15)
    # what the stages do with it: µs since the epoch, windows around it, the dedup record
    FirstSeen(0, 0, to_us(t)).pack()
    assert t - timedelta(days=400) < t + timedelta(days=400)
