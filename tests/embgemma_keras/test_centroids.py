import numpy as np
import pytest

from embgemma_keras import ArtifactMismatchError
from embgemma_keras import Centroids
from embgemma_keras import ModelIdentity
from embgemma_keras import load_centroids

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
