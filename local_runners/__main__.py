"""Build the local runners, or start a Flink cluster, the Pub/Sub server or
PostgreSQL with pgvector.

    python -m local_runners build          # Prism, Flink job server, Pub/Sub
    python -m local_runners flink-cluster  # JobManager, 2 TaskManagers
    python -m local_runners pubsub-server
    python -m local_runners postgres       # prints POSTGRES_URL=...

`build` prints `NAME=PATH` lines (PRISM_BINARY, FLINK_JOB_SERVER_JAR,
PUBSUB_SERVER_BINARY), which the tests and `.ci/run` read from the
environment; the others print the flags or variable to use, and run
until Ctrl-C or SIGTERM (`kill`, a process manager), which stop the
processes they started too.
"""

import argparse
import shlex
import signal
import sys

from local_runners import RunnerUnavailable
from local_runners.flink import FlinkCluster
from local_runners.flink import flink_flags
from local_runners.flink import job_server_jar
from local_runners.postgres import serve as serve_postgres
from local_runners.prism import prism_binary
from local_runners.pubsub import PubSubServer
from local_runners.pubsub import server_binary
from local_runners.sdk_harness import harness_flags


def main(argv: list[str] | None = None) -> None:
    """Runs the command of `argv` (the command line's by default).

    SIGTERM stops it as Ctrl-C does: a KeyboardInterrupt unwinds the
    `with` blocks, which stop the servers' processes. Without it Python
    would die at once and leave them running: unlike Ctrl-C in a terminal,
    SIGTERM reaches this process alone, not its children.
    """
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        _run(argv)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run(argv):
    parser = argparse.ArgumentParser(
        prog="python -m local_runners", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("build", help="build (or find cached) all three")
    cluster = commands.add_parser("flink-cluster",
                                  help="run a standalone Flink cluster")
    cluster.add_argument("--task_managers", type=int, default=2)
    cluster.add_argument("--slots", type=int, default=1)
    commands.add_parser("pubsub-server", help="run the Pub/Sub server")
    postgres = commands.add_parser(
        "postgres", help="run PostgreSQL with pgvector (a dedup index)")
    postgres.add_argument("--data_dir", help="where its data is kept "
                          "(default: the runners' cache)")
    postgres.add_argument("--shared_buffers", help="its shared buffers "
                          "(default: a quarter of the memory)")
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            print(f"PRISM_BINARY={prism_binary()}")
            print(f"FLINK_JOB_SERVER_JAR={job_server_jar()}")
            print(f"PUBSUB_SERVER_BINARY={server_binary()}")
        elif args.command == "flink-cluster":
            with FlinkCluster(args.task_managers, args.slots) as flink:
                flags = flink_flags(flink.master,
                                    environment=harness_flags())
                print("Flink is up; run a job with:\n  "
                      + " ".join(shlex.quote(flag) for flag in flags)
                      + f" --parallelism {args.task_managers * args.slots}",
                      flush=True)
                signal.pause()
        elif args.command == "postgres":
            serve_postgres(args.data_dir, args.shared_buffers)
        else:
            with PubSubServer() as server:
                print(f"export PUBSUB_EMULATOR_HOST={server.host}",
                      flush=True)
                signal.pause()
    except RunnerUnavailable as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
