"""dedup_corpus and stream_tag against a dedup index of 10,000 and 100,000
records.

    python -m benchmarks.dedup_index [--model DIR] [--sizes 10000,100000]

For each size N: builds an index from the first N texts (one
`dedup_corpus --index` run), then runs a batch of 2,000 records (1,500
texts not in the index and 500 copies of indexed ones) through
`dedup_corpus` and through `stream_tag`, each once against the index and
once on its own, and prints two tables: the index's bytes per entry
(Parquet segments, centroids, manifest), the build time, and the batch's
time and duplicates with and without the index; for the stream, also the
bytes of state each index entry takes (it lives in the buckets' keyed
state, spread over the workers, not in any one worker's memory).

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
from pipelines import stream_tag  # noqa: E402

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
    stream_with = timed_stream(source, work / f"stream-with{size}",
                               [*flags, "--index", str(index)])
    stream_alone = timed_stream(source, work / f"stream-alone{size}", flags)
    return {"size": size, "entries": entries,
            "bytes_per_entry": sum(p.stat().st_size for p in files) / entries,
            "build_secs": build_secs, "with_secs": with_secs,
            "with_dups": with_counts["duplicates"],
            "of_index": with_counts["duplicates_of_index"],
            "alone_secs": alone_secs, "alone_dups": alone_counts["duplicates"],
            "state_per_entry": stream_state_per_entry(index),
            "stream_with": stream_with, "stream_alone": stream_alone}


def timed_stream(source, out, flags):
    """stream_tag over `source`: (seconds, duplicates, of the index)."""
    start = time.perf_counter()
    stream_tag.main(["--input", str(source), "--output", str(out), *flags])
    seconds = time.perf_counter() - start
    tagged = [json.loads(line) for path in out.glob("tagged*")
              for line in path.read_text().splitlines()]
    return (seconds, sum("duplicate_of" in r for r in tagged),
            sum("duplicate_of_run" in r for r in tagged))


def stream_state_per_entry(index: pathlib.Path) -> float:
    """Bytes of bucket state an index entry takes in stream_tag: one
    bucket entry per band of each sketcher, through the job's coder."""
    from embgemma_keras.config import StreamDedupConfig
    from embgemma_keras.dedup.sketches import stream_sketchers
    from embgemma_keras.index.format import segment_entries
    from transforms.dedup.streaming import BUCKET_CODER
    from transforms.dedup.streaming import HELD

    segment = next(index.rglob("*.parquet"))
    entries = list(segment_entries(segment.read_bytes()))[:1000]
    dim = len(entries[0].vector) if entries[0].vector is not None else None
    sketchers = stream_sketchers(StreamDedupConfig(), dim)
    total = 0
    for entry in entries:
        for sketcher in sketchers:
            sketch, keys = sketcher.sketch_entry(entry) or (b"", [])
            total += len(keys) * len(BUCKET_CODER.encode(
                (HELD, entry.run, entry.id, sketch, 0)))
    return total / len(entries)


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
    print("\nstream_tag over the same batch (DirectRunner, this machine)")
    print("| index entries | state bytes/entry | with index s "
          "| duplicates (of index) | alone s | duplicates |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        (with_secs, with_dups, of_index), (alone_secs, alone_dups, _) = (
            r["stream_with"], r["stream_alone"])
        print(f"| {r['entries']:,} | {r['state_per_entry']:,.0f} "
              f"| {with_secs:.1f} | {with_dups} ({of_index}) "
              f"| {alone_secs:.1f} | {alone_dups} |")


if __name__ == "__main__":
    main()
