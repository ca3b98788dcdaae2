"""Records/s and per-record latency of the stream_tag graph, on a paced stream.

    python benchmarks/stream_latency.py --model DIR [--dtype float32]
        [--rates 2,4,8,max] [--seconds 60] [--compare-sentence-transformers]

Real SMS and SST-2 texts (one in ten re-sent, so duplicates are found)
arrive evenly at each rate (records/s) for --seconds; `max` sends them all
at once and measures throughput. Each record runs the whole `TagRecords`
graph (stream_tag's) on the DirectRunner in streaming mode (TestStream
source): parse, embed with the classification, clustering and similarity
prompts, two zero-shot heads (spam, sentiment), k-means clusters, lexical and
semantic near-duplicates.

Records are released in micro-batches every --tick-secs (default 2, the
job's --max_batch_duration_secs): what Beam's cross-bundle batcher does on
Dataflow, whose wall-clock timers TestStream does not drive. Latency runs
from a record's arrival to its tagged output, so it includes the wait for
its micro-batch and any queueing behind earlier ones.

The peer, with --compare-sentence-transformers, is a plain loop over the
same micro-batches that only embeds them with sentence-transformers, with
the same prompts: a floor for what embedding alone costs.
"""

import argparse
import functools
import json
import os
import pathlib
import random
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import apache_beam as beam  # noqa: E402
import numpy as np  # noqa: E402
from apache_beam.options.pipeline_options import PipelineOptions  # noqa: E402
from apache_beam.testing.test_stream import TestStream  # noqa: E402
from apache_beam.transforms.window import TimestampedValue  # noqa: E402
from apache_beam.utils.timestamp import Timestamp  # noqa: E402

from benchmarks.data import DATA_DIR  # noqa: E402
from benchmarks.data import read_tsv  # noqa: E402
from benchmarks.machine import describe_cpu  # noqa: E402
from embgemma_keras import Centroids  # noqa: E402
from embgemma_keras import EmbeddingGemma  # noqa: E402
from embgemma_keras import ZeroShotHead  # noqa: E402
from embgemma_keras.tasks import format_prompts  # noqa: E402
from transforms import EmbeddingGemmaModelHandler  # noqa: E402
from transforms import ParseRecords  # noqa: E402
from transforms import TagRecords  # noqa: E402

PROMPTS = ("classification", "clustering", "sentence_similarity")
HEADS = {
    "spam": {"spam": "an unsolicited advertisement, prize or scam message",
             "ham": "a personal message between friends or family"},
    "sentiment": {"negative": "a negative, critical opinion",
                  "positive": "a positive, enthusiastic opinion"},
}


def stream_texts(data_dir, count):
    texts = []
    for name in ("sms_spam_train.tsv", "sst2_train.tsv"):
        texts += [row["text"] for row in read_tsv(data_dir, name)][:count]
    rng = random.Random(0)
    rng.shuffle(texts)
    texts = texts[:count]
    for i in range(9, count, 10):  # re-sent copies of earlier records
        texts[i] = texts[rng.randrange(i)]
    return texts


def schedule(count, rate, tick_secs):
    """[(release time, [(arrival time, record index)])], in seconds.

    Records arrive every 1/rate s and are released at the end of the tick
    they arrived in; rate None: all arrive and are released at 0.
    """
    if rate is None:
        return [(0.0, [(0.0, i) for i in range(count)])]
    ticks = {}
    for i in range(count):
        arrival = i / rate
        release = (int(arrival // tick_secs) + 1) * tick_secs
        ticks.setdefault(release, []).append((arrival, i))
    return sorted(ticks.items())


class _Arrive(beam.DoFn):
    """Holds each micro-batch until its release, stamps arrival times.

    Times count from the moment the warm-up record came out of the graph
    (written to `clock`), so the model load is left out.
    """

    def __init__(self, clock):
        self._clock = clock

    def process(self, element):
        release, arrival, line = element
        record = json.loads(line)
        if release < 0:  # the warm-up record
            record["due"] = time.time()
        else:
            while not os.path.exists(self._clock):
                time.sleep(0.05)
            with open(self._clock) as f:
                start = float(f.read())
            record["due"] = start + arrival
            time.sleep(max(0.0, start + release - time.time()))
        yield json.dumps(record).encode()


class _Done(beam.DoFn):
    def __init__(self, clock, results):
        self._clock, self._results = clock, results

    def process(self, record):
        now = time.time()
        if record["id"] == "warm-up":
            with open(self._clock + ".tmp", "w") as f:
                f.write(repr(now))
            os.replace(self._clock + ".tmp", self._clock)
            return
        with open(self._results, "a") as f:
            f.write(json.dumps({"latency": now - record["due"], "done": now,
                                "due": record["due"],
                                "duplicate": "duplicate_of" in record}) + "\n")


def run_graph(texts, ticks, handler, heads, centroids, prompts="all"):
    stream = TestStream().advance_watermark_to(0)
    stream = stream.add_elements([TimestampedValue(
        (-1.0, -1.0, json.dumps({"id": "warm-up", "text": "warm up"})), 0)])
    for release, arrivals in ticks:
        stream = stream.add_elements([TimestampedValue(
            (release, arrival, json.dumps({"id": str(i), "text": texts[i]})),
            arrival) for arrival, i in arrivals]).advance_watermark_to(
                Timestamp(micros=(round(release * 1000) + 1) * 1000))
    stream = stream.advance_watermark_to_infinity()
    with tempfile.TemporaryDirectory() as tmp:
        clock, results = os.path.join(tmp, "clock"), os.path.join(tmp, "out")
        with beam.Pipeline(options=PipelineOptions([], streaming=True)) as p:
            parsed = (p | stream | "Arrive" >> beam.ParDo(_Arrive(clock))
                      | ParseRecords())
            tagged = parsed.output | TagRecords(handler, heads, centroids,
                                                prompts=prompts)
            _ = tagged.output | "Done" >> beam.ParDo(_Done(clock, results))
        with open(results) as f:
            return [json.loads(line) for line in f]


def run_peer(texts, ticks, model_dir):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(model_dir, device="cpu")
    model.encode(["warm up"])
    start, rows = time.time(), []
    for release, arrivals in ticks:
        time.sleep(max(0.0, start + release - time.time()))
        batch = [texts[i] for _, i in arrivals]
        model.encode([p for prompt in PROMPTS
                      for p in format_prompts(batch, prompt)],
                     normalize_embeddings=True)
        now = time.time()
        rows += [{"latency": now - start - arrival, "done": now,
                  "due": start + arrival, "duplicate": False}
                 for arrival, _ in arrivals]
    return rows


def summarise(rows):
    latency = np.array([r["latency"] for r in rows])
    span = max(r["done"] for r in rows) - min(r["due"] for r in rows)
    return (len(rows), len(rows) / span, np.percentile(latency, 50),
            np.percentile(latency, 95), latency.max(),
            sum(r["duplicate"] for r in rows))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=os.environ.get("EMBGEMMA_MODEL"))
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--rates", default="2,4,8,max",
                        help="Records/s to send at; 'max': all at once.")
    parser.add_argument("--seconds", type=float, default=60,
                        help="How long each paced run sends for.")
    parser.add_argument("--max-records", type=int, default=400,
                        help="Records in the 'max' (throughput) run.")
    parser.add_argument("--tick-secs", type=float, default=2.0)
    parser.add_argument("--data-dir", type=pathlib.Path,
                        default=DATA_DIR)
    parser.add_argument("--compare-sentence-transformers",
                        action="store_true")
    args = parser.parse_args()

    model = EmbeddingGemma.from_preset(args.model, dtype=args.dtype)
    heads = {name: ZeroShotHead.from_descriptions(
        model, labels, model_identity=model.identity)
        for name, labels in HEADS.items()}
    centroids = Centroids.fit(
        model.encode(stream_texts(args.data_dir, 200), task="clustering"), 8,
        task="clustering", model_identity=model.identity)
    del model
    handler = EmbeddingGemmaModelHandler(args.model, dtype=args.dtype)

    print(f"\nCPU: {describe_cpu()}")
    print(f"\n{'run':40} {'records':>7} {'rec/s':>6} {'p50 s':>6} "
          f"{'p95 s':>6} {'max s':>6} {'dups':>5}", flush=True)
    for rate in args.rates.split(","):
        rate = None if rate == "max" else float(rate)
        count = args.max_records if rate is None else int(rate * args.seconds)
        texts = stream_texts(args.data_dir, count)
        ticks = schedule(count, rate, args.tick_secs)
        label = "all at once" if rate is None else f"{rate:g} rec/s"
        runs = [("stream_tag graph, " + label,
                 functools.partial(run_graph, texts, ticks, handler, heads,
                                   centroids))]
        if args.compare_sentence_transformers:
            runs.append(("sentence-transformers embed, " + label,
                         functools.partial(run_peer, texts, ticks,
                                           args.model)))
        for name, run in runs:
            n, per_sec, p50, p95, worst, dups = summarise(run())
            print(f"{name:40} {n:7} {per_sec:6.1f} {p50:6.2f} {p95:6.2f} "
                  f"{worst:6.2f} {dups:5}", flush=True)


if __name__ == "__main__":
    main()
