"""Train a label head (spam, sentiment, ...) on EmbeddingGemma embeddings.

    python -m pipelines.train_classifier --train FILE --model M --output DIR \\
        [--eval FILE] [--text_column text --label_column label] [--dim 768] \\
        [--baseline tfidf] [--zero_shot LABEL=DESCRIPTION ...] \\
        [--task sentence_similarity]

Reads a labelled TSV, CSV or JSONL file (local or gs://), embeds its texts
with the classification prompt (`--task sentence_similarity` for heads that
serve `stream_tag --prompts shared`), fits a class-balanced logistic
regression (regularisation chosen by inner cross-validation), reports
k-fold cross-validation and writes to DIR:

- `artifact.json` + `arrays.npz`: the head as plain data, with the model's
  identity, prompt, dim and labels (load with `embgemma_keras.load_head`);
- `metrics.json`: accuracy, macro F1, per-label precision/recall/F1/support,
  the confusion matrix and the CV spread; `eval` for --eval, `baseline` for
  --baseline tfidf (same folds);
- `dead_letters-*.jsonl`: every input row that could not be used, and why.

A file whose labels a head cannot learn from (a single class, a class with
one example) is refused before any text is embedded. With --zero_shot, no
head is fitted: the labels' descriptions become prototypes, and the
labelled file only measures how well they do.
"""

from __future__ import annotations

import argparse
import dataclasses

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from embgemma_keras.config import EmbedConfig
from embgemma_keras.config import HeadConfig
from embgemma_keras.config import add_flags
from embgemma_keras.config import from_flags
from pipelines.options import FileOptions
from pipelines.options import Files
from pipelines.options import JobConfig
from pipelines.options import ModelOptions
from pipelines.options import checked_model
from pipelines.options import run
from transforms.embedding.model_handler import EmbeddingGemmaModelHandler
from transforms.labels.train_head import TrainHead

REQUIRED = ("train", "output")


class TrainClassifierOptions(PipelineOptions):
    """train_classifier: files, prompt, folds, baseline (`HeadConfig`)."""

    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument("--train",
                            help="Labelled TSV/CSV/JSONL file (local or gs://; "
                                 "required).")
        parser.add_argument("--eval", default=None,
                            help="A separate labelled file to evaluate on.")
        parser.add_argument("--label_column", default="label",
                            help="TSV/CSV column (or JSON field) holding "
                                 "the label.")
        parser.add_argument("--zero_shot", action="append", default=[],
                            metavar="LABEL=DESCRIPTION",
                            help="Zero-shot label; repeat per label.")
        add_flags(parser, HeadConfig)


@dataclasses.dataclass(frozen=True)
class TrainClassifierConfig(JobConfig):
    """train_classifier's flags, parsed once.

    Args:
        train: the labelled file to train on.
        files: the output directory and the text column (`files.input` is
            not read: the job reads `train`).
        eval: a labelled file to evaluate on, or None.
        label_column: the column (or JSON field) holding the label.
        head: the prompt, folds, baseline and zero-shot labels.
        embed: the model.
    """

    train: str
    files: Files
    eval: str | None = None
    label_column: str = "label"
    head: HeadConfig = dataclasses.field(default_factory=HeadConfig)
    embed: EmbedConfig = dataclasses.field(default_factory=EmbedConfig)

    # The option groups the job takes, its own first.
    OPTIONS = (TrainClassifierOptions, FileOptions, ModelOptions)

    @classmethod
    def from_flags(cls, flags: argparse.Namespace) -> TrainClassifierConfig:
        if flags.input:
            raise ValueError("train_classifier reads --train, not --input")
        return cls(flags.train, Files.from_flags(flags), flags.eval,
                   flags.label_column,
                   from_flags(HeadConfig, flags,
                              zero_shot=tuple(flags.zero_shot)),
                   from_flags(EmbedConfig, flags))

    def inputs(self) -> dict[str, str]:
        return {flag: pattern for flag, pattern in (
            ("train", self.train), ("eval", self.eval)) if pattern}


OPTIONS = TrainClassifierConfig.OPTIONS


def build(pipeline: beam.Pipeline,
          config: TrainClassifierConfig) -> beam.PCollection:
    """Wires the job; returns the PCollection holding its metrics."""
    handle, identity = checked_model(config.embed)
    return pipeline | TrainHead(
        config.train, config.files.output,
        EmbeddingGemmaModelHandler.from_config(config.embed, handle),
        config.head, identity, config.eval, config.label_column,
        config.files.text_column)


def main(argv: list[str] | None = None) -> None:
    run(argv, REQUIRED, build, __doc__)


if __name__ == "__main__":
    main()
