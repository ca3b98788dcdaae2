"""Same-meaning duplicates: SemDeDup on EmbeddingGemma vectors.

Records are bucketed by k-means on their sentence-similarity embeddings
(centroids fitted on a fixed sample, the records whose ids hash lowest, so
the fit is one worker's work whatever the corpus size, and every run finds
the same duplicates); within each bucket every pair with cosine >=
`threshold` is an edge; edges are made transitive with the same connected
components as the lexical detector, and the same representative rule
applies. Two paraphrases in different buckets are missed: more clusters is
faster and misses more.
"""

from __future__ import annotations

import hashlib

import apache_beam as beam
import numpy as np

from embgemma_keras.centroids import kmeans
from embgemma_keras.config import SemanticDedupConfig
from embgemma_keras.grouping import within_bucket_edges
from embgemma_keras.schema import EMBEDDINGS
from embgemma_keras.schema import ID
from embgemma_keras.schema import DuplicateKind
from embgemma_keras.schema import Vector
from transforms.dedup import Deduplicated
from transforms.dedup import split_by_edges


def _id_rank(record_id: str) -> bytes:
    return hashlib.sha256(record_id.encode("utf-8")).digest()


class SemanticDuplicates(beam.PTransform):
    """Flags records whose similarity embeddings are near-identical.

    Example:

    ```python
    result = embedded | SemanticDuplicates(SemanticDedupConfig(threshold=0.92))
    result.unique, result.duplicates
    ```

    Args:
        config: the cosine threshold (0.9 by default: a precision-first
            choice, see `SemanticDedupConfig`), the k-means buckets
            (SemDeDup uses 100-1,000 on large corpora; capped by the
            sample) and the sample they are fitted on.
    """

    def __init__(self, config: SemanticDedupConfig = SemanticDedupConfig()):
        super().__init__()
        self._config = config

    def expand(self, records) -> Deduplicated:
        config = self._config
        keyed = records | "Vector" >> beam.Map(lambda r: (
            r[ID], np.asarray(r[EMBEDDINGS][Vector.SIMILARITY], np.float32)))
        centroids = (
            keyed
            # The records whose ids hash lowest: a sample that is the same on
            # every run, so the buckets, and the duplicates found, are too.
            | "Sample" >> beam.combiners.Top.Of(
                config.sample_size, key=lambda item: _id_rank(item[0]),
                reverse=True)
            | "Fit" >> beam.Map(lambda sample: kmeans(
                [vector for _, vector in sample], config.clusters)[0]))
        edges = (
            keyed
            | "Bucket" >> beam.Map(
                lambda item, c: (int(np.argmax(c @ item[1])), item),
                c=beam.pvalue.AsSingleton(centroids))
            | "GroupBuckets" >> beam.GroupByKey()
            | "Pairs" >> beam.FlatMapTuple(
                lambda _, members: within_bucket_edges(list(members),
                                                       config.threshold)))
        return split_by_edges(
            records, edges | "IdPairs" >> beam.Map(lambda e: (e[0], e[1])),
            DuplicateKind.SEMANTIC, lambda a, b: float(np.dot(
                a[EMBEDDINGS][Vector.SIMILARITY],
                b[EMBEDDINGS][Vector.SIMILARITY])))
