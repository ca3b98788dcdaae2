import base64
import json

from embgemma_keras.schema import dead_letter


def test_utf8_bytes_are_kept_as_text():
    assert dead_letter("parse", ValueError("bad"), b"caf\xc3\xa9") == {
        "stage": "parse", "error": "bad", "raw": "caf\u00e9",
        "raw_encoding": "utf-8"}


def test_invalid_utf8_is_base64_and_round_trips():
    letter = dead_letter("parse", "bad", b"\xff\x00abc")
    assert letter["raw_encoding"] == "base64"
    assert base64.b64decode(letter["raw"]) == b"\xff\x00abc"


def test_records_are_kept_as_json():
    letter = dead_letter("embed", RuntimeError("oom"), {"id": "1", "text": "t"})
    assert letter["raw_encoding"] == "json"
    assert json.loads(letter["raw"]) == {"id": "1", "text": "t"}
    json.dumps(letter)  # always serialisable
