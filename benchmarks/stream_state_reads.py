"""Where a paced stream on Prism waits: its state reads, by state cell.

    python benchmarks/stream_state_reads.py                # 3,000 at 40/s
    python benchmarks/stream_state_reads.py --records 6000 --replay-rate 75

Runs `stream_tag --as_stream --timestamp_field time --horizon_secs 60
--prompts shared` (tiny model) on Prism in this process, so its SDK
harness (LOOPBACK) is this process's, over the first --records records of
the soak's corpus (`benchmarks/stream_soak.py`: event times at the soak's
density, 100,000 records to 30 minutes), read at --replay-rate records a
second. Prints the job's wall time against the time its lines take to
read at that rate, and for each state cell the reads a record and the
seconds the harness waited for them: Prism hands out no cache tokens, so
every read of a stateful stage crosses the Fn API and the DoFn waits.
"""

import argparse
import collections
import pathlib
import random
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.data import DATA_DIR  # noqa: E402
from benchmarks.load_run import corpus_lines  # noqa: E402
from benchmarks.load_run import real_texts  # noqa: E402
from benchmarks.machine import describe_cpu  # noqa: E402
from benchmarks.stream_soak import HORIZON_SECS  # noqa: E402
from benchmarks.stream_soak import timed_lines  # noqa: E402
from benchmarks.stream_throughput import artifacts  # noqa: E402
from embgemma_keras import EmbeddingGemma  # noqa: E402
from embgemma_keras import make_tiny_preset  # noqa: E402
from local_runners.prism import prism_binary  # noqa: E402
from local_runners.prism import prism_flags  # noqa: E402
from local_runners.state_requests import timing_state_reads  # noqa: E402
from pipelines import stream_tag  # noqa: E402

SOAK_RECORDS_A_MINUTE = 100_000 / 30


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=3000)
    parser.add_argument("--replay-rate", type=float, default=40)
    parser.add_argument("--data-dir", type=pathlib.Path, default=DATA_DIR)
    args = parser.parse_args()
    reads = collections.defaultdict(lambda: [0, 0.0])
    with tempfile.TemporaryDirectory(prefix="state-reads-") as tmp:
        tmp = pathlib.Path(tmp)
        model_dir = make_tiny_preset(tmp / "tiny")
        texts = real_texts(args.data_dir)
        lines = corpus_lines(texts, args.records, random.Random(0))
        corpus = tmp / "corpus.jsonl"
        corpus.write_bytes(b"\n".join(timed_lines(
            lines, 60 * args.records / SOAK_RECORDS_A_MINUTE)) + b"\n")
        flags = [*prism_flags(prism_binary()), "--experiments",
                 "disable_prism_server_singleton", "--replay_rate",
                 str(args.replay_rate), "--model", str(model_dir),
                 *artifacts(EmbeddingGemma.from_preset(model_dir), texts,
                            "shared", tmp)]
        start = time.perf_counter()
        with timing_state_reads(reads):
            stream_tag.main([
                "--input", str(corpus), "--output", str(tmp / "out"),
                "--as_stream", "--timestamp_field", "time", "--horizon_secs",
                str(HORIZON_SECS), *flags])
        seconds = time.perf_counter() - start
    print(f"\nCPU: {describe_cpu()}")
    print(f"\n{args.records:,} records at {args.replay_rate:g} a second: "
          f"{seconds:.0f} s wall, {args.records / args.replay_rate:.0f} s "
          f"to read them")
    print(f"\n{'state cell':>16} {'reads/record':>12} {'waited s':>9} "
          f"{'ms a read':>9}")
    for cell, (count, waited) in sorted(reads.items(),
                                        key=lambda item: -item[1][1]):
        print(f"{cell:>16} {count / args.records:>12.2f} {waited:>9.1f} "
              f"{1000 * waited / count:>9.2f}")
    count, waited = map(sum, zip(*reads.values(), strict=True))
    print(f"{'all':>16} {count / args.records:>12.2f} {waited:>9.1f} "
          f"{1000 * waited / count:>9.2f}")


if __name__ == "__main__":
    main()
