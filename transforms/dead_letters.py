"""Dead letters: records a stage could not process, with the reason.

Every stage that can refuse a record emits it on a `dead_letters` output as

    {"stage": "parse", "error": "malformed JSON: ...", "raw": "...",
     "raw_encoding": "utf-8"}

`raw` is the input as text, or base64 (`raw_encoding: "base64"`) when it was
not valid UTF-8, so a dead letter is always a JSON-serialisable record that
can be written to a file, Pub/Sub or BigQuery and replayed after a fix.
"""

import base64
import json
import typing

import apache_beam as beam

DEAD_LETTERS = "dead_letters"


class WithDeadLetters(typing.NamedTuple):
    """The two outputs of a stage that can refuse records."""

    output: beam.PCollection
    dead_letters: beam.PCollection


def dead_letter(stage, error, raw):
    """Builds the dead-letter record for `raw` (bytes, str or a record)."""
    if isinstance(raw, bytes):
        try:
            raw, encoding = raw.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            raw, encoding = base64.b64encode(raw).decode("ascii"), "base64"
    elif isinstance(raw, str):
        encoding = "utf-8"
    else:
        raw, encoding = json.dumps(raw, default=repr, ensure_ascii=False), "json"
    return {"stage": stage, "error": str(error), "raw": raw,
            "raw_encoding": encoding}
