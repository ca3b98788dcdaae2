"""The record contract: field names, tags and dead letters, defined once.

A record is a JSON object with a non-empty string `text`, an `id` (given
or derived from the content) and any other fields, kept as they are. Stages
add fields; a record that a stage cannot process becomes a dead letter.
Every module reads and writes records through the names here, and the
BigQuery schemas are derived from the TypedDicts below.

>>> dead_letter(Stage.PARSE, "malformed JSON", b"{oops")["raw"]
'{oops'
>>> bigquery_schema(DeadLetter)
'stage:STRING,error:STRING,raw:STRING,raw_encoding:STRING'
"""

from __future__ import annotations

import base64
import enum
import json
import typing

import numpy as np

# Fields of a record.
ID = "id"
TEXT = "text"
TITLE = "title"
EMBEDDINGS = "embeddings"  # {Vector: float32 array}, dropped before output
# The uint32 MinHash signature of the text, sketched once by the lexical
# stage for the later ones; dropped before output.
MINHASH = "_minhash"
# The dedup index's entries a stream looked a record up for (in a
# database), carried to the near-duplicate buckets; dropped before output.
INDEX_MATCHES = "_index_matches"
LABELS = "labels"
CLUSTER = "cluster"
DUPLICATE_OF = "duplicate_of"
DUPLICATE_OF_RUN = "duplicate_of_run"  # set when the original is indexed
# The id of the record a duplicate's group kept, the end of its
# `duplicate_of` chain (`duplicate_of` may name a record a later stage
# flagged): in dedup_corpus, a record of unique-* or an index entry; in a
# stream, a record no bucket flagged or an index entry.
KEPT_ID = "kept_id"
SIMILARITY = "similarity"
KIND = "kind"

# The tag of every stage's dead-letter output.
DEAD_LETTERS = "dead_letters"
# What stages attach for later stages: never in an output or dead letter.
WORKING_FIELDS = frozenset({EMBEDDINGS, MINHASH, INDEX_MATCHES})


class Vector(str, enum.Enum):
    """Which embedding of `record[EMBEDDINGS]` a stage reads."""

    CLASSIFICATION = "classification"  # label heads
    CLUSTERING = "clustering"  # centroids
    SIMILARITY = "similarity"  # near-duplicate detection


class Stage(str, enum.Enum):
    """Where a record was refused: a dead letter's `stage`."""

    PARSE = "parse"
    IDS = "ids"
    LABEL = "label"
    EMBED = "embed"
    CLASSIFY = "classify"
    CLUSTER = "cluster"


class DuplicateKind(str, enum.Enum):
    """A duplicate's `kind`: the stage that found it."""

    EXACT = "exact"
    LEXICAL = "lexical"
    SEMANTIC = "semantic"


class Record(typing.TypedDict, total=False):
    id: str
    text: str
    title: str


class Label(typing.TypedDict):
    label: str
    score: float  # a probability (trained head) or a cosine (zero-shot)


class ClusterAssignment(typing.TypedDict):
    id: int
    distance: float  # cosine distance to the centroid


class TaggedRecord(Record, total=False):
    labels: dict[str, Label]
    cluster: ClusterAssignment
    duplicate_of: str
    duplicate_of_run: str  # the run that kept the original (dedup index)
    kept_id: str  # the record its group kept (see `KEPT_ID`)
    similarity: float
    kind: str  # a DuplicateKind


class DeadLetter(typing.TypedDict):
    stage: str  # a Stage
    error: str
    raw: str
    raw_encoding: str  # "utf-8", "base64" (bytes not UTF-8) or "json"


class Json(str):
    """A string holding JSON (a BigQuery JSON column)."""


class TaggedRow(typing.TypedDict):
    """A tagged record as a BigQuery row: the tags as columns."""

    id: str
    text: str
    labels: Json
    cluster_id: int | None
    cluster_distance: float | None
    duplicate_of: str | None
    duplicate_of_run: str | None
    kept_id: str | None
    similarity: float | None
    kind: str | None
    record: Json


_BIGQUERY_TYPES = {str: "STRING", int: "INTEGER", float: "FLOAT",
                   bool: "BOOLEAN", Json: "JSON"}


def bigquery_schema(row_type: type) -> str:
    """`name:TYPE,...` for `WriteToBigQuery`, from a TypedDict's fields."""
    columns = []
    for name, hint in typing.get_type_hints(row_type).items():
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        columns.append(f"{name}:{_BIGQUERY_TYPES[args[0] if args else hint]}")
    return ",".join(columns)


def bigquery_row(record: TaggedRecord) -> TaggedRow:
    cluster = record.get(CLUSTER) or {}
    return TaggedRow(
        id=record[ID], text=record[TEXT],
        labels=json.dumps(record.get(LABELS, {}), ensure_ascii=False),
        cluster_id=cluster.get("id"), cluster_distance=cluster.get("distance"),
        duplicate_of=record.get(DUPLICATE_OF),
        duplicate_of_run=record.get(DUPLICATE_OF_RUN),
        kept_id=record.get(KEPT_ID), similarity=record.get(SIMILARITY),
        kind=record.get(KIND), record=to_json_line(record))


def dead_letter(stage: Stage | str, error: object,
                raw: bytes | str | dict) -> DeadLetter:
    """The dead letter for `raw` (bytes, str or a record) refused by `stage`.

    `raw` is kept as text, or base64 when it is not UTF-8, so a dead letter
    is always JSON-serialisable and can be replayed after a fix.
    """
    if isinstance(raw, bytes):
        try:
            raw, encoding = raw.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            raw, encoding = base64.b64encode(raw).decode("ascii"), "base64"
    elif isinstance(raw, str):
        encoding = "utf-8"
    else:
        raw = without_working_fields(raw)
        raw, encoding = json.dumps(raw, default=repr,
                                   ensure_ascii=False), "json"
    return DeadLetter(stage=Stage(stage).value, error=str(error), raw=raw,
                      raw_encoding=encoding)


def without_working_fields(record: dict) -> dict:
    """The record as it is output: without the embeddings and signature
    that stages attached for later ones (`WORKING_FIELDS`)."""
    return {k: v for k, v in record.items() if k not in WORKING_FIELDS}


def to_json_line(record: dict) -> str:
    """One JSON line; numpy vectors and scalars become plain JSON."""
    return json.dumps(record, ensure_ascii=False, default=_plain)


def _plain(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
