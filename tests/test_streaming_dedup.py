import json

import apache_beam as beam
import numpy as np
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.transforms.window import TimestampedValue

from transforms.streaming_dedup import SemanticSketch
from transforms.streaming_dedup import StreamingNearDuplicates

TEXT = ("the quarterly report shows that revenue grew by twelve percent while "
        "costs stayed flat across all regions")


class _Collect(beam.DoFn):
    def __init__(self, path):
        self._path = path

    def process(self, record):
        with open(self._path, "a") as f:
            f.write(json.dumps({k: v for k, v in record.items()
                                if k != "embeddings"}) + "\n")


def _run(events, transform, tmp_path):
    """events: (event_time, record) in arrival order, one bundle each."""
    stream, watermark = TestStream().advance_watermark_to(0), 0
    for time, record in events:
        stream = stream.add_elements([TimestampedValue(record, time)])
        stream = stream.advance_processing_time(1)
        if time > watermark:
            stream, watermark = stream.advance_watermark_to(time), time
    stream = stream.advance_watermark_to_infinity()
    sink = tmp_path / "out.jsonl"
    with TestPipeline(options=PipelineOptions(streaming=True)) as p:
        _ = p | stream | transform | beam.ParDo(_Collect(str(sink)))
    return [json.loads(line) for line in sink.read_text().splitlines()]


def test_duplicates_within_the_horizon_only(tmp_path):
    events = [
        (0, {"id": "first", "text": TEXT}),
        (60, {"id": "typo", "text": TEXT.replace("twelve", "twelv")}),
        (0, {"id": "first", "text": TEXT}),        # Pub/Sub redelivery
        (90, {"id": "other", "text": "see you at lunch tomorrow"}),
        (5000, {"id": "far_copy", "text": TEXT}),  # past the 1 h horizon
    ]
    out = _run(events, StreamingNearDuplicates(horizon_secs=3600), tmp_path)
    assert len(out) == len(events)  # every delivery comes out, once each
    tags = sorted((r["id"], r.get("duplicate_of"), r.get("kind"))
                  for r in out)
    # The redelivered "first" is not a duplicate of itself, nor of "typo"
    # (which came after it in event time).
    assert tags == [("far_copy", None, None), ("first", None, None),
                    ("first", None, None), ("other", None, None),
                    ("typo", "first", "lexical")]
    typo = next(r for r in out if r["id"] == "typo")
    assert 0.7 <= typo["similarity"] < 1


def test_semantic_sketch_flags_close_vectors(tmp_path):
    rng = np.random.default_rng(0)
    base = rng.normal(size=64).astype(np.float32)
    base /= np.linalg.norm(base)
    near = base + 0.02 * rng.normal(size=64).astype(np.float32)
    near /= np.linalg.norm(near)
    far = rng.normal(size=64).astype(np.float32)
    far /= np.linalg.norm(far)

    def record(record_id, vector):
        return {"id": record_id, "text": record_id,
                "embeddings": {"similarity": vector}}

    events = [(0, record("a", base)), (5, record("b", near)),
              (9, record("c", far))]
    out = _run(events, StreamingNearDuplicates(
        SemanticSketch(64), threshold=0.95, horizon_secs=60), tmp_path)
    tags = {r["id"]: r.get("duplicate_of") for r in out}
    assert tags == {"a": None, "b": "a", "c": None}
    assert next(r for r in out if r["id"] == "b")["kind"] == "semantic"


def test_a_wave_of_copies_points_at_the_original(tmp_path):
    # Only originals are remembered, so each copy (and a near copy of a
    # copy) names the first record, and the buckets hold one entry.
    events = [(t, {"id": f"copy{t}", "text": TEXT}) for t in range(1, 30)]
    events[5] = (6, {"id": "typo", "text": TEXT.replace("twelve", "twelv")})
    out = _run([(0, {"id": "original", "text": TEXT})] + events,
               StreamingNearDuplicates(), tmp_path)
    assert len(out) == 30
    assert {r.get("duplicate_of") for r in out if r["id"] != "original"} == {
        "original"}


class _OneBucket:
    """Every record in one bucket; equal texts are duplicates."""

    kind, bands = "exact", 1

    def sketch(self, record):
        return record["text"], [(0, "all")]

    @staticmethod
    def similarity(a, b):
        return float(a == b)


def test_a_full_bucket_forgets_its_oldest_original(tmp_path):
    events = [(t, {"id": f"r{t}", "text": f"text {t}"}) for t in range(4)]
    events += [(10, {"id": "copy_of_r0", "text": "text 0"}),
               (11, {"id": "copy_of_r3", "text": "text 3"})]
    out = _run(events, StreamingNearDuplicates(_OneBucket(), threshold=1.0,
                                               max_bucket=2), tmp_path)
    tags = {r["id"]: r.get("duplicate_of") for r in out}
    assert len(out) == len(events)
    assert tags["copy_of_r3"] == "r3"
    assert tags["copy_of_r0"] is None  # r0 was forgotten: missed, not wrong
