"""Same-meaning duplicates: SemDeDup on EmbeddingGemma vectors.

Records are bucketed by k-means on their sentence-similarity embeddings
(centroids fitted on a fixed sample, the records whose ids hash lowest, so
the fit is one worker's work whatever the corpus size, and every run finds
the same duplicates; or a dedup index's kept centroids); within each
bucket every pair with cosine >= `threshold` is an edge (a dedup index's
entries join a bucket's records through a tagged `CoGroupByKey`); edges
are made transitive with the same connected components as the lexical
detector, and the same representative rule applies. Two paraphrases in
different buckets are missed: more clusters is faster and misses more.
"""

from __future__ import annotations

import hashlib
import itertools

import apache_beam as beam
import numpy as np

from embgemma_keras.clusters.centroids import kmeans
from embgemma_keras.config import SemanticDedupConfig
from embgemma_keras.dedup.grouping import edges_between
from embgemma_keras.dedup.grouping import node
from embgemma_keras.dedup.grouping import within_bucket_edges
from embgemma_keras.records.schema import EMBEDDINGS
from embgemma_keras.records.schema import DuplicateKind
from embgemma_keras.records.schema import Vector
from transforms.dedup.exact_and_lexical import Deduplicated
from transforms.dedup.exact_and_lexical import Similarity
from transforms.dedup.exact_and_lexical import co_group
from transforms.dedup.exact_and_lexical import records_and_entries
from transforms.dedup.exact_and_lexical import split_by_edges


def _id_rank(record_id: str) -> bytes:
    return hashlib.sha256(record_id.encode("utf-8")).digest()


class FitBuckets(beam.PTransform):
    """`(node, vector)` pairs -> the k-means centroids (one element).

    Fitted on the records whose ids hash lowest: a sample that is the same
    on every run, so the buckets, and the duplicates found, are too.
    """

    def __init__(self, config: SemanticDedupConfig = SemanticDedupConfig()):
        super().__init__()
        self._config = config

    def expand(self, keyed):
        config = self._config
        return (keyed
                | "Sample" >> beam.combiners.Top.Of(
                    config.sample_size, key=lambda item: _id_rank(item[0][1]),
                    reverse=True)
                | "Fit" >> beam.Map(lambda sample: kmeans(
                    [vector for _, vector in sample], config.clusters)[0]))


def similarity_vector(record: dict) -> np.ndarray:
    """A record's sentence-similarity vector (float32)."""
    return np.asarray(record[EMBEDDINGS][Vector.SIMILARITY], np.float32)


# Semantic duplicates: the cosine of their (unit) similarity vectors.
COSINE = Similarity(similarity_vector, lambda entry: entry.vector,
                    lambda kept, duplicate: float(np.dot(kept, duplicate)))


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
        centroids: a one-element PCollection of centroids to bucket with
            (a dedup index's); fitted with `FitBuckets` when None.
        against: index entries (their stored buckets and vectors), made
            with the same model, prompt and dim.
    """

    def __init__(self, config: SemanticDedupConfig = SemanticDedupConfig(),
                 centroids: beam.PCollection | None = None,
                 against: beam.PCollection | None = None):
        super().__init__()
        self._config = config
        self._centroids = centroids
        self._against = against

    def expand(self, records) -> Deduplicated:
        config = self._config
        keyed = records | "Vector" >> beam.Map(
            lambda r: (node(r), similarity_vector(r)))
        centroids = self._centroids
        if centroids is None:
            centroids = keyed | "FitBuckets" >> FitBuckets(config)
        bucketed = keyed | "Bucket" >> beam.Map(
            lambda item, c: (int(np.argmax(c @ item[1])), item),
            c=beam.pvalue.AsSingleton(centroids))
        index = None
        if self._against is not None:
            index = self._against | "IndexBuckets" >> beam.Map(
                lambda e: (e.bucket, (e.node, e.vector)))
        edges = (
            co_group("GroupBuckets", bucketed, index)
            | "Pairs" >> beam.FlatMapTuple(
                lambda _, grouped: _bucket_edges(
                    *records_and_entries(grouped), config.threshold)))
        return split_by_edges(records, edges, DuplicateKind.SEMANTIC,
                              COSINE, self._against)


def _bucket_edges(new, old, threshold):
    """`(node, node)` pairs at or above `threshold` in one bucket: this
    run's records (`new`) with each other and with the index's entries
    (`old`)."""
    new, old = list(new), list(old)
    for a, b, _ in itertools.chain(within_bucket_edges(new, threshold)
                                   if new else (),
                                   edges_between(new, old, threshold)):
        yield a, b
