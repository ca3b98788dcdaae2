"""Metrics for label heads, and k-fold cross-validation that users trust.

The same stratified folds (fixed seed) serve the embedding head and the
TF-IDF baseline, so their difference is the gain of the embeddings.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Sequence

import numpy as np
from sklearn.metrics import accuracy_score
from sklearn.metrics import confusion_matrix
from sklearn.metrics import f1_score
from sklearn.metrics import precision_recall_fscore_support
from sklearn.model_selection import StratifiedKFold

SEED = 0


def classification_metrics(y_true: list, y_pred: list,
                           labels: list) -> dict:
    """Accuracy, macro F1, per-label P/R/F1/support and the confusion matrix."""
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0)
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=labels,
                                   average="macro", zero_division=0)),
        "per_label": {
            label: {"precision": float(p), "recall": float(r),
                    "f1": float(f), "support": int(n)}
            for label, p, r, f, n in zip(labels, precision, recall, f1,
                                         support, strict=True)
        },
        "confusion_matrix": {
            "labels": list(labels),
            "rows_true_columns_predicted": confusion_matrix(
                y_true, y_pred, labels=labels).tolist(),
        },
    }


def cross_validate(fit_predict: Callable[[object, np.ndarray, object],
                                         Sequence],
                   features: object, labels: Sequence,
                   folds: int = 5) -> dict:
    """Stratified k-fold CV of `fit_predict(train_x, train_y, test_x)`.

    Returns the metrics of the pooled out-of-fold predictions plus the
    spread of accuracy and macro F1 across folds.
    """
    labels = np.asarray(labels)
    predictions = np.empty(len(labels), dtype=object)
    per_fold = []
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=SEED)
    for train, test in splitter.split(np.zeros(len(labels)), labels):
        predicted = np.asarray(fit_predict(_take(features, train),
                                           labels[train],
                                           _take(features, test)))
        predictions[test] = predicted
        per_fold.append((accuracy_score(labels[test], predicted),
                         f1_score(labels[test], predicted, average="macro")))
    names = sorted(set(labels.tolist()))
    result = classification_metrics(labels.tolist(), predictions.tolist(),
                                    names)
    accuracy, macro_f1 = np.array(per_fold).T
    result["cv"] = {
        "folds": folds,
        "accuracy_mean": float(accuracy.mean()),
        "accuracy_std": float(accuracy.std()),
        "macro_f1_mean": float(macro_f1.mean()),
        "macro_f1_std": float(macro_f1.std()),
        "accuracy_per_fold": accuracy.tolist(),
    }
    return result


def tfidf_fit_predict(train_texts: Sequence[str], train_labels: Sequence,
                      test_texts: Sequence[str]) -> np.ndarray:
    """The baseline: word 1-2-gram TF-IDF and balanced logistic regression."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    model = make_pipeline(
        TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True),
        LogisticRegression(C=10.0, class_weight="balanced", max_iter=3000))
    model.fit(list(train_texts), train_labels)
    return model.predict(list(test_texts))


def format_table(metrics: dict, title: str) -> str:
    """A readable summary of `classification_metrics` output."""
    lines = [title,
             f"  accuracy {metrics['accuracy']:.4f}   "
             f"macro F1 {metrics['macro_f1']:.4f}"]
    if "cv" in metrics:
        cv = metrics["cv"]
        lines.append(f"  {cv['folds']}-fold CV accuracy "
                     f"{cv['accuracy_mean']:.4f} +/- {cv['accuracy_std']:.4f}")
    lines.append(f"  {'label':16} {'precision':>9} {'recall':>9} {'f1':>9} "
                 f"{'support':>8}")
    for label, m in metrics["per_label"].items():
        lines.append(f"  {label:16} {m['precision']:9.4f} {m['recall']:9.4f} "
                     f"{m['f1']:9.4f} {m['support']:8d}")
    return "\n".join(lines)


def _take(features, indices):
    if isinstance(features, np.ndarray):
        return features[indices]
    return [features[i] for i in indices]
