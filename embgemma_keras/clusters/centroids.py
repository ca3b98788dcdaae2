"""k-means centroids on EmbeddingGemma vectors, stored as plain data.

```python
centroids = Centroids.fit(vectors, k=20, task="clustering",
                          model_identity=model.identity)
centroids.save("clusters/news")
centroids = load_centroids("clusters/news", expect=model.identity,
                           task="clustering", dim=768)
ids, distances = centroids.assign(vectors)   # cosine distance 1 - cos
```
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from embgemma_keras.artifacts import ArtifactMismatchError
from embgemma_keras.artifacts import ModelIdentity
from embgemma_keras.artifacts import PathLike
from embgemma_keras.artifacts import describe_model
from embgemma_keras.artifacts import read_artifact
from embgemma_keras.artifacts import save_artifact
from embgemma_keras.config import ClusterConfig
from embgemma_keras.tasks import Task

ARTIFACT_KIND = "kmeans_centroids"
MINIBATCH_ABOVE = 20_000


def kmeans(vectors: np.ndarray, k: int, seed: int = 0
           ) -> tuple[np.ndarray, np.ndarray]:
    """Unit-length k-means centres of unit `vectors`, and each one's label.

    Lloyd's k-means up to 20,000 vectors, mini-batch k-means above (one
    pass over random batches instead of full iterations, at a small cost
    in inertia). The one fitter behind `Centroids.fit` and the semantic
    dedup buckets.
    """
    from sklearn.cluster import KMeans
    from sklearn.cluster import MiniBatchKMeans

    vectors = _unit(vectors)
    k = max(1, min(k, len(vectors)))
    if len(vectors) > MINIBATCH_ABOVE:
        model = MiniBatchKMeans(k, random_state=seed, n_init=3,
                                batch_size=4096)
    else:
        model = KMeans(k, random_state=seed, n_init=4)
    labels = model.fit_predict(vectors)
    return _unit(model.cluster_centers_), labels


def _unit(rows):
    rows = np.asarray(rows, dtype=np.float32)
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True),
                             1e-12)


class Centroids:
    """Unit-length cluster centres; records go to the closest by cosine."""

    def __init__(self, centroids: ArrayLike, task: Task | str,
                 model_identity: ModelIdentity,
                 sizes: ArrayLike | None = None):
        self.centroids = _unit(centroids)
        self.task = Task.parse(task)
        self.dim = self.centroids.shape[1]
        self.model_identity = model_identity
        self.sizes = None if sizes is None else np.asarray(sizes, np.int64)

    @classmethod
    def fit(cls, vectors: ArrayLike, k: int, *, task: Task | str,
            model_identity: ModelIdentity,
            seed: int = 0) -> Centroids:
        """k-means (mini-batch above 20,000 vectors) on unit vectors."""
        vectors = _unit(vectors)
        if not 1 <= k <= len(vectors):
            raise ValueError(f"k must be between 1 and the number of "
                             f"vectors ({len(vectors)}), got {k}")
        centres, labels = kmeans(vectors, k, seed)
        return cls(centres, task, model_identity,
                   sizes=np.bincount(labels, minlength=k))

    def assign(self, vectors: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """Closest centroid per row and its cosine distance (1 - cos)."""
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise ValueError(f"expected vectors of shape (n, {self.dim}), "
                             f"got {vectors.shape}")
        cosines = _unit(vectors) @ self.centroids.T
        best = cosines.argmax(axis=1)
        return best, 1.0 - cosines[np.arange(len(best)), best]

    def save(self, directory: PathLike) -> PathLike:
        arrays = {"centroids": self.centroids}
        if self.sizes is not None:
            arrays["sizes"] = self.sizes
        return save_artifact(directory, ARTIFACT_KIND, describe_model(
            self.model_identity, self.task, self.dim), arrays)


def load_centroids(directory: PathLike, *,
                   expect: ModelIdentity | None = None,
                   task: Task | str | None = None,
                   dim: int | None = None) -> Centroids:
    """Loads centroids saved by `Centroids.save`, as data only."""
    meta, arrays, identity = read_artifact(directory, expect=expect,
                                           task=task, dim=dim)
    if meta["kind"] != ARTIFACT_KIND:
        raise ArtifactMismatchError(f"{directory!r} is a {meta['kind']!r}, "
                                    "not k-means centroids")
    return Centroids(arrays["centroids"], meta["task"], identity,
                     sizes=arrays.get("sizes"))


def fit_centroids(vectors: list[np.ndarray], config: ClusterConfig,
                  identity: ModelIdentity) -> tuple[Centroids, dict]:
    """k-means centroids and their metrics: `(centroids, metrics)`."""
    from sklearn.metrics import silhouette_score

    vectors = np.stack(vectors)
    centroids = Centroids.fit(vectors, config.k, task=config.cluster_task,
                              model_identity=identity)
    labels, distances = centroids.assign(vectors)
    metrics = {"records": len(vectors), "k": config.k,
               "sizes": centroids.sizes.tolist(),
               "mean_cosine_distance": float(distances.mean())}
    if 1 < config.k < len(vectors):
        sample = np.random.default_rng(0).permutation(len(vectors))[
            :config.silhouette_sample]
        metrics["silhouette_cosine"] = float(silhouette_score(
            vectors[sample], labels[sample], metric="cosine"))
    return centroids, metrics
