"""The int8 route (`embgemma_keras.int8`) against the float32 Keras model."""

import concurrent.futures
import os
import subprocess
import sys

import numpy as np
import pytest

from embgemma_keras import EmbeddingGemma
from embgemma_keras.backend import keras_hub
from embgemma_keras.backend import tf
from embgemma_keras.int8 import CACHE_ENV_VAR
from embgemma_keras.int8 import PRESET_FOLDER
from embgemma_keras.int8 import PresetTokenizer
from embgemma_keras.int8 import _new_axes_as_expand_dims
from embgemma_keras.int8 import export_program
from embgemma_keras.int8 import program_file_name

# From two tokens to a few hundred, so batches of many shapes run.
TEXTS = ["hi", "a short text about cats", "spam! win a prize now " * 3,
         "the quarterly report was filed late, again " * 6,
         "x y z " * 40, "Mars is often referred to as the Red Planet."]


@pytest.fixture(scope="module")
def tiny_int8(tiny_preset, tmp_path_factory):
    os.environ[CACHE_ENV_VAR] = str(tmp_path_factory.mktemp("programs"))
    return EmbeddingGemma.from_preset(tiny_preset, dtype="int8")


def test_int8_vectors_stay_within_cosine_of_float32(tiny_model, tiny_int8):
    vectors, stats = tiny_int8.encode(TEXTS, batch_size=2,
                                      return_stats=True)
    cosines = np.sum(vectors * tiny_model.encode(TEXTS), axis=1)
    assert cosines.min() >= 0.99
    assert stats.batches == 3  # three shapes through one program
    assert tiny_int8.dtype == "int8"


def test_an_int8_vector_does_not_depend_on_its_batch(tiny_int8):
    alone = tiny_int8.encode(TEXTS[:1])[0]
    beside = tiny_int8.encode(TEXTS[1:] + TEXTS[:1])[-1]
    np.testing.assert_allclose(beside, alone, atol=1e-5)


def test_threads_sharing_an_int8_model_get_their_own_vectors(tiny_int8):
    # Beam shares one model among a worker's threads.
    batches = [TEXTS[i:] + TEXTS[:i] for i in range(len(TEXTS))]
    alone = [tiny_int8.encode(batch, batch_size=2) for batch in batches]
    with concurrent.futures.ThreadPoolExecutor(len(batches)) as pool:
        together = list(pool.map(
            lambda batch: tiny_int8.encode(batch, batch_size=2),
            batches * 4))
    for index, vectors in enumerate(together):
        np.testing.assert_array_equal(vectors, alone[index % len(batches)])


def test_matryoshka_dims_apply_to_int8_vectors(tiny_int8):
    vectors = tiny_int8.encode(TEXTS, dim=128)
    assert vectors.shape == (len(TEXTS), 128)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)


def test_the_program_is_made_once_and_kept(tiny_preset, tiny_int8):
    cache = os.path.join(os.environ[CACHE_ENV_VAR], PRESET_FOLDER)
    name = os.path.basename(tiny_int8.int8.path)
    made = os.path.getmtime(os.path.join(cache, name))
    again = EmbeddingGemma.from_preset(tiny_preset, dtype="int8")
    assert again.int8.path == tiny_int8.int8.path
    assert os.listdir(cache) == [name]
    assert os.path.getmtime(os.path.join(cache, name)) == made
    np.testing.assert_array_equal(again.encode(TEXTS),
                                  tiny_int8.encode(TEXTS))


def test_an_int8_preset_carries_its_program(tiny_int8, tmp_path,
                                            monkeypatch):
    tiny_int8.save_preset(str(tmp_path / "preset"))
    empty_cache = tmp_path / "cache"
    monkeypatch.setenv(CACHE_ENV_VAR, str(empty_cache))
    reloaded = EmbeddingGemma.from_preset(str(tmp_path / "preset"),
                                          dtype="int8")
    np.testing.assert_array_equal(reloaded.encode(TEXTS),
                                  tiny_int8.encode(TEXTS))
    assert reloaded.identity.fingerprint == tiny_int8.identity.fingerprint
    assert not empty_cache.exists()  # nothing had to be made


def test_an_int8_worker_runs_without_tensorflow(tiny_int8, tmp_path):
    preset = tmp_path / "preset"
    tiny_int8.save_preset(str(preset))
    script = (
        "import sys\n"
        "from embgemma_keras import EmbeddingGemma\n"
        f"model = EmbeddingGemma.from_preset({str(preset)!r}, dtype='int8')\n"
        "vectors = model.encode(['a text', 'another, longer text'])\n"
        "print(vectors.shape, model.dtype,"
        " sorted({'tensorflow', 'keras'} & set(sys.modules)))\n")
    env = {**os.environ, CACHE_ENV_VAR: str(tmp_path / "empty-cache")}
    out = subprocess.run([sys.executable, "-c", script], env=env,
                         capture_output=True, text=True, check=True)
    assert out.stdout.split("\n")[-2] == "(2, 768) int8 []"


def test_the_preset_tokenizer_gives_keras_hubs_ids(tiny_preset):
    keras_tokenizer = keras_hub.models.Gemma3Tokenizer.from_preset(
        tiny_preset)
    tokenizer = PresetTokenizer(tiny_preset)
    texts = TEXTS + ["Ünïcödé, emoji 🙂 and\ttabs", "  spaces  "]
    assert tokenizer(texts) == [list(ids) for ids in keras_tokenizer(texts)]
    assert (tokenizer.start_token_id, tokenizer.end_token_id,
            tokenizer.pad_token_id) == (keras_tokenizer.start_token_id,
                                        keras_tokenizer.end_token_id,
                                        keras_tokenizer.pad_token_id)


def test_export_needs_the_float32_model(tiny_preset):
    bf16 = EmbeddingGemma.from_preset(tiny_preset, dtype="bfloat16")
    with pytest.raises(ValueError, match="float32"):
        export_program(bf16.backbone)


@pytest.mark.parametrize("spec", [
    (slice(None), None, None, slice(None), slice(None)), (Ellipsis, None),
    (Ellipsis, None, None), (None, Ellipsis, None, slice(None)),
    (slice(None), None, Ellipsis, None), (slice(1, None), None)])
def test_new_axes_traced_as_expand_dims_index_the_same(spec):
    x = tf.reshape(tf.range(24), (2, 3, 4))
    index = tf.function(lambda t: t[spec])
    want = index(x)
    with _new_axes_as_expand_dims():
        got = tf.function(lambda t: t[spec])(x)
    np.testing.assert_array_equal(got, want)


def _tiny_variant(tiny_preset, directory, **config):
    """The tiny model with other attention heads, random weights."""
    tiny = keras_hub.models.Gemma3Backbone.from_preset(tiny_preset)
    backbone = keras_hub.models.Gemma3Backbone.from_config(
        {**tiny.get_config(), **config})
    rng = np.random.default_rng(1)
    for variable in backbone.weights:
        variable.assign(rng.normal(0.0, 0.3, variable.shape))
    backbone.save_to_preset(str(directory))
    keras_hub.models.Gemma3Tokenizer.from_preset(tiny_preset).save_to_preset(
        str(directory))
    return str(directory)


@pytest.mark.parametrize("kv_heads", [1, 2])
def test_the_program_unquantized_computes_the_keras_model(
        tiny_preset, tmp_path, kv_heads):
    # The conversion alone (attention layout, norms, pooling), apart from
    # the quantization: a float32 program in the preset's place.
    preset = _tiny_variant(tiny_preset, tmp_path / "preset",
                           num_query_heads=4, num_key_value_heads=kv_heads)
    float32 = EmbeddingGemma.from_preset(preset)
    program = tmp_path / "preset" / PRESET_FOLDER / program_file_name(
        float32.identity.fingerprint)
    program.parent.mkdir()
    program.write_bytes(export_program(float32.backbone, quantize=False))
    served = EmbeddingGemma.from_preset(preset, dtype="int8")
    cosines = np.sum(served.encode(TEXTS) * float32.encode(TEXTS), axis=1)
    # bfloat16 embedding table and heads: the rest is float32
    assert cosines.min() >= 0.9999
