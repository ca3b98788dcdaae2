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
from collections.abc import Sequence
from typing import TYPE_CHECKING
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.ml.inference import base as inference_base
from apache_beam.ml.inference.base import ModelHandler
from apache_beam.ml.inference.base import PredictionResult
from apache_beam.options.pipeline_options import StandardOptions
from apache_beam.transforms import util as beam_util

from embgemma_keras.config import MATRYOSHKA_DIMS
from embgemma_keras.config import MAX_CONTEXT
from embgemma_keras.config import EmbedConfig
from embgemma_keras.presets import check_dtype
from embgemma_keras.tasks import Task
from embgemma_keras.tasks import format_prompts
from transforms.embedding import micro_batches

if TYPE_CHECKING:
    from embgemma_keras.embedding_gemma import EmbeddingGemma

METRICS_NAMESPACE = "EmbeddingGemma"

# Beam 2.77 drops the `resource` module when its optional ModelManager
# cannot import torch, then warns at each model load that memory "cannot
# be fetched" and reports none; torch is no dependency of this project.
if inference_base.resource is None:
    inference_base.resource = resource

# A stream's micro-batches hold the watermark at their earliest record.
micro_batches.install()

# Beam's stream batcher (BatchElements with max_batch_duration_secs) keys
# each element by its worker's UUID string, or by (that string, a length
# bucket), in DoFns that declare no output type; its stateful stage then
# gets a pickling key coder, and Beam warns in every stream job's log that
# the key coder may not be deterministic. The keys are a str and an int:
# declared, they get deterministic coders.
beam.typehints.with_output_types(tuple[str, Any])(beam_util.WithSharedKey)
beam.typehints.with_output_types(tuple[tuple[str, int], Any])(
    beam_util.WithLengthBucketKey)


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
        dtype: "float32", "bfloat16" or "int8".
        max_length: tokens per text; longer texts are truncated (counted in
            the `truncated_texts` metric).
        min_batch_size, max_batch_size, max_batch_duration_secs: how Beam
            groups elements before `run_inference`. A large Beam batch lets
            the encoder sort it by length and split it into forward passes
            of similar texts; `max_batch_duration_secs` bounds how long an
            element of a stream waits for its batch to fill, and then
            `min_batch_size` defaults to 128 (to `max_batch_size`
            otherwise). It is for streams: `EmbedRecords` drops it over
            bounded input (files), and so does `for_input`; a handler
            given to `RunInference` as it is passes it on to Beam.
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
                 **kwargs: Any):
        # Beam's own batching settings, but for the two that depend on
        # whether the input is a stream (see batch_elements_kwargs).
        super().__init__(
            max_batch_size=max_batch_size,
            large_model=large_model,
            model_copies=model_copies,
            **kwargs,
        )
        self._min_batch_size = min_batch_size
        self._max_batch_duration_secs = max_batch_duration_secs
        # Batched as a stream, with the deadline, unless `for_input` finds
        # the input bounded.
        self._stream = max_batch_duration_secs is not None
        # Checked here, at pipeline construction, not on a worker later.
        if isinstance(task, (str, Task)):
            self._tasks, self._single = (Task.parse(task),), True
        else:
            self._tasks = tuple(dict.fromkeys(Task.parse(t) for t in task))
            self._single = False
            if not self._tasks:
                raise ValueError("task must name at least one task.")
        if dim not in MATRYOSHKA_DIMS:
            raise ValueError(
                f"dim must be one of {MATRYOSHKA_DIMS}, got {dim!r}.")
        self._model_handle = model_handle
        self._dim = dim
        self._dtype = check_dtype(dtype)
        self._max_length = max_length
        self._texts = Metrics.counter(METRICS_NAMESPACE, "texts")
        self._tokens = Metrics.counter(METRICS_NAMESPACE, "tokens")
        self._truncated = Metrics.counter(METRICS_NAMESPACE, "truncated_texts")

    @classmethod
    def from_config(cls, config: EmbedConfig, model_handle: str | None = None,
                    **kwargs: Any) -> EmbeddingGemmaModelHandler:
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

    @property
    def model_handle(self) -> str | None:
        """The handle the workers load; None reads `$EMBGEMMA_MODEL`."""
        return self._model_handle

    @property
    def dtype(self) -> str:
        return self._dtype

    @property
    def streaming(self) -> bool:
        """Whether it batches a stream: micro-batches with a deadline."""
        return self._stream

    def load_model(self) -> EmbeddingGemma:
        from embgemma_keras.embedding_gemma import EmbeddingGemma

        model = EmbeddingGemma.from_preset(
            self._model_handle, dtype=self._dtype, max_length=self._max_length)
        # Trace the model's graph now, so that it counts as load time and
        # the first records of a stream do not wait for it.
        model.encode(["warm-up"], task=self._tasks[0])
        return model

    def run_inference(self, batch: Sequence[str], model: EmbeddingGemma,
                      inference_args: dict[str, Any] | None = None
                      ) -> list[PredictionResult]:
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
            pairs = zip(texts, vectors, strict=True)
            return [PredictionResult(t, v) for t, v in pairs]
        return [
            PredictionResult(text, {task: v[i] for task, v in by_task.items()})
            for i, text in enumerate(texts)
        ]

    def batch_elements_kwargs(self, *, encoder_apart: bool = False
                              ) -> dict[str, Any]:
        """How Beam's `BatchElements` batches this handler's examples.

        `max_batch_duration_secs` is passed on for a stream only (see
        `for_input`). It selects Beam's stateful batcher, whose timers
        serve no purpose over bounded input and there, on Beam's Python
        DirectRunner, flush the last batch after a later GroupByKey (a
        file sink's) has finished: the job fails with a bare
        AssertionError (apache/beam#28716).

        Args:
            encoder_apart: the batches reach the encoder in another stage
                (`EmbedRecords` shuffles a stream's batches to it), so
                Beam's batch-size estimator, which times the batcher's
                output, cannot time the encoder.
        """
        kwargs = dict(super().batch_elements_kwargs())
        max_batch_size = kwargs["max_batch_size"]
        stream = self._stream
        if self._min_batch_size is not None:
            kwargs["min_batch_size"] = self._min_batch_size
        elif stream and not encoder_apart:
            # The estimator times the encoder and grows the batches from
            # 128 while they pay; the deadline cuts them.
            kwargs["min_batch_size"] = min(128, max_batch_size)
        else:
            # The encoder sorts each batch by length, so bigger batches pad
            # less: full batches rather than the smaller ones Beam's
            # adaptive batcher chooses (docs/benchmarks.md); a stream's are
            # cut by the deadline.
            kwargs["min_batch_size"] = max_batch_size
        if stream:
            kwargs["max_batch_duration_secs"] = self._max_batch_duration_secs
        return kwargs

    def for_input(self, pcoll: beam.PCollection
                  ) -> EmbeddingGemmaModelHandler:
        """The same handler, its batching fitted to `pcoll`.

        Over bounded input (files, `Create`) in a batch pipeline there is
        no `max_batch_duration_secs`: Beam batches within bundles, in full
        batches. An unbounded input, or any input of a pipeline run with
        `--streaming`, keeps it. `EmbedRecords` calls this; call it when
        applying `RunInference` yourself:

        ```python
        vectors = texts | RunInference(handler.for_input(texts))
        ```
        """
        clone = copy.copy(self)
        clone._stream = (self._max_batch_duration_secs is not None
                         and _is_stream(pcoll))
        return clone

    def get_num_bytes(self, batch: Sequence[str]) -> int:
        return sum(len(text.encode("utf-8")) for text in batch)

    def get_metrics_namespace(self) -> str:
        return METRICS_NAMESPACE

    def with_tasks(self, tasks: Iterable[Task | str]
                   ) -> EmbeddingGemmaModelHandler:
        """The same model and settings, embedding with `tasks` instead."""
        clone = copy.copy(self)
        clone._tasks = tuple(dict.fromkeys(Task.parse(t) for t in tasks))
        clone._single = False
        return clone


def _is_stream(pcoll: beam.PCollection) -> bool:
    """Whether `pcoll` is unbounded or its pipeline runs as a stream."""
    return (not pcoll.is_bounded
            or pcoll.pipeline.options.view_as(StandardOptions).streaming)
