"""`ReadRecordsAsStream`: record files read as an unbounded stream.

A load test of a streaming job wants the stream's path (keyed state,
timers, a watermark) without a Pub/Sub topic to fill: this transform reads
files as a stream does, on any runner, and the stream ends once every line
is out. Each line has an event time, from a record field or its place in
the file, and the watermark after a line is the earliest time of the lines
still to come (`embgemma_keras.records.event_time.ReplaySchedule`), so no
line is ever late, however the file is ordered.

How: a splittable DoFn, unbounded per element, over each file's lines (an
`OffsetRange` of line numbers), with a manual watermark estimator. A file
is scanned once per worker process before its lines are sent: each line's
byte offset, event time and the watermark after it are kept in memory
(three numbers a line: files to replay are load-test sized, not unbounded
inputs). A call sends a chunk of lines, then defers the rest, so a runner
commits what was sent and moves the watermark on: at once, or, at
`replay_rate`, until the next line is due, counted from the file's start
(no sleeping in the DoFn: the runner waits). Counted from the start, not
from the last chunk, the runner's and a busy worker's delays between
calls do not slow the pace (docs/streaming.md).

Beam 2.77's DirectRunner cannot run it in streaming mode (its SDF
override and its streaming overrides clash); Prism, Flink and Dataflow
can, and the FnApiRunner runs it as a batch.
"""

from __future__ import annotations

import functools
import math
import time
import typing

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.restriction_trackers import OffsetRange
from apache_beam.io.restriction_trackers import OffsetRestrictionTracker
from apache_beam.io.watermark_estimators import ManualWatermarkEstimator
from apache_beam.transforms.core import RestrictionProvider
from apache_beam.transforms.core import WatermarkEstimatorProvider
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from embgemma_keras.config import MAX_RECORD_BYTES
from embgemma_keras.records.event_time import ReplaySchedule
from embgemma_keras.records.event_time import event_time_of
from embgemma_keras.records.schema import DEAD_LETTERS
from embgemma_keras.records.schema import TEXT
from embgemma_keras.records.schema import Stage
from embgemma_keras.records.schema import dead_letter
from embgemma_keras.records.validation import BadRecord
from embgemma_keras.records.validation import RecordParser
from transforms.records.dead_letters import WithDeadLetters
from transforms.records.files import record_parser
from transforms.records.parse import ParseRecords

# Lines a call sends before it defers the rest when no rate is set: enough
# to keep a bundle busy, few enough that the watermark moves on often.
CHUNK_LINES = 1000


class _ScannedFile(typing.NamedTuple):
    """A file's line offsets (bytes) and `ReplaySchedule`."""

    offsets: tuple[int, ...]
    schedule: ReplaySchedule


@functools.lru_cache(maxsize=4)
def _scanned(path: str, timestamp_field: str | None, fmt: str,
             columns: tuple[str, ...] | None, text_column: str,
             max_bytes: int) -> _ScannedFile:
    """Reads `path` once: each line's offset and event time. Cached, so a
    resumed restriction of the same file does not read it again."""
    parser = RecordParser(fmt, list(columns) if columns else None,
                          text_column, max_bytes)
    offsets, times, position = [], [], 0
    with FileSystems.open(path) as f:
        if fmt in ("tsv", "csv"):
            position += len(f.readline())
        for line in f:
            offsets.append(position)
            position += len(line)
            if timestamp_field:
                times.append(_time_or_none(parser, line.rstrip(b"\r\n"),
                                           timestamp_field))
    schedule = (ReplaySchedule.of(times) if timestamp_field
                else ReplaySchedule.in_line_order(len(offsets)))
    return _ScannedFile(tuple(offsets), schedule)


def _time_or_none(parser: RecordParser, raw: bytes,
                  field: str) -> float | None:
    """A line's event time; None if it is no record or has no time (it
    will be a dead letter, which says why)."""
    try:
        return event_time_of(parser(raw), field)
    except BadRecord:
        return None


def _timestamp(seconds: float) -> Timestamp | None:
    """A Beam timestamp; None for infinity (no watermark to hold)."""
    return None if math.isinf(seconds) else Timestamp.of(seconds)


class _ReplayLines(beam.DoFn, RestrictionProvider,
                   WatermarkEstimatorProvider):
    """A file's `(path, replay start)` -> its raw lines, each at its event
    time.

    Its own restriction provider (the range of the file's line numbers)
    and watermark estimator provider (a manual watermark, starting at the
    earliest time of the lines of the restriction and after it): both
    need the file's scan, which Beam's parameters cannot pass a provider.
    The watermark after a line is the earliest time of all the lines after
    it in the file, so a runner that splits a file's range gets parts that
    each hold the watermark no later than they must.
    """

    def __init__(self, scan, replay_rate):
        self._scan = scan
        self._rate = replay_rate or 0
        self._chunk = max(1, round(self._rate)) if self._rate else CHUNK_LINES

    def initial_restriction(self, file):
        path, _ = file
        return OffsetRange(0, len(self._scan(path).offsets))

    def create_tracker(self, restriction):
        return OffsetRestrictionTracker(restriction)

    def restriction_size(self, file, restriction):
        return restriction.size()

    def initial_estimator_state(self, file, restriction):
        path, _ = file
        return _timestamp(self._scan(path).schedule.watermark_before(
            restriction.start))

    def create_watermark_estimator(self, state):
        return ManualWatermarkEstimator(state)

    @beam.DoFn.unbounded_per_element()
    def process(self, file, tracker=beam.DoFn.RestrictionParam(),
                watermark=beam.DoFn.WatermarkEstimatorParam()):
        path, started = file
        scan = self._scan(path)
        line, stop = (tracker.current_restriction().start,
                      tracker.current_restriction().stop)
        sent = 0
        with FileSystems.open(path) as f:
            if line < len(scan.offsets):
                f.seek(scan.offsets[line])
            while tracker.try_claim(line):
                raw = f.readline().rstrip(b"\r\n")
                yield TimestampedValue(raw, Timestamp.of(
                    scan.schedule.times[line]))
                after = _timestamp(scan.schedule.watermarks[line])
                if after is not None:
                    watermark.set_watermark(after)
                line, sent = line + 1, sent + 1
                if sent == self._chunk and line < stop:
                    # The runner resumes the rest when its first line is
                    # due: the pace of --replay_rate, no sleeping worker.
                    tracker.defer_remainder(resume_time(
                        started, line, self._rate, time.time()))
                    return


def resume_time(started: float, line: int, rate: float, now: float
                ) -> Timestamp | None:
    """When a file replayed from `started` at `rate` lines a second is due
    to send line number `line` (epoch seconds); None when it is due by
    `now`, or when there is no rate.

    >>> resume_time(100.0, 240, 120.0, now=101.5)
    Timestamp(102)
    >>> resume_time(100.0, 240, 120.0, now=103.0) is None  # behind: at once
    True
    """
    if not rate or started + line / rate <= now:
        return None
    return Timestamp.of(started + line / rate)


def _started(path: str) -> tuple[str, float]:
    """`(path, now)`: when the replay of the file starts, in epoch seconds."""
    return path, time.time()


class _RefuseUntimed(beam.DoFn):
    """Records whose event time field holds no time -> dead letters."""

    def __init__(self, field):
        self._field = field

    def process(self, record):
        try:
            event_time_of(record, self._field)
        except BadRecord as e:
            yield beam.pvalue.TaggedOutput(
                DEAD_LETTERS, dead_letter(Stage.PARSE, e, record))
            return
        yield record


class ReadRecordsAsStream(beam.PTransform):
    """Reads JSONL/TSV/CSV/text files as an unbounded stream of records
    (+ dead letters), each at its event time; ends once all are out.

    Example:

    ```python
    with beam.Pipeline(options=PipelineOptions(streaming=True)) as p:
        parsed = p | ReadRecordsAsStream("events.jsonl",
                                         timestamp_field="time",
                                         replay_rate=100)
        parsed.output        # unbounded: records at their event times
        parsed.dead_letters  # {"stage": "parse", "error": ..., "raw": ...}
    ```

    Args:
        pattern: the files, local or gs://, matched when the job is built.
        text_column: the TSV/CSV column holding the text.
        timestamp_field: the field (or column) holding each record's event
            time, RFC 3339 or epoch seconds (`event_time`); a record
            without one is a dead letter. None: a line's time is its place
            in its file (`ReplaySchedule.in_line_order`).
        replay_rate: records a second, per file; 0 or None: as fast as
            the runner takes them.
        max_bytes: longer lines are dead letters.

    Every line leaves once: as a record or a dead letter saying why, as
    `ReadRecords` has it; the watermark never passes a line still to come,
    so none is late (see the module docstring).
    """

    def __init__(self, pattern: str, text_column: str = TEXT,
                 timestamp_field: str | None = None,
                 replay_rate: float | None = None,
                 max_bytes: int = MAX_RECORD_BYTES):
        super().__init__()
        required = (timestamp_field,) if timestamp_field else ()
        parser = record_parser(pattern, text_column, required, max_bytes)
        if timestamp_field and parser.format == "text":
            raise ValueError(f"{pattern!r} holds lines of text: it has no "
                             f"field {timestamp_field!r} to take times from")
        self._paths = [m.path for m in
                       FileSystems.match([pattern])[0].metadata_list]
        self._parser = parser
        self._field = timestamp_field
        self._replay_rate = replay_rate

    def expand(self, pipeline) -> WithDeadLetters:
        parser = self._parser
        scan = functools.partial(
            _scanned, timestamp_field=self._field, fmt=parser.format,
            columns=tuple(parser.columns) if parser.columns else None,
            text_column=parser.text_column, max_bytes=parser.max_bytes)
        replay = _ReplayLines(scan, self._replay_rate)
        lines = (pipeline | "Files" >> beam.Create(self._paths)
                 | "Start" >> beam.Map(_started)
                 | "Replay" >> beam.ParDo(replay))
        parsed = lines | "Parse" >> ParseRecords(
            parser.format, parser.columns, parser.text_column,
            parser.max_bytes)
        if not self._field:
            return parsed
        timed = parsed.output | "RefuseUntimed" >> beam.ParDo(
            _RefuseUntimed(self._field)).with_outputs(
                DEAD_LETTERS, main="records")
        dead = ((parsed.dead_letters, timed[DEAD_LETTERS])
                | "DeadLetters" >> beam.Flatten())
        return WithDeadLetters(timed.records, dead)

