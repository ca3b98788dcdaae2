"""dedup_corpus on a standalone Flink cluster against the DirectRunner.

    python -m benchmarks.flink_cluster --model DIR \
        [--input examples/corpus.jsonl]

Runs the job once on the DirectRunner (in a child process) and once on a
Flink cluster of a JobManager and two TaskManagers (`local_runners.flink`)
with parallelism 2, each TaskManager with its own SDK harness process
(PROCESS environment), and prints one table: wall time, peak RSS of the
DirectRunner process and of each SDK harness, model loads (Beam's
`load_model_latency_milli_secs` count) and whether both runs kept,
dropped and refused the same records.
"""

from __future__ import annotations

import argparse
import pathlib
import resource
import subprocess
import sys
import tempfile
import threading
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.machine import describe_cpu  # noqa: E402
from local_runners.flink import FlinkCluster  # noqa: E402
from local_runners.flink import flink_flags  # noqa: E402
from local_runners.sdk_harness import harness_flags  # noqa: E402
from pipelines import dedup_corpus  # noqa: E402
from pipelines.options import start  # noqa: E402
from tests.helpers import dedup_verdicts  # noqa: E402
from tests.helpers import model_loads  # noqa: E402


class HarnessPeakRss:
    """Samples the peak RSS (VmHWM) of every SDK harness process."""

    def __init__(self):
        self.peak_kib: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc_info):
        self._stop.set()
        self._thread.join()

    def _sample(self):
        while not self._stop.wait(0.5):
            for proc in pathlib.Path("/proc").glob("[0-9]*"):
                try:
                    if b"local_runners.sdk_harness" not in (
                            proc / "cmdline").read_bytes():
                        continue
                    status = (proc / "status").read_text()
                except OSError:
                    continue
                for line in status.splitlines():
                    if line.startswith("VmHWM:"):
                        self.peak_kib[int(proc.name)] = int(line.split()[1])


def on_direct_runner(argv):
    began = time.monotonic()
    subprocess.run([sys.executable, "-m", "pipelines.dedup_corpus", *argv],
                   cwd=REPO, check=True, capture_output=True)
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return time.monotonic() - began, rss


def on_flink(argv):
    with FlinkCluster(task_managers=2) as cluster, HarnessPeakRss() as rss:
        began = time.monotonic()
        result = start([*argv, *flink_flags(
            cluster.master, environment=harness_flags()),
                        "--parallelism", "2"],
                       dedup_corpus.REQUIRED, dedup_corpus.build)
        result.wait_until_finish()
        wall = time.monotonic() - began
    return wall, rss.peak_kib, model_loads(result)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--input", default=str(REPO / "examples" /
                                                "corpus.jsonl"))
    args = parser.parse_args()
    work = pathlib.Path(tempfile.mkdtemp(prefix="flink-bench-"))
    job = ["--input", args.input, "--model", args.model]
    direct_wall, direct_rss = on_direct_runner(
        [*job, "--output", str(work / "direct")])
    flink_wall, harness_rss, loads = on_flink(
        [*job, "--output", str(work / "flink")])
    same = dedup_verdicts(work / "direct") == dedup_verdicts(work / "flink")
    unique, duplicates, dead = dedup_verdicts(work / "flink")
    print(f"\ninput {args.input}: {len(unique)} unique, {len(duplicates)} "
          f"duplicates, {len(dead)} dead letters on Flink; same ids as the "
          f"DirectRunner: {same}\n")
    print(f"\nCPU: {describe_cpu()}")
    print("| run | wall s | peak RSS | model loads |")
    print("| --- | ---: | --- | ---: |")
    print(f"| DirectRunner (one process) | {direct_wall:.1f} | "
          f"{direct_rss / 2**20:.2f} GiB | 1 |")
    per_worker = ", ".join(f"{kib / 2**20:.2f} GiB"
                           for kib in sorted(harness_rss.values()))
    print(f"| Flink, 2 TaskManagers, parallelism 2 | {flink_wall:.1f} | "
          f"{len(harness_rss)} SDK harnesses: {per_worker} | {loads} |")


if __name__ == "__main__":
    main()
