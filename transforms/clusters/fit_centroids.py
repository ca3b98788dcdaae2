"""`FitCentroids`: a graph that reads a corpus, embeds it, gathers the
vectors on one worker, fits k-means centroids with `embgemma_keras.clusters`,
and writes them, `metrics.json` and `dead_letters-*` to its output (local or
gs://).

```python
metrics = pipeline | FitCentroids("news.jsonl", "clusters/news", handler,
                                  ClusterConfig(k=20), identity)
```
"""

from __future__ import annotations

import json

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from embgemma_keras.artifacts import ModelIdentity
from embgemma_keras.clusters.centroids import fit_centroids
from embgemma_keras.config import ClusterConfig
from embgemma_keras.progress import say
from embgemma_keras.records.schema import DEAD_LETTERS
from embgemma_keras.records.schema import EMBEDDINGS
from embgemma_keras.records.schema import TEXT
from transforms.embedding.embed import EmbedRecords
from transforms.embedding.model_handler import EmbeddingGemmaModelHandler
from transforms.records.files import ReadRecords
from transforms.records.files import save_artifact_to
from transforms.records.files import write_jsonl

_VECTOR = "vector"  # the one embedding this graph makes


class FitCentroids(beam.PTransform):
    """Embeds a corpus, fits k-means centroids and writes them.

    Applied to the pipeline; returns the PCollection of its metrics.
    """

    def __init__(self, pattern: str, output: str,
                 handler: EmbeddingGemmaModelHandler, config: ClusterConfig,
                 identity: ModelIdentity, text_column: str = TEXT):
        super().__init__()
        if not config.k or config.k < 1:
            raise ValueError(f"k must be a positive number, got {config.k}")
        self._read = ReadRecords(pattern, text_column)
        self._output, self._handler = output, handler
        self._config, self._identity = config, identity

    def expand(self, pipeline):
        read = pipeline | "Read" >> self._read
        embedded = read.output | "Embed" >> EmbedRecords(
            self._handler, {_VECTOR: self._config.cluster_task})
        write_jsonl((read.dead_letters, embedded.dead_letters)
                    | "AllDeadLetters" >> beam.Flatten(),
                    FileSystems.join(self._output, "dead_letters"),
                    "DeadLetters", count_as=DEAD_LETTERS)
        return (embedded.output
                | "Vector" >> beam.Map(lambda r: r[EMBEDDINGS][_VECTOR])
                | "Collect" >> beam.combiners.ToList()
                | "Fit" >> beam.Map(_fit_and_write_centroids, self._output,
                                    self._config, self._identity))


def _fit_and_write_centroids(vectors, output, config, identity):
    centroids, metrics = fit_centroids(vectors, config, identity)
    save_artifact_to(output, centroids, metrics)
    say(json.dumps({k: v for k, v in metrics.items() if k != "sizes"}))
    return metrics
