"""Precision and recall of dedup_corpus on a corpus with planted duplicates.

    python benchmarks/dedup_planted.py --model DIR [--base 1500]

Builds a corpus from real texts of ../shared/data (SMS messages and SST-2
sentences of 8+ words) and plants, for a seeded random tenth of them each:
exact copies, whitespace/case changes, typos (one character dropped in two
words), word insertions/deletions, truncation (last fifth of the words
dropped), plus MRPC pairs: paraphrases (both sentences) and, as hard
negatives, non-paraphrase pairs. Then runs `pipelines.dedup_corpus` on the
DirectRunner at the default thresholds and at a looser and a stricter
setting, and prints recall per planted kind (the copy lands in its base's
group), how many untouched base texts were left alone, and the precision
of everything flagged.
"""

import argparse
import json
import os
import pathlib
import random
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.data import DATA_DIR  # noqa: E402
from benchmarks.data import read_tsv  # noqa: E402
from pipelines import dedup_corpus  # noqa: E402

SETTINGS = {
    "default": [],
    "looser": ["--lexical_threshold", "0.5", "--semantic_threshold", "0.85"],
    "stricter": ["--lexical_threshold", "0.85", "--semantic_threshold",
                 "0.95"],
}


def _typo(words, rng):
    words = list(words)
    for j in rng.sample(range(len(words)), min(2, len(words))):
        if len(words[j]) > 2:
            k = rng.randrange(len(words[j]))
            words[j] = words[j][:k] + words[j][k + 1:]
    return words


def _edit(words, rng):
    words = list(words)
    if rng.random() < 0.5:
        words.insert(rng.randrange(len(words) + 1),
                     rng.choice(["really", "also", "just", "very", "indeed"]))
    else:
        del words[rng.randrange(len(words))]
    return words


PLANTS = {
    "exact copy": lambda w, rng: w,
    "whitespace/case": lambda w, rng: ["  " + " ".join(w).upper() + " "],
    "typo": _typo,
    "insert/delete word": _edit,
    "truncation": lambda w, rng: w[:max(1, len(w) - len(w) // 5)],
}


def build_corpus(data_dir, base_count, seed=0):
    rng = random.Random(seed)
    sms = [r["text"] for r in read_tsv(data_dir, "sms_spam_train.tsv")]
    sst = [r["text"] for r in read_tsv(data_dir, "sst2_train.tsv")
           if len(r["text"].split()) >= 8]
    texts = list(dict.fromkeys(rng.sample(sms, base_count // 2)
                               + rng.sample(sst, base_count // 2)))
    records = [{"id": f"base-{i}", "text": t} for i, t in enumerate(texts)]
    truth = {}  # planted id -> (kind, base id)
    for kind, plant in PLANTS.items():
        for base in rng.sample(records[:len(texts)], len(texts) // 10):
            planted = f"{base['id']}/{kind}"
            text = " ".join(plant(base["text"].split(), rng))
            records.append({"id": planted, "text": text})
            truth[planted] = (kind, base["id"])
    mrpc = read_tsv(data_dir, "mrpc_train.tsv")
    for label, kind in (("1", "MRPC paraphrase"),
                        ("0", "MRPC non-paraphrase")):
        pairs = rng.sample([r for r in mrpc if r["is_paraphrase"] == label],
                           len(texts) // 20)
        for i, pair in enumerate(pairs):
            a, b = f"mrpc{label}-{i}-a", f"mrpc{label}-{i}-b"
            records += [{"id": a, "text": pair["text_a"]},
                        {"id": b, "text": pair["text_b"]}]
            truth[b] = (kind, a)
    rng.shuffle(records)
    return records, truth


def _roots(duplicates):
    parent = {d["id"]: d["duplicate_of"] for d in duplicates}

    def root(node):
        while node in parent:
            node = parent[node]
        return node
    return root, {d["id"]: d["kind"] for d in duplicates}


def evaluate(out, records, truth):
    """Recall per planted kind, untouched texts left alone, precision.

    A planted text is found when it ends in the same group as its source
    (whichever of the two the group keeps). A flag is correct when the
    record and the record it was grouped under come from the same source
    (and that source is not an MRPC non-paraphrase pair).
    """
    duplicates = [json.loads(line) for path in sorted(out.glob("duplicates-*"))
                  for line in path.read_text().splitlines()]
    root, flagged = _roots(duplicates)
    family = {planted: source for planted, (_, source) in truth.items()}
    negatives = {source for kind, source in truth.values()
                 if kind == "MRPC non-paraphrase"}

    def source(record_id):
        return family.get(record_id, record_id)

    result = {}
    for kind in list(PLANTS) + ["MRPC paraphrase", "MRPC non-paraphrase"]:
        pairs = [(p, b) for p, (k, b) in truth.items() if k == kind]
        result[kind] = (sum(root(p) == root(b) for p, b in pairs), len(pairs))
    grouped = set(flagged) | {root(d) for d in flagged}
    untouched = [r["id"] for r in records if r["id"] not in family
                 and r["id"].startswith("base-")
                 and r["id"] not in set(family.values())]
    result["untouched left alone"] = (
        sum(u not in grouped for u in untouched), len(untouched))
    correct = sum(source(d) == source(root(d)) and source(d) not in negatives
                  for d in flagged)
    result["precision"] = (correct, len(flagged))
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=os.environ.get("EMBGEMMA_MODEL"))
    parser.add_argument("--base", type=int, default=1500)
    parser.add_argument("--data-dir", type=pathlib.Path,
                        default=DATA_DIR)
    parser.add_argument("--work", type=pathlib.Path,
                        default=REPO / "benchmarks" / "results" / "planted")
    parser.add_argument("--reuse", action="store_true",
                        help="Score the outputs of an earlier run again.")
    args = parser.parse_args()
    records, truth = build_corpus(args.data_dir, args.base)
    args.work.mkdir(parents=True, exist_ok=True)
    corpus = args.work / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in records))
    table = {}
    for name, flags in SETTINGS.items():
        out = args.work / name
        if not args.reuse:
            start = time.perf_counter()
            dedup_corpus.main(["--input", str(corpus), "--output", str(out),
                               "--model", args.model, *flags])
            seconds = time.perf_counter() - start
        table[name] = evaluate(out, records, truth)
        if not args.reuse:
            table[name]["docs/s"] = (len(records) / seconds, 1)
    print(f"\n{len(records)} records, {len(truth)} planted duplicates")
    print(f"{'':22}" + "".join(f"{name:>18}" for name in table))
    for row in next(iter(table.values())):
        cells = []
        for name in table:
            hit, total = table[name].get(row, (0, 1))
            cells.append(f"{hit:.1f}" if row == "docs/s" else
                         f"{hit}/{total} {hit / max(total, 1):.2f}")
        print(f"{row:22}" + "".join(f"{c:>18}" for c in cells))


if __name__ == "__main__":
    main()
