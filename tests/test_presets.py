import json
import shutil

import pytest

from embgemma_keras import EmbeddingGemma
from embgemma_keras import ModelNotFoundError
from embgemma_keras.presets import HF_HANDLE
from embgemma_keras.presets import KAGGLE_HANDLE
from embgemma_keras.presets import resolve_handle


def test_no_handle_and_no_env_var_says_what_to_set(monkeypatch):
    monkeypatch.delenv("EMBGEMMA_MODEL", raising=False)
    with pytest.raises(ModelNotFoundError, match="set EMBGEMMA_MODEL") as e:
        EmbeddingGemma.from_preset()
    assert HF_HANDLE in str(e.value) and KAGGLE_HANDLE in str(e.value)


def test_env_var_is_used_when_no_handle_is_given(monkeypatch, tiny_preset):
    monkeypatch.setenv("EMBGEMMA_MODEL", str(tiny_preset))
    assert resolve_handle() == str(tiny_preset)


@pytest.mark.parametrize(
    "handle", [HF_HANDLE, KAGGLE_HANDLE, "gs://bucket/preset"]
)
def test_remote_handles_are_passed_to_keras_hub(handle):
    assert resolve_handle(handle) == handle


def test_missing_directory_is_a_clear_error(tmp_path):
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        EmbeddingGemma.from_preset(str(tmp_path / "nowhere"))


def test_directory_without_config_is_refused(tmp_path):
    with pytest.raises(ModelNotFoundError, match="no config.json"):
        EmbeddingGemma.from_preset(str(tmp_path))


def test_corrupt_config_is_refused(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ModelNotFoundError, match="corrupt"):
        EmbeddingGemma.from_preset(str(tmp_path))


def _snapshot(tmp_path, config, files):
    (tmp_path / "config.json").write_text(json.dumps(config))
    for name in files:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    return str(tmp_path)


def test_snapshot_without_the_dense_head_is_refused(tmp_path):
    # keras-hub only warns here and returns wrong vectors.
    path = _snapshot(
        tmp_path,
        {"model_type": "gemma3_text", "use_bidirectional_attention": True},
        ["model.safetensors", "tokenizer.model", "2_Dense/model.safetensors"],
    )
    with pytest.raises(ModelNotFoundError, match="3_Dense/model.safetensors"):
        EmbeddingGemma.from_preset(path)


def test_a_causal_gemma_is_not_taken_for_embeddinggemma(tmp_path):
    path = _snapshot(tmp_path, {"model_type": "gemma3_text"}, [])
    with pytest.raises(ModelNotFoundError, match="not EmbeddingGemma"):
        EmbeddingGemma.from_preset(path)


def test_a_keras_preset_of_another_model_is_refused(tmp_path):
    path = _snapshot(tmp_path, {"class_name": "BertBackbone", "config": {}},
                     [])
    with pytest.raises(ModelNotFoundError, match="BertBackbone"):
        EmbeddingGemma.from_preset(path)


def test_truncated_weights_fail_at_load_with_the_path(tmp_path, tiny_preset):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_preset, broken)
    weights = broken / "model.weights.h5"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ModelNotFoundError, match="Could not load"):
        EmbeddingGemma.from_preset(str(broken))


@pytest.mark.parametrize(
    "dtype,message",
    [("float16", "does not support float16"), ("int8", "Unsupported dtype")],
)
def test_unsupported_dtypes_are_refused(tiny_preset, dtype, message):
    with pytest.raises(ValueError, match=message):
        EmbeddingGemma.from_preset(tiny_preset, dtype=dtype)
