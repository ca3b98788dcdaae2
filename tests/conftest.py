"""Shared fixtures: a tiny random model for speed, the real one when present.

Real-weight tests read the model directory from EMBGEMMA_MODEL. Without it
they are skipped locally, but fail under CI (CI=true), where .ci/run fetches
the weights: a real-weight test must never be skipped there silently. The
local runners (`set_up_runner`) and the PostgreSQL server (`postgres`) are
treated alike.

`python -m pytest -m "not slow"` is the quick loop: it leaves out the tests
marked `slow` (see pytest.ini), among them every test on a real runner or
on the real weights, which the hook below marks; plain `python -m pytest`
runs everything.
"""

import os
from collections.abc import Callable
from typing import TypeVar

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import pytest  # noqa: E402

# Needs torch and sentence-transformers (the benchmark extra); run by hand.
collect_ignore = ["data/make_reference.py"]

from embgemma_keras import EmbeddingGemma  # noqa: E402
from embgemma_keras import make_tiny_preset  # noqa: E402
from embgemma_keras.int8 import CACHE_ENV_VAR  # noqa: E402
from local_runners import RunnerUnavailable  # noqa: E402
from tests.helpers import PG_PASSWORD  # noqa: E402
from tests.helpers import PG_ROLE  # noqa: E402
from tests.helpers import postgres_unavailable  # noqa: E402


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Marks `slow` the tests on real runners or on the real weights."""
    for item in items:
        if (item.get_closest_marker("runners")
                or "real_model_path" in getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


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


Made = TypeVar("Made")


@pytest.fixture(scope="session")
def set_up_runner() -> Callable[[Callable[[], Made]], Made]:
    """`set_up_runner(make)`: what `make()` builds or starts.

    When it raises RunnerUnavailable (no Go, Java or Maven, a failed build
    or start), the test fails under CI=true and skips elsewhere, with the
    reason.
    """
    def set_up(make: Callable[[], Made]) -> Made:
        try:
            return make()
        except RunnerUnavailable as e:
            if os.environ.get("CI"):
                pytest.fail(f"runner unavailable: {e}")
            pytest.skip(f"runner unavailable: {e}")
    return set_up


@pytest.fixture(scope="session")
def real_model(real_model_path):
    return EmbeddingGemma.from_preset(real_model_path, dtype="float32")


@pytest.fixture(scope="session")
def real_model_bf16(real_model_path):
    return EmbeddingGemma.from_preset(real_model_path, dtype="bfloat16")


@pytest.fixture(scope="session")
def real_model_int8(real_model_path, tmp_path_factory):
    # Its program is made in a test cache, not the user's.
    os.environ[CACHE_ENV_VAR] = str(tmp_path_factory.mktemp("int8"))
    return EmbeddingGemma.from_preset(real_model_path, dtype="int8")


@pytest.fixture(scope="session")
def postgres(tmp_path_factory):
    """One PostgreSQL server (with pgvector) for the session, shared by
    every test of a database index; each uses a schema of its own.

    Besides the trusted superuser (`postgres.url`), it has a role with a
    password (`PG_ROLE`, `PG_PASSWORD`; `tests.helpers.role_url`): its
    pg_hba.conf line is written before a restart, so it is in force.
    Fails under CI=true if the server cannot start; skips elsewhere.
    """
    import psycopg

    from local_runners.postgres import LocalPostgres

    server = LocalPostgres(tmp_path_factory.mktemp("postgres") / "data")
    try:
        with psycopg.connect(server.start(), autocommit=True) as connection:
            connection.execute(f"CREATE ROLE {PG_ROLE} LOGIN PASSWORD "
                               f"'{PG_PASSWORD}'")
            connection.execute(
                f"GRANT CREATE ON DATABASE postgres TO {PG_ROLE}")
        hba = server.data_dir / "pg_hba.conf"
        hba.write_text(f"local all {PG_ROLE} scram-sha-256\n"
                       + hba.read_text())
        server.stop()
        server.start()
    except (RunnerUnavailable, psycopg.Error, OSError) as e:
        server.stop()
        postgres_unavailable(str(e))
    yield server
    server.stop()
