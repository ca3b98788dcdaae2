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

from apache_beam.options.pipeline_options import PipelineOptions

from embgemma_keras.config import HeadConfig
from embgemma_keras.config import add_flags
from embgemma_keras.config import from_flags
from pipelines.options import FileOptions
from pipelines.options import ModelOptions
from pipelines.options import checked_model
from pipelines.options import embed_config
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


def build(pipeline, job):
    """Wires the job; returns the PCollection holding its metrics."""
    config = from_flags(HeadConfig, job, zero_shot=tuple(job.zero_shot))
    embed = embed_config(job)
    handle, identity = checked_model(embed)
    return pipeline | TrainHead(
        job.train, job.output, EmbeddingGemmaModelHandler.from_config(
            embed, handle), config, identity, job.eval, job.label_column,
        job.text_column)


# The option groups the job takes, its own first.
OPTIONS = [TrainClassifierOptions, FileOptions, ModelOptions]


def main(argv=None):
    run(argv, OPTIONS, REQUIRED, build, __doc__)


if __name__ == "__main__":
    main()
