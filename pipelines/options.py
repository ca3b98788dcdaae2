"""What every job shares: option groups made from the config dataclasses,
one parse of a job's flags into its typed config, the model check, and
running.

Beam parses the flags of every `PipelineOptions` subclass in the process
with one parser, so a flag may be declared by one class only: each group of
flags below is declared once, generated from its config dataclass
(`embgemma_keras.config`), and the jobs that take it list it.

A job's flags are parsed once (`parse_flags`), with the job's groups and
Beam's own, into the job's `JobConfig`: frozen dataclasses of settings,
each checked when made. `build(pipeline, config)` receives that config.
A mistake (a flag that is neither the job's nor Beam's, a value out of its
range, an input that matches no file, an index another run moved) ends the
program with one `error: ...` line and exit status 1; `--verbose` keeps the
traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import difflib
import logging
import os
import sys
import textwrap
import typing
from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Sequence
from typing import ClassVar

import apache_beam as beam
import grpc
import psycopg
from apache_beam.io.filesystem import BeamIOError
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.options.pipeline_options import PortableOptions
from apache_beam.options.pipeline_options import _BeamArgumentParser
from apache_beam.runners.runner import PipelineResult

from embgemma_keras.artifacts import ModelIdentity
from embgemma_keras.config import VERBOSE_ENV_VAR
from embgemma_keras.config import EmbedConfig
from embgemma_keras.config import IndexConfig
from embgemma_keras.config import MinHashConfig
from embgemma_keras.config import SemanticDedupConfig
from embgemma_keras.config import Switch
from embgemma_keras.config import add_flags
from embgemma_keras.index.database import redact
from embgemma_keras.index.format import IndexConflictError
from embgemma_keras.index.format import IndexMismatchError
from embgemma_keras.presets import ModelNotFoundError
from embgemma_keras.presets import fingerprint_files
from embgemma_keras.presets import resolve_handle
from embgemma_keras.progress import ProgressReporter
from embgemma_keras.records.schema import TEXT
from transforms.state_cache import without_local_cache

# A user's mistake found before the job starts: a flag, a setting, a file,
# an artifact or index that does not fit, a database that refuses the
# connection (its message names the index, password masked).
REFUSED_BEFORE_START = (ValueError, ModelNotFoundError,
                        psycopg.OperationalError)
# A user's mistake found while the job runs (the DirectRunner runs a bounded
# job inside `pipeline.run()`); other errors keep their traceback.
REFUSED_WHILE_RUNNING = (ModelNotFoundError, IndexMismatchError,
                         IndexConflictError)
# Beam's portable runner (Prism, Flink, any --job_endpoint) makes
# --job_server_timeout (300 s by default) the deadline of a running job's
# state and message streams too, so a job that runs longer fails with
# DEADLINE_EXCEEDED and Beam tears down the runner it started
# (apache/beam#35867; a 20,000-record soak here died at its fifth minute).
# A job waits this long unless told otherwise; a --job_endpoint is checked
# first, so a wrong one is refused at once rather than waited for as long.
JOB_SERVER_TIMEOUT_SECS = 30 * 86400
JOB_ENDPOINT_CHECK_SECS = 60


class FileOptions(PipelineOptions):
    """Input and output of the jobs that read files."""

    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument("--input",
                            help="Records to read: a file or glob, local or "
                                 "gs:// (JSONL, TSV/CSV with a header, or "
                                 "*.txt lines).")
        parser.add_argument("--output",
                            help="Output directory, local or gs://.")
        parser.add_argument("--text_column", default=TEXT,
                            help="TSV/CSV column holding the text.")


class RunOptions(PipelineOptions):
    """How much the job says while it runs."""

    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument(
            "--verbose", action="store_true",
            help="Beam's INFO logs and TensorFlow's start-up logs (CUDA "
                 "probing, oneDNN notices), hidden by default; a refused "
                 "job's traceback.")


class FlinkJavaOptions(PipelineOptions):
    """Flink's options that Beam's Java side reads (`FlinkPipelineOptions`)
    and Python's `PortableRunner` hands it: declared, so that they pass
    the job's check of unknown flags."""

    @classmethod
    def _add_argparse_args(cls, parser):
        for flag, kind, what in (
                ("checkpointing_interval", int, "ms between checkpoints"),
                ("checkpointing_mode", str, "EXACTLY_ONCE or AT_LEAST_ONCE"),
                ("checkpoint_timeout_millis", int, "a checkpoint's timeout"),
                ("min_pause_between_checkpoints", int, "ms"),
                ("number_of_execution_retries", int, "restarts of a failed "
                                                     "job"),
                ("execution_retry_delay", int, "ms before a restart"),
                ("state_backend", str, "rocksdb or filesystem"),
                ("state_backend_storage_path", str, "where checkpoints go"),
                ("savepoint_path", str, "a savepoint to start from"),
                ("max_bundle_size", int, "elements a bundle"),
                ("max_bundle_time_mills", int, "ms a bundle")):
            parser.add_argument(f"--{flag}", type=kind, default=None,
                                help=f"Flink runner: {what}.")
        parser.add_argument(
            "--shutdown_sources_after_idle_ms", type=int, default=None,
            help="Flink runner: ms after which an idle source shuts down "
                 "(with checkpointing, a stream's job ends only then).")
        # Not a choice: the job sets it wherever checkpoints are taken
        # (`finish_bundles_before_checkpoints`).
        parser.add_argument("--finish_bundle_before_checkpointing",
                            action="store_true", default=None,
                            help=argparse.SUPPRESS)


class ModelOptions(PipelineOptions):
    """The model and how it embeds (`EmbedConfig`)."""

    @classmethod
    def _add_argparse_args(cls, parser):
        add_flags(parser, EmbedConfig)


class LexicalOptions(PipelineOptions):
    """MinHash near-duplicates (`MinHashConfig`)."""

    @classmethod
    def _add_argparse_args(cls, parser):
        add_flags(parser, MinHashConfig)


class IndexOptions(PipelineOptions):
    """The dedup index to dedup against (`IndexConfig.index`)."""

    @classmethod
    def _add_argparse_args(cls, parser):
        add_flags(parser, IndexConfig, skip=("index_read_only", "run_id"))


class SemanticOptions(PipelineOptions):
    """Semantic near-duplicates: the cosine threshold."""

    @classmethod
    def _add_argparse_args(cls, parser):
        add_flags(parser, SemanticDedupConfig,
                  skip=("clusters", "sample_size"))


@dataclasses.dataclass(frozen=True)
class Files:
    """The records a job reads and the directory it writes (`FileOptions`).

    Args:
        input: a file or glob, local or gs://; None when the job reads
            something else (Pub/Sub, `--train`).
        output: the output directory, local or gs://.
        text_column: the TSV/CSV column holding the text.
    """

    input: str | None = None
    output: str | None = None
    text_column: str = TEXT

    @classmethod
    def from_flags(cls, flags: argparse.Namespace) -> Files:
        return cls(flags.input, flags.output, flags.text_column)


class JobConfig:
    """A job's flags, parsed once: the base of each job's frozen config.

    A job's config lists the option groups its flags come from (`OPTIONS`,
    its own first), builds itself from the parsed flags (`from_flags`) and
    names the input files it reads (`inputs`), which must exist before the
    job starts.
    """

    OPTIONS: ClassVar[Sequence[type[PipelineOptions]]] = ()
    files: Files

    @classmethod
    def from_flags(cls, flags: argparse.Namespace) -> JobConfig:
        raise NotImplementedError

    def inputs(self) -> dict[str, str]:
        """{flag: file pattern} of the input files given."""
        return {"input": self.files.input} if self.files.input else {}


def parse_flags(argv: Sequence[str], config_class: type[JobConfig],
                required: Sequence[str] = ()) -> JobConfig:
    """Parses `argv` once into `config_class`.

    Known flags are the job's (`config_class.OPTIONS`, `RunOptions` and
    `FlinkJavaOptions`) and Beam's own (every `PipelineOptions` subclass
    Beam defines); any other is refused with the closest known flag,
    where Beam would drop it with a warning and run with the default.

    Args:
        argv: the command line, without the program.
        config_class: the job's `JobConfig`.
        required: flags that must be given (not declared required=True:
            that would break every other pipeline in the process).

    Raises:
        ValueError: a flag unknown, missing or unparseable, or a setting
            out of its range, with the reason.
    """
    parser = _flag_parser([*config_class.OPTIONS, RunOptions,
                           FlinkJavaOptions])
    try:
        flags, unknown = parser.parse_known_args(argv)
    except argparse.ArgumentError as e:
        raise ValueError(str(e)) from e
    if unknown:
        raise ValueError(_unknown(unknown, parser))
    config = config_class.from_flags(flags)
    for flag in required:
        if getattr(flags, flag) in (None, ""):
            raise ValueError(f"--{flag} is required; see --help")
    return config


def _flag_parser(groups: Sequence[type[PipelineOptions]]
                 ) -> argparse.ArgumentParser:
    """A parser of the `groups`' flags and of Beam's own, as Beam builds
    its (one class of each name; no abbreviations), that raises its errors
    rather than printing them with the usage."""
    beams = {str(cls): cls for cls in PipelineOptions.__subclasses__()
             if cls.__module__.startswith("apache_beam.")}
    parser = _BeamArgumentParser(allow_abbrev=False, exit_on_error=False)
    for group in [*groups, *beams.values()]:
        group._add_argparse_args(parser)
    return parser


def _unknown(unknown: list[str], parser: argparse.ArgumentParser) -> str:
    """Why the first unknown argument is refused, with the closest flag."""
    flags = [arg for arg in unknown if arg.startswith("-")]
    if not flags:
        return f"unexpected argument {unknown[0]!r}; see --help"
    flag = flags[0].split("=", 1)[0]
    known = [name for name in parser._option_string_actions
             if name.startswith("--")]
    # Above difflib's default cutoff: typos score over 0.8, and an unrelated
    # flag that happens to share letters is a worse hint than none.
    closest = difflib.get_close_matches(flag, known, n=1, cutoff=0.75)
    hint = f"did you mean {closest[0]}?" if closest else "see --help"
    return f"unknown flag {flag}; {hint}"


def checked_model(config: EmbedConfig) -> tuple[str, ModelIdentity]:
    """The model's checked handle and identity, read without loading it.

    Remote handles (hf://, kaggle://) are identified by the handle alone.
    """
    handle = resolve_handle(config.model)
    return handle, ModelIdentity(handle, fingerprint_files(handle) or handle)


Build = Callable[[beam.Pipeline, typing.Any], object]


def run(argv: Sequence[str] | None, required: Sequence[str], build: Build,
        description: str) -> None:
    """Parses the flags once, builds the job with `build(pipeline,
    config)` and runs it until it ends, printing its progress.

    `build`'s `config` parameter is annotated with the job's `JobConfig`,
    which parses the flags. Beam's runner flags (`--runner`, `--project`,
    ...) are passed through to Beam.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    config_class = _config_class(build)
    if "--help" in argv or "-h" in argv:
        _print_help([*config_class.OPTIONS, RunOptions], description)
        return
    verbose = "--verbose" in argv
    with _refusing(REFUSED_BEFORE_START, verbose):
        config = parse_flags(argv, config_class, required)
        total_bytes = _input_bytes(config)
        pipeline = _built(argv, config, build, verbose)
    with _refusing(REFUSED_WHILE_RUNNING, verbose), ProgressReporter(
            total_bytes=total_bytes):
        pipeline.run().wait_until_finish()


def start(argv: Sequence[str], required: Sequence[str],
          build: Build) -> PipelineResult:
    """As `run`, but returns once the job is started: a stream runs until
    the returned result is cancelled."""
    argv = list(argv)
    verbose = "--verbose" in argv
    with _refusing(REFUSED_BEFORE_START, verbose):
        config = parse_flags(argv, _config_class(build), required)
        _input_bytes(config)
        pipeline = _built(argv, config, build, verbose)
    with _refusing(REFUSED_WHILE_RUNNING, verbose):
        return pipeline.run()


def run_task(argv: Sequence[str] | None, required: Sequence[str],
             task: Callable[[typing.Any], object], description: str) -> None:
    """As `run`, for a job that is no pipeline (`copy_index`): parses the
    flags once into the `JobConfig` that `task`'s `config` parameter is
    annotated with, and calls `task(config)`; a refusal ends the program
    with one `error: ...` line."""
    argv = sys.argv[1:] if argv is None else list(argv)
    config_class = _config_class(task)
    if "--help" in argv or "-h" in argv:
        _print_help([*config_class.OPTIONS, RunOptions], description)
        return
    with _refusing(REFUSED_BEFORE_START + REFUSED_WHILE_RUNNING,
                   "--verbose" in argv):
        task(parse_flags(argv, config_class, required))


def _config_class(build: Build) -> type[JobConfig]:
    """The `JobConfig` `build` takes: its `config` parameter's annotation."""
    return typing.get_type_hints(build)["config"]


def _input_bytes(config: JobConfig) -> int | None:
    """The size of the job's input files (None: none, as a stream reads);
    refuses a pattern that matches no file."""
    total = None
    for flag, pattern in config.inputs().items():
        try:
            found = FileSystems.match([pattern])[0].metadata_list
        except BeamIOError as e:
            raise ValueError(f"--{flag} {pattern}: {e}") from e
        if not found:
            raise ValueError(f"--{flag} {pattern} matches no file")
        total = (total or 0) + sum(meta.size_in_bytes for meta in found)
    return total


def _not_a_refusal(record: logging.LogRecord) -> bool:
    """A log filter: drops Beam's log (with a traceback) of a DoFn's error
    that the job reports in one line once Beam re-raises it."""
    error = record.exc_info[1] if record.exc_info else None
    return not isinstance(error, REFUSED_WHILE_RUNNING)


def _built(argv: Sequence[str], config: JobConfig, build: Build,
           verbose: bool) -> beam.Pipeline:
    """The job's pipeline, built, with Beam's logs as `--verbose` asks."""
    if verbose:
        os.environ[VERBOSE_ENV_VAR] = "1"
    logging.getLogger().setLevel(logging.INFO if verbose else logging.WARNING)
    dofn_errors = logging.getLogger("apache_beam.runners.common")
    if verbose:
        dofn_errors.removeFilter(_not_a_refusal)
    else:
        dofn_errors.addFilter(_not_a_refusal)
    without_local_cache()
    options = PipelineOptions(_with_lasting_job_streams(_masked(argv)))
    _check_job_endpoint(options.view_as(PortableOptions).job_endpoint)
    finish_bundles_before_checkpoints(options)
    pipeline = beam.Pipeline(options=options)
    build(pipeline, config)
    return pipeline


def finish_bundles_before_checkpoints(options: PipelineOptions) -> None:
    """With Flink checkpointing on, each bundle is finished before a
    checkpoint barrier. Otherwise Beam 2.62's Flink operators keep what a
    bundle emits during a checkpoint in the checkpoint, but send its
    watermark on at once, so a stateful step downstream drops those
    records as late: the last 10 of 210 records of a replayed stream,
    measured (docs/reliability.md)."""
    flink = options.view_as(FlinkJavaOptions)
    if flink.checkpointing_interval:
        flink.finish_bundle_before_checkpointing = True


def _with_lasting_job_streams(argv: Sequence[str]) -> list[str]:
    """`argv`, with `--job_server_timeout` at `JOB_SERVER_TIMEOUT_SECS`
    unless it is given."""
    given = any(arg.lstrip("-").replace("-", "_").split("=")[0]
                == "job_server_timeout" for arg in argv)
    return list(argv) if given else [
        *argv, f"--job_server_timeout={JOB_SERVER_TIMEOUT_SECS}"]


def _check_job_endpoint(endpoint: str | None) -> None:
    """Refuses a `--job_endpoint` no job service answers at."""
    if not endpoint or endpoint == "embed":
        return
    channel = grpc.insecure_channel(endpoint)
    try:
        grpc.channel_ready_future(channel).result(
            timeout=JOB_ENDPOINT_CHECK_SECS)
    except grpc.FutureTimeoutError:
        raise ValueError(f"--job_endpoint {endpoint}: no job service "
                         f"answered within {JOB_ENDPOINT_CHECK_SECS} s"
                         ) from None
    finally:
        channel.close()


def _masked(argv: Sequence[str]) -> list[str]:
    """`argv` with the password of a database `--index` masked: Beam keeps
    the options it is given, and a runner shows them (Dataflow, on the
    job's page); the job takes its flags from its config, parsed before."""
    masked, after_index = [], False
    for arg in argv:
        masked.append(redact(arg) if after_index
                      or arg.startswith("--index=") else arg)
        after_index = arg == "--index"
    return masked


@contextlib.contextmanager
def _refusing(errors: tuple[type[Exception], ...],
              verbose: bool) -> Iterator[None]:
    """Ends the program with the message of any of `errors`, which says
    what to do: a traceback would only bury it (--verbose keeps it)."""
    try:
        yield
    except errors as e:
        if verbose:
            raise
        sys.exit(f"error: {e}")


def _print_help(groups: Sequence[type[PipelineOptions]],
                description: str) -> None:
    parser = argparse.ArgumentParser(
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    for group in groups:
        group._add_argparse_args(parser.add_argument_group(
            group.__doc__.split("\n")[0].rstrip(".")))
    switches = [a for a in parser._actions if isinstance(a, Switch)]
    for switch in switches:
        # Shown as `--no_semantic`, not `--no_semantic [NO_SEMANTIC]`; this
        # parser only prints.
        switch.nargs = 0
    parser.epilog = textwrap.fill(
        (f"A switch ({switches[0].option_strings[0]}, ...) also takes =true "
         "or =false, as Flex Templates pass it. " if switches else "")
        + "Any Beam pipeline option (--runner, --project, --region, "
          "--temp_location, ...) is accepted too.", width=79)
    parser.print_help()
