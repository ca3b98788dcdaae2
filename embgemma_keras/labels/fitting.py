"""Training label heads from embedded examples.

Beam-free: the jobs gather `(label, text, vector)` examples in Beam and
hand them to these functions on one worker.
"""

from __future__ import annotations

import numpy as np

from embgemma_keras.artifacts import ModelIdentity
from embgemma_keras.config import HeadConfig
from embgemma_keras.labels import evaluation
from embgemma_keras.labels.heads import LinearHead
from embgemma_keras.labels.heads import ZeroShotHead
from embgemma_keras.labels.heads import check_labels

Example = tuple[str, str, np.ndarray]  # (label, text, vector)


def zero_shot_labels(config: HeadConfig) -> dict[str, str]:
    """{label: description} of `config.zero_shot`, each checked."""
    labels = {}
    for item in config.zero_shot:
        label, sep, description = item.partition("=")
        if not sep or not label:
            raise ValueError(
                f"--zero_shot takes LABEL=DESCRIPTION, got {item!r}")
        labels[label] = description
    return labels


def train_and_evaluate(train: list[Example], config: HeadConfig, dim: int,
                       identity: ModelIdentity,
                       evaluate: list[Example] | None = None,
                       prototypes: np.ndarray | None = None
                       ) -> tuple[LinearHead | ZeroShotHead, dict]:
    """Fits the head (or builds the zero-shot one) and measures it.

    Returns `(head, metrics)`: cross-validated metrics for a fitted head,
    the train file's for a zero-shot one, and `eval` for `evaluate`.
    """
    labels, texts, vectors = _columns(train)
    zero_shot = zero_shot_labels(config)
    if zero_shot:
        head = ZeroShotHead(list(zero_shot), prototypes, config.task, dim,
                            identity, descriptions=list(zero_shot.values()),
                            min_score=config.min_score)
        metrics = _evaluate(head, labels, vectors)
    else:
        check_labels(labels)

        def fit_predict(x, y, test):
            head = LinearHead.fit(x, y, task=config.task,
                                  model_identity=identity)
            return [p["label"] for p in head.predict(test)]

        metrics = evaluation.cross_validate(fit_predict, vectors, labels,
                                            config.folds)
        head = LinearHead.fit(vectors, labels, task=config.task,
                              model_identity=identity)
        metrics["regularisation_c"] = head.c
        if config.baseline == "tfidf":
            metrics["baseline"] = {"tfidf": evaluation.cross_validate(
                evaluation.tfidf_fit_predict, texts, labels, config.folds)}
    metrics["train_examples"] = len(labels)
    if evaluate is not None:
        eval_labels, _, eval_vectors = _columns(evaluate)
        metrics["eval"] = _evaluate(head, eval_labels, eval_vectors)
    return head, metrics


def metrics_table(metrics: dict) -> str:
    """The printed summary of `train_and_evaluate`'s metrics."""
    report = evaluation.format_table(metrics, "cross-validation" if
                                     "cv" in metrics else "train file")
    if "eval" in metrics:
        report += "\n" + evaluation.format_table(metrics["eval"],
                                                 "--eval file")
    if "baseline" in metrics:
        report += "\n" + evaluation.format_table(
            metrics["baseline"]["tfidf"], "TF-IDF baseline (same folds)")
    return report


def _columns(examples):
    if not examples:
        raise ValueError("no usable labelled example; see the dead letters")
    labels, texts, vectors = zip(*examples, strict=True)
    return np.asarray(labels), list(texts), np.stack(vectors)


def _evaluate(head, labels, vectors):
    predicted = [p["label"] for p in head.predict(vectors)]
    names = sorted(set(labels.tolist()) | set(predicted))
    result = evaluation.classification_metrics(labels.tolist(), predicted,
                                               names)
    result["examples"] = len(labels)
    return result
