"""Same-meaning duplicates: SemDeDup on EmbeddingGemma vectors.

Records are bucketed by k-means on their sentence-similarity embeddings
(centroids fitted on a fixed sample, the records whose ids hash lowest, so
the fit is one worker's work whatever the corpus size, and every run finds
the same duplicates); within each bucket every pair with cosine >=
`threshold` is an edge; edges are made transitive with the same connected components as the
lexical detector, and the same representative rule applies. Two paraphrases
in different buckets are missed: more clusters is faster and misses more.
"""

import hashlib

import apache_beam as beam
import numpy as np

from transforms.dedup import split_by_edges
from transforms.embed import EMBEDDINGS

# Vectors compared at once within a bucket: 2,048 x 2,048 cosines (16 MB).
_BLOCK = 2048


def _id_rank(record_id):
    return hashlib.sha256(record_id.encode("utf-8")).digest()


def fit_centroids(vectors, clusters, seed=0):
    """k-means centroids (unit length) for bucketing; fewer if few vectors."""
    from sklearn.cluster import MiniBatchKMeans

    vectors = np.asarray(vectors, dtype=np.float32)
    clusters = max(1, min(clusters, len(vectors)))
    kmeans = MiniBatchKMeans(n_clusters=clusters, random_state=seed,
                             n_init=3, batch_size=4096)
    kmeans.fit(vectors)
    centroids = kmeans.cluster_centers_
    return centroids / np.maximum(
        np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)


def within_bucket_edges(members, threshold):
    """Yields `(id_a, id_b, cosine)` for pairs at or above `threshold`."""
    ids = [record_id for record_id, _ in members]
    vectors = np.stack([vector for _, vector in members]).astype(np.float32)
    for start in range(0, len(ids), _BLOCK):
        block = vectors[start:start + _BLOCK] @ vectors.T
        rows, cols = np.nonzero(block >= threshold)
        for row, col in zip(rows.tolist(), cols.tolist()):
            i = start + row
            if i < col:
                yield ids[i], ids[col], float(block[row, col])


class SemanticDuplicates(beam.PTransform):
    """Flags records whose embeddings (`stage`) are near-identical.

    Args:
        threshold: cosine at or above which two records are duplicates.
            0.9 flags MRPC paraphrase pairs with precision 0.91 and recall
            0.55 (EmbeddingGemma, sentence-similarity prompt; 0.85: 0.85 /
            0.78; 0.95: 0.97 / 0.25; `benchmarks/dedup_quality.py`): a
            default that removes little that is not a duplicate.
        clusters: k-means buckets (SemDeDup uses 100-1,000 on large
            corpora); capped by the sample size.
        sample_size: vectors the centroids are fitted on.
        stage: which of `record["embeddings"]` to compare.
    """

    def __init__(self, threshold=0.9, clusters=100, sample_size=50_000,
                 stage="similarity"):
        super().__init__()
        self._threshold = threshold
        self._clusters = clusters
        self._sample_size = sample_size
        self._stage = stage

    def expand(self, records):
        stage, threshold, clusters = (self._stage, self._threshold,
                                      self._clusters)
        keyed = records | "Vector" >> beam.Map(
            lambda r: (r["id"], np.asarray(r[EMBEDDINGS][stage], np.float32)))
        centroids = (
            keyed
            # The records whose ids hash lowest: a sample that is the same on
            # every run, so the buckets, and the duplicates found, are too.
            | "Sample" >> beam.combiners.Top.Of(
                self._sample_size, key=lambda item: _id_rank(item[0]),
                reverse=True)
            | "Fit" >> beam.Map(lambda sample: fit_centroids(
                [vector for _, vector in sample], clusters)))
        edges = (
            keyed
            | "Bucket" >> beam.Map(
                lambda item, c: (int(np.argmax(c @ item[1])), item),
                c=beam.pvalue.AsSingleton(centroids))
            | "GroupBuckets" >> beam.GroupByKey()
            | "Pairs" >> beam.FlatMapTuple(
                lambda _, members: within_bucket_edges(list(members),
                                                       threshold)))
        return split_by_edges(
            records, edges | "IdPairs" >> beam.Map(lambda e: (e[0], e[1])),
            "semantic", lambda a, b: float(
                np.dot(a[EMBEDDINGS][stage], b[EMBEDDINGS][stage])))
