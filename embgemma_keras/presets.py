"""Where an EmbeddingGemma model can live, and how a handle is checked.

A handle is one of:

- a local Sentence-Transformers / Hugging Face snapshot directory
  (`config.json`, `model.safetensors`, `tokenizer.model`, `2_Dense/`,
  `3_Dense/`), as written by `huggingface-cli download` or
  `../shared/fetch-embeddinggemma`;
- a local Keras preset directory written by `EmbeddingGemma.save_preset`
  (what the Dataflow image bakes in);
- a remote handle that keras-hub resolves itself: `hf://OWNER/NAME`,
  `kaggle://OWNER/MODEL/FRAMEWORK/VARIATION`, `gs://...`, or a keras-hub
  built-in preset name.

Local directories are checked here, before keras-hub sees them, because
keras-hub only prints a warning when the pooling head of a snapshot is
missing and then returns wrong vectors.
"""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np

from embgemma_keras.config import SUPPORTED_DTYPES

MODEL_ENV_VAR = "EMBGEMMA_MODEL"
DEFAULT_REPO = "google/embeddinggemma-300m"
HF_HANDLE = f"hf://{DEFAULT_REPO}"
# What a Sentence-Transformers snapshot needs here (not the ONNX exports).
SNAPSHOT_FILES = ["*.json", "*.safetensors", "tokenizer.model", "*.txt"]
KAGGLE_HANDLE = "kaggle://keras/embeddinggemma/keras/embedding_gemma3_300m"
REMOTE_SCHEMES = ("hf://", "kaggle://", "gs://", "modelscope://")

_DENSE_HEAD_FILES = ("2_Dense/model.safetensors", "3_Dense/model.safetensors")


class ModelNotFoundError(FileNotFoundError):
    """No usable EmbeddingGemma model at the given handle."""


def resolve_handle(handle: str | os.PathLike | None = None) -> str:
    """Returns a checked model handle.

    `None` or blank reads `$EMBGEMMA_MODEL`; when that is unset or blank
    too, the published model is downloaded once (`default_model`).
    """
    if handle is None or not str(handle).strip():
        handle = (os.environ.get(MODEL_ENV_VAR, "").strip()
                  or default_model())
    handle = os.fspath(handle)
    if handle.startswith(REMOTE_SCHEMES) or not _looks_like_path(handle):
        return handle
    _check_local_directory(handle)
    return handle


def default_model() -> str:
    """The published model's snapshot directory in the Hugging Face cache,
    downloaded the first time (about 1.2 GB).

    Raises `ModelNotFoundError` saying what to do when the hub refuses
    (licence not accepted, no token) or cannot be reached.
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import GatedRepoError
    from huggingface_hub.errors import HfHubHTTPError
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return snapshot_download(DEFAULT_REPO, allow_patterns=SNAPSHOT_FILES)
    except GatedRepoError as e:
        reason = (
            f"Hugging Face refused to serve {DEFAULT_REPO}: it is gated "
            f"({_first_line(e)}).\n"
            f"  1. Accept its licence at https://huggingface.co/{DEFAULT_REPO}"
            f"\n  2. Set HF_TOKEN to a read token "
            f"(https://huggingface.co/settings/tokens) or run "
            f"`huggingface-cli login`.")
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as e:
        reason = (f"Could not download {DEFAULT_REPO} from Hugging Face "
                  f"({_first_line(e)}).\n  Check the network, or that "
                  f"HF_TOKEN is a valid token.")
    raise ModelNotFoundError(
        f"No model given (--model, {MODEL_ENV_VAR}), and the default could "
        f"not be fetched.\n  {reason}\n  Or give a model you have: --model "
        f"DIR or {MODEL_ENV_VAR}=DIR (a Sentence-Transformers snapshot or a "
        f"Keras preset), or {KAGGLE_HANDLE}.")


def _first_line(error: Exception) -> str:
    """The hub's own message when it sent one, else the error's first line."""
    message = getattr(error, "server_message", None) or str(error).strip()
    return (message.splitlines() or [type(error).__name__])[0]


def check_dtype(dtype: str) -> str:
    """Refuses dtypes the model cannot run in, with the reason."""
    if dtype == "float16":
        raise ValueError(
            "EmbeddingGemma does not support float16: its activations "
            "overflow the float16 range. Use 'float32', 'bfloat16' or 'int8'."
        )
    if dtype not in SUPPORTED_DTYPES:
        raise ValueError(
            f"Unsupported dtype {dtype!r}; use 'float32', 'bfloat16' or "
            "'int8'."
        )
    return dtype


def is_huggingface_directory(path: str) -> bool:
    """True for a Transformers-style snapshot, False for a Keras preset."""
    return "model_type" in _read_config(path)


def _looks_like_path(handle):
    return os.sep in handle or handle.startswith(".") or os.path.exists(handle)


def _check_local_directory(path):
    if not os.path.isdir(path):
        raise ModelNotFoundError(
            f"EmbeddingGemma model directory {path!r} does not exist."
        )
    config = _read_config(path)
    if "model_type" in config:
        _check_huggingface_snapshot(path, config)
    else:
        _check_keras_preset(path, config)


def _read_config(path):
    config_path = os.path.join(path, "config.json")
    try:
        with open(config_path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise ModelNotFoundError(
            f"{path!r} is not a model directory: it has no config.json."
        ) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelNotFoundError(
            f"{config_path!r} is not valid JSON ({e}); the model directory "
            "is corrupt."
        ) from None


def _check_huggingface_snapshot(path, config):
    if not config.get("use_bidirectional_attention"):
        raise ModelNotFoundError(
            f"{path!r} holds a {config.get('model_type')!r} model without "
            "bidirectional attention, not EmbeddingGemma."
        )
    required = ("model.safetensors", "tokenizer.model") + _DENSE_HEAD_FILES
    missing = [f for f in required if not os.path.isfile(os.path.join(path, f))]
    if missing:
        raise ModelNotFoundError(
            f"EmbeddingGemma snapshot {path!r} is incomplete; missing: "
            f"{', '.join(missing)}. Download the full Sentence-Transformers "
            "snapshot (the 2_Dense/3_Dense projection head is required)."
        )
    for name in ("model.safetensors",) + _DENSE_HEAD_FILES:
        _check_safetensors(os.path.join(path, name))


def _check_safetensors(path):
    """Refuses a truncated or corrupt file (an interrupted download).

    Reads only the header: 8 bytes of length, then JSON giving each
    tensor's byte range, which must lie within the file.
    """
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        length = int.from_bytes(f.read(8), "little")
        try:
            if not 0 < length <= size - 8:
                raise ValueError("bad header length")
            header = json.loads(f.read(length))
            end = max((t["data_offsets"][1] for name, t in header.items()
                       if name != "__metadata__"), default=0)
        except (ValueError, TypeError, KeyError, IndexError):
            raise ModelNotFoundError(
                f"{path!r} is not a readable safetensors file; download it "
                "again.") from None
    if 8 + length + end > size:
        raise ModelNotFoundError(
            f"{path!r} is truncated ({size} bytes of {8 + length + end}); "
            "download it again.")


def _check_keras_preset(path, config):
    backbone = config.get("config", {})
    if config.get("class_name") != "Gemma3Backbone" or not backbone.get(
        "is_embedding_model"
    ):
        raise ModelNotFoundError(
            f"{path!r} is a Keras preset of {config.get('class_name')!r}, "
            "not an EmbeddingGemma (Gemma3Backbone with is_embedding_model)."
        )
    if not os.path.isfile(os.path.join(path, "tokenizer.json")):
        raise ModelNotFoundError(
            f"Keras preset {path!r} has no tokenizer.json; save it with "
            "EmbeddingGemma.save_preset()."
        )
    import h5py

    weights = os.path.join(path, "model.weights.h5")
    try:
        # HDF5 compares the file's size with the one its superblock
        # records, so opening it is enough to catch a truncated copy.
        h5py.File(weights, "r").close()
    except (OSError, FileNotFoundError) as e:
        raise ModelNotFoundError(
            f"Keras preset {path!r}: model.weights.h5 is missing, truncated "
            f"or corrupt ({e}); save or copy the preset again.") from None


def weights_fingerprint(kernels: list[np.ndarray]) -> str:
    """Hashes the dense projection head (Keras kernel layout) in bfloat16.

    Rounding to bfloat16 first makes the float32 and bfloat16 forms of one
    checkpoint agree; any other checkpoint differs.
    """
    import ml_dtypes

    digest = hashlib.sha256()
    for kernel in kernels:
        digest.update(np.asarray(kernel).astype(ml_dtypes.bfloat16).tobytes())
    return digest.hexdigest()[:16]


def fingerprint_files(handle: str) -> str | None:
    """The weights fingerprint of a local model, read without building it.

    Returns None for remote handles, which would need a download; callers
    then compare handles instead.
    """
    handle = resolve_handle(handle)
    if not os.path.isdir(handle):
        return None
    if is_huggingface_directory(handle):
        from safetensors import safe_open

        kernels = []
        for name in _DENSE_HEAD_FILES:
            with safe_open(os.path.join(handle, name), framework="np") as f:
                kernels.append(f.get_tensor("linear.weight").T)
        return weights_fingerprint(kernels)
    return weights_fingerprint(keras_projection_kernels(handle))


def keras_projection_kernels(path: str) -> list[np.ndarray]:
    """The two projection kernels of a saved Gemma3Backbone, found by
    shape, read without Keras."""
    config = _read_config(path)["config"]
    hidden = config["hidden_dim"]
    shapes = [(hidden, config["pooling_intermediate_dim"]),
              (config["pooling_intermediate_dim"], config["embedding_dim"])]
    found = _preset_arrays(path, shapes)
    return [found[shape] for shape in shapes]


def keras_embedding_table(path: str) -> np.ndarray:
    """The token embedding table (vocabulary x hidden) of a saved
    Gemma3Backbone, in its stored dtype, read without Keras."""
    config = _read_config(path)["config"]
    shape = (config["vocabulary_size"], config["hidden_dim"])
    return _preset_arrays(path, [shape])[shape]


def _preset_arrays(path, shapes):
    """The first array of each shape in a Keras preset's weights file."""
    import h5py
    import ml_dtypes

    found = {}

    def visit(_, node):
        if isinstance(node, h5py.Dataset) and node.shape in shapes:
            if node.shape not in found:
                value = node[()]
                if node.attrs.get("dtype") == "bfloat16":
                    value = value.view(ml_dtypes.bfloat16)
                found[node.shape] = value

    with h5py.File(os.path.join(path, "model.weights.h5"), "r") as f:
        f.visititems(visit)
    return found
