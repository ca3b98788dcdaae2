"""`AssignClusters`: the closest k-means centroid for each embedded record."""

import apache_beam as beam

from transforms.dead_letters import DEAD_LETTERS
from transforms.dead_letters import WithDeadLetters
from transforms.dead_letters import dead_letter
from transforms.embed import EMBEDDINGS

CLUSTER = "cluster"


class _AssignDoFn(beam.DoFn):
    def __init__(self, centroids, stage):
        self._centroids = centroids
        self._stage = stage

    def process(self, record):
        vector = record.get(EMBEDDINGS, {}).get(self._stage)
        if vector is None:
            yield beam.pvalue.TaggedOutput(DEAD_LETTERS, dead_letter(
                "cluster", f"record has no {self._stage!r} embedding",
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

    def __init__(self, centroids, stage="clustering"):
        super().__init__()
        self._fn = _AssignDoFn(centroids, stage)

    def expand(self, records):
        results = records | "Assign" >> beam.ParDo(self._fn).with_outputs(
            DEAD_LETTERS, main="clustered")
        return WithDeadLetters(results.clustered, results[DEAD_LETTERS])
