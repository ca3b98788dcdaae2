"""Prism, Beam's portable local runner, built at the installed Beam version.

Beam's PrismRunner downloads a Prism release at run time (and falls back to
another runner when it cannot); built here once from the Go module proxy
and handed over with `--prism_location`, it never needs the network.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess

import apache_beam

from local_runners import RunnerUnavailable
from local_runners import cache_dir

MODULE = "github.com/apache/beam/sdks/v2/go/cmd/prism"


def prism_path() -> pathlib.Path:
    """Where the Prism binary for the installed Beam version is cached."""
    return cache_dir() / f"prism-{apache_beam.__version__}" / "prism"


def prism_binary() -> pathlib.Path:
    """The Prism binary: `$PRISM_BINARY`, the cached one, or a new build."""
    if os.environ.get("PRISM_BINARY"):
        return pathlib.Path(os.environ["PRISM_BINARY"])
    binary = prism_path()
    if binary.exists():
        return binary
    if shutil.which("go") is None:
        raise RunnerUnavailable("Prism is built with Go, and `go` is not on "
                                "PATH (https://go.dev/dl)")
    result = subprocess.run(
        ["go", "install", f"{MODULE}@v{apache_beam.__version__}"],
        env={**os.environ, "GOBIN": str(binary.parent)},
        capture_output=True, text=True, timeout=1800)
    if result.returncode or not binary.exists():
        raise RunnerUnavailable(f"go install {MODULE} failed:\n"
                                f"{result.stderr[-2000:]}")
    return binary


def prism_flags(binary: pathlib.Path | str | None = None) -> list[str]:
    """Pipeline flags that run a job on Prism, SDK harness in this process.

    Dynamic splitting is turned off (`prism_disable_sdf_split`): when Prism
    (2.77) splits a bundle of a stateful stage, it frees the keys of the
    split-off elements although elements of the same key stay in the
    running primary, so a second bundle processes that key at the same time
    from stale state, and one commit overwrites the other. `stream_tag`
    lost a record in about one run in fifteen that way (the join saw a
    record's verdicts counted in one bundle vanish from the next).
    """
    return ["--runner", "PrismRunner",
            "--prism_location", str(binary or prism_binary()),
            "--environment_type", "LOOPBACK",
            "--experiments", "prism_disable_sdf_split"]
