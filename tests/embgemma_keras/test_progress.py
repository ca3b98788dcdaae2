import io
import time

from embgemma_keras import progress
from embgemma_keras.progress import ProgressReporter


def test_the_reporter_prints_counts_rates_and_an_eta_while_work_goes_on():
    stream = io.StringIO()  # not a terminal: plain lines
    start = progress.snapshot()
    with ProgressReporter(total_bytes=start.get(progress.BYTES_READ, 0)
                          + 1000, interval_secs=0.2, stream=stream):
        for _ in range(3):
            progress.add(progress.LINES_READ, 10)
            progress.add(progress.BYTES_READ, 100)
            progress.add(progress.QUEUED_FOR_EMBEDDING, 10)
            progress.add(progress.RECORDS_EMBEDDED, 5)
            time.sleep(0.25)
    lines = stream.getvalue().splitlines()
    assert len(lines) >= 2
    assert all(line.startswith("progress: ") for line in lines)
    assert any("ETA" in line for line in lines)
    # The last line has the final counts.
    final = progress.snapshot()
    assert f"{final[progress.RECORDS_EMBEDDED]:,} embedded" in lines[-1]


def test_the_eta_waits_for_the_slower_of_reading_and_embedding():
    # Reading is done; 100 records wait for the model at 2 a second.
    line, eta = progress.describe(
        {progress.BYTES_READ: 1000, progress.QUEUED_FOR_EMBEDDING: 200,
         progress.RECORDS_EMBEDDED: 100}, {progress.RECORDS_EMBEDDED: 80},
        10.0, total_bytes=1000)
    assert eta == 50.0 and "ETA 50s" in line and "(100%)" in line
    # Nothing known to wait for: no ETA rather than a made-up one.
    assert progress.describe({}, {}, 10.0, None)[1] is None
