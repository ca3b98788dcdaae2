"""Jobs on Prism, Beam's portable runner: the same outputs as on the
DirectRunner, every record accounted for (tiny model)."""

import collections
import json
import time

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.transforms import trigger
from apache_beam.transforms import window
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.windowed_value import PaneInfoTiming

from embgemma_keras import load_centroids
from embgemma_keras import load_head
from embgemma_keras.config import StreamDedupConfig
from embgemma_keras.progress import DUPLICATES
from local_runners.state_requests import counting_state_requests
from local_runners.state_requests import timing_state_reads
from pipelines import dedup_corpus
from pipelines import fit_clusters
from pipelines import stream_tag
from pipelines import train_classifier
from tests.helpers import SPAM_ROWS
from tests.helpers import read_outputs
from tests.helpers import run_events
from tests.helpers import write_tsv
from tests.runners.conftest import BAD_LINES
from tests.runners.conftest import BAD_TIME_ERROR
from tests.runners.conftest import EXAMPLES
from tests.runners.conftest import STREAM_EVENTS
from tests.runners.conftest import STREAM_HORIZON_SECS
from tests.runners.conftest import STREAM_VERDICTS
from tests.runners.conftest import assert_as_stream_agrees
from tests.runners.conftest import assert_tags_agree
from tests.runners.conftest import lines
from tests.runners.conftest import stream_verdicts
from tests.runners.conftest import tag_verdicts
from transforms.dedup.streaming import StreamingNearDuplicates
from transforms.records.replay import ReadRecordsAsStream

pytestmark = pytest.mark.runners


def test_dedup_corpus_on_prism_matches_the_direct_runner(
        run_dedup, direct_dedup, corpus, on_prism):
    on_prism_verdicts = run_dedup(*on_prism)
    assert on_prism_verdicts == direct_dedup
    unique, duplicates, dead = on_prism_verdicts
    assert len(unique) + len(duplicates) + len(dead) == lines(corpus)
    assert len(dead) == len(BAD_LINES) and duplicates


def test_stream_tag_on_prism_agrees_with_the_direct_runner(
        run_tag, direct_tags, corpus, on_prism):
    # Three runs: Prism's dynamic splits once lost a record one run in
    # fifteen here (see local_runners.prism).
    for _ in range(3):
        assert_tags_agree(run_tag(*on_prism), direct_tags, corpus)


def test_the_stream_path_of_the_detector_on_prism(on_prism, tmp_path):
    """The near-duplicate detector's stream path (keyed state and timers)
    on Prism, its watermark staying put until every record is in, then
    jumping past the horizon (a backlog), so every timer is due at once.
    Every record leaves once, at its time, with the verdicts of the
    DirectRunner and of the bounded path."""
    def verdicts(name, **how):
        return stream_verdicts(run_events(
            STREAM_EVENTS, StreamingNearDuplicates(StreamDedupConfig(
                horizon_secs=STREAM_HORIZON_SECS)), tmp_path / name,
            in_order=False, **how))

    assert verdicts("prism", flags=on_prism) == STREAM_VERDICTS
    assert verdicts("direct") == STREAM_VERDICTS
    assert verdicts("bounded", bounded=True) == STREAM_VERDICTS


def test_the_detectors_stream_path_costs_a_few_state_requests_on_prism(
        on_prism):
    """Prism hands out no cache tokens, so every state read crosses the Fn
    API. The stream path's buckets share a few keys (shards) and a shard's
    timer judges all its records at once, so the sample corpus costs a
    few state requests a record (one a band, about 100, before issue
    #24), and flags what the bounded path flags."""
    records = [json.loads(line) for line in
               (EXAMPLES / "corpus.jsonl").read_text().splitlines()]
    vectors = np.random.default_rng(0).normal(size=(len(records), 64))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    items = [(i / 10, {**record, "embeddings": {"similarity": vector}})
             for i, (record, vector) in enumerate(zip(records, vectors,
                                                      strict=True))]
    requests, sizes = collections.Counter(), collections.Counter()
    reads = collections.defaultdict(lambda: [0, 0.0])

    def flagged(flags, bounded):
        p = beam.Pipeline(options=PipelineOptions(flags))
        timed = (p | beam.Create(items, reshuffle=False)
                 | beam.MapTuple(lambda t, r: TimestampedValue(r, t)))
        timed.is_bounded = bounded
        _ = timed | StreamingNearDuplicates(StreamDedupConfig(), dim=64)
        with counting_state_requests(requests, sizes), timing_state_reads(
                reads):
            result = p.run()
            result.wait_until_finish()
        return result.metrics().query(MetricsFilter().with_name(
            DUPLICATES))["counters"][0].committed

    bounded = flagged(["--runner", "DirectRunner"], bounded=True)
    requests.clear()
    assert flagged(on_prism, bounded=False) == bounded > 0
    per_record = sum(requests.values()) / len(items)
    print(f"\n{per_record:.1f} state requests a record on Prism's stream "
          f"path ({dict(requests)}; {sizes['get'] / len(items):,.0f} bytes "
          f"read a record)")
    assert requests["get"] > 0  # the harness's requests were counted
    assert per_record < 20
    # The reads by cell (benchmarks/stream_state_reads.py) are all of them.
    assert sum(count for count, _ in reads.values()) == requests["get"]
    assert {"clock", "inbox", "pending_0"} <= reads.keys()


def test_train_classifier_and_fit_clusters_on_prism(
        tiny_preset, tiny_model, tmp_path, on_prism):
    train = write_tsv(tmp_path / "train.tsv", SPAM_ROWS, [b"\tno label"])
    head_dir = tmp_path / "head"
    train_classifier.main(["--train", train, "--output", str(head_dir),
                           "--model", tiny_preset, "--folds", "2",
                           *on_prism])
    metrics = json.loads((head_dir / "metrics.json").read_text())
    assert metrics["train_examples"] == len(SPAM_ROWS)
    assert len(read_outputs(head_dir, "dead_letters")) == 1
    assert load_head(head_dir, expect=tiny_model.identity).labels == [
        "ham", "spam"]

    clusters_dir = tmp_path / "clusters"
    fit_clusters.main(["--input", train, "--output", str(clusters_dir),
                       "--model", tiny_preset, "--k", "2", *on_prism])
    metrics = json.loads((clusters_dir / "metrics.json").read_text())
    # The TSV's header names "label" and "text": every row is a record.
    assert metrics["records"] == len(SPAM_ROWS) + 1
    assert load_centroids(clusters_dir).centroids.shape == (2, 768)


def test_stream_tag_against_a_dedup_index_on_prism(
        tiny_preset, spam_head, corpus, tmp_path, on_prism):
    """Index entries and records meet in the same keyed state on Prism:
    the same verdicts as on the DirectRunner, and every record the index
    kept is found there (the corpus holds them again, same ids)."""
    archive = tmp_path / "archive.jsonl"
    archive.write_bytes(b"".join(
        corpus.read_bytes().splitlines(keepends=True)[:60]))
    dedup_corpus.main(["--input", str(archive), "--output",
                       str(tmp_path / "archive-out"), "--model", tiny_preset,
                       "--index", str(tmp_path / "index"),
                       "--run_id", "archive"])
    kept = {r["id"] for r in read_outputs(tmp_path / "archive-out",
                                          "unique")}

    def run(*flags):
        out = tmp_path / f"tagged{len(flags)}"
        stream_tag.main(["--input", str(corpus), "--output", str(out),
                         "--model", tiny_preset, "--heads",
                         f"spam={spam_head}", "--index",
                         str(tmp_path / "index"), *flags])
        return tag_verdicts(out), {
            r["id"]: (r.get("duplicate_of"), r.get("duplicate_of_run"))
            for r in read_outputs(out, "tagged")}

    (direct, direct_runs), (prism, prism_runs) = run(), run(*on_prism)
    assert (prism, prism_runs) == (direct, direct_runs)
    tagged, dead = prism
    assert len(tagged) + len(dead) == lines(corpus)
    assert kept and all(prism_runs[i] == (i, "archive") for i in kept)


def test_stream_tag_as_stream_on_prism_gives_the_bounded_verdicts(
        run_as_stream, bounded_verdicts, ordered_corpus, timed_corpus,
        on_prism):
    """The files read as a stream take the stream's path (keyed state,
    timers, the watermark): the bounded job's verdicts, each record out
    once and on time, whether the lines are timed by their order or
    delivered out of order with their times in a field (and paced)."""
    assert_as_stream_agrees(
        run_as_stream(ordered_corpus, "--as_stream", *on_prism),
        bounded_verdicts)
    assert_as_stream_agrees(
        run_as_stream(timed_corpus, "--as_stream", "--timestamp_field",
                      "time", "--replay_rate", "100", *on_prism),
        bounded_verdicts, [BAD_TIME_ERROR])


class _ArrivalTimes(beam.DoFn):
    """Appends the wall-clock time each element arrives to a file, then
    keeps the worker busy for `busy_secs`."""

    def __init__(self, path, busy_secs=0.0):
        self._path = path
        self._busy_secs = busy_secs

    def process(self, element):
        with open(self._path, "a") as f:
            f.write(f"{time.time()}\n")
        time.sleep(self._busy_secs)


def _replay_arrivals(tmp_path, on_prism, busy_secs=0.0) -> list[float]:
    """Ten lines replayed on Prism at two a second into a DoFn busy
    `busy_secs` a line: the wall-clock times they arrived, in order."""
    path = tmp_path / "in.txt"
    path.write_text("".join(f"line {i}\n" for i in range(10)))
    arrivals = tmp_path / "arrivals"
    with beam.Pipeline(options=PipelineOptions([*on_prism, "--streaming"])
                       ) as p:
        _ = (p | ReadRecordsAsStream(str(path), replay_rate=2)).output | (
            beam.ParDo(_ArrivalTimes(str(arrivals), busy_secs=busy_secs)))
    times = sorted(map(float, arrivals.read_text().split()))
    assert len(times) == 10
    return times


def test_replay_rate_paces_the_stream_on_prism(tmp_path, on_prism):
    """Ten lines at two a second: five chunks of two, the runner resuming
    each a second after the last."""
    times = _replay_arrivals(tmp_path, on_prism)
    assert times[-1] - times[0] >= 3.5


def test_replay_rate_keeps_its_pace_on_a_busy_worker_on_prism(tmp_path,
                                                              on_prism):
    """Each chunk keeps the worker busy 0.6 s of its second: the lines
    stay due at 0, 1, 2, 3 and 4 s from the start (paced from the end of
    each chunk, they would be 1.6 s apart: 6.4 s or more)."""
    times = _replay_arrivals(tmp_path, on_prism, busy_secs=0.3)
    assert 3.5 <= times[-1] - times[0] <= 5.5, times


class _Panes(beam.DoFn):
    """Appends each pane's wall-clock time, timing, index and size to a
    file, as JSON lines."""

    def __init__(self, path):
        self._path = path

    def process(self, element, pane=beam.DoFn.PaneInfoParam):
        with open(self._path, "a") as f:
            f.write(json.dumps([time.time(), pane.timing, pane.index,
                                len(list(element[1]))]) + "\n")


def _replayed_panes(path, tmp_path, on_prism, **how):
    """The panes of `path`'s records replayed on Prism, in windows of 30 s
    that fire once on time and once per late record."""
    panes = tmp_path / f"panes-{path.stem}.jsonl"
    with beam.Pipeline(options=PipelineOptions([*on_prism, "--streaming"])
                       ) as p:
        _ = ((p | ReadRecordsAsStream(str(path), **how)).output
             | beam.WindowInto(
                 window.FixedWindows(30),
                 trigger=trigger.AfterWatermark(late=trigger.AfterCount(1)),
                 accumulation_mode=trigger.AccumulationMode.DISCARDING,
                 allowed_lateness=3600)
             | beam.Map(lambda record: (None, record["id"]))
             | beam.GroupByKey()
             | beam.ParDo(_Panes(str(panes))))
    return [json.loads(line) for line in panes.read_text().splitlines()]


def test_no_replayed_line_is_late_and_the_watermark_moves_on_prism(
        timed_corpus, tmp_path, on_prism):
    """Shuffled lines with their times in a field: every window fires once,
    on time, with all its records (a watermark that followed the times
    read so far would leave some late). In time order, the watermark moves
    on as the lines are read: windows fire while the file is replayed."""
    panes = _replayed_panes(timed_corpus, tmp_path, on_prism,
                            timestamp_field="time", replay_rate=50)
    timings = {(timing, index) for _, timing, index, _ in panes}
    assert timings == {(PaneInfoTiming.ON_TIME, 0)}
    records = timed_corpus.read_bytes().splitlines()
    assert sum(size for *_, size in panes) == len(records) - len(
        BAD_LINES) - 1  # and the line with a bad time
    in_order = tmp_path / "in-order.jsonl"
    in_order.write_bytes(b"\n".join(sorted(
        (line for line in records if b'"time": ' in line
         and b'"noon"' not in line),
        key=lambda line: json.loads(line)["id"])) + b"\n")
    fired = sorted(wall for wall, *_ in _replayed_panes(
        in_order, tmp_path, on_prism, timestamp_field="time",
        replay_rate=50))
    assert fired[-1] - fired[0] >= 2
