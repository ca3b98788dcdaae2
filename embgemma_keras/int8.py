"""The int8 route: the backbone's transformer exported to LiteRT with
dynamic-range int8 weights and run by XNNPACK.

The Keras model stays the source of truth. The program is traced from the
float32 backbone (`export_program`) and converted by TensorFlow's LiteRT
converter: weights int8 per output channel, activations quantized per
token at run time (XNNPACK's `qd8` kernels, on AVX-512 VNNI or AMX).
Three choices keep its vectors at cosine >= 0.99 to float32 (figures in
docs/model.md; tests/embgemma_keras/test_int8.py checks the bound):

- The RMSNorm gains before attention and before the feed-forward stay on
  the activations. Left as constants, the converter folds them into the
  next kernel, whose rows then span a 100x range of scale that one int8
  scale per output channel cannot hold: cosine to float32 falls to 0.93.
- The token embedding table (262k x 768) stays outside the program,
  gathered in bfloat16, and so do the two projection heads, applied in
  float32 to one vector a text.
- One program takes any (batch, length): the converter cannot lower
  keras-hub's `mask[:, None, None, :, :]` slices for dynamic shapes, so
  they are traced as `expand_dims`, the same values.

The program is made once per weights and kept: in a preset saved in int8
(`litert/`), else in the cache (`EMBGEMMA_CACHE`, default
`~/.cache/embgemma-keras`), keyed by the weights' fingerprint. A worker
serving a preset that carries its program needs no TensorFlow: the table
and heads are read from the preset's weights file, the tokenizer is
SentencePiece's own (`PresetTokenizer`). Making a program does need it.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Callable
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

from embgemma_keras import presets
from embgemma_keras.native_logs import quiet

if TYPE_CHECKING:
    from embgemma_keras.backend import keras_hub

CACHE_ENV_VAR = "EMBGEMMA_CACHE"
PRESET_FOLDER = "litert"
# Bumped whenever the program would change for the same weights.
PROGRAM_VERSION = 1
# Where keras-hub's `save_to_preset` puts the SentencePiece model.
TOKENIZER_PROTO = os.path.join("assets", "tokenizer", "vocabulary.spm")


def export_program(backbone: keras_hub.models.Gemma3Backbone,
                   quantize: bool = True) -> bytes:
    """Converts a float32 backbone's transformer to a LiteRT program with
    dynamic-range int8 weights (float32 ones with `quantize=False`, which
    tests use to check the conversion alone).

    The program takes `x` (batch, length, hidden) float32, the scaled token
    embeddings, and `mask` (batch, length) int32, and returns the
    mean-pooled final hidden states (batch, hidden), before the heads.
    """
    from tensorflow.python.framework import convert_to_constants

    from embgemma_keras.backend import tf

    if backbone.dtype_policy.compute_dtype != "float32":
        raise ValueError("export_program needs a float32 backbone.")
    pool = backbone.get_layer("mean_pooling")

    def transformer(x, mask):
        for block in backbone.transformer_layers:
            x = block(x, padding_mask=mask)
        return pool(backbone.layer_norm(x), padding_mask=mask)

    signature = [
        tf.TensorSpec([None, None, backbone.hidden_dim], tf.float32,
                      name="x"),
        tf.TensorSpec([None, None], tf.int32, name="mask"),
    ]
    with _gains_on_activations(backbone), _new_axes_as_expand_dims():
        function = tf.function(transformer, input_signature=signature)
        frozen = convert_to_constants.convert_variables_to_constants_v2(
            function.get_concrete_function())
    # A frozen function, without its trackable: the converter's path that
    # folds variables into constants, which it warns is deprecated.
    absl_log = logging.getLogger("absl")
    level, _ = absl_log.level, absl_log.setLevel(logging.ERROR)
    try:
        converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen])
        if quantize:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        with quiet():
            return converter.convert()
    finally:
        absl_log.setLevel(level)


@contextlib.contextmanager
def _gains_on_activations(backbone) -> Iterator[None]:
    """The pre-attention and pre-feed-forward RMSNorms multiply their gain
    into the runtime normalisation factor, so the converter cannot fold it
    into the next kernel's weights."""
    norms = [norm for block in backbone.transformer_layers
             for norm in (block.pre_attention_norm, block.pre_ffw_norm)]
    for norm in norms:
        norm.call = functools.partial(_norm_with_runtime_gain, norm)
    try:
        yield
    finally:
        for norm in norms:
            del norm.call


def _norm_with_runtime_gain(norm, x):
    """keras-hub's Gemma 3 RMSNorm, its products in another order."""
    from embgemma_keras.backend import tf

    variance = tf.reduce_mean(tf.square(x), axis=-1, keepdims=True)
    factor = tf.math.reciprocal(tf.sqrt(variance + norm.epsilon))
    return x * (factor * (1.0 + norm.scale))


@contextlib.contextmanager
def _new_axes_as_expand_dims() -> Iterator[None]:
    """While tracing, `t[:, None, ...]` and `t[..., None]` (new axes and
    whole slices only) become `tf.expand_dims`, which the converter lowers
    for dynamic shapes; any other index is left to TensorFlow."""
    from embgemma_keras.backend import tf

    original = tf.Tensor.__getitem__

    def getitem(tensor, spec):
        if not _only_new_axes(spec) or tensor.shape.rank is None:
            return original(tensor, spec)
        rank = tensor.shape.rank + sum(item is None for item in spec)
        ellipsis = spec.index(Ellipsis) if Ellipsis in spec else len(spec)
        positions = [axis if axis < ellipsis else rank - (len(spec) - axis)
                     for axis, item in enumerate(spec) if item is None]
        for position in positions:  # ascending: each lands where it stays
            tensor = tf.expand_dims(tensor, position)
        return tensor

    tf.Tensor.__getitem__ = getitem
    try:
        yield
    finally:
        tf.Tensor.__getitem__ = original


def _only_new_axes(spec) -> bool:
    if not isinstance(spec, tuple) or not any(s is None for s in spec):
        return False
    return sum(s is Ellipsis for s in spec) <= 1 and all(
        s is None or s is Ellipsis
        or (isinstance(s, slice) and s == slice(None)) for s in spec)


def program_file_name(fingerprint: str) -> str:
    """The program's file name for the weights of `fingerprint`."""
    return f"embeddinggemma-{fingerprint}-v{PROGRAM_VERSION}.tflite"


def find_program(handle: str, fingerprint: str) -> str | None:
    """The program's path in the preset `handle`, else in the cache."""
    name = program_file_name(fingerprint)
    for folder in (os.path.join(handle, PRESET_FOLDER), _cache_folder()):
        if os.path.isfile(os.path.join(folder, name)):
            return os.path.join(folder, name)
    return None


def make_program(handle: str, fingerprint: str) -> str:
    """Exports the program of the weights at `handle` into the cache."""
    from embgemma_keras.backend import keras_hub
    from embgemma_keras.loading import values_from_checkpoint

    with values_from_checkpoint():
        float32 = keras_hub.models.Gemma3Backbone.from_preset(
            handle, dtype="float32")
    path = os.path.join(_cache_folder(), program_file_name(fingerprint))
    _write_atomically(path, export_program(float32))
    return path


class Int8Program:
    """The int8 program, with the embedding table and heads it runs
    between.

    Example:

    ```python
    from embgemma_keras import EmbeddingGemma

    model = EmbeddingGemma.from_preset("models/embeddinggemma-int8",
                                       dtype="int8")
    model.encode(["int8 weights, per-token int8 activations"])
    ```

    Args:
        path: the program file.
        embed_tokens: token ids (batch, length) -> float32 rows of the
            embedding table (batch, length, hidden), before scaling.
        heads: the two projection kernels, float32.
    """

    def __init__(self, path: str,
                 embed_tokens: Callable[[np.ndarray], np.ndarray],
                 heads: list[np.ndarray]):
        from ai_edge_litert.interpreter import Interpreter

        self.path = path
        self.heads = heads
        self._embed_tokens = embed_tokens
        self._scale = float(np.sqrt(heads[0].shape[0]))
        # XNNPACK is applied at the first allocation, which says so on stderr
        # ("Created TensorFlow Lite XNNPACK delegate for CPU").
        with quiet():
            self._interpreter = Interpreter(
                model_path=path, num_threads=len(os.sched_getaffinity(0)))
            self._interpreter.allocate_tensors()
        self._inputs = {d["name"]: d["index"]
                        for d in self._interpreter.get_input_details()}
        self._output = self._interpreter.get_output_details()[0]["index"]
        self._shape: tuple[int, ...] | None = None
        # An interpreter is not thread-safe, and Beam shares one model
        # among a worker's threads; XNNPACK uses every core for one batch.
        self._lock = threading.Lock()

    @classmethod
    def from_backbone(cls, path: str,
                      backbone: keras_hub.models.Gemma3Backbone
                      ) -> Int8Program:
        """Gathers from the Keras model's own table: no second copy."""
        from embgemma_keras.backend import tf

        table = backbone.token_embedding.embeddings
        heads = [tf.cast(backbone.get_layer(name).kernel, tf.float32).numpy()
                 for name in ("pooling_dense_1", "embedding_projection")]
        return cls(path,
                   lambda ids: tf.cast(tf.gather(table, ids),
                                       tf.float32).numpy(),
                   heads)

    @classmethod
    def from_keras_preset(cls, path: str, directory: str) -> Int8Program:
        """Reads the table and heads from a Keras preset's weights file,
        without TensorFlow."""
        import ml_dtypes

        # In bfloat16, as `from_backbone` serves them: the same vectors
        # whichever way the preset is loaded.
        table = presets.keras_embedding_table(directory).astype(
            ml_dtypes.bfloat16)
        heads = [np.asarray(kernel).astype(ml_dtypes.bfloat16).astype(
            np.float32)
            for kernel in presets.keras_projection_kernels(directory)]
        return cls(path, lambda ids: table[ids].astype(np.float32), heads)

    def embed(self, token_ids: np.ndarray,
              padding_mask: np.ndarray) -> np.ndarray:
        """The model's vectors (batch, 768) for one padded batch."""
        x = self._embed_tokens(token_ids) * self._scale
        with self._lock:
            self._resize(token_ids.shape)
            self._interpreter.set_tensor(self._inputs["x"], x)
            self._interpreter.set_tensor(self._inputs["mask"], padding_mask)
            self._interpreter.invoke()
            pooled = self._interpreter.get_tensor(self._output)
        return pooled @ self.heads[0] @ self.heads[1]

    def save(self, directory: str) -> None:
        """Writes the program to `directory/litert/`."""
        target = os.path.join(directory, PRESET_FOLDER)
        os.makedirs(target, exist_ok=True)
        shutil.copyfile(self.path,
                        os.path.join(target, os.path.basename(self.path)))

    def _resize(self, shape):
        """XNNPACK plans each new shape (milliseconds; measured in
        docs/model.md against the batch's own time)."""
        if shape == self._shape:
            return
        hidden = self.heads[0].shape[0]
        self._interpreter.resize_tensor_input(self._inputs["x"],
                                              [*shape, hidden])
        self._interpreter.resize_tensor_input(self._inputs["mask"],
                                              list(shape))
        self._interpreter.allocate_tensors()
        self._shape = shape


class PresetTokenizer:
    """The Keras preset's SentencePiece model run by SentencePiece itself:
    the ids keras-hub's `Gemma3Tokenizer` gives, without TensorFlow.

    Example:

    ```python
    tokenizer = PresetTokenizer("models/embeddinggemma-int8")
    tokenizer(["task: classification | query: hello"])  # [[...ids]]
    ```

    Args:
        directory: a Keras preset directory.
    """

    def __init__(self, directory: str):
        import sentencepiece

        with open(os.path.join(directory, TOKENIZER_PROTO), "rb") as f:
            self._pieces = sentencepiece.SentencePieceProcessor(
                model_proto=f.read())
        self.start_token_id = self._pieces.piece_to_id("<bos>")
        self.end_token_id = self._pieces.piece_to_id("<eos>")
        self.pad_token_id = self._pieces.piece_to_id("<pad>")

    def __call__(self, texts: list[str]) -> list[list[int]]:
        return self._pieces.encode(list(texts))


def serves_without_tensorflow(handle: str) -> str | None:
    """The program of a local Keras preset that carries (or has in the
    cache) the program of its weights, else None."""
    if not os.path.isdir(handle) or presets.is_huggingface_directory(handle):
        return None
    if not os.path.isfile(os.path.join(handle, TOKENIZER_PROTO)):
        return None
    return find_program(handle, presets.fingerprint_files(handle))


def _cache_folder() -> str:
    root = os.environ.get(CACHE_ENV_VAR) or os.path.join(
        os.path.expanduser("~"), ".cache", "embgemma-keras")
    return os.path.join(root, PRESET_FOLDER)


def _write_atomically(path: str, data: bytes) -> None:
    """Workers sharing a cache never read a half-written program."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=os.path.dirname(path))
    with os.fdopen(handle, "wb") as f:
        f.write(data)
    os.chmod(temporary, 0o644)  # mkstemp's 0600 would hide it from workers
    os.replace(temporary, path)
