"""Reading record files and writing JSON lines, local or on GCS."""

import csv
import json
import os
import tempfile

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from transforms import ParseRecords
from transforms import to_json_line

_EXTENSIONS = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl",
               ".tsv": "tsv", ".csv": "csv", ".txt": "text"}


def file_format(pattern):
    """'jsonl', 'tsv' or 'csv', from the file name's extension."""
    for extension, fmt in _EXTENSIONS.items():
        if pattern.endswith(extension):
            return fmt
    raise ValueError(f"cannot tell the format of {pattern!r}; name it "
                     f"*.jsonl, *.tsv, *.csv or *.txt")


def read_header(pattern, fmt):
    """Column names of the first file matching `pattern` (TSV/CSV)."""
    matches = FileSystems.match([pattern])[0].metadata_list
    if not matches:
        raise FileNotFoundError(f"no file matches {pattern!r}")
    with FileSystems.open(matches[0].path) as f:
        first = f.readline().decode("utf-8", errors="strict")
    delimiter = "\t" if fmt == "tsv" else ","
    return next(csv.reader([first.rstrip("\r\n")], delimiter=delimiter))


class ReadRecords(beam.PTransform):
    """Reads JSONL/TSV/CSV/plain-text files into records (+ dead letters).

    TSV and CSV files need a header row; `text_column` and
    `required_columns` must be in it, checked before the job starts.
    """

    def __init__(self, pattern, text_column="text", required_columns=(),
                 max_bytes=None):
        super().__init__()
        self._pattern = pattern
        self._format = file_format(pattern)
        columns = None
        if self._format in ("tsv", "csv"):
            columns = read_header(pattern, self._format)
            missing = [c for c in (text_column, *required_columns)
                       if c not in columns]
            if missing:
                raise ValueError(f"{pattern!r} has no column(s) {missing}; "
                                 f"its columns are {columns}")
        kwargs = {} if max_bytes is None else {"max_bytes": max_bytes}
        self._parse = ParseRecords(format=self._format, columns=columns,
                                   text_column=text_column, **kwargs)

    def expand(self, pipeline):
        lines = pipeline | "Read" >> beam.io.ReadFromText(
            self._pattern, coder=beam.coders.BytesCoder(),
            skip_header_lines=1 if self._format in ("tsv", "csv") else 0)
        return lines | "Parse" >> self._parse


def write_jsonl(pcoll, prefix, label):
    """Writes records as `prefix-SSSSS-of-NNNNN.jsonl`."""
    return (pcoll | f"{label}ToJson" >> beam.Map(to_json_line)
            | f"{label}Write" >> beam.io.WriteToText(
                prefix, file_name_suffix=".jsonl"))


def save_artifact_to(output, artifact, metrics):
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
