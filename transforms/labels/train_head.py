"""Graphs that make artifacts: label heads (`TrainHead`), centroids
(`FitCentroids`). Each reads a file, embeds it, gathers the vectors on one
worker, fits with `embgemma_keras.labels.fitting`, and writes the artifact,
`metrics.json` and `dead_letters-*` to its output (local or gs://).

```python
metrics = pipeline | TrainHead("sms.tsv", "heads/spam", handler,
                               HeadConfig(baseline="tfidf"), identity)
```
"""

from __future__ import annotations

from collections import Counter

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems

from embgemma_keras.artifacts import ModelIdentity
from embgemma_keras.config import HeadConfig
from embgemma_keras.labels.fitting import metrics_table
from embgemma_keras.labels.fitting import train_and_evaluate
from embgemma_keras.labels.fitting import zero_shot_labels
from embgemma_keras.labels.heads import check_labels
from embgemma_keras.progress import say
from embgemma_keras.records.schema import DEAD_LETTERS
from embgemma_keras.records.schema import EMBEDDINGS
from embgemma_keras.records.schema import ID
from embgemma_keras.records.schema import TEXT
from embgemma_keras.records.schema import Stage
from embgemma_keras.records.schema import dead_letter
from transforms.embedding.embed import EmbedRecords
from transforms.embedding.model_handler import EmbeddingGemmaModelHandler
from transforms.records.dead_letters import WithDeadLetters
from transforms.records.files import ReadRecords
from transforms.records.files import read_records
from transforms.records.files import record_parser
from transforms.records.files import save_artifact_to
from transforms.records.files import write_jsonl

_VECTOR = "vector"  # the one embedding these graphs make


def usable_label(record: dict, column: str) -> bool:
    """A label a head can learn: a non-empty string or an integer."""
    label = record.get(column)
    return not isinstance(label, bool) and (
        isinstance(label, int) or isinstance(label, str) and bool(
            label.strip()))


def check_label_file(pattern: str, label_column: str,
                     text_column: str = TEXT) -> Counter:
    """Counts the usable labels of a training file and refuses a file a
    head cannot learn from (one class, a class of one example), before any
    text is embedded. Returns the counts."""
    parser = record_parser(pattern, text_column, [label_column])
    counts = Counter(str(record[label_column])
                     for record in read_records(pattern, parser)
                     if usable_label(record, label_column))
    check_labels(list(counts.elements()))
    return counts


class _CheckLabel(beam.DoFn):
    """Keeps records with a usable label; the rest become dead letters."""

    def __init__(self, label_column):
        self._column = label_column

    def process(self, record):
        if usable_label(record, self._column):
            yield record
            return
        yield beam.pvalue.TaggedOutput(DEAD_LETTERS, dead_letter(
            Stage.LABEL, f"label column {self._column!r} is missing, empty "
            "or not a string/integer", record))


class EmbedLabelled(beam.PTransform):
    """A labelled file -> one list of `(label, text, vector)`, dead letters."""

    def __init__(self, pattern: str, label_column: str, text_column: str,
                 handler: EmbeddingGemmaModelHandler, task: str):
        super().__init__()
        self._read = ReadRecords(pattern, text_column,
                                 required_columns=[label_column])
        self._column, self._handler, self._task = label_column, handler, task

    def expand(self, pipeline) -> WithDeadLetters:
        column = self._column
        read = pipeline | "Read" >> self._read
        labelled = read.output | "Label" >> beam.ParDo(
            _CheckLabel(column)).with_outputs(DEAD_LETTERS, main="ok")
        embedded = labelled.ok | "Embed" >> EmbedRecords(
            self._handler, {_VECTOR: self._task})
        examples = (embedded.output
                    | "Example" >> beam.Map(lambda r: (
                        str(r[column]), r[TEXT], r[EMBEDDINGS][_VECTOR]))
                    | "Collect" >> beam.combiners.ToList())
        dead = ((read.dead_letters, labelled[DEAD_LETTERS],
                 embedded.dead_letters) | "DeadLetters" >> beam.Flatten())
        return WithDeadLetters(examples, dead)


class TrainHead(beam.PTransform):
    """Trains (or, zero-shot, builds) a label head and writes it.

    Applied to the pipeline; returns the PCollection of its metrics.
    """

    def __init__(self, train: str, output: str,
                 handler: EmbeddingGemmaModelHandler, config: HeadConfig,
                 identity: ModelIdentity, eval: str | None = None,
                 label_column: str = "label", text_column: str = TEXT):
        super().__init__()
        self._zero_shot = zero_shot_labels(config)
        if not self._zero_shot:
            check_label_file(train, label_column, text_column)
        self._files = {"Train": train, "Eval": eval}
        self._output, self._handler = output, handler
        self._config, self._identity = config, identity
        self._columns = (label_column, text_column)

    def expand(self, pipeline):
        sides, dead = {}, []
        for name, pattern in self._files.items():
            if pattern:
                sides[name], refused = pipeline | name >> EmbedLabelled(
                    pattern, *self._columns, self._handler,
                    self._config.task)
                dead.append(refused)
        if self._zero_shot:
            sides["Prototypes"] = self._prototypes(pipeline)
        write_jsonl(dead | "AllDeadLetters" >> beam.Flatten(),
                    FileSystems.join(self._output, "dead_letters"),
                    "DeadLetters", count_as=DEAD_LETTERS)
        train = sides.pop("Train")
        return train | "Fit" >> beam.Map(
            _fit_and_write_head, self._output, self._config,
            self._handler.dim, self._identity,
            **{name.lower(): beam.pvalue.AsSingleton(pcoll)
               for name, pcoll in sides.items()})

    def _prototypes(self, pipeline):
        descriptions = [{ID: f"{i:06d}", TEXT: text} for i, text in
                        enumerate(self._zero_shot.values())]
        return (
            pipeline | "Labels" >> beam.Create(descriptions)
            | "EmbedLabels" >> EmbedRecords(
                self._handler, {_VECTOR: self._config.task})).output | (
            "Ordered" >> beam.Map(lambda r: (r[ID], r[EMBEDDINGS][_VECTOR]))
        ) | "Prototypes" >> beam.combiners.ToList() | "Stack" >> beam.Map(
            lambda pairs: np.stack([v for _, v in sorted(pairs)]))



def _fit_and_write_head(train, output, config, dim, identity, eval=None,
                        prototypes=None):
    head, metrics = train_and_evaluate(train, config, dim, identity,
                                       evaluate=eval, prototypes=prototypes)
    save_artifact_to(output, head, metrics)
    say(metrics_table(metrics))
    return metrics
