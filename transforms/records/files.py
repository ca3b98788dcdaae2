"""Files in and out of a pipeline, local or on GCS (Beam's FileSystems).

Record files (JSONL, TSV/CSV with a header, text lines) in; JSON lines out,
in shards or one file per window and pane of a stream; heads and centroids
(artifacts, which `embgemma_keras` reads from local files only) copied
between GCS and a local directory.
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from collections.abc import Iterator
from collections.abc import Sequence
from typing import TYPE_CHECKING

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms import trigger
from apache_beam.transforms import window

from embgemma_keras.artifacts import ARRAYS_FILE
from embgemma_keras.artifacts import META_FILE
from embgemma_keras.config import MAX_RECORD_BYTES
from embgemma_keras.records.schema import TEXT
from embgemma_keras.records.schema import to_json_line
from embgemma_keras.records.validation import BadRecord
from embgemma_keras.records.validation import RecordParser
from embgemma_keras.records.validation import file_format
from transforms.counters import count
from transforms.records.dead_letters import WithDeadLetters
from transforms.records.parse import ParseRecords

if TYPE_CHECKING:
    from embgemma_keras.clusters.centroids import Centroids
    from embgemma_keras.labels.heads import LinearHead
    from embgemma_keras.labels.heads import ZeroShotHead

ARTIFACT_FILES = (META_FILE, ARRAYS_FILE)


def _first_file(pattern: str) -> str:
    matches = FileSystems.match([pattern])[0].metadata_list
    if not matches:
        raise FileNotFoundError(f"no file matches {pattern!r}")
    return matches[0].path


def read_header(pattern: str, fmt: str) -> list[str]:
    """Column names of the first file matching `pattern` (TSV/CSV)."""
    with FileSystems.open(_first_file(pattern)) as f:
        first = f.readline().decode("utf-8", errors="strict")
    delimiter = "\t" if fmt == "tsv" else ","
    return next(csv.reader([first.rstrip("\r\n")], delimiter=delimiter))


class ReadRecords(beam.PTransform):
    """Reads JSONL/TSV/CSV/plain-text files into records (+ dead letters).

    TSV and CSV files need a header row; `text_column` and
    `required_columns` must be in it, checked before the job starts.
    Returns `WithDeadLetters`.
    """

    def __init__(self, pattern: str, text_column: str = TEXT,
                 required_columns: Sequence[str] = (),
                 max_bytes: int = MAX_RECORD_BYTES):
        super().__init__()
        self._pattern = pattern
        self._parser = record_parser(pattern, text_column, required_columns,
                                     max_bytes)
        self._format = self._parser.format

    def expand(self, pipeline) -> WithDeadLetters:
        lines = pipeline | "Read" >> beam.io.ReadFromText(
            self._pattern, coder=beam.coders.BytesCoder(),
            skip_header_lines=1 if self._format in ("tsv", "csv") else 0)
        return lines | "Parse" >> ParseRecords(
            self._parser.format, self._parser.columns,
            self._parser.text_column, self._parser.max_bytes)


def record_parser(pattern: str, text_column: str = TEXT,
                  required_columns: Sequence[str] = (),
                  max_bytes: int = MAX_RECORD_BYTES) -> RecordParser:
    """The parser for the files of `pattern`, checked against their header.

    TSV and CSV files need a header row; `text_column` and
    `required_columns` must be in it (checked before the job starts).
    """
    fmt = file_format(pattern)
    columns = None
    if fmt in ("tsv", "csv"):
        columns = read_header(pattern, fmt)
        missing = [c for c in (text_column, *required_columns)
                   if c not in columns]
        if missing:
            raise ValueError(f"{pattern!r} has no column(s) {missing}; "
                             f"its columns are {columns}")
    return RecordParser(fmt, columns, text_column, max_bytes)


def read_records(pattern: str, parser: RecordParser) -> Iterator[dict]:
    """The valid records of the files of `pattern`, read here, not in Beam.

    For checks a job makes before it starts (the labels of a training
    file); lines that fail to parse are skipped here and become dead
    letters in the job itself.
    """
    for metadata in FileSystems.match([pattern])[0].metadata_list:
        with FileSystems.open(metadata.path) as f:
            if parser.format in ("tsv", "csv"):
                f.readline()
            for line in f:
                try:
                    yield parser(line.rstrip(b"\r\n"))
                except BadRecord:
                    continue


def write_jsonl(pcoll: beam.PCollection | tuple, prefix: str, label: str,
                count_as: str | None = None) -> beam.PCollection:
    """Writes records as `prefix-SSSSS-of-NNNNN.jsonl`, counting each
    under the progress name `count_as` when given."""
    def json_line(record):
        if count_as:
            count(count_as)
        return to_json_line(record)

    return (pcoll | f"{label}ToJson" >> beam.Map(json_line)
            | f"{label}Write" >> beam.io.WriteToText(
                prefix, file_name_suffix=".jsonl"))


def write_windowed_jsonl(pcoll: beam.PCollection, directory: str,
                         prefix: str, label: str, window_secs: int,
                         allowed_lateness_secs: int) -> beam.PCollection:
    """Writes a stream as one file per event-time window and pane.

    A window's records land in `directory/prefix-<start>-<end>-pane0.jsonl`
    once the watermark passes its end; records arriving up to
    `allowed_lateness_secs` after that land in `...-pane1.jsonl`, and so on.
    (Not `fileio.WriteToFiles`: its file names leave the pane out, so a late
    pane's file overwrites the on-time one; apache/beam#18721.)
    """
    return (pcoll
            | f"{label}Window" >> beam.WindowInto(
                window.FixedWindows(window_secs),
                trigger=trigger.AfterWatermark(late=trigger.AfterCount(1)),
                accumulation_mode=trigger.AccumulationMode.DISCARDING,
                allowed_lateness=allowed_lateness_secs)
            | f"{label}ToJson" >> beam.Map(lambda r: (None, to_json_line(r)))
            | f"{label}PerPane" >> beam.GroupByKey()
            | f"{label}Write" >> beam.ParDo(_WritePane(directory, prefix)))


class _WritePane(beam.DoFn):
    """Writes one pane of one window to its own file; yields the path.

    The name depends only on the window and pane, so a retried bundle
    rewrites the same file instead of adding another; an empty pane
    writes no file.
    """

    def __init__(self, directory, prefix):
        self._directory = directory
        self._prefix = prefix

    def process(self, element, pane_window=beam.DoFn.WindowParam,
                pane=beam.DoFn.PaneInfoParam):
        _, lines = element
        lines = list(lines)
        if not lines:
            # Beam closes a window with a pane even when empty; Flink's
            # portable runner (job server 2.62) then gives it the on-time
            # pane's index, so writing it would empty that pane's file.
            return
        start = pane_window.start.to_utc_datetime().isoformat()
        end = pane_window.end.to_utc_datetime().isoformat()
        path = FileSystems.join(
            self._directory,
            f"{self._prefix}-{start}-{end}-pane{pane.index}.jsonl")
        with FileSystems.create(path) as f:
            f.write("".join(line + "\n" for line in lines).encode("utf-8"))
        yield path


def local_artifact(directory: str) -> str:
    """A local directory holding the artifact at `directory` (local or gs://).

    Artifacts are read from local files (`embgemma_keras` does not depend on
    Beam), so a remote one is copied through Beam's FileSystems first.
    """
    if FileSystems.get_scheme(directory) is None:
        return directory
    staging = tempfile.mkdtemp(prefix="artifact-")
    for name in ARTIFACT_FILES:
        with FileSystems.open(FileSystems.join(directory, name)) as source, \
                open(os.path.join(staging, name), "wb") as sink:
            sink.write(source.read())
    return staging


def save_artifact_to(output: str, artifact: LinearHead | ZeroShotHead
                     | Centroids, metrics: dict) -> None:
    """Saves `artifact` (a head or centroids) and metrics.json to `output`.

    Artifacts save to a local directory, so they are staged in a temporary
    one and copied through Beam's FileSystems: `output` may be gs://.
    """
    with tempfile.TemporaryDirectory(prefix="artifact-") as staging:
        artifact.save(staging)
        with open(os.path.join(staging, "metrics.json"), "w") as f:
            json.dump(metrics, f, indent=2)
        for name in os.listdir(staging):
            with open(os.path.join(staging, name), "rb") as source, \
                    FileSystems.create(FileSystems.join(output, name)) as sink:
                sink.write(source.read())
