import apache_beam as beam
import numpy as np
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.ml.inference.base import KeyedModelHandler
from apache_beam.ml.inference.base import RunInference
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that
from apache_beam.testing.util import equal_to
from apache_beam.transforms.window import TimestampedValue

from tests.helpers import model_loads
from transforms import EmbeddingGemmaModelHandler
from transforms.embedding.model_handler import METRICS_NAMESPACE

TEXTS = [f"text number {i} about {'spam' if i % 3 else 'films'}"
         for i in range(40)]


def _counter(result, name):
    (counter,) = result.metrics().query(
        MetricsFilter().with_namespace(METRICS_NAMESPACE).with_name(name)
    )["counters"]
    return counter.committed


def test_run_inference_matches_encode_and_loads_the_model_once(
        tiny_preset, tiny_model):
    handler = EmbeddingGemmaModelHandler(tiny_preset, task="clustering",
                                         dim=256, max_batch_size=4)
    expected = dict(zip(TEXTS, tiny_model.encode(TEXTS, task="clustering",
                                                 dim=256), strict=True))

    def check(results):
        assert len(results) == len(TEXTS)
        for result in results:
            assert result.inference.shape == (256,)
            np.testing.assert_allclose(result.inference,
                                       expected[result.example], atol=1e-5)

    pipeline = TestPipeline()
    outputs = (pipeline | beam.Create(TEXTS, reshuffle=False)
               | RunInference(handler))
    assert_that(outputs, check)
    result = pipeline.run()
    result.wait_until_finish()
    # At least ten batches of at most four, one model.
    assert model_loads(result) == 1
    assert _counter(result, "texts") == len(TEXTS)
    assert _counter(result, "tokens") > len(TEXTS) * 5


@pytest.mark.slow
def test_keyed_handler_carries_keys(tiny_preset):
    handler = KeyedModelHandler(EmbeddingGemmaModelHandler(tiny_preset))
    with TestPipeline() as p:
        out = (p | beam.Create([("k1", "hello"), ("k2", "world")])
               | RunInference(handler)
               | beam.MapTuple(lambda key, result: (key, result.example)))
        assert_that(out, lambda got: sorted(got) == [("k1", "hello"),
                                                    ("k2", "world")] or
                    pytest.fail(f"got {got}"))


def test_several_tasks_give_a_dict_of_vectors(tiny_preset, tiny_model):
    handler = EmbeddingGemmaModelHandler(
        tiny_preset, task=["classification", "query", "classification"])
    model = handler.load_model()
    (result,) = handler.run_inference(["hello"], model)
    assert set(result.inference) == {"classification", "query"}
    np.testing.assert_allclose(result.inference["query"],
                               tiny_model.encode(["hello"], task="query")[0],
                               atol=1e-6)


@pytest.mark.slow
def test_truncated_texts_are_counted(tiny_preset):
    handler = EmbeddingGemmaModelHandler(tiny_preset, max_length=32)
    pipeline = TestPipeline()
    _ = pipeline | beam.Create(["short", "long " * 50]) | RunInference(handler)
    result = pipeline.run()
    result.wait_until_finish()
    assert _counter(result, "truncated_texts") == 1


def test_batching_and_sharing_options_reach_beam(tiny_preset):
    handler = EmbeddingGemmaModelHandler(
        tiny_preset, min_batch_size=2, max_batch_size=16,
        max_batch_duration_secs=5, model_copies=1)
    assert handler.batch_elements_kwargs() == {
        "min_batch_size": 2, "max_batch_size": 16,
        "max_batch_duration_secs": 5}
    assert handler.share_model_across_processes()
    assert not EmbeddingGemmaModelHandler(
        tiny_preset).share_model_across_processes()


def test_a_batch_deadline_applies_to_streams_only(tiny_preset):
    handler = EmbeddingGemmaModelHandler(tiny_preset,
                                         max_batch_duration_secs=5)
    files = TestPipeline() | beam.Create(TEXTS)
    stream = TestPipeline() | TestStream().add_elements(TEXTS)
    streaming = TestPipeline(options=PipelineOptions(streaming=True)
                             ) | beam.Create(TEXTS)
    # Over bounded input, full batches within bundles: no stateful batcher.
    assert handler.for_input(files).batch_elements_kwargs() == {
        "min_batch_size": 512, "max_batch_size": 512}
    for pcoll in (stream, streaming):
        assert handler.for_input(pcoll).batch_elements_kwargs() == {
            "min_batch_size": 128, "max_batch_size": 512,
            "max_batch_duration_secs": 5}
        # Timed apart from the encoder, Beam's estimator cannot size them:
        # full batches, cut by the deadline.
        apart = handler.for_input(pcoll).batch_elements_kwargs(
            encoder_apart=True)
        assert apart == {"min_batch_size": 512, "max_batch_size": 512,
                         "max_batch_duration_secs": 5}


def test_bounded_input_with_a_batch_deadline_runs_on_the_direct_runner(
        tiny_preset):
    # Beam's stateful batcher, chosen by a deadline, makes the DirectRunner
    # run the job on its bundle-based runner, where the last batch was
    # flushed after a later GroupByKey (assert_that's) had finished: a bare
    # AssertionError. Fitted to its bounded input, the handler has none.
    handler = EmbeddingGemmaModelHandler(tiny_preset,
                                         max_batch_duration_secs=2)
    with TestPipeline(runner="BundleBasedDirectRunner") as p:
        texts = p | beam.Create(TEXTS)
        examples = (texts | RunInference(handler.for_input(texts))
                    | beam.Map(lambda result: result.example))
        assert_that(examples, equal_to(TEXTS))


def test_a_streams_batch_leaves_at_its_earliest_texts_time():
    """The micro-batcher holds the watermark at a batch's earliest element;
    the batch leaves at that time, so a later stage, past a shuffle, never
    sees it behind the watermark."""
    stream = (TestStream()
              .add_elements([TimestampedValue("b", 5),
                             TimestampedValue("a", 3),
                             TimestampedValue("c", 4)])
              .advance_watermark_to_infinity())

    class _Stamped(beam.DoFn):
        def process(self, batch, timestamp=beam.DoFn.TimestampParam):
            yield sorted(batch), timestamp.micros // 1_000_000

    with TestPipeline(runner="BundleBasedDirectRunner",
                      options=PipelineOptions(streaming=True)) as p:
        stamped = (p | stream
                   | beam.BatchElements(min_batch_size=3, max_batch_size=3,
                                        max_batch_duration_secs=60)
                   | beam.ParDo(_Stamped()))
        assert_that(stamped, equal_to([(["a", "b", "c"], 3)]))


@pytest.mark.parametrize("kwargs,message", [
    ({"task": "nope"}, "Unknown task"),
    ({"dim": 100}, "dim must be one of"),
    ({"dtype": "float16"}, "does not support float16"),
    ({"task": []}, "at least one task"),
])
def test_bad_settings_fail_at_pipeline_construction(tiny_preset, kwargs,
                                                     message):
    with pytest.raises(ValueError, match=message):
        EmbeddingGemmaModelHandler(tiny_preset, **kwargs)


def test_the_handler_pickles_without_a_model(tiny_preset):
    import pickle

    handler = EmbeddingGemmaModelHandler(tiny_preset)
    handler.load_model()
    assert len(pickle.dumps(handler)) < 10_000
