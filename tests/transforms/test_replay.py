"""`ReadRecordsAsStream` on Beam's portable local runner (the FnApiRunner):
every line out once, as a record at its event time or a dead letter that
says why, and an unbounded PCollection. Pacing and the watermark on a
runner that keeps it: tests/runners/test_prism.py."""

import json

import apache_beam as beam
import pytest

from transforms.records.replay import ReadRecordsAsStream

pytestmark = pytest.mark.slow


class _Collect(beam.DoFn):
    """Appends each element and its timestamp (seconds) to a JSONL file."""

    def __init__(self, path):
        self._path = path

    def process(self, element, timestamp=beam.DoFn.TimestampParam):
        with open(self._path, "a") as f:
            f.write(json.dumps([float(timestamp), element]) + "\n")


def _replayed(tmp_path, pattern, **how):
    """(records, dead letters) of `pattern` replayed, each as
    (timestamp, element); asserts the records' PCollection is unbounded."""
    out = {name: tmp_path / f"{name}.jsonl" for name in ("records", "dead")}
    with beam.Pipeline("FnApiRunner") as p:
        read = p | ReadRecordsAsStream(str(pattern), **how)
        assert not read.output.is_bounded
        for name, pcoll in zip(out, read, strict=True):
            _ = pcoll | f"Collect{name}" >> beam.ParDo(_Collect(
                str(out[name])))
    return [sorted((tuple(json.loads(line)) for line in path.read_text(
        ).splitlines()), key=str) if path.exists() else []
        for path in out.values()]


def test_records_at_their_times_and_every_bad_line_a_dead_letter(tmp_path):
    lines = [{"id": "late", "text": "t", "at": "2024-05-01T12:00:09Z"},
             {"id": "early", "text": "t", "at": 1714564801},
             "{not json",
             {"id": "no-time", "text": "t"},
             {"id": "bad-time", "text": "t", "at": "noon"},
             {"id": "offset", "text": "t", "at": "2024-05-01T14:00:05+02:00"},
             {"id": "no-text", "at": 1714564802}]
    path = tmp_path / "in.jsonl"
    path.write_text("".join((line if isinstance(line, str)
                             else json.dumps(line)) + "\n" for line in lines))
    records, dead = _replayed(tmp_path, path, timestamp_field="at")
    noon = 1714564800
    assert [(t - noon, r["id"]) for t, r in sorted(
        records, key=lambda tr: tr[0])] == [
        (1, "early"), (5, "offset"), (9, "late")]
    assert sorted(d["error"] for _, d in dead) == [
        "event time field 'at' is missing",
        "event time field 'at': 'noon' is neither an RFC 3339 time "
        "(2024-05-01T12:00:00Z) nor epoch seconds",
        "field 'text' is missing",
        "malformed JSON: Expecting property name enclosed in double quotes "
        "at column 2"]
    assert {d["stage"] for _, d in dead} == {"parse"}
    # A line without a time takes the earliest time from it on (the last
    # one, with none after it, the latest): never behind the watermark.
    assert sorted(t - noon for t, _ in dead) == [5, 5, 5, 9]


def test_lines_without_times_are_timed_by_their_order(tmp_path):
    path = tmp_path / "in.txt"
    path.write_text("first line\n\nthird line\r\nfourth line")
    records, dead = _replayed(tmp_path, path)
    assert [(t, r["text"]) for t, r in sorted(records, key=lambda tr: tr[0])
            ] == [(0.0, "first line"), (0.002, "third line"),
                  (0.003, "fourth line")]
    assert [(t, d["error"]) for t, d in dead] == [
        (0.001, "field 'text' is empty")]


def test_a_tsv_column_holds_the_times_and_its_header_is_no_record(tmp_path):
    path = tmp_path / "in.tsv"
    path.write_text("id\ttext\twhen\n"
                    "b\tsecond\t1970-01-01T00:00:02Z\n"
                    "a\tfirst\t1\n"
                    "c\tthird\t\n")
    records, dead = _replayed(tmp_path, path, timestamp_field="when",
                              replay_rate=100)
    assert sorted((t, r["id"]) for t, r in records) == [(1.0, "a"),
                                                        (2.0, "b")]
    assert [d["error"] for _, d in dead] == [
        "event time field 'when': '' is neither an RFC 3339 time "
        "(2024-05-01T12:00:00Z) nor epoch seconds"]


def test_a_field_the_files_cannot_have_is_refused_before_the_job(tmp_path):
    (tmp_path / "in.txt").write_text("a line\n")
    (tmp_path / "in.tsv").write_text("id\ttext\na\tb\n")
    with pytest.raises(ValueError, match="has no field 'at'"):
        ReadRecordsAsStream(str(tmp_path / "in.txt"), timestamp_field="at")
    with pytest.raises(ValueError, match=r"has no column\(s\) \['at'\]"):
        ReadRecordsAsStream(str(tmp_path / "in.tsv"), timestamp_field="at")
