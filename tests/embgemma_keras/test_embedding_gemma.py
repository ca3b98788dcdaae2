import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from embgemma_keras import EmbeddingGemma
from embgemma_keras import truncate_embeddings

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Free entry! Text WIN to claim your prize.",
    "I'll call you later tonight.",
    "Mars is the Red Planet.",
    "東京の桜 🙂 مرحبا",
]
LONG = "a rather long sentence about planets and films " * 30


def cosine(a, b):
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_encode_returns_unit_float32_vectors(tiny_model):
    vectors = tiny_model.encode(TEXTS)
    assert vectors.shape == (5, 768) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)


def test_results_come_back_in_input_order(tiny_model):
    texts = TEXTS + [LONG]
    vectors = tiny_model.encode(texts, batch_size=2)
    for text, vector in zip(texts, vectors, strict=True):
        np.testing.assert_allclose(
            tiny_model.encode([text])[0], vector, atol=1e-6
        )


@pytest.mark.parametrize("position", [0, 2, 4])
def test_a_vector_does_not_depend_on_its_batch(tiny_model, position):
    alone = tiny_model.encode([TEXTS[1]])[0]
    neighbours = [LONG, TEXTS[0], LONG[:100], TEXTS[3]]
    neighbours.insert(position, TEXTS[1])
    beside = tiny_model.encode(neighbours, batch_size=5)[position]
    assert cosine(alone, beside) >= 0.99999


def test_tasks_change_the_vector(tiny_model):
    query = tiny_model.encode([TEXTS[0]], task="query")[0]
    raw = tiny_model.encode([TEXTS[0]], task="none")[0]
    assert cosine(query, raw) < 0.999


@pytest.mark.parametrize("dim", [512, 256, 128])
def test_matryoshka_dims_truncate_then_renormalise(tiny_model, dim):
    full = tiny_model.encode(TEXTS)
    small = tiny_model.encode(TEXTS, dim=dim)
    assert small.shape == (5, dim)
    np.testing.assert_allclose(np.linalg.norm(small, axis=1), 1, atol=1e-5)
    expected = full[:, :dim] / np.linalg.norm(full[:, :dim], axis=1,
                                              keepdims=True)
    np.testing.assert_allclose(small, expected, atol=1e-6)
    np.testing.assert_allclose(truncate_embeddings(full, dim), expected,
                               atol=1e-6)


@pytest.mark.parametrize("dim", [0, 64, 300, 1024, "768"])
def test_other_dims_are_refused(tiny_model, dim):
    with pytest.raises(ValueError, match="dim must be one of"):
        tiny_model.encode(TEXTS, dim=dim)


@pytest.mark.parametrize(
    "texts,error,message",
    [
        ("one string", TypeError, "not one string"),
        ([None], TypeError, r"texts\[0\] is NoneType"),
        (["ok", 3], TypeError, r"texts\[1\] is int"),
        (["ok", b"bytes"], TypeError, r"texts\[1\] is bytes"),
        (["ok", ""], ValueError, r"texts\[1\] is empty"),
        (["  \n"], ValueError, r"texts\[0\] is empty"),
    ],
)
def test_bad_texts_are_refused_with_their_position(tiny_model, texts, error,
                                                    message):
    with pytest.raises(error, match=message):
        tiny_model.encode(texts)


def test_unknown_task_is_refused(tiny_model):
    with pytest.raises(ValueError, match="Unknown task"):
        tiny_model.encode(TEXTS, task="search")


def test_long_texts_are_truncated_and_counted(tiny_preset):
    model = EmbeddingGemma.from_preset(tiny_preset, max_length=32)
    long_count, short_count = model.count_tokens([LONG, "hi"])
    assert long_count > 32 >= short_count
    vectors, stats = model.encode([LONG, "hi"], return_stats=True)
    assert stats.truncated_texts == 1
    assert stats.texts == 2
    assert stats.tokens == 32 + short_count
    # Everything after the cut is ignored.
    longer = model.encode([LONG + " and a different ending entirely"])
    np.testing.assert_allclose(vectors[0], longer[0], atol=1e-6)


def test_max_length_beyond_the_context_is_refused(tiny_preset):
    with pytest.raises(ValueError, match="max_length"):
        EmbeddingGemma.from_preset(tiny_preset, max_length=4096)


def test_batches_are_padded_only_to_their_own_length(tiny_model):
    texts = ["short"] * 8 + [LONG] * 2
    _, stats = tiny_model.encode(texts, batch_size=8, return_stats=True)
    assert stats.padded_tokens < 1.2 * stats.tokens


def test_many_batch_shapes_compile_one_graph(tiny_preset):
    model = EmbeddingGemma.from_preset(tiny_preset)
    for n in (1, 3, 7):
        model.encode([LONG[: 10 * n + 5]] * n, batch_size=n)
    assert model._embed.experimental_get_tracing_count() == 1


@pytest.mark.slow
def test_saved_preset_reloads_to_identical_vectors(tiny_model, tmp_path):
    tiny_model.save_preset(str(tmp_path / "copy"))
    reloaded = EmbeddingGemma.from_preset(str(tmp_path / "copy"))
    np.testing.assert_array_equal(reloaded.encode(TEXTS),
                                  tiny_model.encode(TEXTS))


@pytest.mark.slow
def test_bfloat16_runs_and_stays_close_to_float32(tiny_preset):
    fp32 = EmbeddingGemma.from_preset(tiny_preset).encode(TEXTS)
    bf16_model = EmbeddingGemma.from_preset(tiny_preset, dtype="bfloat16")
    assert bf16_model.dtype == "bfloat16"
    bf16 = bf16_model.encode(TEXTS)
    assert bf16.dtype == np.float32
    assert min(cosine(a, b) for a, b in zip(fp32, bf16, strict=True)) > 0.95


@pytest.mark.slow
def test_the_tiny_preset_is_deterministic(tiny_model, tmp_path):
    from embgemma_keras import make_tiny_preset

    again = EmbeddingGemma.from_preset(make_tiny_preset(tmp_path / "again"))
    np.testing.assert_array_equal(again.encode(TEXTS),
                                  tiny_model.encode(TEXTS))


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**32 - 1), st.floats(1e-3, 1e3),
       st.sampled_from([512, 256, 128]))
def test_matryoshka_truncation_is_a_normalised_prefix(seed, scale, dim):
    rng = np.random.default_rng(seed)
    vector = (rng.standard_t(2, size=(1, 768)) * scale).astype(np.float32)
    full = truncate_embeddings(vector, 768)
    short = truncate_embeddings(vector, dim)
    assert short.shape == (1, dim)
    np.testing.assert_allclose(np.linalg.norm(short), 1.0, rtol=1e-5)
    # Same direction as the prefix, and truncating in steps changes nothing.
    np.testing.assert_allclose(short, truncate_embeddings(full, dim),
                               rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(
        truncate_embeddings(truncate_embeddings(vector, 512), 128),
        truncate_embeddings(vector, 128), rtol=1e-4, atol=1e-6)
