import json
import logging

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that
from apache_beam.testing.util import equal_to
from apache_beam.transforms.window import FixedWindows
from apache_beam.transforms.window import TimestampedValue

from embgemma_keras.records.schema import to_json_line
from tests.helpers import model_loads
from transforms import DEFAULT_PROMPTS
from transforms import EmbeddingGemmaModelHandler
from transforms import EmbedRecords
from transforms import ParseRecords
from transforms import prompts_for
from transforms.embedding.model_handler import METRICS_NAMESPACE

GOOD = [
    json.dumps({"id": f"r{i}", "text": text, "n": i}).encode()
    for i, text in enumerate(
        [f"message {i}: "
         f"{'win a prize now' if i % 4 == 0 else 'see you at lunch'}"
         for i in range(40)]
        + ["\u0645\u0631\u062d\u0628\u0627 \U0001F600 \u4f60\u597d",
           "NUL \u0000 and bell \u0007", "x" * 3000])
]
BAD = [b"{broken", b"[]", b"3", b'{"text": null}', b'{"no_text": 1}',
       b'{"text": 5}', b'{"text": ""}', b'{"text": "   "}',
       b'{"text": "\xc3\x28"}', b'{"text": "' + b"y" * 5000 + b'"}',
       b'{"text": "t", "title": []}', b'{"text": "t", "id": 9}',
       b'{"text": false}', b'{"text": ["list"]}', b"", b"null",
       b'{"text": {"nested": "dict"}}', b'{"text": "a", "id": null, "x": 1}']
# The last BAD line is in fact fine: a null id is replaced by a derived one.
MAX_BYTES = 4096


@pytest.fixture(scope="module")
def expected(tiny_model):
    """Vectors `EmbeddingGemma.encode` gives each good record, per stage."""
    texts = {json.loads(line)["id"]: json.loads(line)["text"] for line in GOOD}
    ids = list(texts)
    by_stage = {
        stage: dict(zip(ids, tiny_model.encode([texts[i] for i in ids],
                                               task=task, dim=256),
                        strict=True))
        for stage, task in DEFAULT_PROMPTS.items()
    }
    return by_stage


def _handler(tiny_preset, **kwargs):
    return EmbeddingGemmaModelHandler(tiny_preset, dim=256, max_batch_size=8,
                                      **kwargs)


def _check_vectors(expected, count=None):
    """A check that the records (all of GOOD, or `count`) have the vectors
    `expected`."""
    def check(records):
        assert len(records) == (len(GOOD) if count is None else count)
        for record in records:
            assert set(record["embeddings"]) == set(DEFAULT_PROMPTS)
            for stage, vector in record["embeddings"].items():
                np.testing.assert_allclose(
                    vector, expected[stage][record["id"]], atol=1e-5)
    return check


@pytest.mark.slow
def test_batch_pipeline_conserves_records_and_matches_encode(
        tiny_preset, expected):
    lines = GOOD + BAD
    assert len(lines) >= 60
    pipeline = TestPipeline()
    parsed = pipeline | beam.Create(lines) | ParseRecords(max_bytes=MAX_BYTES)
    embedded = parsed.output | EmbedRecords(_handler(tiny_preset))
    good_out = embedded.output | "KeepGood" >> beam.Filter(
        lambda r: r["id"].startswith("r"))
    assert_that(good_out, _check_vectors(expected), label="vectors")
    counts = ((embedded.output | "O" >> beam.Map(lambda _: "embedded")),
              (parsed.dead_letters | "P" >> beam.Map(lambda _: "dead")),
              (embedded.dead_letters | "E" >> beam.Map(lambda _: "dead"))
              ) | beam.Flatten() | beam.combiners.Count.PerElement()
    assert_that(counts, equal_to([("embedded", len(GOOD) + 1),
                                  ("dead", len(BAD) - 1)]), label="counts")
    reasons = parsed.dead_letters | beam.Map(lambda d: bool(d["error"]))
    assert_that(reasons, equal_to([True] * (len(BAD) - 1)), label="reasons")
    result = pipeline.run()
    result.wait_until_finish()
    assert model_loads(result) == 1


class _AppendWithWindow(beam.DoFn):
    """A file sink that sees every element, late or not (DirectRunner)."""

    def __init__(self, path):
        self._path = path

    def process(self, record, window=beam.DoFn.WindowParam):
        with open(self._path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"window_start": int(window.start),
                                "record": json.loads(to_json_line(record))})
                    + "\n")


@pytest.mark.slow
def test_streaming_with_test_stream_gives_the_same_vectors(
        tiny_preset, expected, tmp_path):
    # Groups of ten records arrive at event times 0, 10, 20, ... in separate
    # bundles, processing time and the watermark advancing between them.
    stream = TestStream().advance_watermark_to(0)
    for start in range(0, len(GOOD), 10):
        stream = (stream.add_elements([TimestampedValue(line, start)
                                       for line in GOOD[start:start + 10]])
                  .advance_processing_time(2)
                  .advance_watermark_to(start + 5))
    stream = stream.advance_watermark_to_infinity()
    sink = tmp_path / "out.jsonl"
    with TestPipeline(options=PipelineOptions(streaming=True)) as p:
        parsed = (p | stream | beam.WindowInto(FixedWindows(10))
                  | ParseRecords(max_bytes=MAX_BYTES))
        embedded = parsed.output | EmbedRecords(
            _handler(tiny_preset, max_batch_duration_secs=1))
        _ = embedded.output | beam.ParDo(_AppendWithWindow(str(sink)))
    outputs = [json.loads(line) for line in sink.read_text().splitlines()]
    _check_vectors(expected)([o["record"] for o in outputs])
    # Whenever its micro-batch was flushed, a record stays in the window of
    # its event time (record n arrived at time 10 * (n // 10)).
    for output in outputs:
        assert output["window_start"] == 10 * (output["record"]["n"] // 10)


@pytest.mark.parametrize("runner", [
    # What the README's plain `beam.Pipeline()` runs it on.
    pytest.param("DirectRunner", marks=pytest.mark.slow),
    # Where it failed: the DirectRunner handed the job to it.
    "BundleBasedDirectRunner"])
def test_a_file_job_with_a_batch_deadline_writes_every_record(
        tiny_preset, expected, tmp_path, runner):
    # The README's building block as written: a handler with a deadline for
    # streams, over a file, in a plain pipeline. The deadline made the
    # DirectRunner hand the job to its bundle-based runner, where Beam's
    # stateful batcher flushed its last batch after the file sink's
    # GroupByKey had finished (a bare AssertionError).
    source = tmp_path / "in.jsonl"
    source.write_bytes(b"\n".join(GOOD) + b"\n")
    out = tmp_path / "out"
    with beam.Pipeline(runner=runner) as p:
        parsed = (p | beam.io.ReadFromText(str(source))
                  | ParseRecords(max_bytes=MAX_BYTES))
        # Beam's default batch sizes, larger than the input, as in the
        # README: the last batch is the first, flushed at the input's end.
        embedded = parsed.output | EmbedRecords(EmbeddingGemmaModelHandler(
            tiny_preset, dim=256, max_batch_duration_secs=2))
        _ = (embedded.output | beam.Map(to_json_line)
             | beam.io.WriteToText(str(out), file_name_suffix=".jsonl"))
    records = [json.loads(line) for path in tmp_path.glob("out*.jsonl")
               for line in path.read_text().splitlines()]
    _check_vectors(expected)(records)


def test_a_stream_logs_no_key_coder_warning(tiny_preset, expected, caplog,
                                            tmp_path):
    # Beam's stream batcher keys its stateful stage by a worker's UUID; an
    # undeclared key type made Beam warn, in every stream job's log, that
    # the key coder "may not be deterministic".
    stream = TestStream().add_elements(GOOD[:4]).advance_watermark_to(10)
    sink = tmp_path / "out.jsonl"
    options = PipelineOptions(streaming=True)
    with caplog.at_level(logging.WARNING), TestPipeline(
            runner="BundleBasedDirectRunner", options=options) as p:
        parsed = (p | stream | beam.WindowInto(FixedWindows(10))
                  | ParseRecords(max_bytes=MAX_BYTES))
        embedded = parsed.output | EmbedRecords(
            _handler(tiny_preset, max_batch_duration_secs=1))
        _ = embedded.output | beam.ParDo(_AppendWithWindow(str(sink)))
    outputs = [json.loads(line) for line in sink.read_text().splitlines()]
    _check_vectors(expected, count=4)([o["record"] for o in outputs])
    assert "Key coder" not in caplog.text


@pytest.mark.parametrize("runner,apart", [
    ("PrismRunner", True), ("FlinkRunner", True),
    ("DirectRunner", False), ("BundleBasedDirectRunner", False)])
def test_a_streams_batches_reach_the_encoder_in_a_stage_of_their_own(
        tiny_preset, runner, apart):
    """Fused with the micro-batcher, each embedding keeps the batcher's key
    busy, and Prism spins on its due deadline; Beam's Python DirectRunner
    loses a last batch that crosses a GroupByKey (apache/beam#28716)."""
    pipeline = beam.Pipeline(runner=runner,
                             options=PipelineOptions(streaming=True))
    parsed = pipeline | beam.Create(GOOD) | ParseRecords(max_bytes=MAX_BYTES)
    _ = parsed.output | EmbedRecords(
        _handler(tiny_preset, max_batch_duration_secs=1))
    transforms = pipeline.to_runner_api().components.transforms.values()
    reshuffled = [t.unique_name for t in transforms
                  if t.spec.urn == "beam:transform:group_by_key:v1"
                  and "EmbedRecords" in t.unique_name]
    assert bool(reshuffled) == apart, reshuffled


@pytest.mark.slow
def test_multi_process_runner_gives_the_same_vectors(tiny_preset, expected,
                                                     tmp_path):
    options = PipelineOptions(direct_num_workers=2,
                              direct_running_mode="multi_processing")
    pipeline = beam.Pipeline(options=options)
    parsed = pipeline | beam.Create(GOOD) | ParseRecords(max_bytes=MAX_BYTES)
    _ = ((parsed.output | EmbedRecords(_handler(tiny_preset))).output
         | beam.Map(to_json_line)
         | beam.io.WriteToText(str(tmp_path / "out"),
                               file_name_suffix=".jsonl"))
    result = pipeline.run()
    result.wait_until_finish()
    records = [json.loads(line) for path in tmp_path.glob("out*.jsonl")
               for line in path.read_text().splitlines()]
    _check_vectors(expected)(records)
    assert 1 <= model_loads(result) <= 2  # one per worker process


@pytest.mark.slow
def test_shared_prompts_give_one_vector_in_one_pass(tiny_preset, expected):
    handler = _handler(tiny_preset)
    prompts = prompts_for("shared", DEFAULT_PROMPTS)
    pipeline = TestPipeline()
    embedded = (pipeline | beam.Create(GOOD[:8])
                | ParseRecords(max_bytes=MAX_BYTES)).output | EmbedRecords(
        handler, prompts=prompts)

    def check(records):
        for record in records:
            vectors = list(record["embeddings"].values())
            assert len(vectors) == 3
            for vector in vectors:
                np.testing.assert_array_equal(vector, vectors[0])
            np.testing.assert_allclose(
                vectors[0], expected["similarity"][record["id"]],
                atol=1e-5)
    assert_that(embedded.output, check)
    result = pipeline.run()
    result.wait_until_finish()
    texts = result.metrics().query(MetricsFilter().with_namespace(
        METRICS_NAMESPACE).with_name("texts"))["counters"]
    assert sum(c.committed for c in texts) == 8  # one pass, not three


class _FailsOnPoison(EmbeddingGemmaModelHandler):
    """Fault injection: the model raises on any batch holding "POISON"."""

    def run_inference(self, batch, model, inference_args=None):
        if any("POISON" in text for text in batch):
            raise RuntimeError("injected failure")
        return super().run_inference(batch, model, inference_args)


def test_a_failing_batch_becomes_dead_letters(tiny_preset):
    lines = GOOD[:6] + [b'{"id": "p", "text": "POISON"}']
    handler = _FailsOnPoison(tiny_preset, max_batch_size=1)
    with TestPipeline() as p:
        parsed = p | beam.Create(lines) | ParseRecords(max_bytes=MAX_BYTES)
        embedded = parsed.output | EmbedRecords(handler)
        assert_that(embedded.output | beam.combiners.Count.Globally(),
                    equal_to([6]), label="embedded")
        assert_that(embedded.dead_letters | beam.Map(
            lambda d: (d["stage"], d["error"], json.loads(d["raw"])["id"])),
            equal_to([("embed", "RuntimeError('injected failure')", "p")]),
            label="dead")


def test_real_weights_pipeline_matches_encode(real_model_path, real_model):
    texts = [json.loads(line)["text"] for line in GOOD[:12]]
    expected = dict(zip(texts, real_model.encode(texts, task="clustering"),
                        strict=True))
    handler = EmbeddingGemmaModelHandler(real_model_path)
    with TestPipeline() as p:
        records = p | beam.Create([{"id": str(i), "text": t}
                                   for i, t in enumerate(texts)])
        embedded = records | EmbedRecords(handler,
                                          prompts={"clusters": "clustering"})

        def check(outputs):
            assert len(outputs) == len(texts)
            for record in outputs:
                vector = record["embeddings"]["clusters"]
                assert float(vector @ expected[record["text"]]) >= 0.9999
        assert_that(embedded.output, check)
