import apache_beam as beam
import numpy as np
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that
from apache_beam.testing.util import equal_to

from embgemma_keras import Centroids
from embgemma_keras import ModelIdentity
from transforms import AssignClusters
from transforms import UpdateCentroids

IDENTITY = ModelIdentity("m", "f")


def test_assign_clusters_in_a_pipeline():
    centroids = Centroids(np.eye(3), "clustering", IDENTITY)
    records = [{"id": "a", "embeddings": {"clustering": np.array([0, 2, 0.])}},
               {"id": "b", "embeddings": {"clustering": np.array([0, 0, 1.])}},
               {"id": "c", "embeddings": {}}]
    with TestPipeline() as p:
        result = p | beam.Create(records) | AssignClusters(centroids)
        assert_that(result.output | beam.Map(
            lambda r: (r["id"], r["cluster"]["id"],
                       round(r["cluster"]["distance"], 6))),
            equal_to([("a", 1, 0.0), ("b", 2, 0.0)]), label="assigned")
        assert_that(result.dead_letters | beam.Map(lambda d: d["stage"]),
                    equal_to(["cluster"]), label="dead")


def test_online_kmeans_moves_centres_to_the_stream_and_snapshots():
    rng = np.random.default_rng(1)
    true_centres = np.eye(4)[:2]
    vectors = np.concatenate([c + rng.normal(scale=0.05, size=(100, 4))
                              for c in true_centres])
    rng.shuffle(vectors)
    records = [{"id": str(i), "embeddings": {"clustering": v}}
               for i, v in enumerate(vectors)]
    start = Centroids(np.array([[1, 0.6, 0.3, 0], [0.3, 1, 0, 0.6]]),
                      "clustering", IDENTITY)

    def check(snapshots):
        assert [s["records_seen"] for s in sorted(
            snapshots, key=lambda s: s["records_seen"])][-1] == 200
        final = max(snapshots, key=lambda s: s["records_seen"])
        assert final["counts"].sum() == 200
        for centre, truth in zip(final["centroids"], true_centres, strict=True):
            assert centre @ truth > 0.99  # moved from ~0.8 to the data
        assert len(snapshots) == 4  # one per 50 records

    with TestPipeline() as p:
        snapshots = p | beam.Create(records, reshuffle=False) | (
            UpdateCentroids(start, snapshot_every=50, batch_size=10))
        assert_that(snapshots, check)
