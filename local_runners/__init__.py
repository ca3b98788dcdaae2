"""Real Beam runners and a Pub/Sub server on this machine, built from source.

Not part of the three floors (`pipelines` -> `transforms` ->
`embgemma_keras`) and imported by none of them: this is tooling that builds
and starts what a job runs on locally, for the runner tests, the
benchmarks and the README's "Run locally on Prism and Flink".

- `prism`: Beam's portable runner (Go), built from the Go module proxy at
  the installed Beam version.
- `flink`: Beam's Flink job server as one jar, built with Maven from Maven
  Central, and a standalone Flink cluster (a JobManager and TaskManagers)
  started from that jar.
- `pubsub`: a Pub/Sub server speaking the real gRPC API
  (`cloud.google.com/go/pubsub/v2/pstest`), built with Go.
- `postgres`: PostgreSQL 16 with pgvector from the `pgserver` wheel, for a
  dedup index in a database.

Each build is cached under `~/.cache/embgemma-beam` (or `$XDG_CACHE_HOME`)
and reused, keyed by the versions it is built at and, for Flink and the
Pub/Sub server, a digest of the sources here (`source_key`).
`python -m local_runners build` builds all three and prints where they
are; see `python -m local_runners --help`.
"""

import hashlib
import os
import pathlib


def cache_dir() -> pathlib.Path:
    """Where built runners are cached: `$XDG_CACHE_HOME/embgemma-beam`."""
    root = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
    return pathlib.Path(root) / "embgemma-beam"


def source_key(*sources: pathlib.Path) -> str:
    """A short digest of the files a runner is built from: it names the
    build's cache directory, so an edited source is built anew rather than
    an old build reused."""
    digest = hashlib.sha256()
    for source in sources:
        digest.update(source.read_bytes())
    return digest.hexdigest()[:12]


class RunnerUnavailable(RuntimeError):
    """A runner could not be built or started; the message says why."""
