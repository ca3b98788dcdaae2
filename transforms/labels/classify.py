"""`ClassifyLabels`: apply trained or zero-shot heads to embedded records."""

from __future__ import annotations

from collections.abc import Mapping

import apache_beam as beam
from apache_beam.metrics import Metrics

from embgemma_keras.labels.heads import UNKNOWN
from embgemma_keras.records.schema import DEAD_LETTERS
from embgemma_keras.records.schema import EMBEDDINGS
from embgemma_keras.records.schema import LABELS
from embgemma_keras.records.schema import Stage
from embgemma_keras.records.schema import Vector
from embgemma_keras.records.schema import dead_letter
from transforms.records.dead_letters import WithDeadLetters


class _ClassifyDoFn(beam.DoFn):
    def __init__(self, heads, vector):
        self._heads = heads
        self._vector = vector
        self._counters = {}

    def setup(self):
        for name, head in self._heads.items():
            for label in head.labels + [UNKNOWN]:
                self._counters[name, label] = Metrics.counter(
                    "ClassifyLabels", f"{name}.{label}")

    def process(self, record):
        vector = record.get(EMBEDDINGS, {}).get(self._vector)
        if vector is None:
            yield beam.pvalue.TaggedOutput(DEAD_LETTERS, dead_letter(
                Stage.CLASSIFY, f"record has no {self._vector!r} embedding",
                record))
            return
        labels = {}
        for name, head in self._heads.items():
            (labels[name],) = head.predict([vector])
            self._counters[name, labels[name]["label"]].inc()
        yield {**record, LABELS: labels}


class ClassifyLabels(beam.PTransform):
    """Adds `labels: {head_name: {"label", "score"}}` to embedded records.

    Example:

    ```python
    heads = {"spam": load_head("heads/spam", expect=identity, dim=768),
             "sentiment": load_head("heads/sentiment", expect=identity,
                                    dim=768)}
    tagged = embedded.output | ClassifyLabels(heads)
    ```

    Args:
        heads: name -> a head from `embgemma_keras.labels.heads` (trained
            `LinearHead`: score is a probability; `ZeroShotHead`: cosine,
            "unknown" below its `min_score`).
        vector: which of `record["embeddings"]` the heads read.

    Per-label counts are Beam counters (`ClassifyLabels/<head>.<label>`).
    """

    def __init__(self, heads: Mapping[str, object],
                 vector: Vector | str = Vector.CLASSIFICATION):
        super().__init__()
        if not heads:
            raise ValueError("ClassifyLabels needs at least one head.")
        dims = {head.dim for head in heads.values()}
        if len(dims) != 1:
            raise ValueError(f"heads disagree on the embedding dim: {dims}")
        self._fn = _ClassifyDoFn(dict(heads), getattr(vector, "value", vector))

    def expand(self, records) -> WithDeadLetters:
        results = records | "Classify" >> beam.ParDo(self._fn).with_outputs(
            DEAD_LETTERS, main="labelled")
        return WithDeadLetters(results.labelled, results[DEAD_LETTERS])
