"""Memory of a long stream: does it follow the horizon or the records seen?

    python benchmarks/stream_soak.py                  # 20,000 and 100,000
    python benchmarks/stream_soak.py --records 10000 40000 --spread-mins 12 \
        --replay-rate 150
    python benchmarks/stream_soak.py --replay-rate 75 --judge-every-secs 5

Builds the load-run corpus (`benchmarks/load_run.py`) with a `time` field
spread evenly over --spread-mins minutes of event time, then runs
`stream_tag --as_stream --timestamp_field time --horizon_secs 60 --prompts
shared` (tiny model) over the first N records for each N of --records, on
Prism, each job in its own process, read as fast as the job takes them or
at --replay-rate records a second. While a job runs, the resident memory
of its process and of the Prism server it started is sampled every
half-second: peaks and the final sample are printed, and every sample
goes to a CSV beside the job's log (--log-dir), to tell a climb from a
spike. Issue #24's target:
the 100,000-record soak peaks within 15 % of the 20,000-record one.
"""

import argparse
import datetime
import json
import pathlib
import random
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.data import DATA_DIR  # noqa: E402
from benchmarks.load_run import corpus_lines  # noqa: E402
from benchmarks.load_run import count_lines  # noqa: E402
from benchmarks.load_run import real_texts  # noqa: E402
from benchmarks.machine import describe_cpu  # noqa: E402
from benchmarks.stream_throughput import artifacts  # noqa: E402
from embgemma_keras import EmbeddingGemma  # noqa: E402
from embgemma_keras import make_tiny_preset  # noqa: E402
from local_runners.prism import prism_binary  # noqa: E402
from local_runners.prism import prism_flags  # noqa: E402

HORIZON_SECS = 60
START = datetime.datetime(2026, 1, 5, tzinfo=datetime.UTC)


def _record(line: bytes) -> dict | None:
    """The line's record if it is a JSON object with a text, else None
    (the corpus's bad lines)."""
    try:
        record = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if isinstance(record, dict) and isinstance(record.get("text"), str):
        return record
    return None


def timed_lines(lines: list[bytes], spread_secs: float) -> list[bytes]:
    """Each JSON record with a `time` (RFC 3339), evenly over
    `spread_secs` in line order; other lines as they are."""
    step = spread_secs / len(lines)
    timed = []
    for i, line in enumerate(lines):
        record = _record(line)
        if record is not None:
            at = START + datetime.timedelta(seconds=i * step)
            line = json.dumps({**record, "time": at.isoformat()}).encode()
        timed.append(line)
    return timed


def _rss_kb(pid: int) -> int:
    try:
        status = pathlib.Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    return next((int(line.split()[1]) for line in status.splitlines()
                 if line.startswith("VmRSS:")), 0)


def _descendants(pid: int) -> list[int]:
    children = {}
    for entry in pathlib.Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1]
                         .split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), ()):
            found.append(child)
            todo.append(child)
    return found


def soak(corpus: pathlib.Path, out: pathlib.Path, flags: list[str],
         log: pathlib.Path) -> dict:
    """Runs `stream_tag` over `corpus` as a stream, sampling memory: its
    wall seconds, records out, and peak and final RSS (GB) of the job's
    process and of the rest of its process tree (Prism). The job's log
    (with Prism's, which Beam relays) goes to `log`, whole, and the
    samples (seconds, job MB, Prism MB) to `log` with suffix .csv."""
    with open(log, "wb") as log_file:
        job = subprocess.Popen([
            sys.executable, "-m", "pipelines.stream_tag", "--input",
            str(corpus), "--output", str(out), "--as_stream",
            "--timestamp_field", "time", "--horizon_secs", str(HORIZON_SECS),
            *flags], cwd=REPO, stdout=log_file, stderr=subprocess.STDOUT)
        samples = []
        start = time.perf_counter()
        while job.poll() is None:
            at = time.perf_counter() - start
            others = sum(map(_rss_kb, _descendants(job.pid)))
            samples.append((_rss_kb(job.pid), others, at))
            time.sleep(0.5)
        seconds = time.perf_counter() - start
    if job.returncode:
        tail = log.read_text(errors="replace")[-3000:]
        sys.exit(f"stream_tag failed (exit {job.returncode}; log: {log}):"
                 f"\n{tail}")
    samples = [s for s in samples if s[0]] or [(0, 0, 0)]
    log.with_suffix(".csv").write_text("seconds,job_mb,prism_mb\n" + "".join(
        f"{at:.1f},{job_kb / 1024:.0f},{prism_kb / 1024:.0f}\n"
        for job_kb, prism_kb, at in samples))
    gb = 2 ** 20
    produced = sum(count_lines(out, prefix) for prefix in (
        "tagged", "dead_letters"))
    return {"seconds": seconds, "out": produced,
            "peak_job_gb": max(s[0] for s in samples) / gb,
            "peak_prism_gb": max(s[1] for s in samples) / gb,
            "peak_total_gb": max(s[0] + s[1] for s in samples) / gb,
            "final_total_gb": sum(samples[-1][:2]) / gb}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, nargs="+",
                        default=[20_000, 100_000])
    parser.add_argument("--spread-mins", type=float, default=30,
                        help="Minutes of event time the records span.")
    parser.add_argument("--replay-rate", type=float, default=None,
                        help="Records a second the file is read at "
                             "(default: as fast as the job takes them).")
    parser.add_argument("--judge-every-secs", type=float, default=None,
                        help="The job's --judge_every_secs (default: "
                             "the job's, 1 s).")
    parser.add_argument("--data-dir", type=pathlib.Path, default=DATA_DIR)
    parser.add_argument("--log-dir", type=pathlib.Path,
                        default=pathlib.Path(tempfile.gettempdir())
                        / "stream-soak-logs",
                        help="Where each job's whole log is kept.")
    args = parser.parse_args()
    # --verbose: the job logs at INFO, Prism's own lines among them.
    flags = [*prism_flags(prism_binary()), "--experiments",
             "disable_prism_server_singleton", "--verbose"]
    if args.replay_rate:
        flags += ["--replay_rate", str(args.replay_rate)]
    if args.judge_every_secs:
        flags += ["--judge_every_secs", str(args.judge_every_secs)]
    args.log_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        tmp = pathlib.Path(tmp)
        model_dir = make_tiny_preset(tmp / "tiny")
        texts = real_texts(args.data_dir)
        lines = corpus_lines(texts, max(args.records), random.Random(0))
        flags += ["--model", str(model_dir), *artifacts(
            EmbeddingGemma.from_preset(model_dir), texts, "shared", tmp)]
        print(f"\nCPU: {describe_cpu()}")
        print(f"\n{'records':>8} {'event time':>10} {'wall s':>7} "
              f"{'rec/s':>6} {'job GB':>7} {'Prism GB':>8} {'total GB':>8} "
              f"{'at end GB':>9}", flush=True)
        rows = {}
        for records in args.records:
            corpus = tmp / f"soak-{records}.jsonl"
            corpus.write_bytes(b"\n".join(timed_lines(
                lines[:records], args.spread_mins * 60 * records
                / max(args.records))) + b"\n")
            row = rows[records] = soak(
                corpus, tmp / f"out-{records}", flags,
                args.log_dir / f"soak-{records}.log")
            assert row["out"] == records, f"{row['out']} of {records} out"
            span = args.spread_mins * records / max(args.records)
            print(f"{records:>8,} {span:>7.1f} min {row['seconds']:>7.0f} "
                  f"{records / row['seconds']:>6.1f} "
                  f"{row['peak_job_gb']:>7.2f} {row['peak_prism_gb']:>8.2f} "
                  f"{row['peak_total_gb']:>8.2f} "
                  f"{row['final_total_gb']:>9.2f}", flush=True)
        low, high = min(args.records), max(args.records)
        growth = rows[high]["peak_total_gb"] / rows[low]["peak_total_gb"]
        print(f"\npeak at {high:,} / peak at {low:,}: {growth:.2f} x "
              f"(target at most 1.15 x: "
              f"{'met' if growth <= 1.15 else 'missed'})")


if __name__ == "__main__":
    main()
