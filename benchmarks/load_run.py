"""Load runs: dedup_corpus and stream_tag on a large corpus, nothing lost.

    python benchmarks/load_run.py --records 20000              # tiny model
    python benchmarks/load_run.py --records 2000 --model DIR   # real weights

Builds a JSONL corpus of real SMS, SST-2 and MRPC texts with planted exact
and near copies and every kind of bad line from `tests/helpers.py`, runs
each job on it as its own process (DirectRunner, as a user would run it),
and prints records in, what came out, records lost (in - out - dead
letters, which must be 0) and the job process's peak RSS.
"""

import argparse
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
from benchmarks.data import column_texts  # noqa: E402
from benchmarks.machine import describe_cpu  # noqa: E402
from embgemma_keras import EmbeddingGemma  # noqa: E402
from embgemma_keras import ZeroShotHead  # noqa: E402
from embgemma_keras import make_tiny_preset  # noqa: E402
from tests.helpers import REFUSED  # noqa: E402

# Runs a job module as __main__ and reports the process's peak RSS (KiB).
_WITH_PEAK_RSS = """
import resource, runpy, sys
sys.argv = sys.argv[1:]
try:
    runpy.run_module(sys.argv[0], run_name="__main__")
finally:
    print("PEAK_RSS_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
          file=sys.stderr)
"""


def real_texts(data_dir):
    texts = column_texts(data_dir, (("sms_spam_train.tsv", ["text"]),
                                    ("sst2_train.tsv", ["text"]),
                                    ("mrpc_train.tsv", ["text_a", "text_b"])))
    return list(dict.fromkeys(t for t in texts if t.strip()))


def corpus_lines(texts, count, rng):
    """`count` lines: ~80 % distinct texts, copies and edits, bad lines."""
    lines, originals = [], []
    distinct = rng.sample(texts, min(len(texts), int(count * 0.8)))
    while len(lines) < count:
        roll = rng.random()
        if roll < 0.01:
            lines.append(rng.choice(REFUSED)[1])
        elif roll < 0.2 and originals:
            text = rng.choice(originals)
            text = text.upper() if rng.random() < 0.5 else text + " !"
            lines.append(json.dumps({"id": f"r{len(lines)}", "text": text}))
        elif distinct:
            text = distinct.pop()
            originals.append(text)
            lines.append(json.dumps({"id": f"r{len(lines)}", "text": text}))
        else:
            lines.append(json.dumps({"id": f"r{len(lines)}",
                                     "text": rng.choice(originals)}))
    return [line if isinstance(line, bytes) else line.encode()
            for line in lines]


def count_lines(directory, prefix):
    return sum(path.read_bytes().count(b"\n")
               for path in directory.glob(f"{prefix}-*"))


def run_job(module, args):
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", _WITH_PEAK_RSS, module, *args], cwd=REPO,
        capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode:
        sys.exit(f"{module} failed:\n{result.stderr[-3000:]}")
    peak = next(int(line.split()[1]) for line in result.stderr.splitlines()
                if line.startswith("PEAK_RSS_KB"))
    return seconds, peak / 2**20


def zero_shot_head(model_dir, directory):
    model = EmbeddingGemma.from_preset(model_dir)
    ZeroShotHead.from_descriptions(
        model, {"spam": "an unsolicited advertisement, prize or scam",
                "ham": "a personal message between friends or family"},
        model_identity=model.identity).save(directory)
    return directory


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--model", default=None,
                        help="Model directory (default: a tiny random "
                             "model, for speed).")
    parser.add_argument("--data-dir", type=pathlib.Path,
                        default=DATA_DIR)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="load-") as tmp:
        tmp = pathlib.Path(tmp)
        model = args.model or make_tiny_preset(tmp / "tiny")
        lines = corpus_lines(real_texts(args.data_dir), args.records,
                             random.Random(0))
        corpus = tmp / "corpus.jsonl"
        corpus.write_bytes(b"\n".join(lines) + b"\n")
        head = zero_shot_head(model, tmp / "head")
        print(f"\nCPU: {describe_cpu()}")
        print(f"\n{'job':14} {'model':6} {'in':>7} {'out':>7} {'dups':>6} "
              f"{'dead':>5} {'lost':>5} {'seconds':>8} {'peak RSS GB':>12}",
              flush=True)
        for module, extra, outputs in (
                ("pipelines.dedup_corpus", [], ("unique", "duplicates")),
                ("pipelines.stream_tag", ["--heads", f"spam={head}"],
                 ("tagged",))):
            out = tmp / module.rsplit(".", 1)[1]
            seconds, peak_gb = run_job(module, [
                "--input", str(corpus), "--output", str(out),
                "--model", str(model), *extra])
            produced = sum(count_lines(out, prefix) for prefix in outputs)
            dead = count_lines(out, "dead_letters")
            duplicates = (count_lines(out, "duplicates")
                          if "duplicates" in outputs else sum(
                              '"duplicate_of"' in line for path in
                              out.glob("tagged-*") for line in
                              path.read_text(encoding="utf-8").splitlines()))
            print(f"{module.rsplit('.', 1)[1]:14} "
                  f"{'real' if args.model else 'tiny':6} {len(lines):7} "
                  f"{produced:7} {duplicates:6} {dead:5} "
                  f"{len(lines) - produced - dead:5} {seconds:8.0f} "
                  f"{peak_gb:12.2f}", flush=True)


if __name__ == "__main__":
    main()
