"""k-means on embedded records: assign to fixed centroids, or update online."""

from __future__ import annotations

import apache_beam as beam
import numpy as np
from apache_beam import coders
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec

from embgemma_keras.clusters.centroids import Centroids
from embgemma_keras.records.schema import CLUSTER
from embgemma_keras.records.schema import DEAD_LETTERS
from embgemma_keras.records.schema import EMBEDDINGS
from embgemma_keras.records.schema import Stage
from embgemma_keras.records.schema import Vector
from embgemma_keras.records.schema import dead_letter
from transforms.records.dead_letters import WithDeadLetters
from transforms.state_cache import skip_module_scan


class _AssignDoFn(beam.DoFn):
    def __init__(self, centroids, vector):
        self._centroids = centroids
        self._vector = vector

    def process(self, record):
        vector = record.get(EMBEDDINGS, {}).get(self._vector)
        if vector is None:
            yield beam.pvalue.TaggedOutput(DEAD_LETTERS, dead_letter(
                Stage.CLUSTER, f"record has no {self._vector!r} embedding",
                record))
            return
        (cluster,), (distance,) = self._centroids.assign([vector])
        yield {**record, CLUSTER: {"id": int(cluster),
                                   "distance": float(distance)}}


class AssignClusters(beam.PTransform):
    """Adds `cluster: {"id", "distance"}` (cosine distance) to records.

    Works the same on bounded and unbounded input: each record is assigned
    on its own, against fixed centroids from `pipelines.fit_clusters`.

    ```python
    centroids = load_centroids("clusters/news", expect=identity,
                               task="clustering", dim=768)
    clustered = embedded.output | AssignClusters(centroids)
    ```
    """

    def __init__(self, centroids: Centroids,
                 vector: Vector | str = Vector.CLUSTERING):
        super().__init__()
        self._fn = _AssignDoFn(centroids, getattr(vector, "value", vector))

    def expand(self, records) -> WithDeadLetters:
        results = records | "Assign" >> beam.ParDo(self._fn).with_outputs(
            DEAD_LETTERS, main="clustered")
        return WithDeadLetters(results.clustered, results[DEAD_LETTERS])


class _OnlineKMeansDoFn(beam.DoFn):
    # (centroids as float32 bytes, counts as int64 bytes, records seen):
    # plain values, cheap for Beam's state cache to weigh.
    STATE = ReadModifyWriteStateSpec("kmeans", coders.TupleCoder(
        [coders.BytesCoder(), coders.BytesCoder(), coders.VarIntCoder()]))

    def __init__(self, initial, vector, snapshot_every):
        self._initial = initial
        self._vector = vector
        self._snapshot_every = snapshot_every

    def setup(self):
        skip_module_scan()

    def process(self, element, state=beam.DoFn.StateParam(STATE)):
        _, batch = element
        k, dim = self._initial.centroids.shape
        centroids, counts, seen = state.read() or (
            self._initial.centroids.tobytes(), bytes(8 * k), 0)
        centroids = np.frombuffer(centroids, np.float32).reshape(k, dim).copy()
        counts = np.frombuffer(counts, np.int64).copy()
        vectors = np.stack([r[EMBEDDINGS][self._vector] for r in batch])
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True),
                              1e-12)
        nearest = (vectors @ centroids.T).argmax(axis=1)
        for cluster in np.unique(nearest):
            members = vectors[nearest == cluster]
            counts[cluster] += len(members)
            # Mini-batch k-means step: each centre moves towards the mean of
            # its new members with rate (new members) / (all its members).
            rate = len(members) / counts[cluster]
            moved = (1 - rate) * centroids[cluster] + rate * members.mean(0)
            centroids[cluster] = moved / max(np.linalg.norm(moved), 1e-12)
        before, seen = seen, seen + len(batch)
        state.write((centroids.tobytes(), counts.tobytes(), seen))
        if seen // self._snapshot_every > before // self._snapshot_every:
            yield {"records_seen": seen, "centroids": centroids.copy(),
                   "counts": counts.copy()}


class UpdateCentroids(beam.PTransform):
    """Online (mini-batch) k-means over a stream of embedded records.

    Starting from `initial` (`Centroids`), each micro-batch of records moves
    its nearest centres towards its members, as scikit-learn's
    `MiniBatchKMeans.partial_fit` would. All updates go through one key
    (one worker): k-means state is small, and updates must be serial. Emits
    a snapshot `{"records_seen", "centroids", "counts"}` every
    `snapshot_every` records, to write out or to feed `AssignClusters` of a
    later job.
    """

    def __init__(self, initial: Centroids,
                 vector: Vector | str = Vector.CLUSTERING,
                 snapshot_every: int = 1000, batch_size: int = 64):
        super().__init__()
        self._fn = _OnlineKMeansDoFn(initial, getattr(vector, "value", vector),
                                     snapshot_every)
        self._batch_size = batch_size

    def expand(self, records):
        return (records
                | "Batch" >> beam.BatchElements(
                    min_batch_size=1, max_batch_size=self._batch_size)
                | "OneKey" >> beam.Map(lambda batch: (None, batch))
                | "Update" >> beam.ParDo(self._fn))
