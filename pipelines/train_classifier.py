"""Train a label head (spam, sentiment, ...) on EmbeddingGemma embeddings.

    python -m pipelines.train_classifier --train FILE --model M --output DIR \\
        [--eval FILE] [--text_column text --label_column label] [--dim 768] \\
        [--baseline tfidf] [--zero_shot LABEL=DESCRIPTION ...]

Reads a labelled TSV, CSV or JSONL file (local or gs://), embeds its texts
with the classification prompt, fits a class-balanced logistic regression
(regularisation chosen by inner cross-validation), reports k-fold
cross-validation and writes to DIR:

- `artifact.json` + `arrays.npz`: the head as plain data, with the model's
  identity, prompt, dim and labels (load with `embgemma_keras.load_head`);
- `metrics.json`: accuracy, macro F1, per-label precision/recall/F1/support,
  the confusion matrix and the CV spread; `eval` for --eval, `baseline` for
  --baseline tfidf (same folds);
- `dead_letters-*.jsonl`: every input row that could not be used, and why.

With --zero_shot, no head is fitted: the labels' descriptions become
prototypes, and the labelled file only measures how well they do.
"""


import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from embgemma_keras import LinearHead
from embgemma_keras import Task
from embgemma_keras import ZeroShotHead
from embgemma_keras import evaluation
from embgemma_keras.heads import check_labels
from pipelines.files import ReadRecords
from pipelines.files import save_artifact_to
from pipelines.files import write_jsonl
from pipelines.jobs import model_handler
from pipelines.jobs import model_identity
from pipelines.jobs import run
from transforms import DEAD_LETTERS
from transforms import EMBEDDINGS
from transforms import EmbedRecords
from transforms import dead_letter

STAGE = "classification"


# Flags the job cannot run without (checked by jobs.run).
REQUIRED = ("train", "output")


class TrainClassifierOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
        # Not required=True: Beam registers every options class globally,
        # so a required flag would break other pipelines in the process.
        parser.add_argument("--train",
                            help="Labelled TSV/CSV/JSONL file (local or gs://; "
                                 "required).")
        parser.add_argument("--eval", default=None,
                            help="A separate labelled file to evaluate on.")
        parser.add_argument("--label_column", default="label",
                            help="TSV/CSV column (or JSON field) holding "
                                 "the label.")
        parser.add_argument("--task", default=STAGE,
                            choices=[t.value for t in Task],
                            help="Prompt to embed with (default: "
                                 "classification).")
        parser.add_argument("--folds", type=int, default=5,
                            help="Cross-validation folds.")
        parser.add_argument("--baseline", choices=["none", "tfidf"],
                            default="none",
                            help="Also cross-validate TF-IDF + logistic "
                                 "regression on the same folds.")
        parser.add_argument("--zero_shot", action="append", default=[],
                            metavar="LABEL=DESCRIPTION",
                            help="Zero-shot label; repeat per label.")
        parser.add_argument("--min_score", type=float, default=0.0,
                            help="Zero-shot: below this cosine, 'unknown'.")


class _CheckLabel(beam.DoFn):
    """Keeps records with a usable label; the rest become dead letters."""

    def __init__(self, label_column):
        self._column = label_column

    def process(self, record):
        label = record.get(self._column)
        if isinstance(label, bool) or not isinstance(label, (str, int)) or (
                isinstance(label, str) and not label.strip()):
            yield beam.pvalue.TaggedOutput(DEAD_LETTERS, dead_letter(
                "label", f"label column {self._column!r} is missing, empty "
                "or not a string/integer", record))
            return
        yield record


def _labelled_vectors(pipeline, path, options, handler, name):
    """Reads, labels and embeds one file; returns (examples, dead letters)."""
    read = pipeline | f"Read{name}" >> ReadRecords(
        path, options.text_column, required_columns=[options.label_column])
    labelled = read.output | f"Label{name}" >> beam.ParDo(
        _CheckLabel(options.label_column)).with_outputs(DEAD_LETTERS,
                                                        main="ok")
    embedded = labelled.ok | f"Embed{name}" >> EmbedRecords(
        handler, prompts={STAGE: options.task})
    examples = (embedded.output
                | f"Example{name}" >> beam.Map(lambda r, column: (
                    str(r[column]), r["text"], r[EMBEDDINGS][STAGE]),
                    options.label_column)
                | f"Collect{name}" >> beam.combiners.ToList())
    dead = (read.dead_letters, labelled[DEAD_LETTERS], embedded.dead_letters)
    return examples, dead


def train_and_evaluate(train, evaluate, options, identity):
    """Fits (or builds) the head and computes every metric; returns both."""
    labels, texts, vectors = _columns(train)
    zero_shot = dict(item.split("=", 1) for item in options.zero_shot)
    if zero_shot:
        head = ZeroShotHead(list(zero_shot), evaluate["prototypes"],
                            options.task, options.dim, identity,
                            descriptions=list(zero_shot.values()),
                            min_score=options.min_score)
        metrics = _evaluate(head, labels, vectors)
    else:
        check_labels(labels)

        def fit_predict(x, y, test):
            head = LinearHead.fit(x, y, task=options.task,
                                  model_identity=identity)
            return [p["label"] for p in head.predict(test)]

        metrics = evaluation.cross_validate(fit_predict, vectors, labels,
                                            options.folds)
        head = LinearHead.fit(vectors, labels, task=options.task,
                              model_identity=identity)
        metrics["regularisation_c"] = head.c
        if options.baseline == "tfidf":
            metrics["baseline"] = {"tfidf": evaluation.cross_validate(
                evaluation.tfidf_fit_predict, texts, labels, options.folds)}
    metrics["train_examples"] = len(labels)
    if evaluate.get("eval") is not None:
        eval_labels, _, eval_vectors = _columns(evaluate["eval"])
        metrics["eval"] = _evaluate(head, eval_labels, eval_vectors)
    return head, metrics


def _columns(examples):
    if not examples:
        raise ValueError("no usable labelled example; see the dead letters")
    labels, texts, vectors = zip(*examples)
    return np.asarray(labels), list(texts), np.stack(vectors)


def _evaluate(head, labels, vectors):
    predicted = [p["label"] for p in head.predict(vectors)]
    names = sorted(set(labels.tolist()) | set(predicted))
    result = evaluation.classification_metrics(labels.tolist(), predicted,
                                               names)
    result["examples"] = len(labels)
    return result


def _write_outputs(train, evaluate, options, identity):
    head, metrics = train_and_evaluate(train, evaluate, options, identity)
    save_artifact_to(options.output, head, metrics)
    report = evaluation.format_table(metrics, "cross-validation" if
                                     "cv" in metrics else "train file")
    for key, title in (("eval", "--eval file"),):
        if key in metrics:
            report += "\n" + evaluation.format_table(metrics[key], title)
    if "baseline" in metrics:
        report += "\n" + evaluation.format_table(
            metrics["baseline"]["tfidf"], "TF-IDF baseline (same folds)")
    print(report, flush=True)
    return metrics


def build(pipeline, options):
    """Wires the job; returns the PCollection holding its metrics."""
    for item in options.zero_shot:
        if "=" not in item:
            raise ValueError(
                f"--zero_shot takes LABEL=DESCRIPTION, got {item!r}")
    handle, identity = model_identity(options.model)
    handler = model_handler(handle, options)
    train, dead = _labelled_vectors(pipeline, options.train, options,
                                    handler, "Train")
    side = {}
    if options.eval:
        side["eval"], eval_dead = _labelled_vectors(
            pipeline, options.eval, options, handler, "Eval")
        dead += eval_dead
    if options.zero_shot:
        descriptions = [{"id": f"label-{i}", "text": item.split("=", 1)[1]}
                        for i, item in enumerate(options.zero_shot)]
        side["prototypes"] = (
            pipeline | "Labels" >> beam.Create(descriptions)
            | "EmbedLabels" >> EmbedRecords(
                handler, prompts={STAGE: options.task})).output | beam.Map(
            lambda r: (r["id"], r[EMBEDDINGS][STAGE])) | (
            "Prototypes" >> beam.combiners.ToList()) | beam.Map(
            lambda pairs: np.stack([v for _, v in sorted(
                pairs, key=lambda p: int(p[0].split("-")[1]))]))
    write_jsonl(dead | "AllDeadLetters" >> beam.Flatten(),
                FileSystems.join(options.output, "dead_letters"),
                "DeadLetters")
    return train | "Fit" >> beam.Map(
        lambda examples, **side_inputs: _write_outputs(
            examples, side_inputs, options, identity),
        **{key: beam.pvalue.AsSingleton(value) for key, value in side.items()})


def main(argv=None):
    run(argv, TrainClassifierOptions, REQUIRED, build, __doc__)


if __name__ == "__main__":
    main()
