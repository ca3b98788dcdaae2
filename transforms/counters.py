"""Counting a job's progress: Beam counters plus this process's tally.

`count(name, n)` inside a DoFn adds to the Beam counter `progress/<name>`
(what Dataflow's job page and `PipelineResult.metrics()` show) and to the
tally `embgemma_keras.progress.ProgressReporter` prints in a local run.
The names are the constants of `embgemma_keras.progress`.
"""

import functools

from apache_beam.metrics import Metrics

from embgemma_keras import progress

NAMESPACE = "progress"


def count(name: str, n: int = 1) -> None:
    """Adds `n` to the progress count `name` (call inside a DoFn)."""
    _counter(name).inc(n)
    progress.add(name, n)


@functools.cache
def _counter(name):
    return Metrics.counter(NAMESPACE, name)
