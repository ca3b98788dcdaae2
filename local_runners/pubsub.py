"""A Pub/Sub server on localhost speaking the real Pub/Sub gRPC API.

```python
from local_runners.pubsub import PubSubServer

with PubSubServer() as server:      # sets PUBSUB_EMULATOR_HOST meanwhile
    publisher = pubsub_v1.PublisherClient()
    ...
```

The server is `local_runners/pubsub/main.go` on Google's in-memory fake
(`cloud.google.com/go/pubsub/v2/pstest`: topics, subscriptions, ack
deadlines, nacks and redelivery), built once with Go and cached. Google's
client libraries, Beam's Pub/Sub IO among them, talk to it through
`PUBSUB_EMULATOR_HOST` like to the Pub/Sub emulator of the gcloud CLI.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import shutil
import signal
import subprocess
from collections.abc import Iterator

from local_runners import RunnerUnavailable
from local_runners import cache_dir
from local_runners import source_key

SOURCE = pathlib.Path(__file__).with_name("pubsub")


def server_binary() -> pathlib.Path:
    """The server binary: `$PUBSUB_SERVER_BINARY`, cached, or built now."""
    if os.environ.get("PUBSUB_SERVER_BINARY"):
        return pathlib.Path(os.environ["PUBSUB_SERVER_BINARY"])
    key = source_key(*(SOURCE / name for name in ("main.go", "go.mod",
                                                  "go.sum")))
    binary = cache_dir() / f"pubsub-server-{key}" / "pubsub-server"
    if binary.exists():
        return binary
    if shutil.which("go") is None:
        raise RunnerUnavailable("the Pub/Sub server is built with Go, and "
                                "`go` is not on PATH (https://go.dev/dl)")
    result = subprocess.run(["go", "build", "-o", str(binary), "."],
                            cwd=SOURCE, capture_output=True, text=True,
                            timeout=1800)
    if result.returncode or not binary.exists():
        raise RunnerUnavailable(f"building the Pub/Sub server failed:\n"
                                f"{result.stderr[-2000:]}")
    return binary


class PubSubServer:
    """Runs the server; inside `with`, `PUBSUB_EMULATOR_HOST` points at it.

    `host` is its `HOST:PORT`. The server holds everything in memory: it
    starts empty and forgets everything when it stops.
    """

    def __init__(self):
        self.host: str | None = None
        self._process: subprocess.Popen | None = None
        self._saved_env: str | None = None

    def __enter__(self) -> PubSubServer:
        self.start()
        self._saved_env = os.environ.get("PUBSUB_EMULATOR_HOST")
        os.environ["PUBSUB_EMULATOR_HOST"] = self.host
        return self

    def __exit__(self, *exc_info):
        if self._saved_env is None:
            os.environ.pop("PUBSUB_EMULATOR_HOST", None)
        else:
            os.environ["PUBSUB_EMULATOR_HOST"] = self._saved_env
        self.stop()

    def start(self) -> None:
        """Starts the server and waits until it listens; a start that
        fails or is interrupted (Ctrl-C, SIGTERM) stops it again."""
        self._process = subprocess.Popen(
            [str(server_binary())], stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True)
        try:
            first = self._process.stdout.readline().strip()
            if not first.startswith("listening on "):
                raise RunnerUnavailable(f"the Pub/Sub server did not start: "
                                        f"{first!r}")
        except BaseException:
            self.stop()
            raise
        self.host = first.removeprefix("listening on ")

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """The server frozen (SIGSTOP) inside `with`, then resumed
        (SIGCONT): unreachable for a while, its messages kept, as a
        network partition leaves a real service."""
        self._process.send_signal(signal.SIGSTOP)
        try:
            yield
        finally:
            self._process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        """Stops the server: SIGTERM, then SIGKILL after 30 s."""
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process.stdout.close()
            self._process = None
