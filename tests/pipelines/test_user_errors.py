"""A new user's mistakes, answered: one `error: ...` line on stderr, exit
status 1, no traceback (unless --verbose), and nothing run.

The cases run each job's `main` here: it exits with the line as its code,
which Python prints alone on stderr with exit status 1. A few run as a user
runs them, `python -m pipelines.JOB`, to assert exactly what the terminal
shows: that line and nothing else (no warning, no traceback).
"""

import argparse
import json
import pathlib
import re
import subprocess
import sys

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.transforms.window import TimestampedValue

from embgemma_keras import progress
from embgemma_keras.config import Switch
from embgemma_keras.index.format import CURRENT
from embgemma_keras.index.format import VERSIONS
from embgemma_keras.records.schema import DEAD_LETTERS
from pipelines import dedup_corpus
from pipelines import fit_clusters
from pipelines import stream_tag
from pipelines import train_classifier
from pipelines.options import FlinkJavaOptions
from pipelines.options import finish_bundles_before_checkpoints
from pipelines.options import parse_flags
from tests.helpers import SPAM_ROWS
from tests.helpers import read_outputs
from tests.helpers import write_tsv
from transforms import ParseRecords
from transforms.tagging import TaggedSinks
from transforms.tagging import write_tagged

ROOT = pathlib.Path(__file__).resolve().parents[2]
JOBS = (dedup_corpus, stream_tag, train_classifier, fit_clusters)


def _in_a_process(*command, code=None):
    """Runs `python -m MODULE FLAGS` (or `code`, a script given the
    flags); returns (exit status, stderr)."""
    module, *flags = command
    program = ["-c", code] if code else ["-m", module.__name__]
    done = subprocess.run([sys.executable, *program, *map(str, flags)],
                          cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    return done.returncode, done.stderr


def _refused_in_a_process(*command, code=None):
    """What a refused job showed on the terminal, asserted to be one
    `error: ` line and exit status 1."""
    status, stderr = _in_a_process(*command, code=code)
    assert status == 1, stderr
    assert stderr.count("\n") == 1 and stderr.startswith("error: "), stderr
    return stderr.rstrip("\n")


def _refused(module, *flags):
    """The one line `module.main(flags)` is refused with."""
    with pytest.raises(SystemExit) as refused:
        module.main(list(map(str, flags)))
    line = refused.value.code
    assert isinstance(line, str) and "\n" not in line, line
    return line


@pytest.fixture
def paths(tmp_path):
    """What the cases' flags name: {corpus}, {labelled} (a labelled TSV),
    {missing} (a glob that matches nothing) and {out}."""
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(
        json.dumps({"id": str(i), "text": text}) + "\n" for i, text in
        enumerate(["a note about lunch", "a note about lunch!",
                   "the quarterly report"])))
    return {"corpus": corpus,
            "labelled": write_tsv(tmp_path / "train.tsv", SPAM_ROWS),
            "missing": tmp_path / "nowhere" / "part-*.jsonl",
            "out": tmp_path / "out"}


def _filled(case, paths):
    """A case's job, its flags and its line, with `paths` filled in."""
    job, flags, line = case
    return (job, [flag.format(**paths) for flag in flags],
            line.format(**paths))


def _ids(cases):
    """`job: the start of the line` for each case."""
    return [f"{job.__name__.split('.')[-1]}: {line[len('error: '):][:40]}"
            for job, _, line in cases]


MISSING_INPUTS = [
    (dedup_corpus, ["--input", "{missing}", "--output", "{out}",
                    "--no_semantic"],
     "error: --input {missing} matches no file"),
    (fit_clusters, ["--input", "{missing}", "--output", "{out}", "--k", "2"],
     "error: --input {missing} matches no file"),
    (stream_tag, ["--input", "{missing}", "--output", "{out}"],
     "error: --input {missing} matches no file"),
    (train_classifier, ["--train", "{missing}", "--output", "{out}"],
     "error: --train {missing} matches no file"),
    (train_classifier, ["--train", "{labelled}", "--eval", "{missing}",
                        "--output", "{out}"],
     "error: --eval {missing} matches no file"),
]
OUT_OF_RANGE = [
    (dedup_corpus, ["--input", "{corpus}", "--output", "{out}",
                    "--no_semantic", "--lexical_threshold", "7"],
     "error: --lexical_threshold must be in (0, 1], got 7.0 "
     "(MinHashConfig.threshold)"),
    (dedup_corpus, ["--input", "{corpus}", "--output", "{out}",
                    "--semantic_threshold", "0"],
     "error: --semantic_threshold must be in (0, 1], got 0.0 "
     "(SemanticDedupConfig.threshold)"),
    (dedup_corpus, ["--input", "{corpus}", "--output", "{out}",
                    "--no_semantic", "--clusters", "0"],
     "error: --clusters must be > 0, got 0 (SemanticDedupConfig.clusters)"),
    (stream_tag, ["--input", "{corpus}", "--output", "{out}",
                  "--horizon_secs", "0"],
     "error: --horizon_secs must be > 0, got 0.0 "
     "(StreamDedupConfig.horizon_secs)"),
    (stream_tag, ["--input", "{corpus}", "--output", "{out}",
                  "--semantic_threshold", "1.5"],
     "error: --semantic_threshold must be in (0, 1], got 1.5 "
     "(StreamDedupConfig.semantic_threshold)"),
    (stream_tag, ["--input", "{corpus}", "--output", "{out}",
                  "--max_length", "4096"],
     "error: --max_length must be in [1, 2048], got 4096 "
     "(EmbedConfig.max_length)"),
    (fit_clusters, ["--input", "{corpus}", "--output", "{out}", "--k", "0"],
     "error: --k must be > 0, got 0 (ClusterConfig.k)"),
    (train_classifier, ["--train", "{labelled}", "--output", "{out}",
                        "--folds", "1"],
     "error: --folds must be >= 2, got 1 (HeadConfig.folds)"),
]
UNKNOWN_FLAGS = [
    (dedup_corpus, ["--input", "{corpus}", "--output", "{out}",
                    "--lexical_threshhold", "0.5"],
     "error: unknown flag --lexical_threshhold; did you mean "
     "--lexical_threshold?"),
    (dedup_corpus, ["--input", "{corpus}", "--output", "{out}",
                    "--lexical_threshhold=0.5"],
     "error: unknown flag --lexical_threshhold; did you mean "
     "--lexical_threshold?"),
    (dedup_corpus, ["--input", "{corpus}", "--output", "{out}",
                    "--temp_locaton", "/tmp"],
     "error: unknown flag --temp_locaton; did you mean --temp_location?"),
    # Another job's flag is not this job's.
    (dedup_corpus, ["--input", "{corpus}", "--output", "{out}",
                    "--heads", "spam=heads/spam"],
     "error: unknown flag --heads; see --help"),
    (fit_clusters, ["--input", "{corpus}", "--output", "{out}", "--k", "2",
                    "--lexical_threshold", "0.5"],
     "error: unknown flag --lexical_threshold; see --help"),
    (stream_tag, ["--input", "{corpus}", "--output", "{out}",
                  "--output_tpoic", "projects/p/topics/t"],
     "error: unknown flag --output_tpoic; did you mean --output_topic?"),
    (train_classifier, ["--train", "{labelled}", "--output", "{out}",
                        "--label_colum", "category"],
     "error: unknown flag --label_colum; did you mean --label_column?"),
    (dedup_corpus, ["--input", "{corpus}", "--output", "{out}",
                    "stray.jsonl"],
     "error: unexpected argument 'stray.jsonl'; see --help"),
    (dedup_corpus, ["--input", "{corpus}", "--output", "{out}",
                    "--bands", "many"],
     "error: argument --bands: invalid int value: 'many'"),
    (train_classifier, ["--input", "{labelled}", "--output", "{out}"],
     "error: train_classifier reads --train, not --input"),
    (fit_clusters, ["--input", "{corpus}", "--output", "{out}"],
     "error: --k is required; see --help"),
]
NO_SINK = [
    (stream_tag, ["--input", "{corpus}", "--output_topic",
                  "projects/p/topics/tagged"],
     "error: dead letters have no sink (tagged records go to "
     "--output_topic): add --dead_letter_topic or --dead_letter_table"),
    (stream_tag, ["--input", "{corpus}", "--output_table", "p:d.tagged"],
     "error: dead letters have no sink (tagged records go to "
     "--output_table): add --dead_letter_topic or --dead_letter_table"),
    (stream_tag, ["--input", "{corpus}", "--dead_letter_topic",
                  "projects/p/topics/dead"],
     "error: tagged records have no sink: give --output, --output_topic or "
     "--output_table"),
    (stream_tag, ["--input", "{corpus}"],
     "error: tagged records have no sink: give --output, --output_topic "
     "or --output_table"),
    (stream_tag, ["--input", "{corpus}", "--input_subscription",
                  "projects/p/subscriptions/s", "--output", "{out}"],
     "error: give one of --input, --input_subscription or --input_topic, "
     "not --input and --input_subscription"),
]
AS_STREAM = [
    (stream_tag, ["--input_subscription", "projects/p/subscriptions/s",
                  "--output", "{out}", "--as_stream"],
     "error: --as_stream reads the --input files; give --input"),
    (stream_tag, ["--input", "{corpus}", "--output", "{out}",
                  "--timestamp_field", "time"],
     "error: --timestamp_field needs --as_stream"),
    (stream_tag, ["--input", "{corpus}", "--output", "{out}",
                  "--replay_rate", "10"],
     "error: --replay_rate needs --as_stream"),
    (stream_tag, ["--input", "{corpus}", "--output", "{out}", "--as_stream",
                  "--replay_rate", "-1"],
     "error: --replay_rate must be >= 0, got -1.0 "
     "(ReplayConfig.replay_rate)"),
    (stream_tag, ["--input", "{corpus}", "--output", "{out}", "--as_stream"],
     "error: --as_stream needs a runner that reads a splittable DoFn as a "
     "stream: add --runner PrismRunner (or FlinkRunner, DataflowRunner)"),
]


@pytest.mark.parametrize("case", MISSING_INPUTS, ids=_ids(MISSING_INPUTS))
def test_an_input_that_matches_no_file(paths, case):
    job, flags, line = _filled(case, paths)
    assert _refused(job, *flags) == line
    assert not paths["out"].exists()


@pytest.mark.parametrize("case", OUT_OF_RANGE, ids=_ids(OUT_OF_RANGE))
def test_a_value_out_of_range(paths, case):
    job, flags, line = _filled(case, paths)
    assert _refused(job, *flags) == line
    assert not paths["out"].exists()


@pytest.mark.parametrize("case", UNKNOWN_FLAGS, ids=_ids(UNKNOWN_FLAGS))
def test_a_flag_that_is_neither_the_jobs_nor_beams(paths, case):
    job, flags, line = _filled(case, paths)
    assert _refused(job, *flags) == line
    assert not paths["out"].exists()


@pytest.mark.parametrize("case", NO_SINK, ids=_ids(NO_SINK))
def test_records_and_dead_letters_each_need_a_sink(paths, case):
    job, flags, line = _filled(case, paths)
    assert _refused(job, *flags) == line


@pytest.mark.parametrize("case", AS_STREAM, ids=_ids(AS_STREAM))
def test_files_read_as_a_stream(paths, case):
    job, flags, line = _filled(case, paths)
    assert _refused(job, *flags) == line
    assert not paths["out"].exists()


# One case of each kind, as the terminal shows it.
ON_THE_TERMINAL = [MISSING_INPUTS[3], OUT_OF_RANGE[0], OUT_OF_RANGE[3],
                   UNKNOWN_FLAGS[0], NO_SINK[0]]


@pytest.mark.parametrize("case", ON_THE_TERMINAL, ids=_ids(ON_THE_TERMINAL))
@pytest.mark.slow
def test_the_terminal_shows_one_line_and_exit_status_1(paths, case):
    job, flags, line = _filled(case, paths)
    assert _refused_in_a_process(job, *flags) == line


@pytest.mark.slow
def test_beams_own_flags_are_accepted(paths, tmp_path):
    dedup_corpus.main([
        "--input", str(paths["corpus"]), "--output", str(paths["out"]),
        "--no_semantic", "--runner", "DirectRunner", "--project", "my-project",
        "--region", "europe-west4", "--temp_location", str(tmp_path),
        "--job_name", "dedup", "--experiments", "use_runner_v2",
        "--direct_num_workers", "1"])
    assert len(read_outputs(paths["out"], "unique")) == 2


def test_every_dead_letter_is_counted_whatever_its_sink(tmp_path):
    """In a stream writing windowed files (or Pub/Sub, BigQuery), as over
    files: the count the progress line prints."""
    lines = [b'{"id": "a", "text": "fine"}', b"{not json", b'{"text": ""}',
             b'{"id": "b", "text": "also fine"}', b"[1, 2]"]
    stream = TestStream()
    for second, line in enumerate(lines):
        stream = stream.add_elements([TimestampedValue(line, second)])
    stream = stream.advance_watermark_to_infinity()
    before = progress.snapshot().get(DEAD_LETTERS, 0)
    pipeline = TestPipeline(options=PipelineOptions(
        runner="DirectRunner", streaming=True))
    parsed = pipeline | stream | ParseRecords()
    write_tagged(TaggedSinks(output=str(tmp_path), streaming=True,
                             window_secs=60, allowed_lateness_secs=0),
                 parsed.output, parsed.dead_letters)
    pipeline.run().wait_until_finish()
    written = read_outputs(tmp_path, "dead_letters")
    assert len(written) == 3
    assert progress.snapshot()[DEAD_LETTERS] - before == len(written)


# Another run commits a version while this one runs: `next_manifest` is
# called when this run commits; the stand-in moves CURRENT first.
_RACE = """
import pathlib, sys
import transforms.index.read_commit as commit
from embgemma_keras.index.format import CURRENT
from pipelines import dedup_corpus
index, argv = pathlib.Path(sys.argv[1]), sys.argv[2:]
own = commit.next_manifest
def another_run_first(*args, **kwargs):
    (index / CURRENT).write_text("v999999-another-run")
    return own(*args, **kwargs)
commit.next_manifest = another_run_first
dedup_corpus.main(argv)
"""


@pytest.mark.slow
def test_an_index_another_run_moved(paths, tmp_path):
    index = tmp_path / "index"
    dedup_corpus.main(["--input", str(paths["corpus"]), "--output",
                       str(tmp_path / "first"), "--no_semantic", "--index",
                       str(index), "--runner", "DirectRunner"])
    ran_from = (index / CURRENT).read_text()
    status, stderr = _in_a_process(
        dedup_corpus, index, "--input", paths["corpus"], "--output",
        tmp_path / "second", "--no_semantic", "--index", index, "--runner",
        "DirectRunner", code=_RACE)
    (written,) = {path.stem for path in (index / VERSIONS).iterdir()} - {
        ran_from}
    # The run's last progress line, then why it failed.
    *progress_lines, line = stderr.splitlines()
    assert status == 1
    assert all(shown.startswith("progress: ") for shown in progress_lines)
    assert line == (
        f"error: {index}: another run moved CURRENT to v999999-another-run "
        f"while this one ran from {ran_from}; this run's version {written} "
        "is written but not current. Run again to dedup against both. "
        "[while running 'DeduplicateFiles/CommitIndex/Commit']")


@pytest.mark.slow
def test_verbose_keeps_the_traceback(paths):
    status, stderr = _in_a_process(
        dedup_corpus, "--input", paths["corpus"], "--output", paths["out"],
        "--no_semantic", "--lexical_threshold", "7", "--verbose")
    assert status == 1
    assert stderr.startswith("Traceback (most recent call last):")
    assert stderr.splitlines()[-1] == (
        "ValueError: --lexical_threshold must be in (0, 1], got 7.0 "
        "(MinHashConfig.threshold)")


def test_help_shows_switches_as_switches(capsys):
    dedup_corpus.main(["--help"])
    shown = capsys.readouterr().out
    switches = [action.option_strings[0] for action in _actions(dedup_corpus)
                if isinstance(action, Switch)]
    assert switches == ["--no_case_fold", "--no_semantic",
                        "--index_read_only"]
    for switch in [*switches, "--verbose"]:
        assert f"[{switch}]" in shown  # the usage line
        assert re.search(rf"^  {switch}  ", shown, re.M)  # its help line
    assert "NO_SEMANTIC" not in shown


@pytest.mark.parametrize("job", JOBS, ids=lambda job: job.__name__)
def test_no_flag_shows_an_optional_value_in_help(job, capsys):
    job.main(["--help"])
    shown = capsys.readouterr().out
    assert job.__doc__.splitlines()[0] in shown
    assert not re.search(r"--\w+ \[\w+\]", shown), shown


def _actions(job):
    parser = argparse.ArgumentParser()
    for group in job.OPTIONS:
        group._add_argparse_args(parser)
    return parser._actions


def test_flinks_java_side_options_pass_the_unknown_flag_check():
    """Python's PortableRunner hands these to Beam's Java Flink runner:
    a user sets checkpoints with them, so they are not refused."""
    config = parse_flags(["--input", "x.jsonl", "--output", "out",
                          "--checkpointing_interval", "2000",
                          "--state_backend", "rocksdb"],
                         dedup_corpus.DedupCorpusConfig)
    assert config.files.input == "x.jsonl"
    with pytest.raises(ValueError, match="did you mean "
                                         "--checkpointing_interval"):
        parse_flags(["--input", "x.jsonl", "--checkpointing_intervall",
                     "2000"], dedup_corpus.DedupCorpusConfig)


@pytest.mark.parametrize("flags, finished", [
    (["--checkpointing_interval", "2000"], True), ([], None)])
def test_a_checkpointed_flink_job_finishes_its_bundles_before_checkpoints(
        flags, finished):
    """Without it, Beam's Flink runner keeps a bundle's outputs in the
    checkpoint while the watermark goes on, and they are dropped as late
    (tests/runners/test_faults.py shows the records it saves)."""
    options = PipelineOptions(["--runner", "FlinkRunner", *flags])
    finish_bundles_before_checkpoints(options)
    assert options.view_as(
        FlinkJavaOptions).finish_bundle_before_checkpointing is finished


def test_a_job_endpoint_no_service_answers_at(paths, monkeypatch):
    """A wrong --job_endpoint is refused before the job is built, not
    waited for as long as a job may run (below)."""
    import socket

    from pipelines import options

    monkeypatch.setattr(options, "JOB_ENDPOINT_CHECK_SECS", 1)
    with socket.socket() as unused:
        unused.bind(("localhost", 0))
        endpoint = f"localhost:{unused.getsockname()[1]}"
    assert _refused(dedup_corpus, "--input", paths["corpus"], "--output",
                    paths["out"], "--runner", "PortableRunner",
                    "--job_endpoint", endpoint) == (
        f"error: --job_endpoint {endpoint}: no job service answered "
        f"within 1 s")


@pytest.mark.parametrize(("flags", "seconds"), [
    ([], 30 * 86400),
    (["--job_server_timeout", "120"], 120),
    (["--job-server-timeout=90"], 90)], ids=["default", "given", "dashed"])
def test_a_portable_job_may_outlast_beams_job_server_timeout(
        paths, flags, seconds, monkeypatch):
    """Beam makes --job_server_timeout (300 s by its default) the deadline
    of a portable job's state stream, so a longer job on Prism or Flink
    died with DEADLINE_EXCEEDED: the jobs run with 30 days unless told."""
    from apache_beam.options.pipeline_options import PortableOptions

    from pipelines import options

    built = []

    def build(pipeline, config: dedup_corpus.DedupCorpusConfig):
        built.append(pipeline.options.view_as(PortableOptions))
        raise SystemExit("built")

    argv = ["--input", str(paths["corpus"]), "--output", str(paths["out"]),
            *flags]
    with pytest.raises(SystemExit):
        options.run(argv, dedup_corpus.REQUIRED, build, "")
    assert built[0].job_server_timeout == seconds


@pytest.mark.parametrize("flags, idle_ms", [
    ([], 0), (["--shutdown_sources_after_idle_ms", "60000"], 60000)])
def test_a_checkpointed_replay_on_flink_ends_its_job(flags, idle_ms):
    """Flink keeps a checkpointed stream's sources up for good: a replay
    shuts them down when told, else at once, so its job ends."""
    argv = ["--input", "x.jsonl", "--output", "out", "--as_stream",
            "--runner", "FlinkRunner", "--checkpointing_interval", "2000",
            *flags]
    pipeline = beam.Pipeline(options=PipelineOptions(argv))
    stream_tag.end_a_checkpointed_replay(
        pipeline, parse_flags(argv, stream_tag.StreamTagConfig))
    assert pipeline.options.view_as(
        FlinkJavaOptions).shutdown_sources_after_idle_ms == idle_ms
