"""A Python SDK harness for Beam's PROCESS environment, from this venv.

With `--environment_type PROCESS`, each Flink TaskManager starts its own
SDK harness process, as Dataflow starts one per worker VM: this is what
Beam's container entry point (`boot`) does, less installing the job's
packages, which this venv already holds. (LOOPBACK serves every TaskManager
from one process, and its worker pool tells workers apart by ids that are
unique only within one TaskManager: with two TaskManagers, one's shutdown
closes the other's harness.)

`harness_flags()` gives the pipeline flags; the runner starts
`harness_command()` with `--id` and `--provision_endpoint`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pathlib
import shutil
import signal
import stat
import sys
import tempfile

from local_runners import cache_dir


def harness_command() -> pathlib.Path:
    """An executable that starts this module in this interpreter."""
    root = pathlib.Path(__file__).resolve().parent.parent
    # One script per interpreter and checkout, rewritten each time.
    tag = hashlib.sha1(f"{sys.executable}:{root}".encode()).hexdigest()[:12]
    script = cache_dir() / "sdk-harness" / f"harness-{tag}.sh"
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(
        "#!/bin/sh\n"
        f"PYTHONPATH={root}${{PYTHONPATH:+:$PYTHONPATH}} "
        f"exec {sys.executable} -m local_runners.sdk_harness \"$@\"\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


def harness_flags() -> list[str]:
    """Pipeline flags: one SDK harness process per runner worker."""
    return ["--environment_type", "PROCESS", "--environment_config",
            json.dumps({"command": str(harness_command())})]


def main(argv=None):
    import grpc
    from apache_beam.portability.api import beam_provision_api_pb2
    from apache_beam.portability.api import beam_provision_api_pb2_grpc

    parser = argparse.ArgumentParser()
    parser.add_argument("--id", required=True)
    parser.add_argument("--provision_endpoint", required=True)
    args, _ = parser.parse_known_args(argv)
    with grpc.insecure_channel(args.provision_endpoint) as channel:
        info = beam_provision_api_pb2_grpc.ProvisionServiceStub(
            channel).GetProvisionInfo(
                beam_provision_api_pb2.GetProvisionInfoRequest(),
                metadata=[("worker_id", args.id)]).info
    with tempfile.TemporaryDirectory(prefix="sdk-harness-") as scratch:
        _remove_on_termination(scratch)
        _serve(args.id, info, scratch)


def _remove_on_termination(directory):
    """The runner ends a harness with SIGTERM, which skips Python's
    clean-up: remove `directory`, then terminate as without the handler."""
    def terminate(signum, frame):
        shutil.rmtree(directory, ignore_errors=True)
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
    signal.signal(signal.SIGTERM, terminate)


def _serve(worker_id, info, semi_persistent_dir):
    """Runs the SDK harness until the runner shuts it down, as Beam's
    container entry point would, given its provision info."""
    from apache_beam.runners.worker import sdk_worker_main
    from google.protobuf import json_format
    from google.protobuf import text_format

    os.environ.update({
        "WORKER_ID": worker_id,
        "PIPELINE_OPTIONS": json_format.MessageToJson(info.pipeline_options),
        "CONTROL_API_SERVICE_DESCRIPTOR": text_format.MessageToString(
            info.control_endpoint),
        "LOGGING_API_SERVICE_DESCRIPTOR": text_format.MessageToString(
            info.logging_endpoint),
        "SEMI_PERSISTENT_DIRECTORY": semi_persistent_dir,
        "RUNNER_CAPABILITIES": " ".join(info.runner_capabilities),
    })
    sdk_worker_main.main(sys.argv[:1])


if __name__ == "__main__":
    main()
