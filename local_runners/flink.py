"""Flink for Beam jobs here: the job server jar and a standalone cluster.

```python
from local_runners.flink import FlinkCluster, flink_flags

with FlinkCluster(task_managers=2) as cluster:
    dedup_corpus.main([..., *flink_flags(cluster.master), "--parallelism", "2"])
```

`flink_flags()` alone (master `[local]`) runs a job on a Flink cluster
embedded in the job server. The job server jar is built once with Maven
from `local_runners/flink/pom.xml` (Beam's runner for Flink `FLINK_VERSION`
at `BEAM_JAVA_VERSION`) and cached. It holds Flink's runtime too, so the
cluster's JobManager and TaskManagers run from it, as `bin/jobmanager.sh`
and `bin/taskmanager.sh` of a Flink distribution would run them.

The job server's Beam version differs from the Python SDK's: Maven Central
as this project sees it serves Beam's Java job service up to 2.62 for Flink
1.19 (2.70's runner module is served, its job service is not). The job
server only translates the portable pipeline and runs it; the Python SDK
harness (LOOPBACK: in the submitting process) runs every DoFn, so the Fn
API between them is what must match, and the runner tests check the
results against the DirectRunner's.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Sequence

from local_runners import RunnerUnavailable
from local_runners import cache_dir
from local_runners import source_key

FLINK_VERSION = "1.19"
BEAM_JAVA_VERSION = "2.62.0"
POM = pathlib.Path(__file__).with_name("flink") / "pom.xml"
JOB_MANAGER = ("org.apache.flink.runtime.entrypoint."
               "StandaloneSessionClusterEntrypoint")
TASK_MANAGER = "org.apache.flink.runtime.taskexecutor.TaskManagerRunner"
# Flink's own calculator of JVM and memory settings, as its scripts use it.
MEMORY_SETTINGS = "org.apache.flink.runtime.util.bash.BashJavaUtils"


def build_dir() -> pathlib.Path:
    return cache_dir() / (f"flink-{FLINK_VERSION}-job-server-"
                          f"{BEAM_JAVA_VERSION}-{source_key(POM)}")


def job_server_jar() -> pathlib.Path:
    """The job server jar: `$FLINK_JOB_SERVER_JAR`, cached, or built now."""
    if os.environ.get("FLINK_JOB_SERVER_JAR"):
        return pathlib.Path(os.environ["FLINK_JOB_SERVER_JAR"])
    work = build_dir()
    jar = (work / "target" /
           f"beam-flink-{FLINK_VERSION}-job-server-{BEAM_JAVA_VERSION}.jar")
    if jar.exists():
        return jar
    for tool in ("mvn", "java"):
        if shutil.which(tool) is None:
            raise RunnerUnavailable(f"the Flink job server is built with "
                                    f"Maven and runs on Java; `{tool}` is "
                                    "not on PATH")
    work.mkdir(parents=True, exist_ok=True)
    shutil.copy(POM, work / "pom.xml")
    result = subprocess.run(
        ["mvn", "-B", "-q", "-f", str(work / "pom.xml"),
         f"-Dbeam.version={BEAM_JAVA_VERSION}",
         f"-Dflink.version={FLINK_VERSION}", "package"],
        capture_output=True, text=True, timeout=1800)
    if result.returncode or not jar.exists():
        raise RunnerUnavailable("building the Flink job server failed:\n"
                                f"{(result.stdout + result.stderr)[-2000:]}")
    return jar


LOOPBACK = ("--environment_type", "LOOPBACK")


def flink_flags(master: str = "[local]",
                jar: pathlib.Path | str | None = None,
                environment: Sequence[str] = LOOPBACK) -> list[str]:
    """Pipeline flags that run a job on Flink at `master` (host:rest_port,
    or `[local]` for a cluster inside the job server).

    `environment`: where the SDK harness runs; LOOPBACK (in this process)
    serves one TaskManager; a cluster of several needs one harness per
    TaskManager (`local_runners.sdk_harness.harness_flags()`).
    """
    return ["--runner", "FlinkRunner", "--flink_master", master,
            "--flink_version", FLINK_VERSION,
            "--flink_job_server_jar", str(jar or job_server_jar()),
            *environment]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


class FlinkCluster:
    """A standalone Flink session cluster on localhost: one JobManager and
    `task_managers` TaskManagers, each a Java process, stopped on exit.

    Args:
        task_managers: TaskManager processes to start.
        slots: task slots per TaskManager.
        task_manager_memory: each TaskManager's process size (Flink syntax).
        workdir: where configuration, logs and the processes' working
            directories go (a temporary directory by default, removed on
            exit; a given one is kept).
    """

    def __init__(self, task_managers: int = 2, slots: int = 1,
                 task_manager_memory: str = "3g",
                 workdir: str | os.PathLike | None = None):
        self.task_managers = task_managers
        self._slots = slots
        self._tm_memory = task_manager_memory
        self._own_workdir = workdir is None
        self.workdir = pathlib.Path(workdir or tempfile.mkdtemp(
            prefix="flink-cluster-"))
        self.rest_port = _free_port()
        self.processes: list[subprocess.Popen] = []

    @property
    def master(self) -> str:
        """The `--flink_master` of this cluster."""
        return f"localhost:{self.rest_port}"

    def __enter__(self) -> FlinkCluster:
        self.start()
        return self

    def __exit__(self, *exc_info):
        self.stop()

    def start(self, timeout_secs: float = 180) -> None:
        """Starts the cluster and waits until every TaskManager has joined.

        A start that fails or is interrupted (Ctrl-C, SIGTERM) stops the
        processes it started.
        """
        try:
            self._start(timeout_secs)
        except BaseException:
            self.stop()
            raise

    def _start(self, timeout_secs):
        conf = self.workdir / "conf"
        conf.mkdir(parents=True, exist_ok=True)
        (conf / "flink-conf.yaml").write_text("\n".join(
            f"{key}: {value}" for key, value in {
                "jobmanager.rpc.address": "localhost",
                "jobmanager.rpc.port": _free_port(),
                "jobmanager.bind-host": "localhost",
                "taskmanager.bind-host": "localhost",
                "taskmanager.host": "localhost",
                "rest.address": "localhost",
                "rest.bind-address": "localhost",
                "rest.port": self.rest_port,
                # REST answers a job's state from a copy kept this long
                # (3 s by default): longer than a small job's stages run.
                "web.refresh-interval": 200,
                # Each TaskManager copies the job server jar (450 MB) into
                # its working directory, which Flink keeps after a kill:
                # under the workdir, `stop` removes it.
                "io.tmp.dirs": self.workdir / "tmp",
                "jobmanager.memory.process.size": "1024m",
                "taskmanager.memory.process.size": self._tm_memory,
                # A Beam batch job shuffles through many channels at once;
                # its DoFns run in the SDK harness, not in managed memory.
                "taskmanager.memory.network.min": "1g",
                "taskmanager.memory.network.max": "1g",
                "taskmanager.memory.managed.fraction": 0.1,
                "taskmanager.numberOfTaskSlots": self._slots,
                "parallelism.default": self.task_managers * self._slots,
                # A lost TaskManager fails its tasks; the job restarts from
                # its last checkpoint (a batch job: its failed region) as a
                # production cluster would be set to, once it is noticed
                # (heartbeats) and slots are back.
                "restart-strategy.type": "fixed-delay",
                "restart-strategy.fixed-delay.attempts": 20,
                "restart-strategy.fixed-delay.delay": "3 s",
                "heartbeat.interval": 2000,
                "heartbeat.timeout": 10000,
            }.items()) + "\n")
        self.processes.append(self._launch(
            "jobmanager", JOB_MANAGER, "GET_JM_RESOURCE_PARAMS"))
        for i in range(self.task_managers):
            self.start_task_manager(i)
        self._wait_until_ready(timeout_secs)

    def kill_task_manager(self, i: int) -> None:
        """Kills TaskManager `i` (SIGKILL), as a lost machine would go."""
        process = self.processes[1 + i]
        process.kill()
        process.wait()

    def start_task_manager(self, i: int) -> None:
        """Starts TaskManager `i` (again, after `kill_task_manager`)."""
        process = self._launch(f"taskmanager-{i}", TASK_MANAGER,
                               "GET_TM_RESOURCE_PARAMS")
        if 1 + i < len(self.processes):
            self.processes[1 + i] = process
        else:
            self.processes.append(process)

    def _launch(self, name, main_class, settings_command):
        jar = job_server_jar()
        classpath = f"{jar}{os.pathsep}{jar.with_name('slf4j-simple.jar')}"
        conf = self.workdir / "conf"
        jvm_args, dynamic = self._memory_settings(classpath, conf,
                                                  settings_command)
        log = open(self.workdir / f"{name}.log", "ab")
        process = subprocess.Popen(
            ["java", *jvm_args, "-cp", classpath, main_class,
             "--configDir", str(conf), *dynamic],
            stdout=log, stderr=subprocess.STDOUT)
        log.close()
        return process

    @staticmethod
    def _memory_settings(classpath, conf, command):
        """JVM flags and `-D key=value` settings that Flink's own scripts
        compute for a process from its configured memory."""
        result = subprocess.run(
            ["java", "-cp", classpath, MEMORY_SETTINGS, command,
             "--configDir", str(conf)],
            capture_output=True, text=True, timeout=120)
        lines = [line.split(":", 1)[1] for line in result.stdout.splitlines()
                 if line.startswith("BASH_JAVA_UTILS_EXEC_RESULT:")]
        if result.returncode or len(lines) < 2:
            raise RunnerUnavailable(f"Flink's {command} failed:\n"
                                    f"{result.stdout[-1000:]}"
                                    f"{result.stderr[-1000:]}")
        return lines[-2].split(), lines[-1].split()

    def _wait_until_ready(self, timeout_secs):
        deadline = time.monotonic() + timeout_secs
        while time.monotonic() < deadline:
            dead = [p for p in self.processes if p.poll() is not None]
            if dead:
                raise RunnerUnavailable("a Flink process exited at start:\n"
                                        f"{self._log_tails()}")
            if self.overview().get("taskmanagers") == self.task_managers:
                return
            time.sleep(1)
        raise RunnerUnavailable(f"the Flink cluster was not up after "
                                f"{timeout_secs} s:\n{self._log_tails()}")

    def overview(self) -> dict:
        """Flink's REST `/overview` (task managers, slots, jobs), or {}."""
        try:
            return self.rest("/overview")
        except OSError:
            return {}

    def rest(self, path: str) -> dict:
        """GET a path of Flink's REST API, e.g. `/jobs/overview`."""
        with urllib.request.urlopen(f"http://{self.master}{path}",
                                    timeout=10) as response:
            return json.load(response)

    def _log_tails(self) -> str:
        return "\n".join(
            f"== {log.name}\n{log.read_text(errors='replace')[-1500:]}"
            for log in sorted(self.workdir.glob("*.log")))

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes = []
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
