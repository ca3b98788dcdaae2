"""Build the local runners, or start a Flink cluster or the Pub/Sub server.

    python -m local_runners build            # Prism, Flink job server, Pub/Sub server
    python -m local_runners flink-cluster    # JobManager + 2 TaskManagers, until Ctrl-C
    python -m local_runners pubsub-server    # until Ctrl-C

`build` prints `NAME=PATH` lines (PRISM_BINARY, FLINK_JOB_SERVER_JAR,
PUBSUB_SERVER_BINARY), which the tests and `.ci/run` read from the
environment; the other two print the flags or variable to use.
"""

import argparse
import shlex
import signal
import sys

from local_runners import RunnerUnavailable
from local_runners.flink import FlinkCluster
from local_runners.flink import flink_flags
from local_runners.flink import job_server_jar
from local_runners.prism import prism_binary
from local_runners.pubsub import PubSubServer
from local_runners.pubsub import server_binary
from local_runners.sdk_harness import harness_flags


def _wait_for_ctrl_c():
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass


def main(argv=None):
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
                _wait_for_ctrl_c()
        else:
            with PubSubServer() as server:
                print(f"export PUBSUB_EMULATOR_HOST={server.host}",
                      flush=True)
                _wait_for_ctrl_c()
    except RunnerUnavailable as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
