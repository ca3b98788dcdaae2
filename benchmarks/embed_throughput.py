"""Encoding throughput and memory of `EmbeddingGemma`, optionally vs a peer.

    python benchmarks/embed_throughput.py --model DIR \
        [--dtypes float32 bfloat16 int8] [--compare-sentence-transformers] \
        [--scale 1.0]

Measures texts/s and tokens/s on four corpora built from ../shared/data:
short (~20 tokens), medium (~100), long (~500) and a mix of real SMS and
SST-2 texts, each with the classification prompt. Every (engine, dtype)
runs in its own process, so the peak RSS reported is that of one process
loading the model and encoding everything, and the two frameworks do not
share thread pools. With --compare-sentence-transformers the same texts go
through sentence-transformers on torch (CPU) and the ratio is printed.
Needs `pip install -e .[bench]` for the comparison. int8 rows are compared
with our bfloat16 and the peer's bfloat16 (the peer has no int8 path); its
load time includes making the int8 program unless a preset or the cache
holds it. The CPU model and its matrix extensions head the table: the
ratios differ by CPU.
"""

import argparse
import json
import os
import pathlib
import random
import resource
import statistics
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.data import DATA_DIR  # noqa: E402
from benchmarks.data import read_tsv  # noqa: E402
from benchmarks.machine import describe_cpu  # noqa: E402

BATCH_SIZE = 32


def build_corpora(data_dir, scale):
    """Deterministic text sets; at scale 1 each takes 10-30 s to encode."""
    rng = random.Random(0)
    sst = [r["text"] for r in read_tsv(data_dir, "sst2_train.tsv")]
    sms = [r["text"] for r in read_tsv(data_dir, "sms_spam_train.tsv")]
    mrpc = [r["text_a"] for r in read_tsv(data_dir, "mrpc_train.tsv")]
    rng.shuffle(sst), rng.shuffle(sms)

    def joined(words, count):
        # Consecutive MRPC sentences joined to about `words` words.
        texts, pool = [], iter(mrpc * 10)
        for _ in range(count):
            text = []
            while len(text) < words:
                text += next(pool).split()
            texts.append(" ".join(text[:words]))
        return texts

    n = lambda count: max(4, int(count * scale))  # noqa: E731
    return {
        "short": [t for t in sst if 12 <= len(t.split()) <= 16][: n(384)],
        "medium": joined(75, n(96)),
        "long": joined(380, n(24)),
        "real mix": (sms[: n(192)] + sst[: n(192)]),
    }


def measure(engine, dtype, model, data_dir, scale, repeats):
    """Runs in a child process: load, warm up, time every corpus.

    Each corpus is encoded `repeats` times and the median time is kept: this
    machine's speed drifts by 10-15 % from minute to minute.
    """
    corpora = build_corpora(data_dir, scale)
    start = time.perf_counter()
    encode, count_tokens = load_engine(engine, dtype, model)
    result = {"load_s": time.perf_counter() - start, "corpora": {}}
    encode(corpora["short"][:BATCH_SIZE])  # build graphs / allocate pools
    for name, texts in corpora.items():
        tokens = sum(count_tokens(texts))
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            encode(texts)
            times.append(time.perf_counter() - start)
        seconds = statistics.median(times)
        result["corpora"][name] = {
            "texts": len(texts), "tokens": tokens, "seconds": seconds,
        }
    result["peak_rss_mb"] = resource.getrusage(
        resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def load_engine(engine, dtype, model):
    if engine == "keras-hub":
        # Imported only here: TensorFlow and torch in one process crash.
        from embgemma_keras import EmbeddingGemma

        ours = EmbeddingGemma.from_preset(model, dtype=dtype)
        return (
            lambda texts: ours.encode(texts, task="classification",
                                      batch_size=BATCH_SIZE),
            ours.count_tokens,
        )
    import torch
    from sentence_transformers import SentenceTransformer

    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}
    # The peer has no int8 path: its int8 row is never run (see main).
    peer = SentenceTransformer(model, device="cpu",
                               model_kwargs={"torch_dtype": torch_dtype[dtype]})
    prompt = "task: classification | query: "
    tokens = peer.tokenizer
    return (
        lambda texts: peer.encode(texts, prompt=prompt, batch_size=BATCH_SIZE),
        lambda texts: [len(tokens(prompt + t)["input_ids"]) for t in texts],
    )


def _run_child(engine, dtype, args):
    command = [sys.executable, __file__, "--child", engine, dtype,
               "--model", args.model, "--data-dir", str(args.data_dir),
               "--scale", str(args.scale),
               "--repeats", str(args.repeats)]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    out = subprocess.run(command, env=env, check=True, capture_output=True,
                         text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _print_table(results, dtypes):
    print(f"\n{describe_cpu()}")
    print(f"\n{'corpus':10} {'dtype':9} {'engine':22} {'texts/s':>9} "
          f"{'tokens/s':>9} {'vs peer':>8} {'vs our bf16':>11}")
    corpora = next(iter(results.values()))["corpora"]
    for name in corpora:
        for dtype in dtypes:
            for engine in ("keras-hub", "sentence-transformers"):
                run = results.get((engine, dtype))
                if run is None:
                    continue
                c = run["corpora"][name]
                peer = _ratio(results, ("sentence-transformers", _peer_dtype(
                    dtype)), name, c) if engine == "keras-hub" else ""
                ours = _ratio(results, ("keras-hub", "bfloat16"), name, c) \
                    if (engine, dtype) == ("keras-hub", "int8") else ""
                print(f"{name:10} {dtype:9} {engine:22} "
                      f"{c['texts'] / c['seconds']:9.1f} "
                      f"{c['tokens'] / c['seconds']:9.0f} {peer:>8} "
                      f"{ours:>11}")
    print(f"\n{'engine':22} {'dtype':9} {'load s':>7} {'peak RSS MB':>12}")
    for (engine, dtype), run in results.items():
        print(f"{engine:22} {dtype:9} {run['load_s']:7.1f} "
              f"{run['peak_rss_mb']:12.0f}")


def _peer_dtype(dtype):
    return "bfloat16" if dtype == "int8" else dtype


def _ratio(results, key, corpus, ours):
    """How many times faster `ours` encoded `corpus` than the run `key`."""
    run = results.get(key)
    if run is None:
        return ""
    return f"{run['corpora'][corpus]['seconds'] / ours['seconds']:.2f}x"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=os.environ.get("EMBGEMMA_MODEL"),
                        help="Model directory (default: $EMBGEMMA_MODEL). "
                        "The peer needs a Sentence-Transformers snapshot.")
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--compare-sentence-transformers", action="store_true")
    parser.add_argument("--data-dir", type=pathlib.Path, default=DATA_DIR)
    parser.add_argument("--scale", type=float, default=1.0,
                        help="Multiply corpus sizes (e.g. 0.25 for a smoke "
                             "run).")
    parser.add_argument("--repeats", type=int, default=3,
                        help="Times each corpus is encoded; the median counts.")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not args.model:
        parser.error("pass --model or set EMBGEMMA_MODEL")
    if args.child:
        print(json.dumps(measure(*args.child, args.model, args.data_dir,
                                 args.scale, args.repeats)))
        return
    engines = ["keras-hub"]
    if args.compare_sentence_transformers:
        engines.append("sentence-transformers")
    results = {}
    runs = [(engine, dtype) for dtype in args.dtypes for engine in engines
            if (engine, dtype) != ("sentence-transformers", "int8")]
    if "int8" in args.dtypes:  # its ratios need both bfloat16 runs
        runs += [(engine, "bfloat16") for engine in engines
                 if (engine, "bfloat16") not in runs]
    for engine, dtype in runs:
        print(f"running {engine} {dtype} ...", file=sys.stderr, flush=True)
        results[(engine, dtype)] = _run_child(engine, dtype, args)
    _print_table(results, sorted({dtype for _, dtype in runs},
                                 key=["float32", "bfloat16", "int8"].index))


if __name__ == "__main__":
    main()
