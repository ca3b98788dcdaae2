"""Tag a stream (or a corpus): labels, cluster, near-duplicates.

Local, over files (the same graph as a batch tagging job):

    python -m pipelines.stream_tag --input GLOB --output DIR --model M \\
        --heads spam=HEAD_DIR,sentiment=HEAD_DIR [--centroids DIR] \\
        [--prompts all|shared]

writes `DIR/tagged-*.jsonl` (each record with `labels`, `cluster`, and
`duplicate_of`/`similarity`/`kind` when it near-duplicates a record seen
within --horizon_secs) and `DIR/dead_letters-*.jsonl`.

On Dataflow, streaming from Pub/Sub:

    python -m pipelines.stream_tag --runner DataflowRunner --streaming \\
        --input_subscription projects/P/subscriptions/S \\
        --output_topic projects/P/topics/T [--output_table P:D.T] \\
        --dead_letter_topic projects/P/topics/DL [--dead_letter_table ...] \\
        --model /opt/models/embeddinggemma-bf16 --heads spam=gs://.../spam ...

With a Pub/Sub source, `--output DIR` (local or gs://) writes
`DIR/tagged-<window start>-<window end>-pane<N>.jsonl` per
--output_window_secs of event time; a record up to --allowed_lateness_secs
late lands in a later pane's file, a later one only in the Pub/Sub and
BigQuery sinks.

`--prompts shared` embeds each record once (sentence-similarity prompt)
instead of three times; its heads and centroids must be made with that
prompt (`train_classifier --task sentence_similarity`, `fit_clusters
--cluster_task sentence_similarity`), which is checked before the job
starts, as are their model and dim. Record ids come from the record (or a
hash of its content), so Pub/Sub redelivery keeps them and a redelivered
record is never a duplicate of itself.

`--index DIR` (a dedup index `dedup_corpus --index` made) also flags
records that near-duplicate anything its runs kept, however old, naming
the run in `duplicate_of_run`; the job only reads the index, and refuses
one whose MinHash settings, model, dim or prompt differ from its own.
"""

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.options.pipeline_options import StandardOptions

from embgemma_keras.clusters.centroids import load_centroids
from embgemma_keras.config import MinHashConfig
from embgemma_keras.config import StreamConfig
from embgemma_keras.config import StreamDedupConfig
from embgemma_keras.config import add_flags
from embgemma_keras.config import from_flags
from embgemma_keras.labels.heads import load_head
from embgemma_keras.records.schema import Vector
from pipelines.options import FileOptions
from pipelines.options import IndexOptions
from pipelines.options import LexicalOptions
from pipelines.options import ModelOptions
from pipelines.options import SemanticOptions
from pipelines.options import checked_model
from pipelines.options import embed_config
from pipelines.options import run
from transforms.embedding.model_handler import EmbeddingGemmaModelHandler
from transforms.index.read_commit import ReadIndex
from transforms.index.read_commit import open_index_for_stream
from transforms.records.files import ReadRecords
from transforms.records.files import local_artifact
from transforms.records.parse import ParseRecords
from transforms.tagging import TaggedSinks
from transforms.tagging import TagRecords
from transforms.tagging import expected_task
from transforms.tagging import write_tagged

# No single flag is required: --input, --input_subscription or --input_topic.
REQUIRED = ()


class StreamTagOptions(PipelineOptions):
    """stream_tag: heads, centroids, Pub/Sub and BigQuery."""

    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument("--heads", default="",
                            help="NAME=DIR,... label heads from "
                                 "train_classifier.")
        parser.add_argument("--centroids", default=None,
                            help="Centroids directory from fit_clusters.")
        parser.add_argument("--input_subscription", default=None,
                            help="Pub/Sub subscription to read.")
        parser.add_argument("--input_topic", default=None,
                            help="Pub/Sub topic to read.")
        parser.add_argument("--output_topic", default=None,
                            help="Pub/Sub topic for tagged records.")
        parser.add_argument("--output_table", default=None,
                            help="BigQuery table PROJECT:DATASET.TABLE.")
        parser.add_argument("--dead_letter_topic", default=None,
                            help="Pub/Sub topic for dead letters.")
        parser.add_argument("--dead_letter_table", default=None,
                            help="BigQuery table for dead letters.")


class StreamOptions(PipelineOptions):
    """stream_tag: prompts, micro-batches, windowed files (`StreamConfig`)."""

    @classmethod
    def _add_argparse_args(cls, parser):
        add_flags(parser, StreamConfig)


class StreamDedupOptions(PipelineOptions):
    """stream_tag: near-duplicates in a horizon (`StreamDedupConfig`)."""

    @classmethod
    def _add_argparse_args(cls, parser):
        add_flags(parser, StreamDedupConfig)


def load_heads(spec, identity, dim, prompts):
    """`name=dir,...` -> {name: head}, each checked against the model."""
    heads = {}
    for item in filter(None, spec.split(",")):
        name, _, directory = item.partition("=")
        if not directory:
            raise ValueError(f"--heads takes NAME=DIR,..., got {item!r}")
        heads[name] = load_head(
            local_artifact(directory), expect=identity, dim=dim,
            task=expected_task(Vector.CLASSIFICATION, prompts))
    return heads


def build(pipeline, job):
    stream = from_flags(StreamConfig, job)
    embed = embed_config(job)
    handle, identity = checked_model(embed)
    heads = load_heads(job.heads, identity, embed.dim, stream.prompts)
    centroids = None
    if job.centroids:
        centroids = load_centroids(
            local_artifact(job.centroids), expect=identity, dim=embed.dim,
            task=expected_task(Vector.CLUSTERING, stream.prompts))
    streaming = bool(job.input_subscription or job.input_topic)
    if streaming:
        pipeline.options.view_as(StandardOptions).streaming = True
        parsed = (pipeline | "ReadPubSub" >> beam.io.ReadFromPubSub(
            subscription=job.input_subscription, topic=job.input_topic)
                  ) | "Parse" >> ParseRecords()
    elif job.input:
        parsed = pipeline | "Read" >> ReadRecords(job.input, job.text_column)
    else:
        raise ValueError("give --input, --input_subscription or "
                         "--input_topic")
    # Micro-batch deadlines only in a stream: over files, Beam's stateful
    # batcher would flush its last batch after the file sinks have closed.
    handler = EmbeddingGemmaModelHandler.from_config(
        embed, handle, max_batch_duration_secs=(
            stream.max_batch_duration_secs if streaming else None))
    dedup = from_flags(StreamDedupConfig, job,
                       lexical=from_flags(MinHashConfig, job),
                       semantic_threshold=job.semantic_threshold)
    against = None
    if job.index:
        index = open_index_for_stream(job.index, dedup.lexical, identity,
                                      embed.dim)
        against = pipeline | "ReadIndex" >> ReadIndex(index)
    tagged = parsed.output | "Tag" >> TagRecords(
        handler, heads, centroids, dedup, stream.prompts, against)
    dead = ((parsed.dead_letters, tagged.dead_letters)
            | "AllDeadLetters" >> beam.Flatten())
    write_tagged(TaggedSinks(
        job.output, job.output_topic, job.output_table,
        job.dead_letter_topic, job.dead_letter_table, streaming,
        stream.output_window_secs, stream.allowed_lateness_secs),
        tagged.output, dead)


# The option groups the job takes, its own first.
OPTIONS = [StreamTagOptions, StreamOptions, StreamDedupOptions,
           IndexOptions, FileOptions, LexicalOptions, SemanticOptions,
           ModelOptions]


def main(argv=None):
    run(argv, OPTIONS, REQUIRED, build, __doc__)

if __name__ == "__main__":
    main()
