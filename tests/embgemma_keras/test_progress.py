import collections
import io
import threading
from collections.abc import Callable
from collections.abc import Sequence

import pytest

from embgemma_keras import progress
from embgemma_keras.progress import ProgressReporter


@pytest.fixture(autouse=True)
def fresh_tally(monkeypatch: pytest.MonkeyPatch) -> None:
    """This test's own progress counts, dropped after it: the tally is
    process-wide, and what one test counts must not show in another's."""
    monkeypatch.setattr(progress, "_counts", collections.Counter())


class Clock:
    """A monotonic clock that moves only when the test moves it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now


class Intervals(threading.Event):
    """The reporter's stop event, driven by the test: each wait for the
    next report runs one step of work and a 10 s tick of `clock`, instead
    of sleeping; after the last step the job is over and the event set."""

    def __init__(self, clock: Clock, steps: Sequence[Callable[[], None]]
                 ) -> None:
        super().__init__()
        self._clock = clock
        self._steps = list(steps)

    def wait(self, timeout: float | None = None) -> bool:
        if not self._steps:
            self.set()
            return True
        self._steps.pop(0)()
        self._clock.now += 10
        return False


def _report(monkeypatch: pytest.MonkeyPatch,
            steps: Sequence[Callable[[], None]],
            total_bytes: int | None = None) -> list[str]:
    """What a reporter prints while `steps` run, one between reports."""
    clock = Clock()
    monkeypatch.setattr(progress, "time", clock)
    stream = io.StringIO()  # not a terminal: plain lines
    reporter = ProgressReporter(total_bytes=total_bytes, interval_secs=10,
                                stream=stream)
    reporter._stop = Intervals(clock, steps)
    with reporter:
        pass  # the job: the steps, run by the reporter's waits
    return stream.getvalue().splitlines()


def _read_and_embed() -> None:
    progress.add(progress.LINES_READ, 10)
    progress.add(progress.BYTES_READ, 100)
    progress.add(progress.QUEUED_FOR_EMBEDDING, 10)
    progress.add(progress.RECORDS_EMBEDDED, 5)


def test_the_reporter_prints_counts_rates_and_an_eta_while_work_goes_on(
        monkeypatch):
    lines = _report(monkeypatch, [_read_and_embed] * 3, total_bytes=1000)
    # One line an interval, each with the counts so far and the rates of
    # the last 10 s: reading goes at 10 B/s, embedding at 0.5 records/s
    # with 5 waiting, so the ETA is reading's (900, 800, 700 bytes left).
    assert lines[:3] == [
        "progress: 10 lines read (10%), 5 embedded (0.5/s), 0 duplicates, "
        "0 dead letters; ETA 1m30s",
        "progress: 20 lines read (20%), 10 embedded (0.5/s), 0 duplicates, "
        "0 dead letters; ETA 1m20s",
        "progress: 30 lines read (30%), 15 embedded (0.5/s), 0 duplicates, "
        "0 dead letters; ETA 1m10s",
    ]
    # Then the final counts, once more when the job ends.
    assert lines[3:] == [
        "progress: 30 lines read (30%), 15 embedded (0.0/s), 0 duplicates, "
        "0 dead letters"]


def test_the_reporter_is_silent_while_nothing_is_counted_here(monkeypatch):
    # A job that runs elsewhere (Dataflow) counts nothing in this process.
    assert _report(monkeypatch, [lambda: None] * 3) == []


def test_the_eta_waits_for_the_slower_of_reading_and_embedding():
    # Reading is done; 100 records wait for the model at 2 a second.
    line, eta = progress.describe(
        {progress.BYTES_READ: 1000, progress.QUEUED_FOR_EMBEDDING: 200,
         progress.RECORDS_EMBEDDED: 100}, {progress.RECORDS_EMBEDDED: 80},
        10.0, total_bytes=1000)
    assert eta == 50.0 and "ETA 50s" in line and "(100%)" in line
    # Nothing known to wait for: no ETA rather than a made-up one.
    assert progress.describe({}, {}, 10.0, None)[1] is None
