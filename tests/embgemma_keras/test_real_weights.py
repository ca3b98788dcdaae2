"""EmbeddingGemma-300m with its real weights (EMBGEMMA_MODEL; see conftest)."""

import json
import pathlib

import numpy as np
import pytest

from embgemma_keras import EmbeddingGemma

pytestmark = pytest.mark.slow

DATA = pathlib.Path(__file__).parents[1] / "data"
QUERY = "Which planet is known as the Red Planet?"
DOCUMENTS = [
    "Venus is often called Earth's twin because of its similar size and "
    "proximity.",
    "Mars, known for its reddish appearance, is often referred to as the "
    "Red Planet.",
    "Jupiter, the largest planet in our solar system, has a prominent red "
    "spot.",
    "Saturn, famous for its rings, is sometimes mistaken for the Red Planet.",
]
MODEL_CARD_SIMILARITIES = [0.3011, 0.6359, 0.4930, 0.4889]


def _model_card_similarities(model):
    query = model.encode([QUERY], task="query")
    return (query @ model.encode(DOCUMENTS, task="document").T)[0]


def test_model_card_example_fp32(real_model):
    np.testing.assert_allclose(_model_card_similarities(real_model),
                               MODEL_CARD_SIMILARITIES, atol=0.001)


def test_model_card_example_bf16(real_model_bf16):
    np.testing.assert_allclose(_model_card_similarities(real_model_bf16),
                               MODEL_CARD_SIMILARITIES, atol=0.005)


def _reference():
    """Texts and sentence-transformers fp32 vectors (make_reference.py)."""
    items = json.loads((DATA / "reference_texts.json").read_text())
    return items, np.load(DATA / "reference_vectors.npy")


def test_reference_covers_long_multilingual_and_code_texts(real_model):
    items, reference = _reference()
    assert len(items) >= 32 and reference.shape == (len(items), 768)
    counts = real_model.count_tokens([i["text"] for i in items])
    # Beyond 512 tokens the sliding-window layers see only part of the text.
    assert sum(count > 600 for count in counts) >= 2
    assert sum(item["task"] == "code_retrieval" for item in items) >= 4


@pytest.mark.parametrize("model_fixture,min_cosine",
                         [("real_model", 0.9999), ("real_model_bf16", 0.999),
                          ("real_model_int8", 0.99)])
def test_vectors_match_sentence_transformers(request, model_fixture,
                                             min_cosine):
    model = request.getfixturevalue(model_fixture)
    items, reference = _reference()
    # One batched call, so length-aware batching is what gets checked.
    by_task = {}
    for index, item in enumerate(items):
        by_task.setdefault(item["task"], []).append(index)
    vectors = np.zeros_like(reference)
    for task, indices in by_task.items():
        vectors[indices] = model.encode([items[i]["text"] for i in indices],
                                        task=task)
    cosines = np.sum(vectors * reference, axis=1)
    worst = int(np.argmin(cosines))
    assert cosines[worst] >= min_cosine, (worst, items[worst]["text"][:80])


def test_a_vector_does_not_depend_on_its_batch(real_model):
    items, _ = _reference()
    texts = [item["text"] for item in items[:12]]
    long_texts = sorted((i["text"] for i in items), key=len)[-2:]
    alone = real_model.encode(texts[:1])[0]
    for position in (0, 5, 13):
        batch = long_texts + texts[1:12]
        batch.insert(position, texts[0])
        beside = real_model.encode(batch, batch_size=16)[position]
        assert float(alone @ beside) >= 0.99999


def test_an_int8_preset_serves_the_same_vectors_without_keras(
        real_model_int8, tmp_path):
    from embgemma_keras.int8 import PresetTokenizer

    real_model_int8.save_preset(str(tmp_path / "preset"))
    served = EmbeddingGemma.from_preset(str(tmp_path / "preset"),
                                        dtype="int8")
    assert served.backbone is None  # the TensorFlow-free worker
    items, _ = _reference()
    texts = [item["text"] for item in items]
    keras_tokenizer = real_model_int8.tokenizer
    assert PresetTokenizer(str(tmp_path / "preset"))(texts) == [
        list(ids) for ids in keras_tokenizer(texts)]
    np.testing.assert_allclose(served.encode(texts),
                               real_model_int8.encode(texts), atol=1e-5)


def test_bf16_preset_round_trip_is_identical(real_model_bf16, tmp_path):
    real_model_bf16.save_preset(str(tmp_path / "preset"))
    reloaded = EmbeddingGemma.from_preset(str(tmp_path / "preset"),
                                          dtype="bfloat16")
    texts = [QUERY] + DOCUMENTS
    np.testing.assert_array_equal(reloaded.encode(texts),
                                  real_model_bf16.encode(texts))


def test_weights_fingerprint_agrees_across_files_and_dtypes(
        real_model_path, real_model, real_model_bf16):
    from embgemma_keras.presets import fingerprint_files

    fingerprint = fingerprint_files(real_model_path)
    assert real_model.identity.fingerprint == fingerprint
    assert real_model_bf16.identity.fingerprint == fingerprint
