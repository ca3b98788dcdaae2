import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import threading

import numpy as np
import pytest

from embgemma_keras import EmbeddingGemma
from embgemma_keras import ModelNotFoundError
from embgemma_keras.presets import HF_HANDLE
from embgemma_keras.presets import KAGGLE_HANDLE
from embgemma_keras.presets import resolve_handle


class _GatedHub(http.server.BaseHTTPRequestHandler):
    """Answers as the Hugging Face Hub does for a gated model without an
    accepted licence."""

    def do_GET(self):
        self.send_response(403)
        self.send_header("X-Error-Code", "GatedRepo")
        self.send_header("X-Error-Message", "Access to model "
                         "google/embeddinggemma-300m is restricted.")
        self.end_headers()

    do_HEAD = do_GET

    def log_message(self, *args):
        pass


@pytest.fixture
def gated_hub():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _GatedHub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _default_model_error(hub_url, tmp_path):
    """resolve_handle() with no handle, no EMBGEMMA_MODEL and an empty
    Hugging Face cache, against the hub at `hub_url`, in a fresh process
    (huggingface_hub reads HF_ENDPOINT when imported)."""
    env = {k: v for k, v in os.environ.items() if k != "EMBGEMMA_MODEL"}
    env.update(HF_ENDPOINT=hub_url, HF_HOME=str(tmp_path / "hf"),
               EMBGEMMA_MODEL=" ")
    result = subprocess.run(
        [sys.executable, "-c", "from embgemma_keras.presets import "
         "resolve_handle; resolve_handle('')"],
        env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    return result.stderr


def test_a_refused_default_download_says_what_to_do(gated_hub, tmp_path):
    error = _default_model_error(gated_hub, tmp_path)
    assert "ModelNotFoundError" in error
    assert "Accept its licence at https://huggingface.co/google/" in error
    assert "HF_TOKEN" in error and "--model" in error


def test_an_unreachable_hub_says_what_to_do(tmp_path):
    error = _default_model_error(f"http://127.0.0.1:{_closed_port()}",
                                 tmp_path)
    assert "Could not download google/embeddinggemma-300m" in error
    assert "--model DIR or EMBGEMMA_MODEL=DIR" in error


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


@pytest.mark.parametrize("keep", [1000, 0.9])
def test_a_truncated_preset_is_refused_before_loading(tmp_path, tiny_preset,
                                                      keep):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_preset, broken)
    weights = broken / "model.weights.h5"
    data = weights.read_bytes()
    weights.write_bytes(data[:keep if isinstance(keep, int)
                             else int(len(data) * keep)])
    # resolve_handle is what every job calls before it starts.
    with pytest.raises(ModelNotFoundError, match="truncated or corrupt"):
        resolve_handle(str(broken))


def _real_snapshot(tmp_path):
    from safetensors.numpy import save_file

    path = _snapshot(
        tmp_path,
        {"model_type": "gemma3_text", "use_bidirectional_attention": True},
        ["tokenizer.model"])
    for name, shape in (("model.safetensors", (64, 8)),
                        ("2_Dense/model.safetensors", (16, 8)),
                        ("3_Dense/model.safetensors", (8, 16))):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        save_file({"linear.weight": np.ones(shape, np.float32)},
                  str(tmp_path / name))
    return path


def test_a_complete_snapshot_passes_the_checks(tmp_path):
    path = _real_snapshot(tmp_path)
    assert resolve_handle(path) == path


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_a_damaged_safetensors_file_is_refused_before_loading(tmp_path,
                                                              damage):
    path = _real_snapshot(tmp_path)
    weights = tmp_path / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[:-100] if damage == "truncate"
                        else b"\xff" * len(data))
    match = "truncated" if damage == "truncate" else "not a readable"
    with pytest.raises(ModelNotFoundError, match=match):
        resolve_handle(path)


@pytest.mark.parametrize(
    "dtype,message",
    [("float16", "does not support float16"), ("int4", "Unsupported dtype"),
     ("mixed_bfloat16", "Unsupported dtype")],
)
def test_unsupported_dtypes_are_refused(tiny_preset, dtype, message):
    with pytest.raises(ValueError, match=message):
        EmbeddingGemma.from_preset(tiny_preset, dtype=dtype)
