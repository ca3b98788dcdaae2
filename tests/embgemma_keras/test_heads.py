import json

import numpy as np
import pytest

from embgemma_keras import ArtifactMismatchError
from embgemma_keras import LinearHead
from embgemma_keras import ModelIdentity
from embgemma_keras import ZeroShotHead
from embgemma_keras import load_head

IDENTITY = ModelIdentity("models/a", "aaaa")


def _blobs(n=60, dim=128, seed=0):
    """Two well separated classes of unit vectors."""
    rng = np.random.default_rng(seed)
    centre = rng.normal(size=(2, dim))
    labels = np.array(["ham", "spam"] * (n // 2))
    vectors = centre[(labels == "spam").astype(int)] + rng.normal(
        scale=0.5, size=(n, dim))
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True), labels


def test_linear_head_learns_and_gives_probabilities():
    vectors, labels = _blobs()
    head = LinearHead.fit(vectors, labels, task="classification",
                          model_identity=IDENTITY)
    predictions = head.predict(vectors)
    assert [p["label"] for p in predictions] == labels.tolist()
    probabilities = head.predict_proba(vectors)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, atol=1e-5)
    assert all(0.5 < p["score"] <= 1 for p in predictions)


def test_saved_head_reloads_to_the_same_predictions(tmp_path):
    vectors, labels = _blobs()
    head = LinearHead.fit(vectors, labels, task="classification",
                          model_identity=IDENTITY)
    head.save(tmp_path / "h")
    loaded = load_head(tmp_path / "h", expect=IDENTITY, task="classification",
                       dim=128)
    assert loaded.predict(vectors) == head.predict(vectors)


@pytest.mark.slow
def test_multiclass_heads_work():
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(90, 16))
    labels = np.repeat(["a", "b", "c"], 30)
    vectors[labels == "b"] += 3
    vectors[labels == "c"] -= 3
    head = LinearHead.fit(vectors, labels, task="classification",
                          model_identity=IDENTITY)
    assert head.labels == ["a", "b", "c"]
    accuracy = np.mean([p["label"] for p in head.predict(vectors)] == labels)
    assert accuracy > 0.95


@pytest.mark.parametrize("labels,message", [
    (["spam"] * 10, "at least two distinct labels"),
    (["spam"] * 9 + ["ham"], "single example"),
])
def test_unlearnable_label_sets_are_refused(labels, message):
    with pytest.raises(ValueError, match=message):
        LinearHead.fit(np.eye(10), labels, task="classification",
                       model_identity=IDENTITY)


def test_a_head_for_other_weights_prompt_or_dim_is_refused(tmp_path):
    vectors, labels = _blobs()
    LinearHead.fit(vectors, labels, task="classification",
                   model_identity=IDENTITY).save(tmp_path / "h")
    with pytest.raises(ArtifactMismatchError,
                       match="retrain it for this model"):
        load_head(tmp_path / "h", expect=ModelIdentity("models/b", "bbbb"))
    with pytest.raises(ArtifactMismatchError, match="expects 'classification'"):
        load_head(tmp_path / "h", task="clustering")
    with pytest.raises(ArtifactMismatchError, match="expects dim 128, not 768"):
        load_head(tmp_path / "h", dim=768)


def test_tampered_or_unsafe_arrays_are_refused(tmp_path):
    vectors, labels = _blobs()
    LinearHead.fit(vectors, labels, task="classification",
                   model_identity=IDENTITY).save(tmp_path / "h")
    arrays = tmp_path / "h" / "arrays.npz"
    np.savez(arrays, coef=np.zeros((1, 128)), intercept=np.zeros(1))
    with pytest.raises(ArtifactMismatchError, match="modified or corrupted"):
        load_head(tmp_path / "h")


def test_pickled_arrays_never_load_even_with_a_matching_checksum(tmp_path):
    import hashlib

    vectors, labels = _blobs()
    LinearHead.fit(vectors, labels, task="classification",
                   model_identity=IDENTITY).save(tmp_path / "h")
    arrays = tmp_path / "h" / "arrays.npz"
    np.savez(arrays, coef=np.array([object()], dtype=object),
             intercept=np.zeros(1))
    meta_path = tmp_path / "h" / "artifact.json"
    meta = json.loads(meta_path.read_text())
    meta["arrays_sha256"] = hashlib.sha256(arrays.read_bytes()).hexdigest()
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="allow_pickle"):
        load_head(tmp_path / "h")


def test_missing_files_are_a_clear_error(tmp_path):
    with pytest.raises(ArtifactMismatchError, match="cannot read artifact"):
        load_head(tmp_path / "nothing")


def test_zero_shot_head_picks_the_closest_description(tiny_model, tmp_path):
    identity = tiny_model.identity
    head = ZeroShotHead.from_descriptions(
        tiny_model, {"planets": "Mars is the Red Planet",
                     "food": "a bowl of rice and beans"},
        model_identity=identity, min_score=-1.0)
    vectors = tiny_model.encode(["Mars is the Red Planet",
                                 "a bowl of rice and beans"])
    assert [p["label"] for p in head.predict(vectors)] == ["planets", "food"]
    head.save(tmp_path / "z")
    loaded = load_head(tmp_path / "z", expect=identity)
    assert loaded.predict(vectors) == head.predict(vectors)


def test_zero_shot_below_min_score_is_unknown(tiny_model):
    head = ZeroShotHead.from_descriptions(
        tiny_model, {"a": "alpha", "b": "beta"},
        model_identity=tiny_model.identity, min_score=1.01)
    (prediction,) = head.predict(tiny_model.encode(["gamma"]))
    assert prediction["label"] == "unknown"


def test_fingerprints_agree_between_files_and_loaded_weights(tiny_preset,
                                                              tiny_model):
    from embgemma_keras.presets import fingerprint_files

    assert fingerprint_files(tiny_preset) == tiny_model.identity.fingerprint
