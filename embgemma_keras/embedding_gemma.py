"""`EmbeddingGemma`: keras-hub's Gemma 3 embedding backbone, ready to encode."""

from __future__ import annotations

import dataclasses
import functools
import logging
import shutil
from typing import TYPE_CHECKING

import numpy as np

from embgemma_keras import presets
from embgemma_keras.artifacts import ModelIdentity
from embgemma_keras.batching import pad_batch
from embgemma_keras.batching import plan_batches
from embgemma_keras.config import KERAS_DTYPE
from embgemma_keras.config import MATRYOSHKA_DIMS
from embgemma_keras.config import MAX_CONTEXT
from embgemma_keras.int8 import Int8Program
from embgemma_keras.int8 import PresetTokenizer
from embgemma_keras.int8 import find_program
from embgemma_keras.int8 import make_program
from embgemma_keras.int8 import serves_without_tensorflow
from embgemma_keras.tasks import Task
from embgemma_keras.tasks import format_prompts

if TYPE_CHECKING:
    from embgemma_keras.backend import keras_hub

log = logging.getLogger(__name__)


@dataclasses.dataclass
class EncodeStats:
    """What one `encode` call did; useful for metrics and cost accounting."""

    texts: int = 0
    tokens: int = 0  # real tokens, prompt and special tokens included
    padded_tokens: int = 0  # tokens the model computed, padding included
    truncated_texts: int = 0
    batches: int = 0


class EmbeddingGemma:
    """EmbeddingGemma-300m text encoder on keras-hub.

    Adds to `keras_hub.models.Gemma3Backbone(is_embedding_model=True)` what
    a user of the model card expects: task prompts, Matryoshka dimensions,
    length-aware batching and loading from wherever the model is kept.

    Example:

    ```python
    from embgemma_keras import EmbeddingGemma

    model = EmbeddingGemma.from_preset("hf://google/embeddinggemma-300m")
    query = model.encode(["Which planet is known as the Red Planet?"],
                         task="query")
    docs = model.encode(["Mars is often referred to as the Red Planet.",
                         "Venus is often called Earth's twin."],
                        task="document")
    print(query @ docs.T)  # cosine similarities; Mars scores highest
    small = model.encode(["a 128-d vector"], task="clustering", dim=128)
    ```

    Args:
        backbone: a `keras_hub.models.Gemma3Backbone` built with
            `is_embedding_model=True`; None for an int8 model served from
            its preset without TensorFlow.
        tokenizer: the matching `keras_hub.models.Gemma3Tokenizer` (or
            `PresetTokenizer`).
        max_length: tokens per text, `<bos>`/`<eos>` included; longer texts
            are truncated (and counted). At most 2048, the model's context.
        max_batch_tokens: most padded tokens per forward pass, so long texts
            go in small batches and short ones in large batches. 1024 was
            fastest over short, medium and mixed texts on a 2-core CPU
            (512-2048 were tried; see benchmarks/embed_throughput.py).
        handle: where the weights came from.
        int8: when given, this `Int8Program` runs the model (dtype "int8")
            with the embedding table and heads it holds.
    """

    def __init__(self, backbone: keras_hub.models.Gemma3Backbone | None,
                 tokenizer: keras_hub.tokenizers.Gemma3Tokenizer
                 | PresetTokenizer,
                 max_length: int = MAX_CONTEXT, max_batch_tokens: int = 1024,
                 handle: str | None = None,
                 int8: Int8Program | None = None):
        if backbone is None and int8 is None:
            raise ValueError("EmbeddingGemma needs a backbone or an int8 "
                             "program.")
        if backbone is not None and not getattr(
                backbone, "is_embedding_model", False):
            raise ValueError(
                "EmbeddingGemma needs a Gemma3Backbone built with "
                "is_embedding_model=True."
            )
        if not 3 <= max_length <= MAX_CONTEXT:
            raise ValueError(
                f"max_length must be between 3 and {MAX_CONTEXT}, got "
                f"{max_length}."
            )
        self.backbone = backbone
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.max_batch_tokens = max_batch_tokens
        self.handle = handle
        self.int8 = int8
        self.dtype = "int8" if int8 else backbone.dtype_policy.compute_dtype
        if not int8:
            from embgemma_keras.backend import tf

            # One trace for every batch shape: graph mode runs any (batch,
            # length) without retracing, so length-aware batching costs no
            # compilation.
            self._embed = tf.function(
                self._forward,
                input_signature=[tf.TensorSpec([None, None], tf.int32)] * 2,
            )

    @classmethod
    def from_preset(cls, handle: str | None = None, dtype: str = "float32",
                    max_length: int = MAX_CONTEXT,
                    **kwargs: object) -> EmbeddingGemma:
        """Loads the model from a directory, a Keras preset or a hub handle.

        Args:
            handle: a local Sentence-Transformers directory, a Keras preset
                directory (see `save_preset`), `hf://google/embeddinggemma-300m`
                or `kaggle://keras/embeddinggemma/keras/embedding_gemma3_300m`.
                `None` reads the `EMBGEMMA_MODEL` environment variable.
            dtype: "float32", "bfloat16" or "int8" (int8 weights and
                per-token int8 activations through LiteRT, derived from
                these weights: see `embgemma_keras.int8`). The model does
                not support float16.
            max_length: tokens per text; longer texts are truncated.
            **kwargs: passed to the constructor (`max_batch_tokens`).
        """
        presets.check_dtype(dtype)
        handle = presets.resolve_handle(handle)
        program = dtype == "int8" and serves_without_tensorflow(handle)
        if program:
            return cls(None, PresetTokenizer(handle), max_length=max_length,
                       handle=handle,
                       int8=Int8Program.from_keras_preset(program, handle),
                       **kwargs)
        backbone, tokenizer = cls._load_keras(handle, KERAS_DTYPE[dtype])
        if dtype != "int8":
            return cls(backbone, tokenizer, max_length=max_length,
                       handle=handle, **kwargs)
        fingerprint = presets.weights_fingerprint(_head_kernels(backbone))
        program = (find_program(handle, fingerprint)
                   or make_program(handle, fingerprint))
        return cls(backbone, tokenizer, max_length=max_length, handle=handle,
                   int8=Int8Program.from_backbone(program, backbone),
                   **kwargs)

    @staticmethod
    def _load_keras(handle, dtype):
        from embgemma_keras.backend import keras_hub
        from embgemma_keras.backend import quiet
        from embgemma_keras.loading import values_from_checkpoint

        try:
            with values_from_checkpoint():
                backbone = keras_hub.models.Gemma3Backbone.from_preset(
                    handle, dtype=dtype
                )
            with quiet():
                tokenizer = keras_hub.models.Gemma3Tokenizer.from_preset(
                    handle)
        except (OSError, ValueError, KeyError) as e:
            raise presets.ModelNotFoundError(
                f"Could not load EmbeddingGemma from {handle!r}: {e}"
            ) from e
        return backbone, tokenizer

    @functools.cached_property
    def identity(self) -> ModelIdentity:
        """`ModelIdentity`: the handle and a fingerprint of the weights.

        The fingerprint hashes the dense projection head rounded to
        bfloat16 (`presets.weights_fingerprint`), so the float32 and
        bfloat16 forms of one checkpoint agree, whatever directory they were
        loaded from, and any other checkpoint differs. Heads store it and
        refuse vectors from other weights.
        """
        kernels = (self.int8.heads if self.backbone is None
                   else _head_kernels(self.backbone))
        return ModelIdentity(handle=str(self.handle),
                             fingerprint=presets.weights_fingerprint(kernels))

    def save_preset(self, directory: str) -> None:
        """Writes a Keras preset (weights in this model's dtype).

        `from_preset(directory)` loads it back to identical vectors, without
        the Sentence-Transformers snapshot it came from. An int8 model
        also writes its int8 program (`litert/`), so workers loading it in
        int8 make none and need no TensorFlow; one served that way copies
        the preset it came from.
        """
        if self.backbone is None:
            shutil.copytree(self.handle, directory, dirs_exist_ok=True)
        else:
            self.backbone.save_to_preset(directory)
            self.tokenizer.save_to_preset(directory)
        if self.int8:
            self.int8.save(directory)

    def encode(self, texts: list[str], task: Task | str = Task.CLASSIFICATION,
               titles: list[str | None] | None = None, dim: int = 768,
               batch_size: int = 32, return_stats: bool = False
               ) -> np.ndarray | tuple[np.ndarray, EncodeStats]:
        """Embeds texts with the prompt of `task`.

        Args:
            texts: a list of non-empty strings.
            task: a `Task` or its name ("query", "document",
                "classification", ...). "none" embeds the raw text.
            titles: per-text titles for `task="document"` (None -> "none").
            dim: 768, 512, 256 or 128. Smaller vectors are the first `dim`
                values, re-normalised (Matryoshka representation learning).
            batch_size: most texts per forward pass.
            return_stats: also return an `EncodeStats`.

        Returns:
            A float32 array `(len(texts), dim)` of unit vectors in input
            order, and the `EncodeStats` when `return_stats` is set.
        """
        _check_texts(texts)
        _check_dim(dim)
        prompts = format_prompts(list(texts), task, titles)
        token_lists, truncated = self._tokenize(prompts)
        lengths = [len(tokens) for tokens in token_lists]
        stats = EncodeStats(texts=len(texts), tokens=sum(lengths),
                            truncated_texts=truncated)
        vectors = self._embed_in_batches(token_lists, batch_size, stats)
        if truncated:
            log.info("Truncated %d of %d texts to %d tokens.", truncated,
                     len(texts), self.max_length)
        vectors = truncate_embeddings(vectors, dim)
        return (vectors, stats) if return_stats else vectors

    def _embed_in_batches(self, token_lists, batch_size, stats):
        vectors = np.zeros((len(token_lists), MATRYOSHKA_DIMS[0]), np.float32)
        lengths = [len(tokens) for tokens in token_lists]
        for batch in plan_batches(lengths, batch_size, self.max_batch_tokens):
            token_ids, padding_mask = pad_batch(
                [token_lists[i] for i in batch], self.tokenizer.pad_token_id
            )
            vectors[batch] = (
                self.int8.embed(token_ids, padding_mask) if self.int8
                else self._embed(token_ids, padding_mask).numpy())
            stats.padded_tokens += token_ids.size
            stats.batches += 1
        return vectors

    def count_tokens(self, texts: list[str],
                     task: Task | str = Task.CLASSIFICATION,
                     titles: list[str | None] | None = None) -> list[int]:
        """Tokens each text takes with its prompt, before truncation."""
        prompts = format_prompts(list(texts), task, titles)
        return [len(t) + 2 for t in self.tokenizer(prompts)]

    def _tokenize(self, prompts):
        """Token ids with <bos>/<eos>, cut to `max_length`, and the number
        of texts cut."""
        bos, eos = self.tokenizer.start_token_id, self.tokenizer.end_token_id
        room = self.max_length - 2
        token_lists, truncated = [], 0
        for tokens in self.tokenizer(prompts):
            truncated += len(tokens) > room
            token_lists.append([bos] + tokens[:room] + [eos])
        return token_lists, truncated

    def _forward(self, token_ids, padding_mask):
        from embgemma_keras.backend import tf

        outputs = self.backbone(
            {"token_ids": token_ids, "padding_mask": padding_mask}
        )
        return tf.cast(outputs["pooled_output"], tf.float32)


def _head_kernels(backbone):
    """The two projection kernels, float32."""
    from embgemma_keras.backend import tf

    return [tf.cast(backbone.get_layer(name).kernel, tf.float32).numpy()
            for name in ("pooling_dense_1", "embedding_projection")]


def truncate_embeddings(vectors: np.ndarray, dim: int) -> np.ndarray:
    """Keeps the first `dim` values of each row and re-normalises them."""
    _check_dim(dim)
    vectors = np.asarray(vectors, dtype=np.float32)[:, :dim]
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def _check_dim(dim):
    if dim not in MATRYOSHKA_DIMS:
        raise ValueError(
            f"dim must be one of {MATRYOSHKA_DIMS} (the Matryoshka sizes "
            f"EmbeddingGemma was trained for), got {dim!r}."
        )


def _check_texts(texts):
    if isinstance(texts, (str, bytes)):
        raise TypeError("texts must be a list of strings, not one string.")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(
                f"texts[{i}] is {type(text).__name__}, not str."
            )
        if not text.strip():
            raise ValueError(
                f"texts[{i}] is empty or whitespace; an empty text has "
                "nothing to embed (its vector would be the prompt's alone)."
            )
