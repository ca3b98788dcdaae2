"""`ParseRecords`: raw lines (JSONL, TSV, CSV, text) to validated records.

What a valid record is lives in `embgemma_keras.records.validation`; this
transform applies it in Beam and routes every line that fails to a dead
letter that says why, instead of failing the bundle.
"""

from __future__ import annotations

import apache_beam as beam
from apache_beam.metrics import Metrics

from embgemma_keras.config import MAX_RECORD_BYTES
from embgemma_keras.progress import BYTES_READ
from embgemma_keras.progress import LINES_READ
from embgemma_keras.records.schema import DEAD_LETTERS
from embgemma_keras.records.schema import TEXT
from embgemma_keras.records.schema import Stage
from embgemma_keras.records.schema import dead_letter
from embgemma_keras.records.validation import BadRecord
from embgemma_keras.records.validation import RecordParser
from transforms.counters import count
from transforms.records.dead_letters import WithDeadLetters


class _ParseDoFn(beam.DoFn):
    def __init__(self, parser: RecordParser):
        self._parser = parser
        self._parsed = Metrics.counter("ParseRecords", "records")
        self._refused = Metrics.counter("ParseRecords", "dead_letters")

    def process(self, raw):
        count(LINES_READ)
        count(BYTES_READ, len(raw) + 1)  # and its newline, for file sizes
        try:
            record = self._parser(raw)
        except BadRecord as e:
            self._refused.inc()
            yield beam.pvalue.TaggedOutput(
                DEAD_LETTERS, dead_letter(Stage.PARSE, e, raw))
            return
        self._parsed.inc()
        yield record


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

    Args: as `embgemma_keras.records.validation.RecordParser` (format, columns,
    text_column, max_bytes). Read TSV/CSV with `skip_header_lines=1`.

    A record without `id` gets one from a hash of its content, so a replayed
    record keeps its id. Empty or whitespace-only text is a dead letter:
    there is nothing to embed, classify or deduplicate.
    """

    def __init__(self, format: str = "jsonl",
                 columns: list[str] | None = None, text_column: str = TEXT,
                 max_bytes: int = MAX_RECORD_BYTES):
        super().__init__()
        self._fn = _ParseDoFn(RecordParser(format, columns, text_column,
                                           max_bytes))

    def expand(self, lines) -> WithDeadLetters:
        results = lines | "Parse" >> beam.ParDo(self._fn).with_outputs(
            DEAD_LETTERS, main="records")
        return WithDeadLetters(results.records, results[DEAD_LETTERS])
