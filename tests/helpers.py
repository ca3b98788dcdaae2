"""Helpers the tests share (fixtures are in conftest.py).

- `hostile_lines()`: the input lines every job must survive, each bad case
  and awkward good ones, as `(name, line, accepted)` triples: JSONL lines
  (bytes, no newline) that a job must either process (`accepted`) or turn
  into a dead letter that says why. Tests count both.
- `SPAM_ROWS`, `write_tsv`: a tiny labelled training file.
- `write_jsonl`, `read_outputs`: files in and out of a job.
- `model_loads`: how many models a pipeline run loaded.
- `run_events`: records at event times through a transform, as a stream
  (TestStream) or as files; what came out.
- `PG_ROLE`, `PG_PASSWORD`, `role_url`, `postgres_unavailable`: the
  password role of the `postgres` fixture's server, its URL, and what a
  test does without the server.
"""

import json
import os
import pathlib

import apache_beam as beam
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.transforms.window import TimestampedValue

from transforms.embedding.model_handler import METRICS_NAMESPACE

# Under the default 1 MiB record limit with its JSON wrapping; truncated to
# the model's context when embedded.
ONE_MB_TEXT = ("All work and no play makes a long record. "
               * 23_810)[:1_000_000]
TOKENS_100K = " ".join(f"w{i % 97}" for i in range(100_000))


def _json(record):
    return json.dumps(record, ensure_ascii=False).encode("utf-8")


def _accepted(label):
    """Good records; `label(i)` adds a `label` field when given."""
    cases = [
        ("plain", {"id": "plain", "text": "An ordinary sentence about the "
                                          "weather in the harbour today."}),
        ("control characters", {"text": "tab\tbell\u0007 nul\u0000 escape "
                                        "\u001b end of a line"}),
        ("right-to-left", {"text": "مرحبا بالعالم، هذه رسالة قصيرة "
                                   "שלום עולם"}),
        ("emoji", {"text": "party time 🎉😀 thumbs up 👍🏽 family 👨‍👩‍👧"}),
        ("CJK", {"text": "今日は良い天気です。我们明天去公园吧。"
                         "오늘 날씨 좋다"}),
        ("1 MB text", {"text": ONE_MB_TEXT}),
        ("100k-token text", {"text": TOKENS_100K}),
        ("duplicate id, first", {"id": "shared", "text": "The first record "
                                 "that carries the shared id."}),
        ("duplicate id, second", {"id": "shared", "text": "Another, quite "
                                  "different message with the same id."}),
        ("10,000 fields", {"text": "A record with very many other fields.",
                           **{f"field_{i}": i for i in range(10_000)}}),
        ("title", {"text": "Body of a titled record.", "title": "A title"}),
    ]
    lines = []
    for i, (name, record) in enumerate(cases):
        if label:
            record = {**record, "label": label(i)}
        lines.append((name, _json(record), True))
    escaped = {"text": "escaped pair \\ud83d\\ude00 and a byte-order mark"}
    if label:
        escaped["label"] = label(len(cases))
    # json.dumps would escape the backslashes; write the escapes raw.
    lines.append(("BOM and escaped surrogate pair",
                  "\ufeff".encode() + json.dumps(escaped).replace(
                      "\\\\u", "\\u").encode(), True))
    return lines


REFUSED = [
    ("malformed JSON", b'{"text": "unterminated'),
    ("JSON array", b"[1, 2, 3]"),
    ("JSON string", b'"just a string"'),
    ("JSON number", b"42"),
    ("JSON null", b"null"),
    ("blank line", b""),
    ("text missing", b'{"id": "m", "body": "no text field"}'),
    ("text null", b'{"text": null}'),
    ("text a number", b'{"text": 5}'),
    ("text a list", b'{"text": ["a", "b"]}'),
    ("text an object", b'{"text": {"a": 1}}'),
    ("text a boolean", b'{"text": true}'),
    ("text empty", b'{"text": ""}'),
    ("text whitespace", b'{"text": "  \\t\\n  \\u3000 "}'),
    ("title a number", b'{"text": "fine", "title": 5}'),
    ("invalid UTF-8", b'{"text": "caf\xe9 cr\xe8me"}'),
    ("truncated UTF-8", b'{"text": "\xe4\xbd"}'),
    ("raw NUL byte", b'{"text": "a\x00b"}'),
    ("lone surrogate", b'{"text": "broken \\ud800 pair"}'),
    ("NaN", b'{"text": "fine", "score": NaN}'),
    ("number out of range", b'{"text": "fine", "score": 1e999}'),
    ("5,000-digit integer", b'{"text": "fine", "n": ' + b"9" * 5000 + b"}"),
    ("nested 100,000 deep", b'{"text": "fine", "x": ' + b"[" * 100_000
     + b"]" * 100_000 + b"}"),
    ("2 MB text", _json({"text": ONE_MB_TEXT * 2})),
    ("100,000 fields", _json({"text": "too many fields",
                              **{f"field_{i}": i for i in range(100_000)}})),
]


def hostile_lines(label=None):
    """All cases, good and bad interleaved, as `(name, line, accepted)`."""
    good = _accepted(label)
    bad = [(name, line, False) for name, line in REFUSED]
    mixed = []
    for i in range(max(len(good), len(bad))):
        mixed += good[i:i + 1] + bad[i:i + 1]
    return mixed


def write_jsonl(path, lines):
    path.write_bytes(b"\n".join(line for _, line, _ in lines) + b"\n")
    return path


def read_outputs(directory, prefix):
    """The JSON records of every `prefix*` file in `directory`."""
    return [json.loads(line) for path in sorted(directory.glob(f"{prefix}*"))
            for line in path.read_text().splitlines()]


def dedup_verdicts(out):
    """What `dedup_corpus` decided in `out`: the unique ids, the
    duplicates (id, duplicate_of, kind) and the dead letters' errors."""
    out = pathlib.Path(out)
    return (sorted(r["id"] for r in read_outputs(out, "unique")),
            sorted((r["id"], r["duplicate_of"], r["kind"])
                   for r in read_outputs(out, "duplicates")),
            sorted(d["error"] for d in read_outputs(out, "dead_letters")))


def model_loads(result):
    """How many times RunInference loaded a model (its load-latency count)."""
    loads = result.metrics().query(MetricsFilter().with_namespace(
        METRICS_NAMESPACE).with_name("load_model_latency_milli_secs"))
    return sum(d.committed.count for d in loads["distributions"])


# A tiny labelled set: four of each class, enough for 2-fold CV.
SPAM_ROWS = [
    ("spam", "WIN a free prize now, text CLAIM to 80082"),
    ("ham", "see you at lunch tomorrow"),
    ("spam", "URGENT you have won a cash award call now"),
    ("ham", "can you pick up milk on the way home"),
    ("spam", "free entry in our weekly draw txt WIN"),
    ("ham", "meeting moved to 3pm"),
    ("spam", "congratulations you are selected for a prize"),
    ("ham", "ok thanks, talk later"),
]


def write_tsv(path, rows, extra=()):
    """A `label<TAB>text` file with a header; `extra`: raw lines after."""
    lines = ["label\ttext"] + [f"{label}\t{text}" for label, text in rows]
    path.write_bytes("\n".join(lines).encode() + b"\n" + b"\n".join(extra))
    return str(path)


EVENT_TIME = "_event_time"  # what run_events adds: the record's timestamp


class _Collect(beam.DoFn):
    def __init__(self, path):
        self._path = path

    def process(self, record, timestamp=beam.DoFn.TimestampParam):
        with open(self._path, "a") as f:
            f.write(json.dumps({**{k: v for k, v in record.items()
                                   if k != "embeddings"},
                                EVENT_TIME: float(timestamp)}) + "\n")


def run_events(events, transform, tmp_path, in_order=True, index=None,
               bounded=False, flags=(), backlog=False):
    """events: (event_time, record) in arrival order, one bundle each.

    in_order: the watermark follows each event; else it stays before them
    all until every one has arrived (a source such as Pub/Sub, which
    delivers in any order, with an exact watermark).
    index: `IndexEntry`s; `transform` is then a function of their
    PCollection.
    bounded: the events as a batch job's input (files), not a stream.
    backlog: a stream whose watermark jumps from before the first event to
    past the last, so every timer is due at once (the events marked
    unbounded: the stream's path), on Beam's portable local runner unless
    `flags` name another.
    flags: pipeline flags of the stream's runner (the DirectRunner's
    otherwise).

    Records are stamped with their times after the source, in Python, as a
    source that reads them from a field does: to the microsecond, where a
    TestStream and Beam's timers keep milliseconds.

    Returns the records that came out, each with its EVENT_TIME.
    """
    if bounded or backlog:
        return _run_created(events, transform, tmp_path, index, backlog,
                            flags)
    stream = TestStream()
    watermark = None
    for time, record in events:
        if in_order and (watermark is None or time > watermark):
            stream, watermark = stream.advance_watermark_to(time), time
        stream = stream.add_elements([TimestampedValue((time, record), time)])
        stream = stream.advance_processing_time(1)
    stream = stream.advance_watermark_to_infinity()
    tmp_path.mkdir(exist_ok=True)
    sink = tmp_path / "out.jsonl"
    with TestPipeline(options=PipelineOptions(list(flags), streaming=True)
                      ) as p:
        if index is not None:
            transform = transform(p | "Index" >> beam.Create(index))
        records = p | stream | beam.MapTuple(
            lambda t, r: TimestampedValue(r, t))
        _ = records | transform | beam.ParDo(_Collect(str(sink)))
    return [json.loads(line) for line in sink.read_text().splitlines()]


def _run_created(events, transform, tmp_path, index, backlog, flags):
    """The events from a `Create`: a batch job's input, or a backlog."""
    tmp_path.mkdir(exist_ok=True)
    sink = tmp_path / "out.jsonl"
    if flags:
        pipeline = beam.Pipeline(options=PipelineOptions(list(flags)))
    elif backlog:
        pipeline = beam.Pipeline("FnApiRunner")
    else:
        pipeline = TestPipeline()
    with pipeline as p:
        if index is not None:
            transform = transform(p | "Index" >> beam.Create(index))
        records = (p | beam.Create(events)
                   | beam.MapTuple(lambda t, r: TimestampedValue(r, t)))
        records.is_bounded = not backlog
        _ = records | transform | beam.ParDo(_Collect(str(sink)))
    return [json.loads(line) for line in sink.read_text().splitlines()]


# The `postgres` fixture's role with a password; '&' and '@' are
# percent-encoded in a URL.
PG_ROLE = "dedup_user"
PG_PASSWORD = "Tr0ub4dor&3@x"


def role_url(postgres, password: str = PG_PASSWORD) -> str:
    """The URL of `postgres` (the fixture's server) as `PG_ROLE`, with
    `password`."""
    encoded = password.replace("%", "%25").replace("&", "%26").replace(
        "@", "%40")
    return postgres.url.replace("postgres:@", f"{PG_ROLE}:{encoded}@", 1)


def postgres_unavailable(reason: str) -> None:
    """Without the PostgreSQL server: fails under CI=true, else skips."""
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the PostgreSQL index tests: {reason}")
    pytest.skip(f"PostgreSQL with pgvector is unavailable: {reason}")
