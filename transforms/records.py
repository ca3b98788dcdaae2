"""`ParseRecords`: raw lines (JSONL, TSV or CSV) to validated records.

The record rules live in `embgemma_keras.records`; this module applies them
in Beam, gives every record a stable `id`, and routes what fails to a dead
letter instead of failing the bundle.
"""

import csv
import hashlib
import json

import apache_beam as beam
from apache_beam.metrics import Metrics

from embgemma_keras.records import DEFAULT_MAX_RECORD_BYTES
from embgemma_keras.records import BadRecord
from embgemma_keras.records import parse_record
from embgemma_keras.records import validate_record
from transforms.dead_letters import DEAD_LETTERS
from transforms.dead_letters import WithDeadLetters
from transforms.dead_letters import dead_letter

FORMATS = ("jsonl", "tsv", "csv", "text")


def record_id(record):
    """A deterministic id from the record's content, so replays match."""
    canonical = json.dumps(record, sort_keys=True, ensure_ascii=False,
                           default=repr)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


class _ParseDoFn(beam.DoFn):
    def __init__(self, fmt, columns, text_column, max_bytes):
        self._format = fmt
        self._columns = columns
        self._text_column = text_column
        self._max_bytes = max_bytes
        self._parsed = Metrics.counter("ParseRecords", "records")
        self._refused = Metrics.counter("ParseRecords", "dead_letters")

    def process(self, raw):
        try:
            record = self._parse(raw)
        except BadRecord as e:
            self._refused.inc()
            yield beam.pvalue.TaggedOutput(
                DEAD_LETTERS, dead_letter("parse", e, raw))
            return
        self._parsed.inc()
        yield record

    def _parse(self, raw):
        if self._format == "jsonl":
            record = parse_record(raw, self._max_bytes)
        elif self._format == "text":
            record = validate_record({"text": self._decode(raw)})
        else:
            record = validate_record(self._parse_row(raw))
        if record.get("id") is None:
            record["id"] = record_id(record)
        elif not isinstance(record["id"], str):
            raise BadRecord(
                f"field 'id' is {type(record['id']).__name__}, not a string")
        return record

    def _decode(self, raw):
        """Text of a line, refused when too large or not UTF-8."""
        if isinstance(raw, str):
            raw = raw.encode("utf-8", "surrogatepass")
        if len(raw) > self._max_bytes:
            raise BadRecord(f"line is {len(raw)} bytes, over the "
                            f"{self._max_bytes}-byte limit")
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise BadRecord(f"not valid UTF-8 at byte {e.start}") from None

    def _parse_row(self, raw):
        raw = self._decode(raw)
        delimiter = "\t" if self._format == "tsv" else ","
        quoting = csv.QUOTE_NONE if self._format == "tsv" else csv.QUOTE_MINIMAL
        try:
            (values,) = csv.reader([raw], delimiter=delimiter, quoting=quoting)
        except (csv.Error, ValueError) as e:
            raise BadRecord(f"malformed {self._format.upper()} row: {e}") from None
        if len(values) != len(self._columns):
            raise BadRecord(f"row has {len(values)} fields, the header "
                            f"{len(self._columns)}")
        record = dict(zip(self._columns, values))
        if self._text_column != "text":
            record["text"] = record.pop(self._text_column)
        return record


class ParseRecords(beam.PTransform):
    """Parses raw lines into records; bad lines become dead letters.

    Example:

    ```python
    with beam.Pipeline() as p:
        parsed = (p | beam.io.ReadFromText("in.jsonl")
                    | ParseRecords())
        parsed.output        # {"id": ..., "text": ..., other fields}
        parsed.dead_letters  # {"stage": "parse", "error": ..., "raw": ...}
    ```

    Args:
        format: "jsonl" (one JSON object per line), "tsv" or "csv" (one row
            per line; give `columns`, and read with `skip_header_lines=1`),
            or "text" (each line is the text of one record).
        columns: column names of TSV/CSV rows, in order.
        text_column: the TSV/CSV column holding the text; it becomes `text`.
        max_bytes: larger lines are refused before they are decoded.

    A record without `id` gets one from a hash of its content, so a replayed
    record keeps its id. Empty or whitespace-only text is a dead letter:
    there is nothing to embed, classify or deduplicate.
    """

    def __init__(self, format="jsonl", columns=None, text_column="text",
                 max_bytes=DEFAULT_MAX_RECORD_BYTES):
        super().__init__()
        if format not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
        if format in ("tsv", "csv") and text_column not in (columns or ()):
            raise ValueError(
                f"text column {text_column!r} is not among the columns "
                f"{columns!r}")
        self._fn = _ParseDoFn(format, columns, text_column, max_bytes)

    def expand(self, lines):
        results = lines | "Parse" >> beam.ParDo(self._fn).with_outputs(
            DEAD_LETTERS, main="records")
        return WithDeadLetters(results.records, results[DEAD_LETTERS])
