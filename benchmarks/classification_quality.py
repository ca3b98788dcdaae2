"""Quality of label heads on the real data in ../shared/data.

    python benchmarks/classification_quality.py --model DIR [--dtype float32]

Runs `pipelines.train_classifier` on:
- SMS spam: 5-fold cross-validation, with the TF-IDF baseline on the same
  folds;
- SST-2: a head trained on 5,000 phrases, evaluated on 5,000 others (a
  seeded random split of sst2_train.tsv);
- SST-2 zero-shot: label descriptions only, on the same 5,000 phrases;
- both again with the sentence-similarity prompt: the heads of
  `stream_tag --prompts shared`.
and prints one table. Outputs (heads, metrics.json) go under --work.
"""

import argparse
import csv
import json
import os
import pathlib
import random
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.data import DATA_DIR  # noqa: E402
from pipelines import train_classifier  # noqa: E402

SENTIMENT = ["--zero_shot", "positive=a positive, favourable review",
             "--zero_shot", "negative=a negative, unfavourable review"]


def split_sst2(data_dir, work, size=5000):
    with open(data_dir / "sst2_train.tsv", encoding="utf-8") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    header, rows = rows[0], rows[1:]
    random.Random(0).shuffle(rows)
    paths = []
    for name, part in (("train", rows[:size]), ("eval", rows[size:2 * size])):
        path = work / f"sst2_{name}.tsv"
        with open(path, "w", encoding="utf-8") as f:
            f.writelines("\t".join(row) + "\n" for row in [header] + part)
        paths.append(str(path))
    return paths


def run(name, work, args, common):
    output = work / name
    train_classifier.main([*args, *common, "--output", str(output)])
    return json.loads((output / "metrics.json").read_text())


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=os.environ.get("EMBGEMMA_MODEL"))
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--data-dir", type=pathlib.Path,
                        default=DATA_DIR)
    parser.add_argument("--work", type=pathlib.Path,
                        default=REPO / "benchmarks" / "results" /
                        "classification")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    common = ["--model", args.model, "--dtype", args.dtype]
    sms = str(args.data_dir / "sms_spam_train.tsv")
    sst_train, sst_eval = split_sst2(args.data_dir, args.work)
    rows = []

    def report(label, metrics, key=None):
        m = metrics if key is None else metrics[key]
        spam_f1 = m["per_label"].get("spam", {}).get("f1")
        rows.append((label, m["accuracy"], m["macro_f1"], spam_f1))

    m = run("sms", args.work, ["--train", sms, "--baseline", "tfidf"], common)
    report("SMS spam, 5-fold CV", m)
    report("SMS spam, TF-IDF baseline, same folds", m["baseline"]["tfidf"])
    m = run("sms_similarity", args.work, ["--train", sms, "--task",
                                          "sentence_similarity"], common)
    report("SMS spam, 5-fold CV, similarity prompt", m)
    m = run("sst2", args.work, ["--train", sst_train, "--eval", sst_eval,
                                "--baseline", "tfidf"], common)
    report("SST-2 5k/5k, 5-fold CV on train", m)
    report("SST-2 5k/5k, eval", m, "eval")
    report("SST-2 TF-IDF baseline, CV on train", m["baseline"]["tfidf"])
    m = run("sst2_similarity", args.work, [
        "--train", sst_train, "--eval", sst_eval, "--task",
        "sentence_similarity"], common)
    report("SST-2 5k/5k, eval, similarity prompt", m, "eval")
    m = run("sst2_zero_shot", args.work, ["--train", sst_eval, *SENTIMENT],
            common)
    report("SST-2 zero-shot on the eval 5k", m)

    print(f"\n{'run':44} {'accuracy':>9} {'macro F1':>9} {'spam F1':>8}")
    for label, accuracy, macro_f1, spam_f1 in rows:
        spam = "" if spam_f1 is None else f"{spam_f1:.4f}"
        print(f"{label:44} {accuracy:9.4f} {macro_f1:9.4f} {spam:>8}")


if __name__ == "__main__":
    main()
