"""Progress of a long local run: counts, rates and an ETA on stderr.

The counts are tallied in this process by the transforms that do the work
(`transforms.counters.count`, which also feeds Beam's metrics, the figures
Dataflow shows); `ProgressReporter` prints them every `interval_secs`
while a job runs in this process (DirectRunner, or Prism/Flink in LOOPBACK
mode): a tqdm bar on a terminal, a plain line otherwise.

```python
with ProgressReporter(total_bytes=input_size):
    pipeline.run().wait_until_finish()
```
"""

from __future__ import annotations

import collections
import sys
import threading
import time
import typing

from embgemma_keras.records.schema import DEAD_LETTERS

# What the transforms count (the Beam counters of namespace "progress").
BYTES_READ = "bytes_read"
LINES_READ = "lines_read"
QUEUED_FOR_EMBEDDING = "queued_for_embedding"
RECORDS_EMBEDDED = "records_embedded"
DUPLICATES = "duplicates"
# and DEAD_LETTERS, the dead letters written (the name of their output).

_lock = threading.Lock()
_counts: collections.Counter = collections.Counter()


def add(name: str, n: int = 1) -> None:
    """Adds `n` to this process's tally of `name`."""
    with _lock:
        _counts[name] += n


def say(text: str) -> None:
    """Prints `text` on stdout without breaking a progress bar on the
    terminal (it is cleared, and drawn again below)."""
    from tqdm import tqdm

    tqdm.write(text, file=sys.stdout)
    sys.stdout.flush()


def snapshot() -> dict[str, int]:
    with _lock:
        return dict(_counts)


def _duration(secs: float) -> str:
    secs = int(secs)
    if secs >= 3600:
        return f"{secs // 3600}h{secs % 3600 // 60:02d}m"
    return f"{secs // 60}m{secs % 60:02d}s" if secs >= 60 else f"{secs}s"


def describe(now: dict, before: dict, elapsed_secs: float,
             total_bytes: int | None) -> tuple[str, float | None]:
    """One progress line and the ETA in seconds (None when unknown).

    The ETA is the longer of what reading has left (by input bytes, when
    their total is known) and what embedding has left (records queued for
    the model and not yet embedded), each at the rate of the last interval.

    >>> describe({"lines_read": 50, "bytes_read": 500,
    ...           "queued_for_embedding": 40, "records_embedded": 20},
    ...          {"bytes_read": 400, "records_embedded": 10}, 10.0, 1000)
    ... # doctest: +NORMALIZE_WHITESPACE
    ('50 lines read (50%), 20 embedded (1.0/s), 0 duplicates, 0 dead
    letters; ETA 50s', 50.0)
    """
    def rate(name):
        return (now.get(name, 0) - before.get(name, 0)) / max(elapsed_secs,
                                                               1e-9)

    parts = [f"{now.get(LINES_READ, 0):,} lines read"]
    etas = []
    read = now.get(BYTES_READ, 0)
    if total_bytes:
        parts[0] += f" ({min(read / total_bytes, 1):.0%})"
        if read < total_bytes and rate(BYTES_READ) > 0:
            etas.append((total_bytes - read) / rate(BYTES_READ))
    embedded = now.get(RECORDS_EMBEDDED, 0)
    parts.append(f"{embedded:,} embedded ({rate(RECORDS_EMBEDDED):.1f}/s)")
    backlog = now.get(QUEUED_FOR_EMBEDDING, 0) - embedded
    if backlog > 0 and rate(RECORDS_EMBEDDED) > 0:
        etas.append(backlog / rate(RECORDS_EMBEDDED))
    parts.append(f"{now.get(DUPLICATES, 0):,} duplicates")
    parts.append(f"{now.get(DEAD_LETTERS, 0):,} dead letters")
    eta = max(etas) if etas else None
    line = ", ".join(parts)
    if eta is not None:
        line += f"; ETA {_duration(eta)}"
    return line, eta


class ProgressReporter:
    """Prints this process's progress every `interval_secs` on stderr.

    Args:
        total_bytes: the input's size, for a percentage and an ETA of
            reading; None when unknown (a stream).
        interval_secs: between reports.
        stream: where to write (stderr); a tqdm bar when it is a terminal.
    """

    def __init__(self, total_bytes: int | None = None,
                 interval_secs: float = 10.0,
                 stream: typing.TextIO | None = None):
        self._total = total_bytes
        self._interval = interval_secs
        self._stream = stream or sys.stderr
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._report, daemon=True,
                                        name="progress")
        self._bar = None

    def __enter__(self) -> ProgressReporter:
        self._started = time.time()
        self._thread.start()
        return self

    def __exit__(self, *exc_info):
        self._stop.set()
        self._thread.join()
        if self._bar is not None:
            self._bar.close()

    def _report(self):
        before, then = snapshot(), time.monotonic()
        start = before
        while not self._stop.wait(self._interval):
            now, at = snapshot(), time.monotonic()
            # Nothing counted here: the job runs elsewhere (Dataflow), or
            # has not started; its figures are Beam counters.
            if now != start:
                self._show(describe(now, before, at - then,
                                    self._total)[0], now)
            before, then = now, at
        now = snapshot()
        if now != start:  # the final counts
            self._show(describe(now, before, time.monotonic() - then,
                                self._total)[0], now)

    def _show(self, line, now):
        if self._bar is None and self._stream.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=self._total, unit="B", unit_scale=True,
                             desc="read", file=self._stream)
            # Drawn at the first report, timed from the job's start.
            self._bar.start_t = self._started
        if self._bar is not None:
            self._bar.n = now.get(BYTES_READ, 0)
            self._bar.set_postfix_str(line.split(", ", 1)[1])
        else:
            print(f"progress: {line}", file=self._stream, flush=True)
