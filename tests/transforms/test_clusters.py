import json

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that
from apache_beam.testing.util import equal_to

from embgemma_keras import ArtifactMismatchError
from embgemma_keras import Centroids
from embgemma_keras import ModelIdentity
from embgemma_keras import load_centroids
from pipelines import fit_clusters
from transforms import AssignClusters
from transforms import UpdateCentroids

IDENTITY = ModelIdentity("m", "f")


def _points():
    rng = np.random.default_rng(0)
    centres = np.eye(8)[:3] * 5
    return np.concatenate([c + rng.normal(scale=0.3, size=(20, 8))
                           for c in centres])


def test_fit_assign_and_reload(tmp_path):
    points = _points()
    centroids = Centroids.fit(points, 3, task="clustering",
                              model_identity=IDENTITY)
    ids, distances = centroids.assign(points)
    assert len(set(ids[:20])) == len(set(ids[20:40])) == 1
    assert len(set(ids.tolist())) == 3
    assert (distances >= -1e-6).all() and (distances < 0.2).all()
    assert sorted(centroids.sizes.tolist()) == [20, 20, 20]
    centroids.save(tmp_path / "c")
    loaded = load_centroids(tmp_path / "c", expect=IDENTITY,
                            task="clustering", dim=8)
    np.testing.assert_array_equal(loaded.assign(points)[0], ids)


def test_mismatched_centroids_are_refused(tmp_path):
    Centroids.fit(_points(), 3, task="clustering",
                  model_identity=IDENTITY).save(tmp_path / "c")
    with pytest.raises(ArtifactMismatchError, match="expects dim 8, not 768"):
        load_centroids(tmp_path / "c", dim=768)
    with pytest.raises(ArtifactMismatchError, match="retrain"):
        load_centroids(tmp_path / "c", expect=ModelIdentity("n", "g"))


def test_k_out_of_range_is_refused():
    with pytest.raises(ValueError, match="k must be between 1"):
        Centroids.fit(_points(), 100, task="clustering",
                      model_identity=IDENTITY)


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


def test_fit_clusters_job(tmp_path, tiny_preset, tiny_model):
    source = tmp_path / "corpus.txt"
    texts = [f"note {i} about {'planets' if i % 2 else 'food'}"
             for i in range(30)]
    source.write_bytes("\n".join(texts).encode() + b"\n\xff bad line")
    out = tmp_path / "out"
    fit_clusters.main(["--input", str(source), "--output", str(out),
                       "--model", tiny_preset, "--k", "3"])
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["records"] == 30 and sum(metrics["sizes"]) == 30
    centroids = load_centroids(out, expect=tiny_model.identity,
                               task="clustering", dim=768)
    assert centroids.centroids.shape == (3, 768)
    dead = [json.loads(line) for p in out.glob("dead_letters*")
            for line in p.read_text().splitlines()]
    assert [d["error"] for d in dead] == ["not valid UTF-8 at byte 0"]


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
        for centre, truth in zip(final["centroids"], true_centres):
            assert centre @ truth > 0.99  # moved from ~0.8 to the data
        assert len(snapshots) == 4  # one per 50 records

    with TestPipeline() as p:
        snapshots = p | beam.Create(records, reshuffle=False) | (
            UpdateCentroids(start, snapshot_every=50, batch_size=10))
        assert_that(snapshots, check)
