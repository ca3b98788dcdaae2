"""JSON text records: the one place that decides what a valid record is.

A record is a JSON object with a non-empty string `text`, an optional string
`title` and any other fields, which are kept as they are. The embed CLI and
the Beam transforms both parse with `parse_record`, so a line is accepted or
refused for the same reason everywhere.

>>> parse_record(b'{"text": "hello", "lang": "en"}')
{'text': 'hello', 'lang': 'en'}
>>> parse_record(b'{"text": ""}')
Traceback (most recent call last):
...
embgemma_keras.records.BadRecord: field 'text' is empty
"""

import json
import math

DEFAULT_MAX_RECORD_BYTES = 1 << 20


class BadRecord(ValueError):
    """An input that cannot be embedded; its message says why."""


def parse_record(raw, max_bytes=DEFAULT_MAX_RECORD_BYTES):
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


def validate_record(record):
    """Checks the fields the model reads; returns the record unchanged."""
    if "text" not in record or record["text"] is None:
        raise BadRecord("field 'text' is missing")
    text = record["text"]
    if not isinstance(text, str):
        raise BadRecord(f"field 'text' is {type(text).__name__}, not a string")
    if not text.strip():
        raise BadRecord("field 'text' is empty")
    title = record.get("title")
    if title is not None and not isinstance(title, str):
        raise BadRecord(f"field 'title' is {type(title).__name__}, not a string")
    return record
