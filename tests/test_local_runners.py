"""The runner builds' cache: an edited source is built anew. The servers
of `python -m local_runners` stop with their processes on SIGTERM, and an
SDK harness ended that way leaves no scratch directory."""

import os
import pathlib
import select
import signal
import subprocess
import sys

import pytest

from local_runners import source_key
from local_runners.flink import POM
from local_runners.flink import build_dir
from local_runners.flink import job_server_jar
from local_runners.pubsub import server_binary

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_an_edited_source_gets_a_new_cache_key(tmp_path):
    source = tmp_path / "pom.xml"
    source.write_text("<project>one</project>")
    before = source_key(source)
    assert source_key(source) == before  # the same bytes, the same build
    source.write_text("<project>two</project>")
    assert source_key(source) != before


def test_the_flink_build_is_keyed_by_its_pom(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert build_dir().parent == tmp_path / "embgemma-beam"
    assert build_dir().name.endswith(source_key(POM))


def _children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (from Linux's /proc)."""
    children = []
    for stat in pathlib.Path("/proc").glob("[0-9]*/stat"):
        try:
            # After the command's name, in parentheses: state, parent.
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        if int(fields[1]) == pid:
            children.append(int(stat.parent.name))
    return children


def _running(pid: int) -> bool:
    """Whether `pid` runs (a zombie, dead but not yet reaped, does not)."""
    try:
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _stopped_by_sigterm(command: list[str], ready: str, env: dict,
                        start_secs: float) -> list[int]:
    """Starts `python -m local_runners COMMAND`, waits for the line that
    starts with `ready`, sends SIGTERM; the children it had, once it exited
    (with status 0, as after Ctrl-C)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "local_runners", *command],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env={**os.environ, **env}, cwd=REPO)
    try:
        line = _first_line(process, start_secs)
        assert line.startswith(ready), line
        children = _children(process.pid)
        assert children
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
        return children
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()


def _first_line(process: subprocess.Popen, timeout_secs: float) -> str:
    ready, _, _ = select.select([process.stdout], [], [], timeout_secs)
    assert ready, f"no output in {timeout_secs} s"
    return process.stdout.readline()


@pytest.mark.slow
def test_sigterm_stops_the_pubsub_server_with_its_server_process(
        set_up_runner):
    binary = set_up_runner(server_binary)
    children = _stopped_by_sigterm(
        ["pubsub-server"], "export PUBSUB_EMULATOR_HOST=",
        {"PUBSUB_SERVER_BINARY": str(binary)}, start_secs=60)
    assert not [pid for pid in children if _running(pid)]


@pytest.mark.slow
def test_sigterm_stops_the_flink_cluster_with_its_java_processes(
        set_up_runner):
    jar = set_up_runner(job_server_jar)
    children = _stopped_by_sigterm(
        ["flink-cluster", "--task_managers", "1"], "Flink is up",
        {"FLINK_JOB_SERVER_JAR": str(jar)}, start_secs=240)
    assert not [pid for pid in children if _running(pid)]


def test_an_sdk_harness_ended_by_its_runner_removes_its_scratch(tmp_path):
    """A runner ends its SDK harness processes with SIGTERM: each removes
    its scratch directory and still ends as terminated."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    process = subprocess.Popen(
        [sys.executable, "-c",
         "import time\n"
         "from local_runners.sdk_harness import _remove_on_termination\n"
         f"_remove_on_termination({str(scratch)!r})\n"
         "print('ready', flush=True)\n"
         "time.sleep(60)\n"],
        stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert _first_line(process, 60) == "ready\n"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == -signal.SIGTERM
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()
    assert not scratch.exists()


def test_the_local_postgres_keeps_the_shared_buffers_it_is_given(tmp_path):
    """`shared_buffers` is read only at start: the server is restarted with
    the size asked, which stays when it is started again, and a new size
    replaces it."""
    import psycopg

    from local_runners import RunnerUnavailable
    from local_runners.postgres import LocalPostgres
    from tests.helpers import postgres_unavailable

    def started_with(size: str | None) -> int:
        try:
            with LocalPostgres(tmp_path / "data", size) as server, \
                    psycopg.connect(server.url) as connection:
                return connection.execute("SELECT pg_size_bytes("
                                          "current_setting('shared_buffers'))"
                                          ).fetchone()[0]
        except RunnerUnavailable as e:
            postgres_unavailable(str(e))

    assert started_with("160MB") == 160 * 2**20
    assert started_with("160MB") == 160 * 2**20
    assert started_with("192MB") == 192 * 2**20
