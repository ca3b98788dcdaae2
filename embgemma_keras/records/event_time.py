"""Event times of records replayed from files as a stream.

>>> event_time("2024-05-01T14:00:00.5+02:00"), event_time(1714564800)
(1714564800.5, 1714564800.0)
>>> ReplaySchedule.of([3.0, 1.0, None, 2.0]).watermarks
(1.0, 2.0, 2.0, inf)

`stream_tag --as_stream` reads files as a stream: each line at an event
time (a record's field, or its place in the file) while the watermark says
how far the stream has got. `event_time` reads a field's time;
`ReplaySchedule` gives every line its time and the watermark after it, so
that no line is ever behind the watermark however the file is ordered.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import re
from collections.abc import Sequence

from embgemma_keras.records.validation import BadRecord

# Epoch seconds in a string (TSV and CSV cells are strings): 1714564800,
# 1714564800.25, -12.5.
_EPOCH = re.compile(r"-?[0-9]+(\.[0-9]+)?")
# RFC 3339: a date, "T" (or a space, as RFC 3339 allows), a time with
# optional fractions, and "Z" or an offset.
_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}"
    r"(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})")
# Python's datetimes stop at the year 9999; Beam's timestamps go further,
# but no record's time is that far out.
_LATEST = datetime.datetime(9999, 12, 31, 23, 59, 59,
                            tzinfo=datetime.timezone.utc).timestamp()
_EARLIEST = datetime.datetime(1, 1, 1, tzinfo=datetime.timezone.utc
                              ).timestamp()
# The time of a file's first line when lines are timed by their order, and
# the step from one line to the next: the Unix epoch, a millisecond a line
# (the precision of Beam's timers, so two lines never share a time).
LINE_ORDER_START = 0.0
LINE_ORDER_STEP = 0.001


def event_time(value: object) -> float:
    """Seconds since the Unix epoch of an RFC 3339 time or epoch seconds.

    >>> event_time("2024-05-01T12:00:00Z")
    1714564800.0
    >>> event_time("1714564800.25"), event_time(1714564800.25)
    (1714564800.25, 1714564800.25)

    Args:
        value: an RFC 3339 string with "Z" or a UTC offset, or epoch
            seconds: an int or float, or a string of one (a TSV/CSV cell).

    Raises:
        BadRecord: anything else (a time without an offset is ambiguous),
            or a time outside the years 1 to 9999.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise BadRecord(f"expected an RFC 3339 time or epoch seconds, got "
                        f"{type(value).__name__}")
    if isinstance(value, str):
        value = value.strip()
        if _EPOCH.fullmatch(value):
            seconds = float(value)
        elif _RFC3339.fullmatch(value):
            try:
                seconds = datetime.datetime.fromisoformat(
                    value.upper().replace("Z", "+00:00")).timestamp()
            except ValueError as e:
                raise BadRecord(f"{value!r} is no time: {e}") from None
        else:
            raise BadRecord(f"{value[:40]!r} is neither an RFC 3339 time "
                            f"(2024-05-01T12:00:00Z) nor epoch seconds")
    else:
        seconds = float(value)
    if not _EARLIEST <= seconds <= _LATEST:
        raise BadRecord(f"time {value!r} is outside the years 1 to 9999")
    return seconds


def event_time_of(record: dict, field: str) -> float:
    """The event time in `record[field]` (see `event_time`).

    >>> event_time_of({"text": "hi", "at": "1970-01-01T00:01:00Z"}, "at")
    60.0

    Raises:
        BadRecord: the field is missing or holds no time; the message
            names the field.
    """
    if record.get(field) is None:
        raise BadRecord(f"event time field {field!r} is missing")
    try:
        return event_time(record[field])
    except BadRecord as e:
        raise BadRecord(f"event time field {field!r}: {e}") from None


@dataclasses.dataclass(frozen=True)
class ReplaySchedule:
    """When each line of a file is, in event time, and the watermark after
    it: what a file read as a stream needs so that no line is late.

    >>> schedule = ReplaySchedule.of([5.0, 2.0, 9.0])
    >>> schedule.times, schedule.watermarks, schedule.watermark_before(1)
    ((5.0, 2.0, 9.0), (2.0, 9.0, inf), 2.0)

    The watermark after line i is the earliest time of the lines after it
    (infinity after the last), so it never passes a line still to come,
    even when the file is not sorted by time; it only moves forward. A
    line without a time (one that will be a dead letter) is given the
    earliest time of the lines from it on (or the latest time of all, at
    the end of the file), so it is neither late nor holds the watermark
    back. The schedule holds two floats a line: it is meant for files a
    load test replays, not for unbounded inputs.

    Args:
        times: each line's event time in seconds, in file order.
        watermarks: the watermark once lines 0 to i have been read.
    """

    times: tuple[float, ...]
    watermarks: tuple[float, ...]

    @classmethod
    def of(cls, times: Sequence[float | None]) -> ReplaySchedule:
        """The schedule of lines with these event times (None: none)."""
        known = [t for t in times if t is not None]
        latest = max(known, default=LINE_ORDER_START)
        filled, earliest = [0.0] * len(times), math.inf
        for i in range(len(times) - 1, -1, -1):
            if times[i] is not None:
                earliest = min(earliest, times[i])
            filled[i] = earliest if times[i] is None else times[i]
            if math.isinf(filled[i]):
                filled[i] = latest
        watermarks, earliest = [math.inf] * len(times), math.inf
        for i in range(len(times) - 1, 0, -1):
            earliest = min(earliest, filled[i])
            watermarks[i - 1] = earliest
        return cls(tuple(filled), tuple(watermarks))

    @classmethod
    def in_line_order(cls, lines: int) -> ReplaySchedule:
        """`lines` lines timed by their order: LINE_ORDER_START, then
        LINE_ORDER_STEP seconds a line.

        >>> ReplaySchedule.in_line_order(3).times
        (0.0, 0.001, 0.002)
        """
        return cls.of([LINE_ORDER_START + i * LINE_ORDER_STEP
                       for i in range(lines)])

    def watermark_before(self, line: int) -> float:
        """The watermark before line `line` is read: the earliest time of
        it and the lines after it."""
        if line >= len(self.times):
            return math.inf
        return self.watermarks[line - 1] if line else min(
            self.times[0], self.watermarks[0])
