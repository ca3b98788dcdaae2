import threading

import numpy as np
import pytest

from embgemma_keras import EmbeddingGemma
from embgemma_keras.backend import keras
from embgemma_keras.backend import keras_hub
from embgemma_keras.loading import values_from_checkpoint


class _CountingInitializer(keras.initializers.Initializer):
    """Constant 3.0, counting the values it makes."""

    def __init__(self):
        self.calls = 0

    def __call__(self, shape, dtype=None):
        self.calls += 1
        return keras.ops.full(shape, 3.0, dtype=dtype)


def _variable(initializer, shape=(2, 3)):
    return keras.Variable(initializer, shape=shape, dtype="float32")


def test_a_model_loads_to_the_weights_and_vectors_keras_hub_gives(
        tiny_preset):
    ours = EmbeddingGemma.from_preset(tiny_preset)
    plain = EmbeddingGemma(
        keras_hub.models.Gemma3Backbone.from_preset(tiny_preset),
        keras_hub.models.Gemma3Tokenizer.from_preset(tiny_preset))
    for mine, theirs in zip(ours.backbone.weights, plain.backbone.weights,
                            strict=True):
        np.testing.assert_array_equal(mine.numpy(), theirs.numpy())
    texts = ["a short text", "and a somewhat longer second one"]
    np.testing.assert_array_equal(ours.encode(texts), plain.encode(texts))


def test_a_variable_takes_its_first_assigned_value_with_no_initial_draw():
    initializer = _CountingInitializer()
    with values_from_checkpoint():
        variable = _variable(initializer)
        variable.assign(np.ones((2, 3), np.float32))
    assert initializer.calls == 0
    np.testing.assert_array_equal(variable.numpy(), np.ones((2, 3)))
    variable.assign(np.zeros((2, 3), np.float32))  # assigns as usual after
    np.testing.assert_array_equal(variable.numpy(), np.zeros((2, 3)))


def test_a_variable_the_checkpoint_did_not_reach_gets_its_initial_value():
    with values_from_checkpoint():
        variable = _variable(_CountingInitializer())
    np.testing.assert_array_equal(variable.numpy(), np.full((2, 3), 3.0))


def test_other_threads_make_their_variables_as_usual():
    made = []
    with values_from_checkpoint():
        other = threading.Thread(
            target=lambda: made.append(_variable(_CountingInitializer())))
        other.start()
        other.join()
        np.testing.assert_array_equal(made[0].numpy(), np.full((2, 3), 3.0))


def test_after_a_failed_load_variables_are_made_as_usual():
    with pytest.raises(RuntimeError), values_from_checkpoint():
        _variable(_CountingInitializer())
        raise RuntimeError("the checkpoint is unreadable")
    initializer = _CountingInitializer()
    variable = _variable(initializer)
    assert initializer.calls == 1
    np.testing.assert_array_equal(variable.numpy(), np.full((2, 3), 3.0))
