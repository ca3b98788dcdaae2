import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.test_pipeline import TestPipeline

from embgemma_keras.config import SemanticDedupConfig
from embgemma_keras.dedup.grouping import within_bucket_edges
from embgemma_keras.records.schema import EMBEDDINGS
from transforms.dedup.semantic import SemanticDuplicates


def _records(seed=0):
    """300 unit vectors spread over a sphere: many close pairs straddle
    the boundaries of k-means buckets, so the buckets decide the result."""
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(300, 3))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return [{"id": f"r{i:03d}", "text": f"text {i}",
             EMBEDDINGS: {"similarity": v.astype(np.float32)}}
            for i, v in enumerate(vectors)]


def _flags(records, path):
    """(id, duplicate_of) of every duplicate found."""
    with TestPipeline() as p:
        result = p | beam.Create(records) | SemanticDuplicates(
            SemanticDedupConfig(threshold=0.995, clusters=8, sample_size=40))
        _ = (result.duplicates
             | beam.Map(lambda r: f"{r['id']} {r['duplicate_of']}")
             | beam.io.WriteToText(str(path)))
    return sorted(line for part in path.parent.glob(f"{path.name}*")
                  for line in part.read_text().splitlines())


@pytest.mark.slow
def test_the_same_corpus_gives_the_same_duplicates_in_any_order(tmp_path):
    # Centroids come from a sample of 40 of the 300 records, fixed by their
    # ids, so neither the run nor the input order changes the buckets.
    records = _records()
    first = _flags(records, tmp_path / "first")
    assert len(first) >= 30
    assert _flags(records[::-1], tmp_path / "reversed") == first
    assert _flags(records[7:] + records[:7], tmp_path / "rotated") == first


def test_edges_are_pairs_at_or_above_the_threshold():
    vectors = np.eye(3, dtype=np.float32)
    vectors[1] = vectors[0]
    members = [(f"v{i}", v) for i, v in enumerate(vectors)]
    assert list(within_bucket_edges(members, 0.99)) == [("v0", "v1", 1.0)]
