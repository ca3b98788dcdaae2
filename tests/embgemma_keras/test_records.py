import json

import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from embgemma_keras.records.validation import BadRecord
from embgemma_keras.records.validation import file_format
from embgemma_keras.records.validation import parse_record


def test_a_valid_record_keeps_every_field():
    raw = b'{"text": "hi", "title": "t", "id": "7", "meta": {"a": [1]}}'
    assert parse_record(raw) == {
        "text": "hi", "title": "t", "id": "7", "meta": {"a": [1]}
    }


def test_str_input_is_accepted():
    assert parse_record('{"text": "caf\u00e9"}')["text"] == "caf\u00e9"


@pytest.mark.parametrize(
    "raw,reason",
    [
        (b"not json", "malformed JSON"),
        (b'["a"]', "expected a JSON object, got list"),
        (b'"text"', "expected a JSON object, got str"),
        (b"{}", "'text' is missing"),
        (b'{"text": null}', "'text' is missing"),
        (b'{"text": 3}', "'text' is int, not a string"),
        (b'{"text": ""}', "'text' is empty"),
        (b'{"text": " \\n\\t"}', "'text' is empty"),
        (b'{"text": "ok", "title": 5}', "'title' is int"),
        (b'{"text": "\xff\xfe"}', "not valid UTF-8 at byte 10"),
    ],
)
def test_bad_records_say_why(raw, reason):
    with pytest.raises(BadRecord, match=reason):
        parse_record(raw)


def test_size_limit_is_checked_before_parsing():
    raw = b'{"text": "' + b"a" * 100 + b'"}'
    with pytest.raises(BadRecord, match="over the 50-byte limit"):
        parse_record(raw, max_bytes=50)


# Fuzzing: whatever the bytes, parse_record returns a usable record or
# raises BadRecord with a reason; no other exception reaches a pipeline.

_JSON_SCALARS = (st.none() | st.booleans() | st.integers()
                 | st.floats(allow_nan=True, allow_infinity=True)
                 | st.text(st.characters(codec=None)))
_JSON_VALUES = st.recursive(
    _JSON_SCALARS, lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
_OBJECTS = st.fixed_dictionaries(
    {}, optional={"text": _JSON_VALUES, "title": _JSON_VALUES,
                  "id": _JSON_VALUES, "other": _JSON_VALUES})


def _usable(record):
    assert isinstance(record, dict)
    assert isinstance(record["text"], str) and record["text"].strip()
    assert record.get("title") is None or isinstance(record["title"], str)
    # Whatever was accepted can be written back out as strict JSON.
    json.dumps(record, ensure_ascii=False, allow_nan=False).encode("utf-8")


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_give_a_record_or_a_reason(raw):
    try:
        _usable(parse_record(raw))
    except BadRecord as e:
        assert str(e)


@settings(max_examples=500, deadline=None)
@given(_OBJECTS, st.booleans())
@pytest.mark.slow
def test_any_json_object_gives_a_record_or_a_reason(record, ascii_only):
    raw = json.dumps(record, ensure_ascii=ascii_only)
    try:
        _usable(parse_record(raw.encode("utf-8", "surrogatepass")))
    except BadRecord as e:
        assert str(e)


@settings(max_examples=200, deadline=None)
@given(st.text(st.characters(codec="utf-8"), min_size=1).filter(str.strip))
def test_any_unicode_text_is_accepted_unchanged(text):
    raw = json.dumps({"text": text}, ensure_ascii=False).encode("utf-8")
    assert parse_record(raw)["text"] == text


@pytest.mark.parametrize("name,fmt", [
    ("a.jsonl", "jsonl"), ("gs://b/x/*.ndjson", "jsonl"), ("t.tsv", "tsv"),
    ("c.csv", "csv"), ("lines.txt", "text")])
def test_the_format_follows_the_extension(name, fmt):
    assert file_format(name) == fmt


def test_an_unknown_extension_is_refused():
    with pytest.raises(ValueError, match="cannot tell the format"):
        file_format("corpus.parquet")
