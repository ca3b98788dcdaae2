"""Real Beam runners for the runner tests: Prism, built at Beam's version.

Prism is Beam's portable local runner, written in Go. The binary is built
once from the Go module proxy at the Beam version installed here and cached
(`$PRISM_BINARY` names one built elsewhere; `.ci/run` builds it first). A
runner that cannot be set up fails the test under CI=true, with the reason;
elsewhere it skips with the reason.
"""

import os
import pathlib
import shutil
import subprocess

import apache_beam
import pytest

CACHE = pathlib.Path(os.environ.get("XDG_CACHE_HOME",
                                    pathlib.Path.home() / ".cache"))
PRISM_MODULE = "github.com/apache/beam/sdks/v2/go/cmd/prism"


def prism_path() -> pathlib.Path:
    """Where the Prism binary for this Beam version is cached."""
    return (CACHE / "embgemma-beam" / f"prism-{apache_beam.__version__}"
            / "prism")


def _unavailable(reason):
    if os.environ.get("CI"):
        pytest.fail(f"Prism is unavailable: {reason}")
    pytest.skip(f"Prism is unavailable: {reason}")


@pytest.fixture(scope="session")
def prism_binary():
    if os.environ.get("PRISM_BINARY"):
        return os.environ["PRISM_BINARY"]
    binary = prism_path()
    if binary.exists():
        return str(binary)
    if shutil.which("go") is None:
        _unavailable("no Go toolchain to build it with (see .ci/run)")
    result = subprocess.run(
        ["go", "install", f"{PRISM_MODULE}@v{apache_beam.__version__}"],
        env={**os.environ, "GOBIN": str(binary.parent)},
        capture_output=True, text=True, timeout=900)
    if result.returncode or not binary.exists():
        _unavailable(f"go install failed: {result.stderr[-2000:]}")
    return str(binary)


@pytest.fixture
def on_prism(prism_binary):
    """The flags that run a job on Prism, SDK harness in this process."""
    return ["--runner", "PrismRunner", "--prism_location", prism_binary,
            "--environment_type", "LOOPBACK"]
