"""How close int8 (and bfloat16) vectors stay to float32, on real texts.

    python benchmarks/int8_quality.py --model DIR [--texts 1000]

For each dtype, in one process, one after another:
- cosine of each vector to the float32 model's vector of the same text
  (SMS spam, SST-2 and MRPC texts, with the classification prompt): mean,
  1st percentile and minimum;
- sentence similarity on MRPC (3,675 sentence pairs, the
  sentence-similarity prompt): the ROC AUC and Spearman correlation of the
  pair's cosine with its paraphrase label. STS-B is not among the data
  here; MRPC is the graded-similarity set that is.
The classification heads' quality per dtype comes from
`benchmarks/classification_quality.py --dtype int8`.
"""

import argparse
import os
import pathlib
import sys

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.data import DATA_DIR  # noqa: E402
from benchmarks.data import column_texts  # noqa: E402
from benchmarks.data import read_tsv  # noqa: E402
from benchmarks.machine import describe_cpu  # noqa: E402

DTYPES = ("float32", "bfloat16", "int8")


def real_texts(count):
    """`count` texts taken evenly from the three data sets."""
    sources = [("sms_spam_train.tsv", ["text"]), ("sst2_train.tsv", ["text"]),
               ("mrpc_train.tsv", ["text_a"])]
    per_source = [column_texts(DATA_DIR, [source]) for source in sources]
    return [texts[i] for i in range(count // 3 + 1)
            for texts in per_source][:count]


def roc_auc(scores, labels):
    """Probability that a paraphrase scores above a non-paraphrase."""
    ranks = np.argsort(np.argsort(scores)) + 1
    positives = labels.sum()
    negatives = len(labels) - positives
    return (ranks[labels == 1].sum() - positives * (positives + 1) / 2) / (
        positives * negatives)


def spearman(a, b):
    ranks = [np.argsort(np.argsort(x)).astype(float) for x in (a, b)]
    return float(np.corrcoef(*ranks)[0, 1])


def mrpc_similarity(model, pairs, labels):
    first = model.encode([a for a, _ in pairs], task="sentence_similarity")
    second = model.encode([b for _, b in pairs], task="sentence_similarity")
    cosines = np.sum(first * second, axis=1)
    return roc_auc(cosines, labels), spearman(cosines, labels)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=os.environ.get("EMBGEMMA_MODEL"))
    parser.add_argument("--texts", type=int, default=1000)
    args = parser.parse_args()
    if not args.model:
        parser.error("pass --model or set EMBGEMMA_MODEL")
    from embgemma_keras import EmbeddingGemma

    texts = real_texts(args.texts)
    rows = read_tsv(DATA_DIR, "mrpc_train.tsv")
    pairs = [(r["text_a"], r["text_b"]) for r in rows]
    labels = np.array([int(r["is_paraphrase"]) for r in rows])
    reference = None
    print(f"CPU: {describe_cpu()}; {len(texts)} real texts, "
          f"{len(pairs)} MRPC pairs")
    print("\n| dtype | cosine to float32: mean | 1st percentile | min | "
          "MRPC ROC AUC | MRPC Spearman |\n|---|---|---|---|---|---|")
    for dtype in DTYPES:
        model = EmbeddingGemma.from_preset(args.model, dtype=dtype)
        vectors = model.encode(texts)
        reference = vectors if reference is None else reference
        cosines = np.sum(vectors * reference, axis=1)
        auc, rho = mrpc_similarity(model, pairs, labels)
        print(f"| {dtype} | {cosines.mean():.4f} | "
              f"{np.percentile(cosines, 1):.4f} | {cosines.min():.4f} | "
              f"{auc:.4f} | {rho:.4f} |", flush=True)
        del model


if __name__ == "__main__":
    main()
