"""Shared fixtures: a tiny random model for speed, the real one when present.

Real-weight tests read the model directory from EMBGEMMA_MODEL. Without it
they are skipped locally, but fail under CI (CI=true), where .ci/run fetches
the weights: a real-weight test must never be skipped there silently.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import pytest  # noqa: E402

# Needs torch and sentence-transformers (the benchmark extra); run by hand.
collect_ignore = ["data/make_reference.py"]

from embgemma_keras import EmbeddingGemma  # noqa: E402
from embgemma_keras import make_tiny_preset  # noqa: E402


@pytest.fixture(scope="session")
def tiny_preset(tmp_path_factory):
    return make_tiny_preset(tmp_path_factory.mktemp("tiny") / "preset")


@pytest.fixture(scope="session")
def tiny_model(tiny_preset):
    return EmbeddingGemma.from_preset(tiny_preset)


@pytest.fixture(scope="session")
def real_model_path():
    path = os.environ.get("EMBGEMMA_MODEL")
    if not path:
        if os.environ.get("CI"):
            pytest.fail("CI must set EMBGEMMA_MODEL (see .ci/run).")
        pytest.skip("EMBGEMMA_MODEL is not set; real-weight test skipped.")
    return path


@pytest.fixture(scope="session")
def real_model(real_model_path):
    return EmbeddingGemma.from_preset(real_model_path, dtype="float32")


@pytest.fixture(scope="session")
def real_model_bf16(real_model_path):
    return EmbeddingGemma.from_preset(real_model_path, dtype="bfloat16")
