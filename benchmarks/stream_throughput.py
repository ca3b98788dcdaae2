"""stream_tag's records/s against raw `encode` texts/s, on the same texts.

    python benchmarks/stream_throughput.py                     # tiny model
    python benchmarks/stream_throughput.py --model DIR --dtype bfloat16 \\
        --records 2000 [--latency]
    python benchmarks/stream_throughput.py --records 3000 --parts as_stream

Builds the load-run corpus (real SMS, SST-2 and MRPC texts with planted
copies and 1 % bad lines, `benchmarks/load_run.py`), then in one run:

- `stream_tag` over it as a user runs it (its own process, DirectRunner,
  two zero-shot heads and centroids made for the prompt mode), with
  `--prompts all` and `--prompts shared`, and `dedup_corpus` for the batch
  figure; each job also runs on 20 records, and that start-up time (model
  load, graph tracing) is taken off for "records/s after start-up"; the
  target column is issue #12's: 100 records/s with the tiny model, with
  real weights 0.8 x encode texts/s / 3 (`all`) or / 1 (`shared`), from
  an encode of 1,000 of the texts just before the job (the "encode"
  column: this machine's speed drifts within a run);
- raw `EmbeddingGemma.encode` of the same texts with one prompt, in
  this process: the floor for what embedding costs;
- the near-duplicate detector alone on 2,000 of them with their vectors,
  on the bounded path `stream_tag` takes over files and on a stream's
  path (keyed state and timers), in ms per record, on three runners: the
  local runner (state and timers in this process, no RPC), Prism and
  Flink in streaming mode (portable runners: the SDK harness asks for
  every state read and write over the Fn API's gRPC, as on Dataflow;
  Flink lets its state cache serve reads across bundles); each "stream
  est." column adds that runner's difference to each `stream_tag` job:
  its records/s on a stream (the local runner runs no unbounded source),
  which `benchmarks/cost.py` prices for Dataflow streaming;
- `stream_tag` over the first --runner-records records on Prism and on
  Flink (streaming mode), as a bounded input and through `--as_stream`
  (the path a Pub/Sub job takes: keyed state, timers, watermark), each in
  its own process, with each of --as-stream-prompts (`shared` by
  default); issue #24's targets: the stream at most 1.5x the bounded
  job's wall time, and with real weights 0.8 x encode texts/s (`all`:
  / 3);
- with --latency, p50/p95 from arrival to tagged output at 4 records/s for
  60 s (`benchmarks/stream_latency.py`), in both prompt modes.

Writes the figures to benchmarks/results/throughput-<model>.json, which
`python -m benchmarks.cost` turns into $ per million records.
"""

import argparse
import collections
import json
import os
import pathlib
import random
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.data import DATA_DIR  # noqa: E402
from benchmarks.load_run import corpus_lines  # noqa: E402
from benchmarks.load_run import count_lines  # noqa: E402
from benchmarks.load_run import real_texts  # noqa: E402
from benchmarks.load_run import run_job  # noqa: E402
from benchmarks.machine import describe_cpu  # noqa: E402
from embgemma_keras import BadRecord  # noqa: E402
from embgemma_keras import Centroids  # noqa: E402
from embgemma_keras import EmbeddingGemma  # noqa: E402
from embgemma_keras import RecordParser  # noqa: E402
from embgemma_keras import ZeroShotHead  # noqa: E402
from embgemma_keras import make_tiny_preset  # noqa: E402
from embgemma_keras.records.schema import Vector  # noqa: E402
from transforms.tagging import expected_task  # noqa: E402

HEADS = {
    "spam": {"spam": "an unsolicited advertisement, prize or scam message",
             "ham": "a personal message between friends or family"},
    "sentiment": {"negative": "a negative, critical opinion",
                  "positive": "a positive, enthusiastic opinion"},
}
STARTUP_RECORDS = 20
DETECTOR_RATE = 50  # records a second of event time, for the detector alone
ENCODE_CHECK_TEXTS = 1000  # encoded just before each job, for its target
FLINK_CACHE_MB = 100  # the SDK harness's state cache on Flink (Beam's: 0)
AS_STREAM_TARGET = 1.5  # issue #24: --as_stream's wall time / bounded's
# What a run measures (--parts): the detector alone, the jobs on the
# DirectRunner beside raw encode, stream_tag --as_stream on Prism and Flink.
PARTS = ("detector", "jobs", "as_stream")


def artifacts(model, texts, prompts, directory):
    """Heads and centroids made for `prompts` mode; the job flags for them."""
    head_task = expected_task(Vector.CLASSIFICATION, prompts)
    cluster_task = expected_task(Vector.CLUSTERING, prompts)
    specs = []
    for name, labels in HEADS.items():
        path = directory / f"{prompts}-{name}"
        ZeroShotHead.from_descriptions(model, labels, task=head_task,
                                       model_identity=model.identity
                                       ).save(path)
        specs.append(f"{name}={path}")
    centroids = directory / f"{prompts}-centroids"
    Centroids.fit(model.encode(texts[:400], task=cluster_task), 8,
                  task=cluster_task, model_identity=model.identity
                  ).save(centroids)
    return ["--heads", ",".join(specs), "--centroids", str(centroids),
            "--prompts", prompts]


def job_rate(module, corpus, small, extra, tmp, records):
    """(records/s over the whole run, records/s after start-up, peak GB)."""
    runs = {}
    for name, path in (("small", small), ("full", corpus)):
        out = tmp / f"{module}-{name}-{len(runs)}-{time.monotonic_ns()}"
        runs[name] = run_job(f"pipelines.{module}", [
            "--input", str(path), "--output", str(out), *extra])
        if name == "full":
            produced = sum(count_lines(out, prefix) for prefix in (
                "tagged", "unique", "duplicates", "dead_letters"))
            assert produced == records, f"{module}: {produced} of {records}"
    (small_secs, _), (full_secs, peak) = runs["small"], runs["full"]
    return (records / full_secs, records / max(full_secs - small_secs, 1e-9),
            peak)


def detector_costs(records, vectors, dim, flags):
    """ms per record of `StreamingNearDuplicates` alone on the runner of
    `flags` (none: the local runner), over `records` with their similarity
    vectors at DETECTOR_RATE a second of event time: on a bounded input
    (the path `stream_tag` takes over files: one group per bucket) and on
    the same input marked unbounded (a stream's path: keyed state and
    timers, every record's timer due at once when the input ends, as over a
    backlog), each less its run on 20 records. Both paths must flag the
    same number of duplicates. Also the state requests a record costs,
    where the runner's SDK harness sends them over the Fn API from this
    process (Prism's and Flink's LOOPBACK harness; not the local
    runner's, whose state stays in-process): {path: {"ms": ...,
    "state_requests": {kind: n}, "state_bytes": {"get": n, "append": n}}},
    a record each."""
    import apache_beam as beam
    from apache_beam.metrics.metric import MetricsFilter
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.transforms.window import TimestampedValue

    from embgemma_keras.config import StreamDedupConfig
    from embgemma_keras.progress import DUPLICATES
    from local_runners.state_requests import counting_state_requests
    from transforms.dedup.streaming import StreamingNearDuplicates
    from transforms.state_cache import without_local_cache

    without_local_cache()
    items = [(i / DETECTOR_RATE, {**r, "embeddings": {"similarity": v}})
             for i, (r, v) in enumerate(zip(records, vectors, strict=True))]

    def run(items, bounded, requests, sizes):
        start = time.perf_counter()
        p = (beam.Pipeline(options=PipelineOptions(flags)) if flags
             else beam.Pipeline("FnApiRunner", options=PipelineOptions([])))
        timed = (p | beam.Create(items, reshuffle=False)
                 | beam.MapTuple(lambda t, r: TimestampedValue(r, t)))
        timed.is_bounded = bounded
        _ = timed | StreamingNearDuplicates(StreamDedupConfig(), dim)
        with counting_state_requests(requests, sizes):
            result = p.run()
            result.wait_until_finish()
        flagged = result.metrics().query(MetricsFilter().with_name(
            DUPLICATES))["counters"]
        return (time.perf_counter() - start,
                sum(counter.committed for counter in flagged))

    costs, duplicates = {}, {}
    for path, bounded in (("bounded", True), ("stream", False)):
        small_counts = collections.Counter(), collections.Counter()
        full_counts = collections.Counter(), collections.Counter()
        (small, _), (full, duplicates[path]) = (
            run(items[:STARTUP_RECORDS], bounded, *small_counts),
            run(items, bounded, *full_counts))
        records = len(items) - STARTUP_RECORDS
        costs[path] = {"ms": 1000 * (full - small) / records, **{
            name: {kind: (n - small_counted[kind]) / records
                   for kind, n in full_counted.items()}
            for name, small_counted, full_counted in zip(
                ("state_requests", "state_bytes"), small_counts,
                full_counts, strict=True)}}
    assert duplicates["bounded"] == duplicates["stream"], duplicates
    return costs


def detector_runners():
    """The runners the detector is measured on, by name: their flags.

    Prism and Flink (from `local_runners`, as the runner tests use them) run
    the SDK harness in this process. A Prism job starts its own Prism, so
    no later local-runner job runs on a shared one. Flink runs in streaming
    mode with the SDK harness's state cache on: Flink hands out a cache
    token per worker, so reads of a key's state can be served from the
    cache across bundles, which Prism's bundles never are (it hands out
    none)."""
    from local_runners import RunnerUnavailable
    from local_runners.flink import flink_flags
    from local_runners.flink import job_server_jar
    from local_runners.prism import prism_binary
    from local_runners.prism import prism_flags

    runners = {"local": []}
    for name, flags in (
            ("Prism", lambda: [*prism_flags(prism_binary()), "--experiments",
                               "disable_prism_server_singleton"]),
            ("Flink", lambda: [*flink_flags("[local]", job_server_jar()),
                               "--streaming",
                               f"--max_cache_memory_usage_mb={FLINK_CACHE_MB}"
                               ])):
        try:
            runners[name] = flags()
        except RunnerUnavailable as unavailable:
            print(f"the detector is not measured on {name}: {unavailable}",
                  flush=True)
    return runners


def state_bytes(records, vectors):
    """Bytes the streaming detector keeps per record, through its coders.

    An original (a record that matched nothing) leaves one bucket entry per
    band of each sketcher (with its bucket's key) for the horizon; every
    record waits in the verdict join as its vector-free JSON line until
    its verdicts are in.
    """
    from apache_beam.utils.timestamp import Timestamp

    from embgemma_keras.config import StreamDedupConfig
    from embgemma_keras.dedup.grouping import THIS_RUN
    from embgemma_keras.dedup.sketches import stream_sketchers
    from embgemma_keras.dedup.stream_buckets import HELD
    from embgemma_keras.dedup.stream_buckets import BucketEntry
    from embgemma_keras.dedup.stream_buckets import ShardEntry
    from embgemma_keras.records.schema import to_json_line
    from transforms.dedup.streaming import SHARD_CODER

    micros = Timestamp.now().micros
    held = {}
    for sketcher in stream_sketchers(StreamDedupConfig(), vectors.shape[1]):
        sizes = []
        for record, vector in zip(records, vectors, strict=True):
            sketch, keys = sketcher.sketch(
                {**record, "embeddings": {"similarity": vector}})
            entry = BucketEntry(HELD, THIS_RUN, record["id"], sketch, micros)
            sizes.append(sum(len(SHARD_CODER.encode(ShardEntry(key, entry)))
                             for key in keys))
        held[sketcher.kind.value] = sum(sizes) / len(sizes)
    line = sum(len(to_json_line(r).encode()) for r in records) / len(records)
    return {"bucket_bytes_per_original": held,
            "join_bytes_per_record_in_flight": line}


def as_stream_costs(lines, extra, tmp):
    """`stream_tag` over `lines` on Prism and on Flink, as a bounded input
    and `--as_stream`, each job in its own process: {runner: {"bounded":
    (records/s, after start-up, peak GB), "as_stream": (...), "ratio":
    as_stream's wall time / bounded's}}."""
    corpus, small = tmp / "runners.jsonl", tmp / "runners-small.jsonl"
    corpus.write_bytes(b"\n".join(lines) + b"\n")
    small.write_bytes(b"\n".join(lines[:STARTUP_RECORDS]) + b"\n")
    costs = {}
    for runner, flags in detector_runners().items():
        if runner == "local":
            continue  # the DirectRunner refuses --as_stream
        # The jobs' own: Flink's streaming mode comes with --as_stream.
        flags = [f for f in flags if f != "--streaming"]
        paths = {path: job_rate("stream_tag", corpus, small,
                                [*extra, *flags, *more], tmp, len(lines))
                 for path, more in (("bounded", []),
                                    ("as_stream", ["--as_stream"]))}
        paths["ratio"] = paths["bounded"][0] / paths["as_stream"][0]
        costs[runner] = paths
    return costs


def measure_detector(model, lines, results):
    """The detector alone on each runner and its state per record, into
    `results`; printed. Returns each runner's extra ms a record on a
    stream's path."""
    sample = [r for r in map(_valid, lines[:2000]) if r]
    vectors = model.encode([r["text"] for r in sample],
                           task="sentence_similarity")
    state = results["state"] = state_bytes(sample, vectors)
    results["detector_per_record"] = {
        runner: detector_costs(sample, vectors, vectors.shape[1], flags)
        for runner, flags in detector_runners().items()}
    print("\nstate per original record, held for the horizon: "
          + ", ".join(f"{kind} {n:,.0f} B" for kind, n in
                      state["bucket_bytes_per_original"].items())
          + f"; per record in the verdict join until its verdicts are "
          f"in: {state['join_bytes_per_record_in_flight']:,.0f} B")
    extra_ms = {}
    for runner, detector in results["detector_per_record"].items():
        bounded = detector["bounded"]["ms"]
        stream = detector["stream"]["ms"]
        extra_ms[runner] = stream - bounded
        print(f"near-duplicate detector alone on {runner}, "
              f"{len(sample)} records: {bounded:.2f} ms/record over a "
              f"bounded input, {stream:.2f} on a stream's path (state "
              f"and timers)", flush=True)
        for path, cost in detector.items():
            requests, sizes = cost["state_requests"], cost["state_bytes"]
            if requests:
                print(f"  {path}: state requests a record over the Fn "
                      f"API: {sum(requests.values()):.1f} ("
                      + ", ".join(f"{kind} {n:.1f}" for kind, n in
                                  sorted(requests.items())) + "); bytes "
                      "a record: " + ", ".join(
                          f"{kind} {n:,.0f}" for kind, n in
                          sorted(sizes.items())), flush=True)
    return extra_ms


def measure_jobs(model, texts, runs, inputs, common, extra_ms, tmp,
                 results):
    """Each job of `runs` on the DirectRunner beside raw encode, over
    `inputs` (corpus, its start-up slice, records), into `results`;
    printed."""
    corpus, small, records = inputs
    encode = encode_rate(model, texts, "sentence_similarity")
    results["encode_texts_per_s"] = encode
    print(f"\nCPU: {describe_cpu()}")
    print(f"\n{records} records, model {results['model']} "
          f"{results['dtype']}, {os.cpu_count()} CPUs; raw encode: "
          f" {encode:.1f} texts/s", flush=True)
    print(f"\n{'job':28} {'encode':>7} {'rec/s':>7} {'after start':>11} "
          f"{'target':>7} {'peak GB':>8} "
          + " ".join(f"{'est. ' + runner:>11}" for runner in extra_ms),
          flush=True)
    for module, prompts, extra in runs:
        # The machine's speed drifts: each job's target comes from an
        # encode measured just before it.
        encode_now = encode_rate(model, texts[:ENCODE_CHECK_TEXTS],
                                 "sentence_similarity")
        rate, steady, peak = job_rate(module, corpus, small,
                                      common + extra, tmp, records)
        label = module + (f" --prompts {prompts}" if prompts else "")
        target = _target(prompts, encode_now,
                         real=results["model"] == "real")
        # A stream's records cost the detector's extra ms on top.
        stream = {runner: 1 / (1 / steady + ms / 1000)
                  for runner, ms in extra_ms.items()
                  } if module == "stream_tag" else {}
        results["jobs"][label] = {
            "encode_texts_per_s_before": encode_now,
            "records_per_s": rate, "records_per_s_after_startup": steady,
            "peak_rss_gb": peak, "target_records_per_s": target,
            "stream_records_per_s_estimate": stream}
        print(f"{label:28} {encode_now:7.1f} {rate:7.1f} {steady:11.1f} "
              f"{'' if target is None else f'{target:7.1f}':>7} "
              f"{peak:8.2f} "
              + " ".join(f"{stream[r]:11.1f}" if stream else " " * 11
                         for r in extra_ms), flush=True)


def measure_as_stream(lines, flags, tmp, results, encode, real,
                      prompts="shared"):
    """`as_stream_costs` of `lines` into `results` (`as_stream`, which
    `benchmarks.cost` prices, for `shared`; `as_stream_all` for `all`);
    printed, with each job's rate after start-up against `encode` (texts/s
    of a raw encode of the same texts, just before; issue #24's target
    with real weights: 0.8 x, divided by the prompts a record)."""
    key = "as_stream" if prompts == "shared" else f"as_stream_{prompts}"
    costs = results[key] = as_stream_costs(lines, flags, tmp)
    results["as_stream_encode"] = encode
    from embgemma_keras.records.schema import to_json_line

    valid = [r for r in map(_valid, lines) if r]
    results["as_stream_line_bytes"] = sum(
        len(to_json_line(r).encode()) for r in valid) / len(valid)
    print(f"\nstream_tag --prompts {prompts}, {len(lines)} records; raw "
          f"encode"
          f" {encode:.1f} texts/s"
          f"\n{'runner':8} {'path':10} {'rec/s':>7} {'after start':>11} "
          f"{'/ encode':>8} {'peak GB':>8} {'wall / bounded':>14} "
          f"{'target':>7}", flush=True)
    share = 1 if prompts == "shared" else 3
    for runner, paths in costs.items():
        for path in ("bounded", "as_stream"):
            rate, steady, peak = paths[path]
            ratio = (f"{paths['ratio']:14.2f} {AS_STREAM_TARGET:7.1f}"
                     if path == "as_stream" else "")
            of_encode = f"{steady * share / encode:8.2f}" + (
                f" (target 0.8{' / 3 a prompt' if share > 1 else ''})"
                if real and path == "as_stream" else "")
            print(f"{runner:8} {path:10} {rate:7.1f} {steady:11.1f} "
                  f"{of_encode} {peak:8.2f} {ratio}", flush=True)


def _target(prompts, encode, real):
    """Issue #12's targets: 100 rec/s with the tiny model; with real
    weights 0.8 x encode texts/s, divided by the prompts per record."""
    if prompts is None:
        return None
    if not real:
        return 100.0
    return 0.8 * encode / (3 if prompts == "all" else 1)


def _valid(line):
    try:
        return RecordParser()(line)
    except BadRecord:
        return None


def encode_rate(model, texts, task):
    model.encode(texts[:64], task=task)  # warm-up
    start = time.perf_counter()
    model.encode(texts, task=task)
    return len(texts) / (time.perf_counter() - start)


def latency(model_dir, dtype, prompts, data_dir):
    from benchmarks import stream_latency
    from transforms import EmbeddingGemmaModelHandler

    model = EmbeddingGemma.from_preset(model_dir, dtype=dtype)
    texts = stream_latency.stream_texts(data_dir, 240)
    heads = {name: ZeroShotHead.from_descriptions(
        model, labels, task=expected_task(Vector.CLASSIFICATION, prompts),
        model_identity=model.identity) for name, labels in HEADS.items()}
    task = expected_task(Vector.CLUSTERING, prompts)
    centroids = Centroids.fit(model.encode(texts[:200], task=task), 8,
                              task=task, model_identity=model.identity)
    del model
    rows = stream_latency.run_graph(
        texts, stream_latency.schedule(len(texts), 4.0, 2.0),
        EmbeddingGemmaModelHandler(model_dir, dtype=dtype), heads, centroids,
        prompts)
    _, per_sec, p50, p95, _, _ = stream_latency.summarise(rows)
    return per_sec, p50, p95


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None,
                        help="Model directory (default: a tiny random "
                             "model).")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--parts", default=",".join(PARTS),
                        help="What to measure, of " + ", ".join(PARTS)
                             + " (default: all).")
    parser.add_argument("--runner-records", type=int, default=3_000,
                        help="Records of the --as_stream runs on Prism and "
                             "Flink.")
    parser.add_argument("--as-stream-prompts", nargs="+",
                        choices=("shared", "all"), default=["shared"],
                        help="Prompt modes of the --as_stream runs.")
    parser.add_argument("--latency", action="store_true")
    parser.add_argument("--data-dir", type=pathlib.Path, default=DATA_DIR)
    args = parser.parse_args()
    parts = args.parts.split(",")
    if unknown := set(parts) - set(PARTS):
        parser.error(f"--parts: unknown {sorted(unknown)}; known: {PARTS}")
    results = {"model": "real" if args.model else "tiny", "dtype": args.dtype,
               "records": args.records, "cpus": os.cpu_count(), "jobs": {}}
    with tempfile.TemporaryDirectory(prefix="throughput-") as tmp:
        tmp = pathlib.Path(tmp)
        model_dir = args.model or make_tiny_preset(tmp / "tiny")
        lines = corpus_lines(real_texts(args.data_dir), args.records,
                             random.Random(0))
        corpus, small = tmp / "corpus.jsonl", tmp / "small.jsonl"
        corpus.write_bytes(b"\n".join(lines) + b"\n")
        small.write_bytes(b"\n".join(lines[:STARTUP_RECORDS]) + b"\n")
        texts = [record["text"] for record in map(_valid, lines) if record]
        model = EmbeddingGemma.from_preset(model_dir, dtype=args.dtype)
        common = ["--model", str(model_dir), "--dtype", args.dtype]
        shared = artifacts(model, texts, "shared", tmp)
        extra_ms = {}
        if "detector" in parts:
            extra_ms = measure_detector(model, lines, results)
        if "jobs" in parts:
            runs = [("stream_tag", "all", artifacts(model, texts, "all",
                                                    tmp)),
                    ("stream_tag", "shared", shared), ("dedup_corpus", None,
                                                       [])]
            measure_jobs(model, texts, runs, (corpus, small, len(lines)),
                         common, extra_ms, tmp, results)
        stream_flags = {}
        if "as_stream" in parts:
            runner_lines = lines[:args.runner_records]
            encode = encode_rate(model, [r["text"] for r in map(
                _valid, runner_lines) if r][:1000], "sentence_similarity")
            stream_flags = {prompts: shared if prompts == "shared" else
                            artifacts(model, texts, prompts, tmp)
                            for prompts in args.as_stream_prompts}
        del model
        for prompts, flags in stream_flags.items():
            measure_as_stream(runner_lines, common + flags, tmp, results,
                              encode, real=args.model is not None,
                              prompts=prompts)
        if args.latency:
            print(f"\n{'latency at 4 rec/s':28} {'rec/s':>7} {'p50 s':>7} "
                  f"{'p95 s':>7}", flush=True)
            for prompts in ("all", "shared"):
                per_sec, p50, p95 = latency(model_dir, args.dtype, prompts,
                                            args.data_dir)
                results[f"latency_{prompts}"] = {"records_per_s": per_sec,
                                                 "p50_s": p50, "p95_s": p95}
                print(f"{'--prompts ' + prompts:28} {per_sec:7.1f} {p50:7.2f} "
                      f"{p95:7.2f}", flush=True)
    out = REPO / "benchmarks" / "results"
    out.mkdir(exist_ok=True)
    # A partial run does not overwrite the figures `cost.py` prices.
    suffix = "" if set(parts) == set(PARTS) else "-" + "-".join(parts)
    path = out / f"throughput-{results['model']}-{args.dtype}{suffix}.json"
    path.write_text(json.dumps(results, indent=2))
    print(f"\nwrote {path.relative_to(REPO)}")


if __name__ == "__main__":
    main()
