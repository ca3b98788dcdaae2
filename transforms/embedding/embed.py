"""`EmbedRecords`: add EmbeddingGemma vectors to records, one per stage.

Downstream stages each read their own embedding: classification heads the
classification prompt's, k-means the clustering prompt's, near-duplicate
detection the sentence-similarity prompt's. Stages that ask for the same
prompt share one vector and one forward pass: `prompts_for("shared", ...)`
maps every stage to the sentence-similarity prompt for a third of the cost.
"""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Mapping

import apache_beam as beam
from apache_beam.ml.inference.base import KeyedModelHandler
from apache_beam.ml.inference.base import RunInference
from apache_beam.runners.direct.direct_runner import BundleBasedDirectRunner
from apache_beam.runners.direct.direct_runner import DirectRunner
from apache_beam.transforms.window import TimestampedValue

from embgemma_keras.progress import QUEUED_FOR_EMBEDDING
from embgemma_keras.progress import RECORDS_EMBEDDED
from embgemma_keras.records.schema import EMBEDDINGS
from embgemma_keras.records.schema import TEXT
from embgemma_keras.records.schema import Stage
from embgemma_keras.records.schema import Vector
from embgemma_keras.records.schema import dead_letter
from embgemma_keras.tasks import Task
from transforms.counters import count
from transforms.embedding.model_handler import EmbeddingGemmaModelHandler
from transforms.records.dead_letters import WithDeadLetters

# Each stage's own prompt: the model card's recommendation.
DEFAULT_PROMPTS = {
    Vector.CLASSIFICATION: Task.CLASSIFICATION,
    Vector.CLUSTERING: Task.CLUSTERING,
    Vector.SIMILARITY: Task.SENTENCE_SIMILARITY,
}
# One forward pass for every stage, with the sentence-similarity prompt.
SHARED_TASK = Task.SENTENCE_SIMILARITY


def prompts_for(mode: str, vectors: Iterable[Vector | str]
                ) -> dict[Vector, Task]:
    """The prompt of each wanted vector: 'all' (own prompts) or 'shared'.

    >>> prompts = prompts_for("shared", [Vector.CLASSIFICATION, "clustering"])
    >>> set(prompts.values())
    {<Task.SENTENCE_SIMILARITY: 'sentence_similarity'>}
    """
    if mode not in ("all", "shared"):
        raise ValueError(f"prompts must be 'all' or 'shared', got {mode!r}")
    return {Vector(v): SHARED_TASK if mode == "shared"
            else DEFAULT_PROMPTS[Vector(v)] for v in vectors}


class EmbedRecords(beam.PTransform):
    """Adds `record["embeddings"][stage]`, a float32 numpy vector, per stage.

    Example:

    ```python
    handler = EmbeddingGemmaModelHandler(model_handle, dim=256)
    embedded = records | EmbedRecords(handler)
    embedded.output        # records with embeddings["classification"], ...
    embedded.dead_letters  # {"stage": "embed", "error": ..., "raw": record}
    ```

    Args:
        handler: an `EmbeddingGemmaModelHandler`; its model, dim, dtype and
            batching are used, its task is replaced by those of `prompts`.
        prompts: stage name -> `Task` (or task name). Defaults to
            classification, clustering and sentence-similarity stages.

    A batch the model fails on (an out-of-memory error, say) becomes one
    dead letter per record in it; the pipeline goes on. Each record leaves
    with the event timestamp it came in with, whenever its batch is flushed
    (Beam's streaming batcher stamps a batch flushed at the end of a window
    with the window's end, which would push records into later windows).
    """

    def __init__(self, handler: EmbeddingGemmaModelHandler,
                 prompts: Mapping[Vector | str, Task | str] | None = None):
        super().__init__()
        prompts = DEFAULT_PROMPTS if prompts is None else prompts
        if not prompts:
            raise ValueError("prompts must name at least one stage.")
        self._prompts = {getattr(stage, "value", stage): Task.parse(t)
                         for stage, t in prompts.items()}
        self._handler = handler.with_tasks(self._prompts.values())

    def expand(self, records):
        fitted = self._handler.for_input(records)
        handler = KeyedModelHandler(fitted)
        queued = records | "KeyByRecord" >> beam.Map(_queued)
        if fitted.streaming and _breaks_fusion_safely(records.pipeline):
            # A stream's micro-batches are embedded in a stage of their own.
            # Fused with the batcher, each embedding would keep its one key
            # busy past the next batch's deadline, and Prism retries a due
            # timer of a busy key at once, over and over: a core's worth
            # of CPU taken from the encoder (docs/streaming.md). Beam's
            # batch-size estimator would time only the hand-over: the
            # batches start full, cut by the deadline.
            queued = (queued
                      | "MicroBatches" >> beam.BatchElements(
                          **fitted.batch_elements_kwargs(encoder_apart=True))
                      | "ToTheEncoder" >> beam.Reshuffle())
            handler = handler.with_no_batching()
        embedded, failed = (
            queued
            | "RunInference" >> RunInference(handler).with_exception_handling()
        )
        return WithDeadLetters(
            embedded | "Attach" >> beam.MapTuple(self._attach),
            failed.failed_inferences | "DeadLetters" >> beam.FlatMapTuple(
                lambda batch, error: [
                    TimestampedValue(
                        dead_letter(Stage.EMBED, _describe(error), record), ts)
                    for (record, ts), _ in batch]),
        )

    def _attach(self, key, prediction):
        count(RECORDS_EMBEDDED)
        record, timestamp = key
        vectors = prediction.inference
        record = dict(record)
        record[EMBEDDINGS] = {
            stage: vectors[task.value] for stage, task in self._prompts.items()
        }
        return TimestampedValue(record, timestamp)


def _breaks_fusion_safely(pipeline: beam.Pipeline) -> bool:
    """Whether a `Reshuffle` may follow the micro-batcher: not on Beam's
    Python DirectRunner, whose `GroupByKey` can finish before the last
    batch, flushed by a timer at the end of the input, reaches it
    (apache/beam#28716)."""
    return not isinstance(pipeline.runner,
                          (DirectRunner, BundleBasedDirectRunner))


def _queued(record, timestamp=beam.DoFn.TimestampParam):
    """`((record, its timestamp), text)`: the key carries the record
    through RunInference, which re-stamps batches."""
    count(QUEUED_FOR_EMBEDDING)
    return (record, timestamp), record[TEXT]


def _describe(error):
    """RunInference reports (type, repr, traceback); keep the repr."""
    if isinstance(error, tuple) and len(error) >= 2:
        return str(error[1])
    return repr(error)
