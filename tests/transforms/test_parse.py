import base64
import json

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that
from apache_beam.testing.util import equal_to
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from embgemma_keras.records.schema import DEAD_LETTERS
from embgemma_keras.records.validation import record_id
from transforms import ParseRecords

GOOD = [
    b'{"id": "a", "text": "plain English text", "lang": "en"}',
    '{"text": "RTL \u0645\u0631\u062d\u0628\u0627 emoji \U0001F600 CJK '
    '\u4f60\u597d"}'.encode(),
    b'{"text": "control \\u0007 chars and a NUL \\u0000 byte"}',
    b'{"id": "dup", "text": "same id once"}',
    b'{"id": "dup", "text": "same id twice"}',
    json.dumps({"text": "many fields",
                **{f"f{i}": i for i in range(500)}}).encode(),
    b'{"text": "with title", "title": "T"}',
]
BAD = {
    b"{not json": "malformed JSON",
    b"[1, 2]": "expected a JSON object, got list",
    b"42": "expected a JSON object, got int",
    b"null": "expected a JSON object, got NoneType",
    b'"just a string"': "expected a JSON object, got str",
    b'{"id": "x"}': "field 'text' is missing",
    b'{"text": null}': "field 'text' is missing",
    b'{"text": 7}': "field 'text' is int, not a string",
    b'{"text": ["a"]}': "field 'text' is list, not a string",
    b'{"text": {"a": 1}}': "field 'text' is dict, not a string",
    b'{"text": true}': "field 'text' is bool, not a string",
    b'{"text": ""}': "field 'text' is empty",
    b'{"text": "  \\t\\n "}': "field 'text' is empty",
    b'{"text": "ok", "title": 3}': "field 'title' is int, not a string",
    b'{"text": "ok", "id": 12}': "field 'id' is int, not a string",
    b'{"text": "bad \xff\xfe utf8"}': "not valid UTF-8 at byte 14",
    b'{"text": "' + b"x" * 10000 + b'"}': "over the 8192-byte limit",
}


@pytest.mark.slow
def test_every_line_is_either_a_record_or_a_dead_letter_with_its_reason():
    lines = GOOD * 6 + list(BAD)  # 59 good + 17 bad
    with TestPipeline() as p:
        parsed = p | beam.Create(lines) | ParseRecords(max_bytes=8192)
        assert_that(parsed.output | beam.combiners.Count.Globally(),
                    equal_to([len(GOOD) * 6]), label="good")
        reasons = parsed.dead_letters | beam.Map(
            lambda d: (d["stage"], _raw_bytes(d), d["error"]))
        assert_that(reasons, _each_reason_matches(BAD), label="bad")


def _raw_bytes(dead):
    if dead["raw_encoding"] == "base64":
        return base64.b64decode(dead["raw"])
    return dead["raw"].encode("utf-8")


def _each_reason_matches(expected):
    def check(actual):
        assert len(actual) == len(expected)
        for stage, raw, error in actual:
            assert stage == "parse"
            assert expected[raw] in error, (raw[:40], error)
    return check


def test_missing_ids_are_derived_from_content_and_stable():
    line = b'{"text": "no id here", "x": 1}'
    with TestPipeline() as p:
        parsed = p | beam.Create([line, line]) | ParseRecords()
        ids = parsed.output | beam.Map(lambda r: r["id"])
        expected = record_id({"text": "no id here", "x": 1})
        assert_that(ids, equal_to([expected, expected]))


def test_given_ids_and_extra_fields_pass_through_untouched():
    with TestPipeline() as p:
        out = (p | beam.Create([GOOD[0]]) | ParseRecords()).output
        assert_that(out, equal_to([{"id": "a", "text": "plain English text",
                                    "lang": "en"}]))


def test_tsv_rows_use_the_named_text_column():
    rows = [b"spam\tWIN a prize now", b"ham\t", b"only-one-field",
            b"ham\tsee you \xff"]
    with TestPipeline() as p:
        parsed = p | beam.Create(rows) | ParseRecords(
            format="tsv", columns=["label", "message"], text_column="message")
        assert_that(parsed.output | beam.Map(lambda r: (r["label"], r["text"])),
                    equal_to([("spam", "WIN a prize now")]), label="good")
        assert_that(parsed.dead_letters | beam.Map(lambda d: d["error"]),
                    equal_to(["field 'text' is empty",
                              "row has 1 fields, the header 2",
                              "not valid UTF-8 at byte 12"]), label="bad")


def test_csv_rows_with_quoted_commas():
    with TestPipeline() as p:
        out = (p | beam.Create(['1,"hello, world"'])
               | ParseRecords(format="csv", columns=["n", "text"])).output
        assert_that(out | beam.Map(lambda r: r["text"]),
                    equal_to(["hello, world"]))


def test_configuration_errors_are_raised_at_construction():
    with pytest.raises(ValueError, match="format must be one of"):
        ParseRecords(format="xml")
    with pytest.raises(ValueError, match="'body' is not among the columns"):
        ParseRecords(format="tsv", columns=["label", "text"],
                     text_column="body")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=120), st.sampled_from(["jsonl", "tsv", "csv",
                                                   "text"]))
def test_any_line_in_any_format_gives_exactly_one_output(raw, fmt):
    columns = ["label", "text"] if fmt in ("tsv", "csv") else None
    fn = ParseRecords(format=fmt, columns=columns)._fn
    (output,) = list(fn.process(raw))  # one output, never an exception
    if isinstance(output, beam.pvalue.TaggedOutput):
        assert output.tag == DEAD_LETTERS
        assert output.value["stage"] == "parse" and output.value["error"]
    else:
        assert output["text"].strip() and isinstance(output["id"], str)
