"""Label heads on EmbeddingGemma vectors, stored as plain data.

A head turns an embedding into `{"label": ..., "score": ...}`:

- `LinearHead`: multinomial logistic regression fitted with scikit-learn
  (class weights balanced, so a rare class counts as much as a common one);
  `score` is the predicted probability of the label.
- `ZeroShotHead`: one prototype vector per label, embedded from a name or a
  description; `score` is the cosine to the closest prototype, and a score
  below `min_score` gives the label "unknown".

`save(directory)` writes an artifact (`embgemma_keras.artifacts`:
`artifact.json` with labels, prompt, dim, model identity and a SHA-256 of
`arrays.npz`); `load_head` reads it back with `allow_pickle=False`, so
loading a head never runs code from the file. A head is refused when its
arrays do not match their checksum, or when it was made for another model,
prompt or dim than the caller's.

```python
head = LinearHead.fit(train_vectors, train_labels, model_identity=identity,
                      task="classification")
head.save("heads/spam")
head = load_head("heads/spam", expect=identity, task="classification",
                 dim=768)
head.predict(vectors)   # [{"label": "spam", "score": 0.98}, ...]
```
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike

from embgemma_keras.artifacts import ArtifactMismatchError
from embgemma_keras.artifacts import ModelIdentity
from embgemma_keras.artifacts import PathLike
from embgemma_keras.artifacts import describe_model
from embgemma_keras.artifacts import read_artifact
from embgemma_keras.artifacts import save_artifact
from embgemma_keras.records.schema import Label
from embgemma_keras.tasks import Task

if TYPE_CHECKING:
    from embgemma_keras.embedding_gemma import EmbeddingGemma

UNKNOWN = "unknown"
DEFAULT_CS = (1.0, 4.0, 16.0, 64.0, 256.0)


class _Head:
    kind = None

    def __init__(self, labels, task, dim, model_identity):
        self.labels = [str(label) for label in labels]
        self.task = Task.parse(task)
        self.dim = int(dim)
        self.model_identity = model_identity

    def predict(self, vectors: ArrayLike) -> list[Label]:
        """Returns `{"label", "score"}` for each row of `vectors`."""
        vectors = self._check_vectors(vectors)
        return self._predict(vectors)

    def _check_vectors(self, vectors):
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise ValueError(f"expected vectors of shape (n, {self.dim}), "
                             f"got {vectors.shape}")
        return vectors

    def save(self, directory: PathLike) -> PathLike:
        """Writes the head as plain data; see `load_head`."""
        meta = {"labels": self.labels,
                **describe_model(self.model_identity, self.task, self.dim),
                **self._settings()}
        return save_artifact(directory, self.kind, meta, self._arrays())

    def _arrays(self):
        raise NotImplementedError

    def _settings(self):
        return {}


class LinearHead(_Head):
    """Logistic regression on embeddings; probabilities as scores."""

    kind = "logistic_regression"

    def __init__(self, labels: Sequence[str], coef: ArrayLike,
                 intercept: ArrayLike, task: Task | str, dim: int,
                 model_identity: ModelIdentity):
        super().__init__(labels, task, dim, model_identity)
        self.coef = np.asarray(coef, dtype=np.float32)
        self.intercept = np.asarray(intercept, dtype=np.float32)
        if self.coef.shape != (len(self.labels), self.dim) and not (
                len(self.labels) == 2 and self.coef.shape == (1, self.dim)):
            raise ValueError(f"coef shape {self.coef.shape} does not fit "
                             f"{len(self.labels)} labels x {self.dim} dims")

    @classmethod
    def fit(cls, vectors: ArrayLike, labels: Sequence, *, task: Task | str,
            model_identity: ModelIdentity,
            cs: Sequence[float] = DEFAULT_CS,
            inner_folds: int = 3) -> LinearHead:
        """Fits a class-balanced logistic regression.

        The inverse regularisation strength is chosen among `cs` by
        `inner_folds`-fold cross-validation on the training data itself
        (log-loss), never on a held-out split. Unit-norm embeddings have
        small coordinates, so useful values are well above sklearn's 1.0.

        Raises:
            ValueError: fewer than two distinct labels, or a label with a
                single example.
        """
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import GridSearchCV

        vectors = np.asarray(vectors, dtype=np.float32)
        labels = np.asarray([str(label) for label in labels])
        check_labels(labels)
        folds = min(inner_folds, int(np.unique(labels, return_counts=True)[1]
                                     .min()))
        search = GridSearchCV(
            LogisticRegression(class_weight="balanced", max_iter=3000),
            {"C": list(cs)}, cv=folds, scoring="neg_log_loss")
        search.fit(vectors, labels)
        model = search.best_estimator_
        head = cls(model.classes_.tolist(), model.coef_, model.intercept_,
                   task, vectors.shape[1], model_identity)
        head.c = float(model.C)
        return head

    def predict_proba(self, vectors: ArrayLike) -> np.ndarray:
        vectors = self._check_vectors(vectors)
        logits = vectors @ self.coef.T + self.intercept
        if logits.shape[1] == 1:  # binary: one logit for labels[1]
            logits = np.concatenate([np.zeros_like(logits), logits], axis=1)
        logits -= logits.max(axis=1, keepdims=True)
        probabilities = np.exp(logits)
        return probabilities / probabilities.sum(axis=1, keepdims=True)

    def _predict(self, vectors):
        probabilities = self.predict_proba(vectors)
        best = probabilities.argmax(axis=1)
        return [{"label": self.labels[i], "score": float(p[i])}
                for i, p in zip(best, probabilities, strict=True)]

    def _arrays(self):
        return {"coef": self.coef, "intercept": self.intercept}


class ZeroShotHead(_Head):
    """Nearest label prototype by cosine; below `min_score`, "unknown"."""

    kind = "zero_shot"

    def __init__(self, labels: Sequence[str], prototypes: ArrayLike,
                 task: Task | str, dim: int, model_identity: ModelIdentity,
                 descriptions: Sequence[str] | None = None,
                 min_score: float = 0.0):
        super().__init__(labels, task, dim, model_identity)
        prototypes = np.asarray(prototypes, dtype=np.float32)
        norms = np.linalg.norm(prototypes, axis=1, keepdims=True)
        self.prototypes = prototypes / np.maximum(norms, 1e-12)
        self.descriptions = list(descriptions or self.labels)
        self.min_score = float(min_score)

    @classmethod
    def from_descriptions(cls, model: EmbeddingGemma,
                          descriptions: dict[str, str], *,
                          task: Task | str = "classification",
                          dim: int = 768, model_identity: ModelIdentity,
                          min_score: float = 0.0) -> ZeroShotHead:
        """Embeds `{label: description}` with `model` into prototypes."""
        if len(descriptions) < 2:
            raise ValueError("a zero-shot head needs at least two labels.")
        labels = list(descriptions)
        texts = [descriptions[label] or label for label in labels]
        prototypes = model.encode(texts, task=task, dim=dim)
        return cls(labels, prototypes, task, dim, model_identity,
                   descriptions=texts, min_score=min_score)

    def _predict(self, vectors):
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        scores = (vectors / np.maximum(norms, 1e-12)) @ self.prototypes.T
        best = scores.argmax(axis=1)
        return [
            {"label": self.labels[i] if s[i] >= self.min_score else UNKNOWN,
             "score": float(s[i])}
            for i, s in zip(best, scores, strict=True)
        ]

    def _arrays(self):
        return {"prototypes": self.prototypes}

    def _settings(self):
        return {"descriptions": self.descriptions, "min_score": self.min_score}


def check_labels(labels: Sequence) -> None:
    """Refuses label sets a classifier cannot learn from."""
    values, counts = np.unique(np.asarray(labels), return_counts=True)
    if len(values) < 2:
        raise ValueError(
            f"need at least two distinct labels to train a head, got "
            f"{values.tolist()}")
    rare = values[counts < 2].tolist()
    if rare:
        raise ValueError(f"labels with a single example cannot be learned "
                         f"or cross-validated: {rare}")


def load_head(directory: PathLike, *, expect: ModelIdentity | None = None,
              task: Task | str | None = None, dim: int | None = None
              ) -> LinearHead | ZeroShotHead:
    """Loads a head saved by `save`, as data only.

    Args:
        expect: a `ModelIdentity`; the head must have been made with the
            same weights (fingerprint).
        task, dim: the prompt and size the caller embeds with.

    Raises:
        ArtifactMismatchError: corrupt or tampered files, or a head for
            another model, prompt or dim.
    """
    meta, arrays, identity = read_artifact(directory, expect=expect,
                                           task=task, dim=dim)
    common = dict(task=meta["task"], dim=meta["dim"], model_identity=identity)
    if meta["kind"] == LinearHead.kind:
        return LinearHead(meta["labels"], arrays["coef"], arrays["intercept"],
                          **common)
    if meta["kind"] == ZeroShotHead.kind:
        return ZeroShotHead(meta["labels"], arrays["prototypes"],
                            descriptions=meta["descriptions"],
                            min_score=meta["min_score"], **common)
    raise ArtifactMismatchError(f"{os.fspath(directory)!r} is a "
                                f"{meta['kind']!r}, not a label head")
