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

Tagged records and dead letters each need a sink (`--output` serves
both): a job whose records go to Pub/Sub or BigQuery but whose dead
letters go nowhere is refused before it starts, naming the flag to add.

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

`--as_stream` reads the `--input` files as an unbounded stream instead,
on any runner: the path a Pub/Sub job takes (keyed state, timers, the
watermark, micro-batch deadlines, windowed files), at each record's event
time (`--timestamp_field`, RFC 3339 or epoch seconds; else a line's order,
a millisecond a line), at `--replay_rate` records a second if given; the
job ends once every line is out. For load tests of the stream's path.
On Flink with --checkpointing_interval, the sources shut down after
--shutdown_sources_after_idle_ms (at once if not given), so the job ends;
the lines still to come are then sent without pauses
(docs/reliability.md).

`--index DIR` (a dedup index `dedup_corpus --index` made) also flags
records that near-duplicate anything its runs kept, however old, naming
the run in `duplicate_of_run`; the job only reads the index, and refuses
one whose MinHash settings, model, dim or prompt differ from its own.
A directory index is read whole at start; with `--index postgresql://...`
each record is looked up as it comes, so start-up does not grow with the
index and runs committed while the stream runs are seen within seconds.
"""

from __future__ import annotations

import argparse
import dataclasses

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.options.pipeline_options import StandardOptions
from apache_beam.runners.direct.direct_runner import BundleBasedDirectRunner
from apache_beam.runners.direct.direct_runner import DirectRunner
from apache_beam.runners.portability.flink_runner import FlinkRunner

from embgemma_keras.artifacts import ModelIdentity
from embgemma_keras.clusters.centroids import load_centroids
from embgemma_keras.config import EmbedConfig
from embgemma_keras.config import MinHashConfig
from embgemma_keras.config import ReplayConfig
from embgemma_keras.config import StreamConfig
from embgemma_keras.config import StreamDedupConfig
from embgemma_keras.config import add_flags
from embgemma_keras.config import from_flags
from embgemma_keras.index.database import DatabaseIndex
from embgemma_keras.labels.heads import load_head
from embgemma_keras.records.schema import Vector
from pipelines.options import FileOptions
from pipelines.options import Files
from pipelines.options import FlinkJavaOptions
from pipelines.options import IndexOptions
from pipelines.options import JobConfig
from pipelines.options import LexicalOptions
from pipelines.options import ModelOptions
from pipelines.options import SemanticOptions
from pipelines.options import checked_model
from pipelines.options import run
from transforms.embedding.model_handler import EmbeddingGemmaModelHandler
from transforms.index.read_commit import ReadIndex
from transforms.index.read_commit import open_index_for_stream
from transforms.records.files import ReadRecords
from transforms.records.files import local_artifact
from transforms.records.parse import ParseRecords
from transforms.records.replay import ReadRecordsAsStream
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


class ReplayOptions(PipelineOptions):
    """stream_tag: files read as a stream (`ReplayConfig`)."""

    @classmethod
    def _add_argparse_args(cls, parser):
        add_flags(parser, ReplayConfig)


class StreamDedupOptions(PipelineOptions):
    """stream_tag: near-duplicates in a horizon (`StreamDedupConfig`)."""

    @classmethod
    def _add_argparse_args(cls, parser):
        # --semantic_threshold is SemanticOptions', shared with dedup_corpus.
        add_flags(parser, StreamDedupConfig, skip=("semantic_threshold",))


def parse_heads(spec: str) -> tuple[tuple[str, str], ...]:
    """`NAME=DIR,...` -> `((name, dir), ...)`; refuses a malformed item or
    a name given twice.

    >>> parse_heads("spam=gs://b/spam,mood=heads/mood")
    (('spam', 'gs://b/spam'), ('mood', 'heads/mood'))
    """
    heads = []
    for item in filter(None, spec.split(",")):
        name, _, directory = item.partition("=")
        if not name or not directory:
            raise ValueError(f"--heads takes NAME=DIR,..., got {item!r}")
        if name in dict(heads):
            raise ValueError(f"--heads names {name!r} twice")
        heads.append((name, directory))
    return tuple(heads)


@dataclasses.dataclass(frozen=True)
class StreamTagConfig(JobConfig):
    """stream_tag's flags, parsed once.

    Args:
        files: `files.input`, records to tag from files (or a Pub/Sub
            `input_subscription` or `input_topic`: one source), and the
            text column.
        sinks: where tagged records and dead letters go.
        heads: `(name, directory)` of each label head.
        centroids: the centroids' directory, or None.
        index: a dedup index to flag duplicates of, or None.
        stream: prompts, micro-batches and windowed files.
        replay: the `--input` files read as a stream, or not.
        dedup: near-duplicates within the horizon.
        embed: the model.
    """

    files: Files
    sinks: TaggedSinks
    input_subscription: str | None = None
    input_topic: str | None = None
    heads: tuple[tuple[str, str], ...] = ()
    centroids: str | None = None
    index: str | None = None
    stream: StreamConfig = dataclasses.field(default_factory=StreamConfig)
    replay: ReplayConfig = dataclasses.field(default_factory=ReplayConfig)
    dedup: StreamDedupConfig = dataclasses.field(
        default_factory=StreamDedupConfig)
    embed: EmbedConfig = dataclasses.field(default_factory=EmbedConfig)

    # The option groups the job takes, its own first.
    OPTIONS = (StreamTagOptions, StreamOptions, ReplayOptions,
               StreamDedupOptions, IndexOptions, FileOptions, LexicalOptions,
               SemanticOptions, ModelOptions)

    def __post_init__(self) -> None:
        sources = [f"--{name}" for name, value in (
            ("input", self.files.input),
            ("input_subscription", self.input_subscription),
            ("input_topic", self.input_topic)) if value]
        if len(sources) != 1:
            raise ValueError(
                "give one of --input, --input_subscription or --input_topic"
                + (f", not {' and '.join(sources)}" if sources else ""))
        if self.replay.as_stream and not self.files.input:
            raise ValueError("--as_stream reads the --input files; give "
                             "--input")

    @property
    def streaming(self) -> bool:
        """Whether the records come as a stream: from Pub/Sub, or from
        files read as one (`--as_stream`)."""
        return not self.files.input or self.replay.as_stream

    @classmethod
    def from_flags(cls, flags: argparse.Namespace) -> StreamTagConfig:
        stream = from_flags(StreamConfig, flags)
        replay = from_flags(ReplayConfig, flags)
        return cls(
            Files.from_flags(flags),
            TaggedSinks(flags.output, flags.output_topic, flags.output_table,
                        flags.dead_letter_topic, flags.dead_letter_table,
                        streaming=not flags.input or replay.as_stream,
                        window_secs=stream.output_window_secs,
                        allowed_lateness_secs=stream.allowed_lateness_secs),
            flags.input_subscription, flags.input_topic,
            parse_heads(flags.heads), flags.centroids, flags.index, stream,
            replay, from_flags(StreamDedupConfig, flags,
                       lexical=from_flags(MinHashConfig, flags)),
            from_flags(EmbedConfig, flags))


OPTIONS = StreamTagConfig.OPTIONS


def load_heads(heads: tuple[tuple[str, str], ...], identity: ModelIdentity,
               dim: int, prompts: str) -> dict:
    """`(name, dir), ...` -> {name: head}, each checked against the model."""
    return {name: load_head(
        local_artifact(directory), expect=identity, dim=dim,
        task=expected_task(Vector.CLASSIFICATION, prompts))
        for name, directory in heads}


def end_a_checkpointed_replay(pipeline: beam.Pipeline,
                               config: StreamTagConfig) -> None:
    """Files replayed on Flink with checkpointing on end their job: Flink
    keeps a checkpointed stream's sources up to go on checkpointing, so
    unless --shutdown_sources_after_idle_ms says how long, they shut down
    at once, as without checkpointing. Once they are down, the lines still
    to replay are sent without --replay_rate's pauses."""
    flink = pipeline.options.view_as(FlinkJavaOptions)
    if (config.replay.as_stream and isinstance(pipeline.runner, FlinkRunner)
            and flink.checkpointing_interval
            and flink.shutdown_sources_after_idle_ms is None):
        flink.shutdown_sources_after_idle_ms = 0


def build(pipeline: beam.Pipeline, config: StreamTagConfig) -> None:
    """Wires the job: tagged records and dead letters to their sinks."""
    if config.replay.as_stream and isinstance(pipeline.runner, (
            DirectRunner, BundleBasedDirectRunner)):
        # The micro-batcher's processing-time timers keep the DirectRunner
        # off Prism, and its streaming runner fails on a splittable DoFn
        # (Beam 2.77: its SDF override adds a GroupByKey that its streaming
        # overrides then leave in place).
        raise ValueError("--as_stream needs a runner that reads a "
                         "splittable DoFn as a stream: add --runner "
                         "PrismRunner (or FlinkRunner, DataflowRunner)")
    end_a_checkpointed_replay(pipeline, config)
    embed, stream = config.embed, config.stream
    handle, identity = checked_model(embed)
    heads = load_heads(config.heads, identity, embed.dim, stream.prompts)
    centroids = None
    if config.centroids:
        centroids = load_centroids(
            local_artifact(config.centroids), expect=identity, dim=embed.dim,
            task=expected_task(Vector.CLUSTERING, stream.prompts))
    if config.streaming:
        pipeline.options.view_as(StandardOptions).streaming = True
    files, replay = config.files, config.replay
    if replay.as_stream:
        parsed = pipeline | "ReadAsStream" >> ReadRecordsAsStream(
            files.input, files.text_column, replay.timestamp_field,
            replay.replay_rate)
    elif config.streaming:
        parsed = (pipeline | "ReadPubSub" >> beam.io.ReadFromPubSub(
            subscription=config.input_subscription, topic=config.input_topic)
                  ) | "Parse" >> ParseRecords()
    else:
        parsed = pipeline | "Read" >> ReadRecords(files.input,
                                                  files.text_column)
    # Micro-batch deadlines only in a stream: over files, Beam's stateful
    # batcher would flush its last batch after the file sinks have closed.
    handler = EmbeddingGemmaModelHandler.from_config(
        embed, handle, max_batch_duration_secs=(
            stream.max_batch_duration_secs if config.streaming else None))
    against = look_up_in = None
    if config.index:
        index = open_index_for_stream(config.index, config.dedup.lexical,
                                      identity, embed.dim)
        if isinstance(index, DatabaseIndex):
            look_up_in = index
        else:
            against = pipeline | "ReadIndex" >> ReadIndex(index)
    tagged = parsed.output | "Tag" >> TagRecords(
        handler, heads, centroids, config.dedup, stream.prompts, against,
        look_up_in)
    dead = ((parsed.dead_letters, tagged.dead_letters)
            | "AllDeadLetters" >> beam.Flatten())
    write_tagged(config.sinks, tagged.output, dead)


def main(argv: list[str] | None = None) -> None:
    run(argv, REQUIRED, build, __doc__)


if __name__ == "__main__":
    main()
