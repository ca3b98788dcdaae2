"""Jobs on Flink: an embedded cluster, and a standalone cluster of a
JobManager and two TaskManagers running with parallelism 2, each
TaskManager with its own SDK harness process (tiny model)."""

import pytest

from embgemma_keras.config import StreamDedupConfig
from tests.helpers import run_events
from tests.runners.conftest import BAD_LINES
from tests.runners.conftest import BAD_TIME_ERROR
from tests.runners.conftest import FLINK_PARALLELISM
from tests.runners.conftest import STREAM_EVENTS
from tests.runners.conftest import STREAM_HORIZON_SECS
from tests.runners.conftest import STREAM_VERDICTS
from tests.runners.conftest import assert_as_stream_agrees
from tests.runners.conftest import assert_tags_agree
from tests.runners.conftest import lines
from tests.runners.conftest import stream_verdicts
from transforms.dedup.streaming import StreamingNearDuplicates

pytestmark = pytest.mark.runners


def test_dedup_corpus_on_embedded_flink_matches_the_direct_runner(
        run_dedup, direct_dedup, on_flink_local):
    assert run_dedup(*on_flink_local) == direct_dedup


def test_dedup_corpus_on_a_flink_cluster_matches_the_direct_runner(
        run_dedup, direct_dedup, corpus, flink_cluster, on_flink_cluster):
    unique, duplicates, dead = run_dedup(*on_flink_cluster)
    assert (unique, duplicates, dead) == direct_dedup
    assert len(unique) + len(duplicates) + len(dead) == lines(corpus)
    assert len(dead) == len(BAD_LINES) and duplicates
    # The job ran on the cluster, its tasks with parallelism 2.
    job = max(flink_cluster.rest("/jobs/overview")["jobs"],
              key=lambda j: j["start-time"])
    assert job["state"] == "FINISHED"
    vertices = flink_cluster.rest(f"/jobs/{job['jid']}")["vertices"]
    assert max(v["parallelism"] for v in vertices) == FLINK_PARALLELISM


def test_stream_tag_on_a_flink_cluster_agrees_with_the_direct_runner(
        run_tag, direct_tags, corpus, on_flink_cluster):
    assert_tags_agree(run_tag(*on_flink_cluster), direct_tags, corpus)


def test_the_stream_path_of_the_detector_on_flink_streaming(
        on_flink_local, tmp_path):
    """The detector's stream path (keyed state, timers with dynamic tags)
    on Flink in streaming mode, over a backlog: every timer is due at once
    when the input ends. The verdicts of the bounded path."""
    out = run_events(STREAM_EVENTS, StreamingNearDuplicates(
        StreamDedupConfig(horizon_secs=STREAM_HORIZON_SECS)), tmp_path,
        backlog=True, flags=[*on_flink_local, "--streaming"])
    assert stream_verdicts(out) == STREAM_VERDICTS


def test_stream_tag_as_stream_on_flink_gives_the_bounded_verdicts(
        run_as_stream, bounded_verdicts, timed_corpus, on_flink_local):
    """The files read as a stream on Flink in streaming mode (the job
    sets it), lines out of order with their times in a field: the bounded
    job's verdicts, each record out once, in on-time panes."""
    assert_as_stream_agrees(
        run_as_stream(timed_corpus, "--as_stream", "--timestamp_field",
                      "time", *on_flink_local),
        bounded_verdicts, [BAD_TIME_ERROR])
