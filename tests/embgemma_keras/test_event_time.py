import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from embgemma_keras.records.event_time import LINE_ORDER_STEP
from embgemma_keras.records.event_time import ReplaySchedule
from embgemma_keras.records.event_time import event_time
from embgemma_keras.records.event_time import event_time_of
from embgemma_keras.records.validation import BadRecord

NOON = 1714564800.0  # 2024-05-01T12:00:00Z


@pytest.mark.parametrize("value,seconds", [
    ("2024-05-01T12:00:00Z", NOON),
    ("2024-05-01t12:00:00z", NOON),
    ("2024-05-01 12:00:00Z", NOON),
    ("2024-05-01T14:00:00+02:00", NOON),
    ("2024-05-01T07:30:00-04:30", NOON),
    ("2024-05-01T12:00:00.25Z", NOON + 0.25),
    ("2024-05-01T13:00:00.000001+01:00", NOON + 1e-6),
    ("1970-01-01T00:00:00Z", 0.0),
    (1714564800, NOON),
    (1714564800.5, NOON + 0.5),
    ("1714564800", NOON),
    (" 1714564800.75 ", NOON + 0.75),
    (-1.5, -1.5),
    (0, 0.0),
])
def test_rfc3339_and_epoch_seconds(value, seconds):
    assert event_time(value) == pytest.approx(seconds, abs=1e-7)


@pytest.mark.parametrize("value,reason", [
    ("2024-05-01T12:00:00", "neither an RFC 3339 time"),  # no offset
    ("2024-05-01", "neither an RFC 3339 time"),
    ("yesterday", "neither an RFC 3339 time"),
    ("", "neither an RFC 3339 time"),
    ("2024-13-01T12:00:00Z", "is no time"),
    ("2024-05-01T12:00:00+25:00", "is no time"),
    (True, "got bool"),
    (None, "got NoneType"),
    ([1], "got list"),
    (1e300, "outside the years 1 to 9999"),
    (float("nan"), "outside the years 1 to 9999"),
    (float("inf"), "outside the years 1 to 9999"),
])
def test_anything_else_is_refused_with_the_reason(value, reason):
    with pytest.raises(BadRecord, match=reason):
        event_time(value)


def test_a_records_field_names_the_field_when_refused():
    assert event_time_of({"text": "x", "at": 60}, "at") == 60.0
    with pytest.raises(BadRecord, match="event time field 'at' is missing"):
        event_time_of({"text": "x"}, "at")
    with pytest.raises(BadRecord, match="event time field 'at': 'soon'"):
        event_time_of({"text": "x", "at": "soon"}, "at")


def test_the_watermark_after_a_line_is_the_earliest_time_still_to_come():
    schedule = ReplaySchedule.of([5.0, 2.0, 9.0, 4.0, 7.0])
    assert schedule.times == (5.0, 2.0, 9.0, 4.0, 7.0)
    assert schedule.watermarks == (2.0, 4.0, 4.0, 7.0, math.inf)
    assert [schedule.watermark_before(i) for i in range(6)] == [
        2.0, 2.0, 4.0, 4.0, 7.0, math.inf]


def test_a_line_without_a_time_neither_is_late_nor_holds_the_watermark():
    schedule = ReplaySchedule.of([None, 5.0, None, 3.0, None])
    # Each takes the earliest time from it on; at the end, the latest.
    assert schedule.times == (3.0, 5.0, 3.0, 3.0, 5.0)
    assert schedule.watermarks == (3.0, 3.0, 3.0, 5.0, math.inf)
    assert ReplaySchedule.of([None, None]).times == (0.0, 0.0)


def test_line_order_is_a_millisecond_a_line():
    schedule = ReplaySchedule.in_line_order(4)
    assert schedule.times == pytest.approx(
        [0.0, LINE_ORDER_STEP, 2 * LINE_ORDER_STEP, 3 * LINE_ORDER_STEP])
    assert schedule.watermarks[:-1] == schedule.times[1:]
    assert ReplaySchedule.in_line_order(0) == ReplaySchedule((), ())


@given(st.lists(st.one_of(st.none(), st.floats(-1e9, 1e9)), max_size=50))
def test_no_line_is_ever_behind_the_watermark(times):
    schedule = ReplaySchedule.of(times)
    assert len(schedule.times) == len(schedule.watermarks) == len(times)
    for i, time in enumerate(times):
        # Its own time, if it has one; never behind the watermark it is
        # read under, which only moves forward.
        assert time is None or schedule.times[i] == time
        assert schedule.times[i] >= schedule.watermark_before(i)
        assert schedule.watermarks[i] >= schedule.watermark_before(i)
        assert schedule.watermarks[i] <= min(schedule.times[i + 1:],
                                             default=math.inf)
    if times:
        assert schedule.watermarks[-1] == math.inf
