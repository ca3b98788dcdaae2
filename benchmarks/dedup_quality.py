"""How well sentence-similarity cosine finds paraphrases (MRPC).

    python benchmarks/dedup_quality.py --model DIR [--dtype float32]

Embeds both sentences of every pair in ../shared/data/mrpc_train.tsv with
the sentence-similarity prompt and reports, for "is paraphrase":
average precision and ROC AUC of the cosine; precision, recall and F1 at
fixed thresholds; and the F1-maximising threshold chosen by 5-fold
cross-validation (chosen on four folds, scored on the fifth), which is how
the semantic detector's default was picked.
"""

import argparse
import os
import pathlib
import sys

import numpy as np
from sklearn.metrics import average_precision_score
from sklearn.metrics import precision_recall_fscore_support
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.data import DATA_DIR  # noqa: E402
from benchmarks.data import read_tsv  # noqa: E402
from embgemma_keras import EmbeddingGemma  # noqa: E402


def best_threshold(cosines, labels):
    candidates = np.unique(np.round(cosines, 3))
    f1 = [precision_recall_fscore_support(labels, cosines >= t,
                                          average="binary",
                                          zero_division=0)[2]
          for t in candidates]
    return float(candidates[int(np.argmax(f1))])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=os.environ.get("EMBGEMMA_MODEL"))
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--data-dir", type=pathlib.Path,
                        default=DATA_DIR)
    parser.add_argument("--thresholds", type=float, nargs="+",
                        default=[0.85, 0.9, 0.95])
    args = parser.parse_args()
    rows = read_tsv(args.data_dir, "mrpc_train.tsv")
    labels = np.array([int(r["is_paraphrase"]) for r in rows])
    model = EmbeddingGemma.from_preset(args.model, dtype=args.dtype)
    a = model.encode([r["text_a"] for r in rows], task="sentence_similarity")
    b = model.encode([r["text_b"] for r in rows], task="sentence_similarity")
    cosines = np.sum(a * b, axis=1)

    print(f"MRPC train: {len(rows)} pairs, {labels.mean():.1%} paraphrases")
    print(f"average precision {average_precision_score(labels, cosines):.4f}"
          f"   ROC AUC {roc_auc_score(labels, cosines):.4f}")
    def quartiles(values):
        return np.percentile(values, [25, 50, 75]).round(3)

    print(f"cosine quartiles, paraphrases: {quartiles(cosines[labels == 1])}; "
          f"others: {quartiles(cosines[labels == 0])}")
    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    chosen, scores = [], []
    for train, test in folds.split(cosines, labels):
        threshold = best_threshold(cosines[train], labels[train])
        chosen.append(threshold)
        scores.append(precision_recall_fscore_support(
            labels[test], cosines[test] >= threshold, average="binary")[:3])
    print(f"F1-best threshold by 5-fold CV: {np.mean(chosen):.3f} "
          f"(folds {np.round(chosen, 3).tolist()}); held-out P/R/F1 "
          f"{np.mean(scores, axis=0).round(4).tolist()}")
    print(f"\n{'threshold':>9} {'precision':>9} {'recall':>9} {'f1':>9} "
          f"{'flagged':>8}")
    for threshold in sorted(set(args.thresholds) | {round(np.mean(chosen), 3)}):
        p, r, f, _ = precision_recall_fscore_support(
            labels, cosines >= threshold, average="binary", zero_division=0)
        print(f"{threshold:9.3f} {p:9.4f} {r:9.4f} {f:9.4f} "
              f"{int((cosines >= threshold).sum()):8d}")


if __name__ == "__main__":
    main()
