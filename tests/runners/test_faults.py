"""Faults on real runners and servers: nothing lost, nothing doubled.

Each test injects one fault into a running job (a server stopped or
paused for a while) and checks that every record comes out once, with the
verdicts it gets without the fault, and that nothing is dead-lettered for
the outage alone. The figures they print are in docs/reliability.md.
"""

import json
import logging
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest
from google.cloud import pubsub_v1

from local_runners.postgres import LocalPostgres
from pipelines import dedup_corpus
from pipelines import stream_tag
from pipelines.options import start
from tests.helpers import dedup_verdicts
from tests.runners.conftest import as_stream_verdicts
from tests.runners.conftest import assert_as_stream_agrees
from tests.runners.test_pubsub import NOTE
from tests.runners.test_pubsub import OFFER
from tests.runners.test_pubsub import OTHER
from tests.runners.test_pubsub import _publish
from tests.runners.test_pubsub import _pull_until
from tests.runners.test_pubsub import _record
from tests.runners.test_pubsub import _topics

pytestmark = pytest.mark.runners

OUTAGE_SECS = 30
ROOT = pathlib.Path(__file__).resolve().parents[2]
CORPUS = ROOT / "examples" / "corpus.jsonl"


def test_a_stream_waits_for_its_index_through_a_database_outage(
        pubsub_server, tiny_preset, tmp_path, caplog, set_up_runner):
    """The PostgreSQL index stopped for 30 s while records arrive: their
    lookups wait (a log line each try), then every record is tagged once,
    with the index's verdicts, and none is dead-lettered."""
    server = LocalPostgres(tmp_path / "postgres")
    url = set_up_runner(server.start)
    try:
        index = f"{url}&schema=outage"
        archive = tmp_path / "archive.jsonl"
        archive.write_bytes(_record("kept-offer", OFFER) + b"\n"
                            + _record("kept-note", NOTE) + b"\n")
        flags = ["--model", tiny_preset, "--semantic_threshold", "1.0",
                 "--index", index]
        dedup_corpus.main(["--input", str(archive), "--output",
                           str(tmp_path / "archive-out"), *flags,
                           "--run_id", "archive"])
        publisher = pubsub_v1.PublisherClient()
        subscriber = pubsub_v1.SubscriberClient()
        topics, subscriptions = _topics(publisher, subscriber)
        tagged_from = {"tagged": subscriptions["tagged"]}
        job = start(["--input_subscription", subscriptions["records"],
                     "--output_topic", topics["tagged"],
                     "--dead_letter_topic", topics["dead_letters"],
                     "--max_batch_duration_secs", "1",
                     "--horizon_secs", "1", *flags],
                    stream_tag.REQUIRED, stream_tag.build)
        try:
            _publish(publisher, topics["records"], [_record("offer", OFFER)])
            before = _pull_until(subscriber, tagged_from, expected=1)
            server.stop()
            stopped = time.monotonic()
            with caplog.at_level(logging.WARNING):
                _publish(publisher, topics["records"], [
                    _record("note", NOTE), _record("other", OTHER),
                    _record("offer-again", OFFER)])
                time.sleep(OUTAGE_SECS - (time.monotonic() - stopped))
                server.start()
                restarted = time.monotonic()
                after = _pull_until(subscriber, tagged_from, expected=3)
                recovered_secs = time.monotonic() - restarted
            dead = _pull_until(subscriber, {
                "dead": subscriptions["dead_letters"]}, expected=1,
                timeout_secs=5)
        finally:
            job.cancel()
    finally:
        server.stop()
    tagged = before["tagged"] + after["tagged"]
    print(f"\ndatabase outage {OUTAGE_SECS} s: {len(tagged)} tagged, "
          f"{len(dead['dead'])} dead letters, recovered "
          f"{recovered_secs:.1f} s after the restart")
    assert sorted((r["id"], r.get("duplicate_of"), r.get("duplicate_of_run"))
                  for r in tagged) == [
        ("note", "kept-note", "archive"),
        ("offer", "kept-offer", "archive"),
        ("offer-again", "kept-offer", "archive"),
        ("other", None, None)]
    assert dead["dead"] == []
    assert "the dedup index is unreachable" in caplog.text


def test_a_stream_rides_out_a_paused_pubsub_server(pubsub_server,
                                                   tiny_preset, tmp_path):
    """The Pub/Sub server frozen for 30 s (SIGSTOP, SIGCONT) just after
    records were published: the job's pulls and publishes wait, then every
    record is tagged once and nothing is dead-lettered; copies of those
    records published after the outage are flagged against them, so the
    detector's state came through whole.

    The copies go out after the outage because on the DirectRunner a
    message redelivered after its ack deadline is late (its Pub/Sub
    watermark is the wall clock), and a late original cannot be matched
    to a copy already tagged; docs/reliability.md says what holds where.
    """
    publisher = pubsub_v1.PublisherClient()
    subscriber = pubsub_v1.SubscriberClient()
    topics, subscriptions = _topics(publisher, subscriber)
    tagged_from = {"tagged": subscriptions["tagged"]}
    records = [json.loads(line)
               for line in CORPUS.read_text().splitlines()[:20]]
    copies = [{"id": f"copy-{r['id']}", "text": r["text"]}
              for r in records[:5]]
    job = start(["--input_subscription", subscriptions["records"],
                 "--output_topic", topics["tagged"],
                 "--dead_letter_topic", topics["dead_letters"],
                 "--model", tiny_preset, "--semantic_threshold", "1.0",
                 "--max_batch_duration_secs", "1"],
                stream_tag.REQUIRED, stream_tag.build)
    try:
        _publish(publisher, topics["records"], [_record("first", OFFER)])
        before = _pull_until(subscriber, tagged_from, expected=1)
        _publish(publisher, topics["records"],
                 [json.dumps(r).encode() for r in records])
        with pubsub_server.paused():
            time.sleep(OUTAGE_SECS)
        resumed = time.monotonic()
        after = _pull_until(subscriber, tagged_from, expected=len(records))
        recovered_secs = time.monotonic() - resumed
        _publish(publisher, topics["records"],
                 [json.dumps(c).encode() for c in copies])
        # Anything delivered twice would come within the ack deadline.
        again = _pull_until(subscriber, {**tagged_from, "dead": subscriptions[
            "dead_letters"]}, expected=len(copies) + 1, timeout_secs=20)
    finally:
        job.cancel()
    tagged = before["tagged"] + after["tagged"] + again["tagged"]
    print(f"\nPub/Sub paused {OUTAGE_SECS} s: {len(tagged)} tagged, "
          f"{len(again['dead'])} dead letters, recovered "
          f"{recovered_secs:.1f} s after the resume")
    ids = sorted(r["id"] for r in tagged)
    assert ids == sorted(["first", *(r["id"] for r in records + copies)])
    flagged = {r["id"]: r.get("duplicate_of") for r in tagged}
    assert {c["id"]: flagged[c["id"]] for c in copies} == {
        f"copy-{r['id']}": r["id"] for r in records[:5]}
    assert again["dead"] == []


def _harness_pids(cluster) -> list[int]:
    """The SDK harness processes the cluster's TaskManagers started."""
    task_managers = {p.pid for p in cluster.processes[1:]}
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            command = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes()
            parent = int(pathlib.Path(f"/proc/{pid}/stat").read_text()
                         .rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError):
            continue
        if b"local_runners.sdk_harness" in command and (
                parent in task_managers):
            pids.append(int(pid))
    return pids


def _wait_for(condition, timeout_secs=180, every_secs=0.5):
    deadline = time.monotonic() + timeout_secs
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(every_secs)


def _running_jobs(cluster) -> list[str]:
    """The ids of the cluster's running jobs."""
    return [job["jid"] for job in cluster.rest("/jobs/overview")["jobs"]
            if job["state"] == "RUNNING"]


def _running_job(cluster) -> str:
    """The id of the cluster's one running job."""
    (jid,) = _running_jobs(cluster)
    return jid


def _job_process(job: str, corpus, out, model: str,
                 *flags: str) -> subprocess.Popen:
    """`pipelines.<job>` over `corpus` into `out`, in its own process (a
    job's main installs signal handlers)."""
    return subprocess.Popen([
        sys.executable, "-m", f"pipelines.{job}", "--input", str(corpus),
        "--output", str(out), "--model", model, *flags], cwd=ROOT)


def _lose_a_task_manager(cluster) -> float:
    """Kills TaskManager 1 (SIGKILL) and starts it again 3 s later;
    returns when it was killed (`time.monotonic()`)."""
    killed = time.monotonic()
    cluster.kill_task_manager(1)
    time.sleep(3)
    cluster.start_task_manager(1)
    return killed


def _embedding_runs(cluster) -> str | None:
    """The id of a running job whose embedding stage runs, or None."""
    for job in cluster.rest("/jobs/overview")["jobs"]:
        if job["state"] != "RUNNING":
            continue
        vertices = cluster.rest(f"/jobs/{job['jid']}")["vertices"]
        if any("Embed" in v["name"] and v["status"] == "RUNNING"
               for v in vertices):
            return job["jid"]
    return None


@pytest.mark.parametrize("fault", ["task_manager", "sdk_harness"])
def test_dedup_corpus_on_flink_survives_a_lost_worker(
        fault, direct_dedup, corpus, tiny_preset, flink_cluster,
        on_flink_cluster, tmp_path):
    """A TaskManager killed (SIGKILL) while the embedding stage runs, and
    started again; or the job's first SDK harness killed as it starts:
    Flink restarts the failed tasks (the restart strategy `local_runners`
    configures) and the outputs are the DirectRunner's, no record missing
    or twice."""
    out = tmp_path / "out"
    # A harness an earlier job left winding down fails nothing when killed.
    earlier_harnesses = set(_harness_pids(flink_cluster))
    job = _job_process("dedup_corpus", corpus, out, tiny_preset,
                       *on_flink_cluster)
    try:
        if fault == "task_manager":
            # With the tiny model the embedding stage runs a few seconds.
            _wait_for(lambda: _embedding_runs(flink_cluster), every_secs=0.1)
            jid = _running_job(flink_cluster)
            killed = _lose_a_task_manager(flink_cluster)
            # What a killed TaskManager leaves goes when the cluster stops.
            assert list((flink_cluster.workdir / "tmp").glob("tm_*"))
        else:
            # This job's first harness, killed as it starts: a warm harness
            # can run the whole embedding stage between two looks at it.
            _wait_for(lambda: set(_harness_pids(flink_cluster))
                      - earlier_harnesses, every_secs=0.02)
            harness = min(set(_harness_pids(flink_cluster))
                          - earlier_harnesses)
            os.kill(harness, signal.SIGKILL)
            killed = time.monotonic()
            jid = _running_job(flink_cluster)
    finally:
        assert job.wait(timeout=600) == 0
    recovered_secs = time.monotonic() - killed
    _wait_for(lambda: flink_cluster.overview().get("taskmanagers") == 2)
    unique, duplicates, dead = dedup_verdicts(out)
    failures = flink_cluster.rest(f"/jobs/{jid}/exceptions")[
        "exceptionHistory"]["entries"]
    print(f"\n{fault} killed: {len(unique)} unique, {len(duplicates)} "
          f"duplicates, {len(dead)} dead letters, {len(failures)} failure(s)"
          f" restarted, finished {recovered_secs:.1f} s after the kill")
    assert failures  # the fault did fail tasks
    assert (unique, duplicates, dead) == direct_dedup



def _checkpoints_done(cluster) -> int:
    """How many checkpoints the cluster's one running job has completed
    (0 before it runs)."""
    jobs = _running_jobs(cluster)
    if not jobs:
        return 0
    (jid,) = jobs
    return cluster.rest(f"/jobs/{jid}/checkpoints")["counts"]["completed"]


def test_a_checkpointed_stream_on_flink_survives_a_lost_task_manager(
        ordered_corpus, bounded_verdicts, tiny_preset, flink_cluster,
        on_flink_cluster, tmp_path):
    """`stream_tag --as_stream` with Flink checkpointing, the sample corpus
    replayed at 5 records a second: a TaskManager killed once two
    checkpoints are done, and started again. The job restores its last
    checkpoint and ends with the bounded job's verdicts, every record
    tagged once in an on-time pane, the bad lines dead letters."""
    out = tmp_path / "out"
    job = _job_process(
        "stream_tag", ordered_corpus, out, tiny_preset, "--as_stream",
        "--replay_rate", "5", "--checkpointing_interval", "2000",
        # Sources up (and checkpoints taken) past the replay's 43 s.
        "--shutdown_sources_after_idle_ms", "60000", *on_flink_cluster)
    try:
        _wait_for(lambda: _checkpoints_done(flink_cluster) >= 2)
        jid = _running_job(flink_cluster)
        killed = _lose_a_task_manager(flink_cluster)
    finally:
        assert job.wait(timeout=600) == 0
    recovered_secs = time.monotonic() - killed
    _wait_for(lambda: flink_cluster.overview().get("taskmanagers") == 2)
    failures = flink_cluster.rest(f"/jobs/{jid}/exceptions")[
        "exceptionHistory"]["entries"]
    restored = flink_cluster.rest(f"/jobs/{jid}/checkpoints")["latest"][
        "restored"]
    verdicts = as_stream_verdicts(out)
    tagged, dead, _ = verdicts
    print(f"\ncheckpointed stream, task manager killed: {len(tagged)} "
          f"tagged, {sum(bool(v[0]) for v in tagged.values())} duplicates, "
          f"{len(dead)} dead letters, {len(failures)} failure(s) restarted,"
          f" restored checkpoint {restored and restored['id']}, finished "
          f"{recovered_secs:.1f} s after the kill")
    assert failures
    assert restored
    assert_as_stream_agrees(verdicts, bounded_verdicts)
