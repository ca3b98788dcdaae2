"""Keras on TensorFlow, imported once and without TensorFlow's start-up noise.

```python
from embgemma_keras.backend import keras, keras_hub, tf
```

TensorFlow's C++ runtime prints a dozen lines when it is imported and its
devices are first listed, before its logging can be configured (so
`TF_CPP_MIN_LOG_LEVEL` does not hide them): CUDA probing errors on a
machine without a GPU ("failed call to cuInit"), oneDNN and CPU-feature
notices. On a CPU-only machine they read like failures and are not. They
are silenced here (the process's stderr points at /dev/null meanwhile),
and so are TensorFlow's C++ logs after start-up (`TF_CPP_MIN_LOG_LEVEL=3`:
"oneDNN supports DT_INT32 only on platforms with AVX-512" at the first
batch), unless the user asked for them: `TF_CPP_MIN_LOG_LEVEL` set, or
`EMBGEMMA_VERBOSE=1` (what the jobs' and the CLI's `--verbose` set).
Errors still surface as Python exceptions.
"""

import os
import sys

from embgemma_keras.native_logs import LOGS_WANTED
from embgemma_keras.native_logs import quiet
from embgemma_keras.native_logs import stderr_to_devnull

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
if "tensorflow" not in sys.modules and not LOGS_WANTED:
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    with stderr_to_devnull():
        import tensorflow

        # Device discovery is where the CUDA probing prints.
        tensorflow.config.list_physical_devices()

import keras  # noqa: E402
import keras_hub  # noqa: E402
import tensorflow as tf  # noqa: E402

__all__ = ["keras", "keras_hub", "quiet", "tf"]
