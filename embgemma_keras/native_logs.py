"""Native libraries' notices on stderr, hidden unless the user asked for
logs (`EMBGEMMA_VERBOSE=1`, which the jobs' and the CLI's `--verbose` set,
or `TF_CPP_MIN_LOG_LEVEL` set). TensorFlow-free, so an int8 worker uses it
too.

```python
from embgemma_keras.native_logs import quiet

with quiet():
    ...  # SentencePiece, TensorFlow or XNNPACK may print here
```
"""

import contextlib
import os
import sys
from collections.abc import Iterator

from embgemma_keras.config import VERBOSE_ENV_VAR


def user_wants_logs() -> bool:
    """Whether the user asked for native libraries' logs."""
    return (os.environ.get(VERBOSE_ENV_VAR, "") not in ("", "0")
            or "TF_CPP_MIN_LOG_LEVEL" in os.environ)


# Read once, at import, before `backend` sets TF_CPP_MIN_LOG_LEVEL itself.
LOGS_WANTED = user_wants_logs()


def quiet() -> contextlib.AbstractContextManager[None]:
    """A context in which the process's stderr goes to /dev/null, unless
    the user asked for logs: for native libraries that print notices
    (SentencePiece's "precompiled_charsmap is empty" when a tokenizer
    loads, XNNPACK's "Created TensorFlow Lite XNNPACK delegate")."""
    return contextlib.nullcontext() if LOGS_WANTED else stderr_to_devnull()


@contextlib.contextmanager
def stderr_to_devnull() -> Iterator[None]:
    """The process's stderr (file descriptor 2) points at /dev/null."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
