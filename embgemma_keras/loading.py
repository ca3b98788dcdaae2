"""Building a backbone whose variables take the checkpoint's values as their
first values, with no random initial values made and thrown away.

Keras gives every variable a value from its initializer when it is made,
then `from_preset` assigns the checkpoint over it. For EmbeddingGemma in
bfloat16 that random draw (0.6 GB, made through float32) is freed, but
glibc keeps most of it in the process's heap: a loaded worker peaks about
0.6 GB higher than the weights need (docs/benchmarks.md, "Memory"). Here a
variable made while `values_from_checkpoint` is active keeps its initializer
and no value; the first `assign` (which is how keras-hub's loaders write
every checkpoint tensor, Keras preset or Hugging Face) becomes its value.
A variable the checkpoint did not reach is drawn from its initializer on the
way out, as Keras would have.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from embgemma_keras.backend import keras
from embgemma_keras.backend import tf

# The TensorFlow backend's variable class (`keras.Variable` is an alias
# subclass made for the public API).
_Variable = keras.src.backend.tensorflow.core.Variable
_loading = threading.local()
_one_load = threading.Lock()


@contextlib.contextmanager
def values_from_checkpoint() -> Iterator[None]:
    """Within it, this thread's new variables get no initial value until
    their first `assign`; other threads' variables are made as usual.

    Example:

    ```python
    from embgemma_keras.backend import keras_hub
    from embgemma_keras.loading import values_from_checkpoint

    with values_from_checkpoint():
        backbone = keras_hub.models.Gemma3Backbone.from_preset(
            "models/embeddinggemma-bf16", dtype="bfloat16")
    ```
    """
    with _one_load:
        deferred: list[_Variable] = []
        _loading.deferred = deferred
        original_init = _Variable._initialize_with_initializer
        original_assign = _Variable._direct_assign

        def initialize_later(variable, initializer):
            if getattr(_loading, "deferred", None) is not deferred:
                return original_init(variable, initializer)
            variable._value = None
            variable._initializer = initializer
            deferred.append(variable)

        def assign_first(variable, value):
            if variable._value is not None:
                return original_assign(variable, value)
            variable._initialize(tf.cast(value, variable._dtype))
            variable._initializer = None

        _Variable._initialize_with_initializer = initialize_later
        _Variable._direct_assign = assign_first
        try:
            yield
            for variable in deferred:
                if variable._value is None:
                    original_init(variable, variable._initializer)
                    variable._initializer = None
        finally:
            _Variable._initialize_with_initializer = original_init
            _Variable._direct_assign = original_assign
            _loading.deferred = None
