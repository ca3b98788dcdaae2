"""dedup_corpus against a dedup index of 10,000 and 100,000 records.

    python -m benchmarks.dedup_index [--model DIR] [--sizes 10000,100000]

For each size N: builds an index from the first N texts (one
`dedup_corpus --index` run), then dedups a batch of 2,000 records (1,500
texts not in the index and 500 copies of indexed ones) once against the
index and once on its own, and prints one table: the index's bytes per
entry (Parquet segments, centroids, manifest), the build time, and the
batch's time and duplicates with and without the index.

Texts are the real ones of ../shared/data (SMS Spam, SST-2, both MRPC
sentences: about 72,000); past those, a text is two of them joined, so
100,000 texts are all distinct strings. The model is the tiny random
preset (`embgemma_keras.tiny`, dim 768) unless --model is given: the
index's size and the graph's cost do not depend on the weights. Its random
vectors are all close to each other, so with it only identical vectors
count as semantic duplicates (`--semantic_threshold 0.9999`) and the index
holds about N entries, as it would with real weights on these texts.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import random
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.data import DATA_DIR  # noqa: E402
from benchmarks.data import column_texts  # noqa: E402
from embgemma_keras.tiny import make_tiny_preset  # noqa: E402
from pipelines import dedup_corpus  # noqa: E402

SOURCES = [("sms_spam_train.tsv", ["text"]), ("sst2_train.tsv", ["text"]),
           ("mrpc_train.tsv", ["text_a", "text_b"])]
BATCH_NEW, BATCH_COPIES = 1_500, 500


def texts(n: int) -> list[str]:
    """`n` distinct texts: the real ones, then pairs of them joined."""
    real = list(dict.fromkeys(column_texts(DATA_DIR, SOURCES)))
    rng = random.Random(0)
    out, seen = list(real), set(real)
    while len(out) < n:
        joined = f"{rng.choice(real)} {rng.choice(real)}"
        if joined not in seen:
            seen.add(joined)
            out.append(joined)
    return out[:n]


def write_jsonl(path, records):
    with open(path, "w", encoding="utf-8") as f:
        for record_id, text in records:
            f.write(json.dumps({"id": record_id, "text": text}) + "\n")
    return path


def timed_run(source, out, flags):
    start = time.perf_counter()
    dedup_corpus.main(["--input", str(source), "--output", str(out),
                       *flags])
    seconds = time.perf_counter() - start
    counts = json.loads((out / "report.json").read_text())["counts"]
    return seconds, counts


def measure(size: int, model: str, semantic: list[str],
            work: pathlib.Path) -> dict:
    corpus = texts(size + BATCH_NEW)
    indexed = [(f"r{i}", t) for i, t in enumerate(corpus[:size])]
    rng = random.Random(size)
    batch = [(f"new{i}", t) for i, t in enumerate(corpus[size:])]
    batch += [(f"copy{i}", t) for i, (_, t) in enumerate(
        rng.sample(indexed, BATCH_COPIES))]
    flags = ["--model", model, *semantic]
    index = work / f"index{size}"
    build_secs, _ = timed_run(write_jsonl(work / f"base{size}.jsonl",
                                          indexed), work / f"base{size}",
                              [*flags, "--index", str(index)])
    files = [p for p in index.rglob("*") if p.is_file()]
    entries = json.loads((index / "versions" / (
        (index / "CURRENT").read_text() + ".json")).read_text())
    entries = sum(s["records"] for s in entries["segments"])
    source = write_jsonl(work / f"batch{size}.jsonl", batch)
    with_secs, with_counts = timed_run(
        source, work / f"with{size}",
        [*flags, "--index", str(index), "--index_read_only"])
    alone_secs, alone_counts = timed_run(source, work / f"alone{size}",
                                         flags)
    return {"size": size, "entries": entries,
            "bytes_per_entry": sum(p.stat().st_size for p in files) / entries,
            "build_secs": build_secs, "with_secs": with_secs,
            "with_dups": with_counts["duplicates"],
            "of_index": with_counts["duplicates_of_index"],
            "alone_secs": alone_secs, "alone_dups": alone_counts["duplicates"]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None,
                        help="Model directory (default: the tiny preset).")
    parser.add_argument("--sizes", default="10000,100000")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = pathlib.Path(tmp)
        model = args.model or make_tiny_preset(work / "tiny")
        semantic = [] if args.model else ["--semantic_threshold", "0.9999"]
        rows = [measure(int(size), str(model), semantic, work)
                for size in args.sizes.split(",")]
    print(f"\nbatch: {BATCH_NEW:,} new texts + {BATCH_COPIES} copies of "
          "indexed ones; DirectRunner, this machine")
    print("| index entries | bytes/entry | build s | batch vs index s "
          "| duplicates (of index) | batch alone s | duplicates |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['entries']:,} | {r['bytes_per_entry']:,.0f} "
              f"| {r['build_secs']:.1f} | {r['with_secs']:.1f} "
              f"| {r['with_dups']} ({r['of_index']}) | {r['alone_secs']:.1f} "
              f"| {r['alone_dups']} |")


if __name__ == "__main__":
    main()
