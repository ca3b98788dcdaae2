"""Tag a stream (or a corpus): labels, cluster, near-duplicates.

Local, over files (the same graph as a batch tagging job):

    python -m pipelines.stream_tag --input GLOB --output DIR --model M \\
        --heads spam=HEAD_DIR,sentiment=HEAD_DIR [--centroids DIR]

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

Record ids come from the record (or a hash of its content), so Pub/Sub
redelivery keeps them and a redelivered record is never a duplicate of
itself (so a different record reusing an id within the horizon gets the
first one's duplicate verdict: ids should be unique). Heads and centroids
are checked against the model, prompt and dim before the job starts.
"""

import json

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.options.pipeline_options import StandardOptions

from embgemma_keras import load_centroids
from embgemma_keras import load_head
from pipelines.files import ReadRecords
from pipelines.files import local_artifact
from pipelines.files import write_jsonl
from pipelines.files import write_windowed_jsonl
from pipelines.jobs import model_handler
from pipelines.jobs import model_identity
from pipelines.jobs import run
from transforms import EMBEDDINGS
from transforms import AssignClusters
from transforms import ClassifyLabels
from transforms import EmbedRecords
from transforms import ParseRecords
from transforms import to_json_line
from transforms.streaming_dedup import LexicalSketch
from transforms.streaming_dedup import SemanticSketch
from transforms.streaming_dedup import StreamingNearDuplicates

BIGQUERY_SCHEMA = ("id:STRING,text:STRING,labels:JSON,cluster_id:INTEGER,"
                   "cluster_distance:FLOAT,duplicate_of:STRING,"
                   "similarity:FLOAT,kind:STRING,record:JSON")
DEAD_LETTER_SCHEMA = "stage:STRING,error:STRING,raw:STRING,raw_encoding:STRING"


# No single flag is required: --input, --input_subscription or --input_topic.
REQUIRED = ()


class StreamTagOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument("--heads", default="",
                            help="NAME=DIR,... label heads from "
                                 "train_classifier.")
        parser.add_argument("--centroids", default=None,
                            help="Centroids directory from fit_clusters.")
        parser.add_argument("--horizon_secs", type=float, default=3600,
                            help="Near-duplicates are looked for this far "
                                 "back in event time.")
        parser.add_argument("--lexical_dup_threshold", type=float,
                            default=0.7, help="Estimated Jaccard.")
        parser.add_argument("--semantic_dup_threshold", type=float,
                            default=0.9, help="Cosine.")
        parser.add_argument("--max_batch_duration_secs", type=int,
                            default=2, help="Longest a record waits for "
                                            "its micro-batch.")
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
        parser.add_argument("--output_window_secs", type=int, default=60,
                            help="Streaming with --output: one file per "
                                 "window of this many seconds of event time "
                                 "(and per pane).")
        parser.add_argument("--allowed_lateness_secs", type=int,
                            default=86400,
                            help="Streaming with --output: records this late "
                                 "still reach the files (in a late pane); "
                                 "later ones only reach Pub/Sub/BigQuery.")


def load_heads(spec, identity, dim):
    """`name=dir,...` -> {name: head}, each checked against the model."""
    heads = {}
    for item in filter(None, spec.split(",")):
        name, _, directory = item.partition("=")
        if not directory:
            raise ValueError(f"--heads takes NAME=DIR,..., got {item!r}")
        heads[name] = load_head(local_artifact(directory), expect=identity,
                                task="classification", dim=dim)
    return heads


def tag(records, handler, heads, centroids, options):
    """The graph: parsed records -> (tagged records, [dead letters])."""
    prompts = {"similarity": "sentence_similarity"}
    if heads:
        prompts["classification"] = "classification"
    if centroids is not None:
        prompts["clustering"] = "clustering"
    embedded = records | "Embed" >> EmbedRecords(handler, prompts)
    records, dead = embedded.output, [embedded.dead_letters]
    if heads:
        labelled = records | "Classify" >> ClassifyLabels(heads)
        records = labelled.output
        dead.append(labelled.dead_letters)
    if centroids is not None:
        clustered = records | "Cluster" >> AssignClusters(centroids)
        records = clustered.output
        dead.append(clustered.dead_letters)
    records = (
        records
        | "LexicalDups" >> StreamingNearDuplicates(
            LexicalSketch(), options.lexical_dup_threshold,
            options.horizon_secs)
        | "SemanticDups" >> StreamingNearDuplicates(
            SemanticSketch(handler.dim), options.semantic_dup_threshold,
            options.horizon_secs)
        | "DropVectors" >> beam.Map(
            lambda r: {k: v for k, v in r.items() if k != EMBEDDINGS}))
    return records, dead


def _bigquery_row(record):
    cluster = record.get("cluster") or {}
    return {"id": record["id"], "text": record["text"],
            "labels": json.dumps(record.get("labels", {})),
            "cluster_id": cluster.get("id"),
            "cluster_distance": cluster.get("distance"),
            "duplicate_of": record.get("duplicate_of"),
            "similarity": record.get("similarity"),
            "kind": record.get("kind"), "record": to_json_line(record)}


def build(pipeline, options):
    handle, identity = model_identity(options.model)
    heads = load_heads(options.heads, identity, options.dim)
    centroids = None
    if options.centroids:
        centroids = load_centroids(local_artifact(options.centroids),
                                   expect=identity, task="clustering",
                                   dim=options.dim)
    streaming = bool(options.input_subscription or options.input_topic)
    if streaming:
        pipeline.options.view_as(StandardOptions).streaming = True
    # Micro-batch deadlines only in a stream: over files, Beam's stateful
    # batcher would flush its last batch after the file sinks have closed.
    handler = model_handler(
        handle, options, max_batch_duration_secs=(
            options.max_batch_duration_secs if streaming else None))
    if streaming:
        parsed = (pipeline | "ReadPubSub" >> beam.io.ReadFromPubSub(
            subscription=options.input_subscription,
            topic=options.input_topic)) | "Parse" >> ParseRecords()
    elif options.input:
        parsed = pipeline | "Read" >> ReadRecords(options.input,
                                                  options.text_column)
    else:
        raise ValueError("give --input, --input_subscription or "
                         "--input_topic")
    tagged, dead = tag(parsed.output, handler, heads, centroids, options)
    dead = [parsed.dead_letters, *dead] | "AllDeadLetters" >> beam.Flatten()
    write_outputs(tagged, dead, options, streaming)


def write_outputs(tagged, dead, options, streaming):
    """Sends tagged records and dead letters to every sink named."""
    if options.output and streaming:
        for pcoll, name, label in ((tagged, "tagged", "Tagged"),
                                   (dead, "dead_letters", "DeadLetters")):
            write_windowed_jsonl(pcoll, options.output, name, label,
                                 options.output_window_secs,
                                 options.allowed_lateness_secs)
    elif options.output:
        write_jsonl(tagged, FileSystems.join(options.output, "tagged"),
                    "Tagged")
        write_jsonl(dead, FileSystems.join(options.output, "dead_letters"),
                    "DeadLetters")
        _ = (tagged
             | "LabelKeys" >> beam.FlatMap(_label_keys)
             | "CountLabels" >> beam.combiners.Count.PerElement()
             | "AllCounts" >> beam.combiners.ToList()
             | "PrintCounts" >> beam.Map(_print_counts))
    for pcoll, topic, table, schema, label in (
            (tagged, options.output_topic, options.output_table,
             BIGQUERY_SCHEMA, "Tagged"),
            (dead, options.dead_letter_topic, options.dead_letter_table,
             DEAD_LETTER_SCHEMA, "DeadLetters")):
        if topic:
            _ = (pcoll | f"{label}Bytes" >> beam.Map(
                lambda r: to_json_line(r).encode("utf-8"))
                 | f"{label}ToPubSub" >> beam.io.WriteToPubSub(topic))
        if table:
            rows = pcoll if label == "DeadLetters" else pcoll | (
                f"{label}Rows" >> beam.Map(_bigquery_row))
            _ = rows | f"{label}ToBigQuery" >> beam.io.WriteToBigQuery(
                table, schema=schema,
                create_disposition=beam.io.BigQueryDisposition.CREATE_IF_NEEDED,
                write_disposition=beam.io.BigQueryDisposition.WRITE_APPEND)


def _label_keys(record):
    for head, result in record.get("labels", {}).items():
        yield f"{head}={result['label']}"
    yield "duplicate" if record.get("duplicate_of") else "not duplicate"


def _print_counts(counts):
    for key, count in sorted(counts):
        print(f"{key:32} {count:8d}", flush=True)


def main(argv=None):
    run(argv, StreamTagOptions, REQUIRED, build, __doc__)


if __name__ == "__main__":
    main()
