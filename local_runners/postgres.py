"""PostgreSQL 16 with pgvector on this machine, for a dedup index in a
database (`embgemma_keras.index.database`).

```python
from local_runners.postgres import LocalPostgres

with LocalPostgres("/tmp/pg") as server:     # the data stays in /tmp/pg
    index = DatabaseIndex.open(server.url, settings)
```

or, until Ctrl-C (or SIGTERM), printing `POSTGRES_URL=postgresql://...`:

    python -m local_runners postgres

The server is the `pgserver` wheel (the test extra): PostgreSQL and the
pgvector extension built for this platform, started on a Unix socket in
the data directory (no TCP port), with local connections trusted, so the
URL has no password. Run as root, it runs as a `pgserver` system user.
Its shared buffers are a quarter of the machine's memory (PostgreSQL's
advice for a dedicated server; Cloud SQL's default is a third) rather
than the 128 MB PostgreSQL starts with: an HNSW lookup read through 128
MB costs about 1.4 times as much at a million entries (docs/benchmarks.md).
"""

from __future__ import annotations

import os
import pathlib
import signal
import threading

from local_runners import RunnerUnavailable
from local_runners import cache_dir


def default_shared_buffers() -> str:
    """A quarter of this machine's memory, in PostgreSQL's units."""
    memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return f"{memory // 4 // 2**20}MB"


def default_data_dir() -> pathlib.Path:
    """Where `serve` keeps its data unless told: under the runners' cache,
    so an index survives a restart of the server."""
    return cache_dir() / "postgres"


class LocalPostgres:
    """A PostgreSQL server on a data directory, with pgvector created.

    Args:
        data_dir: the data directory (made on first use; its parent must
            exist). Starting again on it finds the data that was there.
        shared_buffers: the server's `shared_buffers` (a PostgreSQL size,
            "10GB"); default `default_shared_buffers()`.

    Example: `LocalPostgres(tmp / "pg").start()` returns
    `postgresql://postgres:@/postgres?host=<socket dir>`.
    """

    def __init__(self, data_dir: str | os.PathLike,
                 shared_buffers: str | None = None):
        self.data_dir = pathlib.Path(data_dir)
        self.shared_buffers = shared_buffers or default_shared_buffers()
        self.url: str | None = None
        self._server = None

    def __enter__(self) -> LocalPostgres:
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def start(self) -> str:
        """Starts the server (or finds it running), creates the `vector`
        extension, and returns the URL to connect with."""
        try:
            import pgserver
            import psycopg
        except ImportError as e:
            raise RunnerUnavailable(
                f"{e.name} is not installed: pip install -e '.[test]'") from e
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._server = pgserver.get_server(self.data_dir,
                                               cleanup_mode="stop")
            self.url = self._server.get_uri()
            self._size_shared_buffers()
            with psycopg.connect(self.url, autocommit=True) as connection:
                connection.execute("CREATE EXTENSION IF NOT EXISTS vector")
        except Exception as e:
            self.stop()
            raise RunnerUnavailable(
                f"PostgreSQL did not start in {self.data_dir}: {e}") from e
        return self.url

    def _size_shared_buffers(self) -> None:
        """Sets `shared_buffers` and restarts the server where it differs
        (a setting read only at start)."""
        import psycopg
        from pgserver import pg_ctl

        with psycopg.connect(self.url, autocommit=True) as connection:
            wanted, running = connection.execute(
                "SELECT pg_size_bytes(%s), pg_size_bytes(current_setting("
                "'shared_buffers'))", [self.shared_buffers]).fetchone()
            if wanted == running:
                return
            connection.execute(psycopg.sql.SQL(
                "ALTER SYSTEM SET shared_buffers = {}").format(
                    self.shared_buffers))
        server = self._server
        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=server.pgdata,
               user=server.system_user)
        server.ensure_postgres_running()

    def stop(self) -> None:
        """Stops the server and its processes; the data stays."""
        if self._server is None:
            return
        server, self._server = self._server, None
        # pgserver stops the server only when its last handle goes, and
        # counts the processes of a killed earlier run among them: stop it
        # in any case. The postmaster removes its pid file last.
        server.cleanup()
        if (server.pgdata / "postmaster.pid").exists():
            from pgserver import pg_ctl

            pg_ctl(["-w", "-m", "fast", "stop"], pgdata=server.pgdata,
                   user=server.system_user)
        self.url = None


def serve(data_dir: str | os.PathLike | None = None,
          shared_buffers: str | None = None) -> None:
    """Runs the server until SIGINT or SIGTERM, then stops it.

    Prints `POSTGRES_URL=<url>` once it is up, for a shell or a test to
    read: `python -m local_runners postgres`.

    Args:
        data_dir: the data directory; `default_data_dir()` when None.
        shared_buffers: see `LocalPostgres`.
    """
    stopping = threading.Event()
    handled = (signal.SIGINT, signal.SIGTERM)
    previous = {signum: signal.signal(signum, lambda *_: stopping.set())
                for signum in handled}
    try:
        with LocalPostgres(data_dir or default_data_dir(),
                           shared_buffers) as server:
            print(f"POSTGRES_URL={server.url}", flush=True)
            stopping.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
