"""A RunInference `ModelHandler` for EmbeddingGemma.

Beam's TensorFlow handlers expect SavedModels; this one loads the keras-hub
model from any handle `EmbeddingGemma.from_preset` accepts. Only the handle
and settings are pickled with the pipeline; each worker process loads the
model once (RunInference keeps it in a process-wide shared handle) and its
threads share it. TensorFlow is imported when the model is loaded, not
when this module is: building a pipeline costs no TensorFlow.

Metrics, in the `EmbeddingGemma` namespace beside RunInference's own
(`num_inferences`, `inference_batch_latency_micro_secs`, and
`load_model_latency_milli_secs`, whose count is the number of model loads):
`texts` (texts run through the model, once per task), `tokens` and
`truncated_texts`.
"""

from __future__ import annotations

import copy
import resource
from collections.abc import Iterable

from apache_beam.metrics import Metrics
from apache_beam.ml.inference import base as inference_base
from apache_beam.ml.inference.base import ModelHandler
from apache_beam.ml.inference.base import PredictionResult

from embgemma_keras.config import MATRYOSHKA_DIMS
from embgemma_keras.config import MAX_CONTEXT
from embgemma_keras.config import EmbedConfig
from embgemma_keras.presets import check_dtype
from embgemma_keras.tasks import Task
from embgemma_keras.tasks import format_prompts

METRICS_NAMESPACE = "EmbeddingGemma"

# Beam 2.77 drops the `resource` module when its optional ModelManager
# cannot import torch, then warns at each model load that memory "cannot
# be fetched" and reports none; torch is no dependency of this project.
if inference_base.resource is None:
    inference_base.resource = resource


class EmbeddingGemmaModelHandler(ModelHandler):
    """Embeds texts with EmbeddingGemma inside `RunInference`.

    Example:

    ```python
    from apache_beam.ml.inference.base import RunInference

    handler = EmbeddingGemmaModelHandler("hf://google/embeddinggemma-300m",
                                         task="clustering", dim=256)
    vectors = texts | RunInference(handler)  # PredictionResult(text, vector)
    ```

    Examples are strings; `PredictionResult.inference` is a float32 vector
    of size `dim`. With several `tasks`, it is a dict `{task: vector}` and
    the model runs once per distinct task on the batch. Wrap it in
    `KeyedModelHandler` to carry keys (such as whole records) through.

    Args:
        model_handle: anything `EmbeddingGemma.from_preset` accepts; `None`
            reads `EMBGEMMA_MODEL` on the worker.
        task: a `Task`/name, or a sequence of them for a dict of vectors.
        dim: 768, 512, 256 or 128 (Matryoshka).
        dtype: "float32" or "bfloat16".
        max_length: tokens per text; longer texts are truncated (counted in
            the `truncated_texts` metric).
        min_batch_size, max_batch_size, max_batch_duration_secs: how Beam
            groups elements before `run_inference` (min defaults to 128). A
            large Beam batch lets the encoder sort it by length and split
            it into forward passes of similar texts;
            `max_batch_duration_secs` bounds how long a streaming element
            waits for its batch to fill.
        large_model, model_copies: load one (or `model_copies`) model per
            VM shared by all its processes instead of one per process.
    """

    def __init__(self, model_handle: str | None = None,
                 task: Task | str | Iterable[Task | str] = Task.CLASSIFICATION,
                 dim: int = EmbedConfig.dim, dtype: str = EmbedConfig.dtype,
                 max_length: int = MAX_CONTEXT, *,
                 min_batch_size: int | None = None,
                 max_batch_size: int = 512,
                 max_batch_duration_secs: float | None = None,
                 large_model: bool = False, model_copies: int | None = None,
                 **kwargs):
        if min_batch_size is None:
            # The encoder sorts each batch by length, so bigger batches pad
            # less: over bounded input, full 512-text batches (1,980 real
            # texts: 24.7 s of inference against 33.2 s in the ~140-text
            # batches Beam's adaptive batcher chose). A stream's batches
            # are cut by max_batch_duration_secs; start them at 128.
            min_batch_size = (max_batch_size if max_batch_duration_secs is None
                              else min(128, max_batch_size))
        super().__init__(
            min_batch_size=min_batch_size,
            max_batch_size=max_batch_size,
            max_batch_duration_secs=max_batch_duration_secs,
            large_model=large_model,
            model_copies=model_copies,
            **kwargs,
        )
        # Checked here, at pipeline construction, not on a worker later.
        if isinstance(task, (str, Task)):
            self._tasks, self._single = (Task.parse(task),), True
        else:
            self._tasks = tuple(dict.fromkeys(Task.parse(t) for t in task))
            self._single = False
            if not self._tasks:
                raise ValueError("task must name at least one task.")
        if dim not in MATRYOSHKA_DIMS:
            raise ValueError(f"dim must be one of {MATRYOSHKA_DIMS}, got {dim!r}.")
        self._model_handle = model_handle
        self._dim = dim
        self._dtype = check_dtype(dtype)
        self._max_length = max_length
        self._texts = Metrics.counter(METRICS_NAMESPACE, "texts")
        self._tokens = Metrics.counter(METRICS_NAMESPACE, "tokens")
        self._truncated = Metrics.counter(METRICS_NAMESPACE, "truncated_texts")

    @classmethod
    def from_config(cls, config: EmbedConfig, model_handle: str | None = None,
                    **kwargs) -> EmbeddingGemmaModelHandler:
        """A handler for `config` (`model_handle`: its checked handle)."""
        return cls(model_handle or config.model, dim=config.dim,
                   dtype=config.dtype, max_length=config.max_length,
                   model_copies=config.model_copies, **kwargs)

    @property
    def tasks(self) -> tuple[Task, ...]:
        return self._tasks

    @property
    def dim(self) -> int:
        return self._dim

    def load_model(self):
        from embgemma_keras.embedding_gemma import EmbeddingGemma

        model = EmbeddingGemma.from_preset(
            self._model_handle, dtype=self._dtype, max_length=self._max_length)
        # Trace the model's graph now, so that it counts as load time and
        # the first records of a stream do not wait for it.
        model.encode(["warm-up"], task=self._tasks[0])
        return model

    def run_inference(self, batch, model, inference_args=None):
        texts = list(batch)
        # Every task's prompts in one encode call: one length-sorted set of
        # forward passes instead of one per task, which matters for the
        # small batches of a quiet stream.
        prompted = [prompt for task in self._tasks
                    for prompt in format_prompts(texts, task)]
        vectors, stats = model.encode(prompted, task=Task.NONE,
                                      dim=self._dim, return_stats=True)
        self._texts.inc(stats.texts)
        self._tokens.inc(stats.tokens)
        self._truncated.inc(stats.truncated_texts)
        by_task = {task.value: vectors[i * len(texts):(i + 1) * len(texts)]
                   for i, task in enumerate(self._tasks)}
        if self._single:
            (vectors,) = by_task.values()
            return [PredictionResult(t, v) for t, v in zip(texts, vectors)]
        return [
            PredictionResult(text, {task: v[i] for task, v in by_task.items()})
            for i, text in enumerate(texts)
        ]

    def get_num_bytes(self, batch):
        return sum(len(text.encode("utf-8")) for text in batch)

    def get_metrics_namespace(self):
        return METRICS_NAMESPACE

    def with_tasks(self, tasks: Iterable[Task | str]
                   ) -> EmbeddingGemmaModelHandler:
        """The same model and settings, embedding with `tasks` instead."""
        clone = copy.copy(self)
        clone._tasks = tuple(dict.fromkeys(Task.parse(t) for t in tasks))
        clone._single = False
        return clone
