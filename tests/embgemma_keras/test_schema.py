import base64
import json

import numpy as np

from embgemma_keras.records.schema import DeadLetter
from embgemma_keras.records.schema import TaggedRow
from embgemma_keras.records.schema import bigquery_row
from embgemma_keras.records.schema import bigquery_schema
from embgemma_keras.records.schema import dead_letter
from embgemma_keras.records.schema import to_json_line
from embgemma_keras.records.schema import without_working_fields


def test_the_bigquery_schemas_follow_the_typed_dicts():
    assert bigquery_schema(TaggedRow) == (
        "id:STRING,text:STRING,labels:JSON,cluster_id:INTEGER,"
        "cluster_distance:FLOAT,duplicate_of:STRING,duplicate_of_run:STRING,"
        "kept_id:STRING,similarity:FLOAT,kind:STRING,record:JSON")
    assert bigquery_schema(DeadLetter) == (
        "stage:STRING,error:STRING,raw:STRING,raw_encoding:STRING")


def test_a_tagged_record_becomes_a_row_with_every_column():
    record = {"id": "r1", "text": "hello", "lang": "en",
              "labels": {"spam": {"label": "ham", "score": 0.9}},
              "cluster": {"id": 3, "distance": 0.25},
              "duplicate_of": "r0", "duplicate_of_run": "run1",
              "kept_id": "r0", "similarity": 0.8, "kind": "lexical"}
    row = bigquery_row(record)
    assert set(row) == set(TaggedRow.__annotations__)
    assert json.loads(row["labels"]) == record["labels"]
    assert (row["cluster_id"], row["cluster_distance"]) == (3, 0.25)
    assert (row["duplicate_of"], row["duplicate_of_run"], row["kept_id"]) == (
        "r0", "run1", "r0")
    assert json.loads(row["record"]) == record
    plain = bigquery_row({"id": "r2", "text": "hi"})
    assert plain["cluster_id"] is None and plain["duplicate_of"] is None
    assert plain["kept_id"] is None


def test_dead_letters_keep_what_was_refused_without_vectors():
    letter = dead_letter("embed", "out of memory", {
        "id": "r1", "text": "hi", "embeddings": {"similarity": np.ones(3)}})
    assert letter["stage"] == "embed" and letter["raw_encoding"] == "json"
    assert json.loads(letter["raw"]) == {"id": "r1", "text": "hi"}
    assert dead_letter("parse", "bad", b"\xff\xfe")["raw_encoding"] == "base64"


def test_outputs_and_dead_letters_leave_the_working_fields_behind():
    """The embeddings and the lexical stage's signature serve later stages
    only: neither reaches an output or a dead letter."""
    record = {"id": "r1", "text": "hi", "embeddings": {"similarity": [1.0]},
              "_minhash": np.arange(4, dtype=np.uint32)}
    assert without_working_fields(record) == {"id": "r1", "text": "hi"}
    letter = dead_letter("embed", "out of memory", record)
    assert json.loads(letter["raw"]) == {"id": "r1", "text": "hi"}


def test_json_lines_turn_numpy_values_into_plain_json():
    line = to_json_line({"v": np.array([1.5, 2.0], np.float32),
                         "n": np.int64(3)})
    assert json.loads(line) == {"v": [1.5, 2.0], "n": 3}


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
