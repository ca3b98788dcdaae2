"""JSON text records: the one place that decides what a valid record is.

A record is a JSON object with a non-empty string `text`, an optional string
`title` and any other fields, which are kept as they are. The embed CLI and
the Beam transforms both parse with `parse_record` (`RecordParser` for
every input format), so a line is accepted or refused for the same reason
everywhere.

>>> parse_record(b'{"text": "hello", "lang": "en"}')
{'text': 'hello', 'lang': 'en'}
>>> parse_record(b'{"text": ""}')
Traceback (most recent call last):
...
embgemma_keras.records.validation.BadRecord: field 'text' is empty
"""

from __future__ import annotations

import csv
import hashlib
import json
import math

from embgemma_keras.config import MAX_RECORD_BYTES
from embgemma_keras.records.schema import ID
from embgemma_keras.records.schema import TEXT
from embgemma_keras.records.schema import TITLE

FORMATS = ("jsonl", "tsv", "csv", "text")
_EXTENSIONS = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl",
               ".tsv": "tsv", ".csv": "csv", ".txt": "text"}


class BadRecord(ValueError):
    """An input that cannot be embedded; its message says why."""


def parse_record(raw: bytes | str, max_bytes: int = MAX_RECORD_BYTES) -> dict:
    """Parses one JSON line (bytes or str) into a validated record dict.

    A leading byte-order mark is ignored. Strict JSON only: NaN, Infinity
    and numbers beyond float range are refused (they would be written out
    as invalid JSON), as are lone UTF-16 surrogates such as "\\ud800" (not
    Unicode; nothing downstream could encode them).

    Raises:
        BadRecord: the line is too large, not UTF-8, not JSON, not an
            object, or its `text`/`title` fields are unusable.
    """
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogatepass")
    if len(raw) > max_bytes:
        raise BadRecord(
            f"record is {len(raw)} bytes, over the {max_bytes}-byte limit"
        )
    if not raw.strip():
        raise BadRecord("empty line")
    try:
        line = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise BadRecord(f"not valid UTF-8 at byte {e.start}") from None
    try:
        record = json.loads(line, parse_constant=_refuse_constant,
                            parse_float=_finite_float)
    except json.JSONDecodeError as e:
        raise BadRecord(f"malformed JSON: {e.msg.removesuffix(' at')} at "
                        f"column {e.colno}") from None
    except BadRecord:
        raise
    except RecursionError:
        raise BadRecord("JSON nested too deeply") from None
    except ValueError as e:  # e.g. an integer of more than 4,300 digits
        raise BadRecord(f"unreadable JSON value: {e}") from None
    if not isinstance(record, dict):
        raise BadRecord(f"expected a JSON object, got {type(record).__name__}")
    if "\\u" in line:
        _refuse_lone_surrogates(record)
    return validate_record(record)


def _refuse_constant(name):
    raise BadRecord(f"{name} is not valid JSON")


def _finite_float(literal):
    value = float(literal)
    if math.isinf(value):
        raise BadRecord(f"number {literal[:40]} is out of range")
    return value


def _refuse_lone_surrogates(record):
    try:
        json.dumps(record, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as e:
        raise BadRecord(
            f"contains a lone UTF-16 surrogate ({e.object[e.start]!r}), "
            "which is not Unicode") from None


def validate_record(record: dict) -> dict:
    """Checks the fields the model reads; returns the record unchanged."""
    if TEXT not in record or record[TEXT] is None:
        raise BadRecord("field 'text' is missing")
    text = record[TEXT]
    if not isinstance(text, str):
        raise BadRecord(f"field 'text' is {type(text).__name__}, not a string")
    if not text.strip():
        raise BadRecord("field 'text' is empty")
    title = record.get(TITLE)
    if title is not None and not isinstance(title, str):
        raise BadRecord(
            f"field 'title' is {type(title).__name__}, not a string")
    return record


def record_id(record: dict) -> str:
    """A deterministic id from the record's content, so replays match."""
    canonical = json.dumps(record, sort_keys=True, ensure_ascii=False,
                           default=repr)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def file_format(pattern: str) -> str:
    """'jsonl', 'tsv', 'csv' or 'text', from a file name's extension."""
    for extension, fmt in _EXTENSIONS.items():
        if pattern.endswith(extension):
            return fmt
    raise ValueError(f"cannot tell the format of {pattern!r}; name it "
                     f"*.jsonl, *.tsv, *.csv or *.txt")


class RecordParser:
    """Turns one input line of any format into a record with an `id`.

    >>> parse = RecordParser("csv", columns=["label", "body"],
    ...                      text_column="body")
    >>> parse(b'spam,"WIN a prize, now"')["text"]
    'WIN a prize, now'

    Args:
        format: "jsonl" (one JSON object per line), "tsv" or "csv" (one row
            per line, header excluded; give `columns`), or "text" (each
            line is the text of one record).
        columns: column names of TSV/CSV rows, in order.
        text_column: the TSV/CSV column holding the text; it becomes `text`.
        max_bytes: larger lines are refused before they are decoded.

    Raises `BadRecord` with the reason for any line that is not a record.
    """

    def __init__(self, format: str = "jsonl", columns: list[str] | None = None,
                 text_column: str = TEXT, max_bytes: int = MAX_RECORD_BYTES):
        if format not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
        if format in ("tsv", "csv") and text_column not in (columns or ()):
            raise ValueError(
                f"text column {text_column!r} is not among the columns "
                f"{columns!r}")
        self.format, self.columns = format, columns
        self.text_column, self.max_bytes = text_column, max_bytes

    def __call__(self, raw: bytes | str) -> dict:
        if self.format == "jsonl":
            record = parse_record(raw, self.max_bytes)
        elif self.format == "text":
            record = validate_record({TEXT: self._decode(raw)})
        else:
            record = validate_record(self._parse_row(raw))
        if record.get(ID) is None:
            record[ID] = record_id(record)
        elif not isinstance(record[ID], str):
            raise BadRecord(
                f"field 'id' is {type(record[ID]).__name__}, not a string")
        return record

    def _decode(self, raw):
        """Text of a line, refused when too large or not UTF-8."""
        if isinstance(raw, str):
            raw = raw.encode("utf-8", "surrogatepass")
        if len(raw) > self.max_bytes:
            raise BadRecord(f"line is {len(raw)} bytes, over the "
                            f"{self.max_bytes}-byte limit")
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise BadRecord(f"not valid UTF-8 at byte {e.start}") from None

    def _parse_row(self, raw):
        raw = self._decode(raw)
        delimiter = "\t" if self.format == "tsv" else ","
        quoting = csv.QUOTE_NONE if self.format == "tsv" else csv.QUOTE_MINIMAL
        try:
            (values,) = csv.reader([raw], delimiter=delimiter, quoting=quoting)
        except (csv.Error, ValueError) as e:
            raise BadRecord(
                f"malformed {self.format.upper()} row: {e}") from None
        if len(values) != len(self.columns):
            raise BadRecord(f"row has {len(values)} fields, the header "
                            f"{len(self.columns)}")
        record = dict(zip(self.columns, values, strict=True))
        if self.text_column != TEXT:
            record[TEXT] = record.pop(self.text_column)
        return record
