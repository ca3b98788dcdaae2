import pytest

from embgemma_keras.records import BadRecord
from embgemma_keras.records import parse_record


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
