"""The tagging graph of `stream_tag`: labels, cluster, near-duplicates.

`TagRecords` embeds parsed records (each prompt only when a stage needs
it), applies label heads (`labels`), centroids (`cluster`), flags lexical
and semantic near-duplicates within a horizon (`duplicate_of`,
`similarity`, `kind`) and drops the vectors. `write_tagged` sends tagged
records and dead letters to files, Pub/Sub and BigQuery.

```python
tagged = parsed.output | TagRecords(handler, heads={"spam": head},
                                    prompts="shared")
dead = (parsed.dead_letters, tagged.dead_letters) | beam.Flatten()
write_tagged(TaggedSinks(output="out"), tagged.output, dead)
```
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from embgemma_keras.clusters.centroids import Centroids
from embgemma_keras.config import StreamConfig
from embgemma_keras.config import StreamDedupConfig
from embgemma_keras.index.database import DatabaseIndex
from embgemma_keras.progress import say
from embgemma_keras.records.schema import DEAD_LETTERS
from embgemma_keras.records.schema import DUPLICATE_OF
from embgemma_keras.records.schema import LABELS
from embgemma_keras.records.schema import DeadLetter
from embgemma_keras.records.schema import TaggedRow
from embgemma_keras.records.schema import Vector
from embgemma_keras.records.schema import bigquery_row
from embgemma_keras.records.schema import bigquery_schema
from embgemma_keras.records.schema import to_json_line
from embgemma_keras.tasks import Task
from transforms.clusters.assign import AssignClusters
from transforms.counters import count
from transforms.dedup.streaming import StreamingNearDuplicates
from transforms.embedding.embed import EmbedRecords
from transforms.embedding.embed import prompts_for
from transforms.embedding.model_handler import EmbeddingGemmaModelHandler
from transforms.index.lookup import LookUpForStream
from transforms.labels.classify import ClassifyLabels
from transforms.records.dead_letters import WithDeadLetters
from transforms.records.files import write_jsonl
from transforms.records.files import write_windowed_jsonl


def expected_task(vector: Vector, prompts: str) -> Task:
    """The prompt heads (CLASSIFICATION) or centroids (CLUSTERING) must have
    been made with to serve in `prompts` mode."""
    return prompts_for(prompts, [vector])[vector]


class TagRecords(beam.PTransform):
    """Parsed records -> `WithDeadLetters(tagged records, dead letters)`.

    Args:
        handler: the `EmbeddingGemmaModelHandler` (model, dim, batching).
        heads: name -> label head (`load_head`); may be empty.
        centroids: `Centroids` for the `cluster` tag, or None.
        dedup: horizon, MinHash and semantic LSH settings.
        prompts: "all" (a classification, a clustering and a sentence-
            similarity vector: three forward passes) or "shared" (one
            sentence-similarity vector read by every stage). Heads and
            centroids must have been made with the matching prompt
            (`expected_task`); a job checks that before it starts.
        against: `IndexEntry`s of a dedup index (`ReadIndex`), to flag
            duplicates of beyond the horizon; see `StreamingNearDuplicates`.
        look_up_in: a dedup index in a database, to flag duplicates of
            beyond the horizon, each record looked up as it comes
            (`LookUpForStream`) instead of the index read whole.
    """

    def __init__(self, handler: EmbeddingGemmaModelHandler,
                 heads: Mapping[str, object] | None = None,
                 centroids: Centroids | None = None,
                 dedup: StreamDedupConfig = StreamDedupConfig(),
                 prompts: str = StreamConfig.prompts,
                 against: beam.PCollection | None = None,
                 look_up_in: DatabaseIndex | None = None):
        super().__init__()
        self._against = against
        self._look_up_in = look_up_in
        self._handler = handler
        self._heads = dict(heads or {})
        self._centroids = centroids
        self._dedup = dedup
        wanted = [Vector.SIMILARITY]
        if self._heads:
            wanted.append(Vector.CLASSIFICATION)
        if centroids is not None:
            wanted.append(Vector.CLUSTERING)
        self._prompts = prompts_for(prompts, wanted)

    def expand(self, records) -> WithDeadLetters:
        embedded = records | "Embed" >> EmbedRecords(self._handler,
                                                     self._prompts)
        records, dead = embedded.output, [embedded.dead_letters]
        if self._heads:
            labelled = records | "Classify" >> ClassifyLabels(self._heads)
            records = labelled.output
            dead.append(labelled.dead_letters)
        if self._centroids is not None:
            clustered = records | "Cluster" >> AssignClusters(self._centroids)
            records = clustered.output
            dead.append(clustered.dead_letters)
        if self._look_up_in is not None:
            records = records | "LookUpIndex" >> LookUpForStream(
                self._look_up_in, self._dedup.semantic_threshold)
        tagged = records | "NearDups" >> StreamingNearDuplicates(
            self._dedup, dim=self._handler.dim, against=self._against)
        return WithDeadLetters(
            tagged, dead | "AllDeadLetters" >> beam.Flatten())


@dataclasses.dataclass(frozen=True)
class TaggedSinks:
    """Where tagged records and dead letters go (any combination, but
    each needs one: a record with nowhere to go would be lost silently).

    The fields are named as `stream_tag`'s flags, which the refusals name.
    """

    output: str | None = None  # directory, local or gs://
    output_topic: str | None = None
    output_table: str | None = None  # PROJECT:DATASET.TABLE
    dead_letter_topic: str | None = None
    dead_letter_table: str | None = None
    streaming: bool = False  # files per window and pane, not shards
    window_secs: int = StreamConfig.output_window_secs
    allowed_lateness_secs: int = StreamConfig.allowed_lateness_secs

    def __post_init__(self) -> None:
        records = [f"--{name}" for name in ("output", "output_topic",
                                            "output_table")
                   if getattr(self, name)]
        if not records:
            raise ValueError("tagged records have no sink: give --output, "
                             "--output_topic or --output_table")
        if not (self.output or self.dead_letter_topic
                or self.dead_letter_table):
            raise ValueError(
                f"dead letters have no sink (tagged records go to "
                f"{' and '.join(records)}): add --dead_letter_topic or "
                f"--dead_letter_table")


def write_tagged(sinks: TaggedSinks, tagged: beam.PCollection,
                 dead_letters: beam.PCollection) -> None:
    """Sends tagged records and dead letters to every sink named.

    Every dead letter is counted (the progress line's and Beam's
    `progress/dead_letters`), whichever its sinks. Over files (not
    streaming) it also prints the count of each label and of duplicates
    when the job ends.
    """
    dead_letters = dead_letters | "CountDeadLetters" >> beam.Map(
        _counted_dead_letter)
    if sinks.output and sinks.streaming:
        for pcoll, name, label in ((tagged, "tagged", "Tagged"),
                                   (dead_letters, "dead_letters",
                                    "DeadLetters")):
            write_windowed_jsonl(pcoll, sinks.output, name, label,
                                 sinks.window_secs,
                                 sinks.allowed_lateness_secs)
    elif sinks.output:
        write_jsonl(tagged, FileSystems.join(sinks.output, "tagged"),
                    "Tagged")
        write_jsonl(dead_letters,
                    FileSystems.join(sinks.output, "dead_letters"),
                    "DeadLetters")
        _ = (tagged
             | "LabelKeys" >> beam.FlatMap(_label_keys)
             | "CountLabels" >> beam.combiners.Count.PerElement()
             | "AllCounts" >> beam.combiners.ToList()
             | "PrintCounts" >> beam.Map(_print_counts))
    for pcoll, topic, table, row_type, label in (
            (tagged, sinks.output_topic, sinks.output_table, TaggedRow,
             "Tagged"),
            (dead_letters, sinks.dead_letter_topic, sinks.dead_letter_table,
             DeadLetter, "DeadLetters")):
        if topic:
            _ = (pcoll | f"{label}Bytes" >> beam.Map(
                lambda r: to_json_line(r).encode("utf-8"))
                 | f"{label}ToPubSub" >> beam.io.WriteToPubSub(topic))
        if table:
            rows = pcoll if row_type is DeadLetter else pcoll | (
                f"{label}Rows" >> beam.Map(bigquery_row))
            _ = rows | f"{label}ToBigQuery" >> beam.io.WriteToBigQuery(
                table, schema=bigquery_schema(row_type),
                create_disposition=beam.io.BigQueryDisposition.CREATE_IF_NEEDED,
                write_disposition=beam.io.BigQueryDisposition.WRITE_APPEND)


def _counted_dead_letter(dead_letter: dict) -> dict:
    count(DEAD_LETTERS)
    return dead_letter


def _label_keys(record):
    for head, result in record.get(LABELS, {}).items():
        yield f"{head}={result['label']}"
    yield "duplicate" if record.get(DUPLICATE_OF) else "not duplicate"


def _print_counts(counts):
    for key, total in sorted(counts):
        say(f"{key:32} {total:8d}")

