import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that
from apache_beam.testing.util import equal_to

from embgemma_keras import LinearHead
from embgemma_keras import ModelIdentity
from embgemma_keras import ZeroShotHead
from transforms import ClassifyLabels

IDENTITY = ModelIdentity("m", "f")


def _heads():
    vectors = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], np.float32)
    spam = LinearHead.fit(vectors, ["spam", "spam", "ham", "ham"],
                          task="classification", model_identity=IDENTITY,
                          inner_folds=2)
    mood = ZeroShotHead(["up", "down"], np.array([[1, 0], [0, 1]]),
                        "classification", 2, IDENTITY, min_score=0.5)
    return {"spam": spam, "mood": mood}


@pytest.mark.slow
def test_several_heads_label_each_record_at_once():
    records = [
        {"id": "1", "embeddings": {"classification": np.array([1.0, 0.0])}},
        {"id": "2", "embeddings": {"classification": np.array([0.0, 1.0])}},
        {"id": "3", "embeddings": {"classification": np.array([-1.0, 0.0])}},
    ]
    with TestPipeline() as p:
        out = (p | beam.Create(records) | ClassifyLabels(_heads())).output
        assert_that(out | beam.Map(lambda r: (
            r["id"], r["labels"]["spam"]["label"],
            r["labels"]["mood"]["label"])),
            equal_to([("1", "spam", "up"), ("2", "ham", "down"),
                      ("3", "ham", "unknown")]))


def test_a_record_without_the_embedding_is_a_dead_letter():
    with TestPipeline() as p:
        result = p | beam.Create([{"id": "x", "embeddings": {}}]) | (
            ClassifyLabels(_heads()))
        assert_that(result.dead_letters | beam.Map(lambda d: d["stage"]),
                    equal_to(["classify"]))


def test_heads_of_different_dims_are_refused():
    heads = _heads()
    heads["wide"] = ZeroShotHead(["a", "b"], np.eye(3)[:2], "classification",
                                 3, IDENTITY)
    with pytest.raises(ValueError, match="disagree on the embedding dim"):
        ClassifyLabels(heads)
