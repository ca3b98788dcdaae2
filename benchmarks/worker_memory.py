"""Peak memory of an encoding worker: a fresh process loads the model and
encodes 1,000 real texts (issue #27's measure), for each model and dtype.

    python benchmarks/worker_memory.py --model DIR [--model DIR2] \
        [--dtypes bfloat16 float32 int8] [--compare-sentence-transformers]

Engines, each in its own process, one after another:
- `EmbeddingGemma`: `EmbeddingGemma.from_preset`, whose variables take the
  checkpoint's values as their first (`embgemma_keras.loading`);
- `keras-hub`: the same model with its backbone loaded by keras-hub's
  `Gemma3Backbone.from_preset` as it is (random values first, then the
  checkpoint): the baseline in the same run;
- `sentence-transformers` (with the flag and `pip install -e .[bench]`).
`--model` takes a Keras preset (`python -m embgemma_keras save-preset`) or
a Sentence-Transformers snapshot; a worker image ships the preset. For
int8, give a preset saved in int8 (or have its program in the cache), or
the peak is that of making the program.
"""

import argparse
import json
import os
import pathlib
import resource
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.data import DATA_DIR  # noqa: E402
from benchmarks.data import column_texts  # noqa: E402
from benchmarks.embed_throughput import BATCH_SIZE  # noqa: E402
from benchmarks.embed_throughput import load_engine  # noqa: E402
from benchmarks.machine import describe_cpu  # noqa: E402

TEXTS = 1000
ENGINES = ("EmbeddingGemma", "keras-hub")


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def _load(engine, model, dtype):
    """An `encode(texts)` for the engine."""
    if engine == "sentence-transformers":
        encode, _ = load_engine(engine, dtype, model)
        return encode
    from embgemma_keras import EmbeddingGemma

    if engine == "EmbeddingGemma":
        ours = EmbeddingGemma.from_preset(model, dtype=dtype)
    else:
        from embgemma_keras.backend import keras_hub

        ours = EmbeddingGemma(
            keras_hub.models.Gemma3Backbone.from_preset(model, dtype=dtype),
            keras_hub.models.Gemma3Tokenizer.from_preset(model))
    return lambda texts: ours.encode(texts, batch_size=BATCH_SIZE)


def measure(engine, model, dtype):
    """In a child process: load, then encode the texts; RSS along the way."""
    texts = column_texts(DATA_DIR, [("sms_spam_train.tsv", ["text"]),
                                    ("sst2_train.tsv", ["text"])])[:TEXTS]
    before = _rss_mb()
    start = time.perf_counter()
    encode = _load(engine, model, dtype)
    loaded = {"load_s": time.perf_counter() - start,
              "rss_loaded_mb": _rss_mb(), "peak_loaded_mb": _peak_mb()}
    encode(texts)
    return {"rss_start_mb": before, **loaded, "rss_end_mb": _rss_mb(),
            "peak_mb": _peak_mb()}


def _run_child(engine, model, dtype):
    out = subprocess.run(
        [sys.executable, __file__, "--child", engine, model, dtype],
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"), check=True,
        capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append",
                        help="Model directory; repeat for several "
                             "(default: $EMBGEMMA_MODEL).")
    parser.add_argument("--dtypes", nargs="+", default=["bfloat16"])
    parser.add_argument("--compare-sentence-transformers", action="store_true")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(*args.child)))
        return
    models = args.model or [os.environ.get("EMBGEMMA_MODEL")]
    if None in models:
        parser.error("pass --model or set EMBGEMMA_MODEL")
    engines = [*ENGINES, *(["sentence-transformers"]
                           if args.compare_sentence_transformers else [])]
    print(f"CPU: {describe_cpu()}; load, then encode "
          f"{TEXTS} real texts, each in a fresh process")
    print("\n| model | dtype | engine | load s | RSS before imports MB | RSS "
          "loaded MB | RSS after encodes MB | peak RSS MB |\n"
          "|---|---|---|---|---|---|---|---|")
    for model in models:
        for dtype in args.dtypes:
            for engine in engines:
                if engine == "sentence-transformers" and os.path.exists(
                        os.path.join(model, "metadata.json")):
                    continue  # a Keras preset: the peer cannot read it
                if dtype == "int8" and engine != "EmbeddingGemma":
                    continue  # int8 is this project's route alone
                run = _run_child(engine, model, dtype)
                print(f"| {pathlib.Path(model).name} | {dtype} | {engine} | "
                      f"{run['load_s']:.1f} | {run['rss_start_mb']:.0f} | "
                      f"{run['rss_loaded_mb']:.0f} | {run['rss_end_mb']:.0f} "
                      f"| {run['peak_mb']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
