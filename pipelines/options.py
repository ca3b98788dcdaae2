"""What every job shares: option groups made from the config dataclasses,
the model check, and running.

Beam parses the flags of every `PipelineOptions` subclass in the process
with one parser, so a flag may be declared by one class only: each group of
flags below is declared once, generated from its config dataclass
(`embgemma_keras.config`), and the jobs that take it list it.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import types
from typing import NoReturn

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.runner import PipelineResult

from embgemma_keras.artifacts import ModelIdentity
from embgemma_keras.config import VERBOSE_ENV_VAR
from embgemma_keras.config import EmbedConfig
from embgemma_keras.config import IndexConfig
from embgemma_keras.config import MinHashConfig
from embgemma_keras.config import SemanticDedupConfig
from embgemma_keras.config import add_flags
from embgemma_keras.config import from_flags
from embgemma_keras.index.format import IndexMismatchError
from embgemma_keras.presets import ModelNotFoundError
from embgemma_keras.presets import fingerprint_files
from embgemma_keras.presets import resolve_handle
from embgemma_keras.progress import ProgressReporter
from embgemma_keras.records.schema import TEXT
from transforms.state_cache import without_local_cache


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
                 "probing, oneDNN notices), hidden by default.")


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


def checked_model(config: EmbedConfig) -> tuple[str, ModelIdentity]:
    """The model's checked handle and identity, read without loading it.

    Remote handles (hf://, kaggle://) are identified by the handle alone.
    """
    handle = resolve_handle(config.model)
    return handle, ModelIdentity(handle, fingerprint_files(handle) or handle)


def embed_config(job) -> EmbedConfig:
    return from_flags(EmbedConfig, job)


def run(argv, groups, required, build, description) -> None:
    """Parses all flags, checks `required`, runs `build(pipeline, job)`
    and waits until the job ends.

    `groups` are the option classes the job takes (for `--help`); `job`
    holds every flag by name. Flags are not declared required=True: that
    would break every other pipeline in the process (see above). Beam's
    runner flags (`--runner`, `--project`, ...) are passed through.
    """
    argv = sys.argv[1:] if argv is None else argv
    if "--help" in argv or "-h" in argv:
        _print_help([*groups, RunOptions], description)
        return
    # The DirectRunner runs a bounded job inside `start`: report from here.
    with ProgressReporter(total_bytes=_input_bytes(argv)):
        try:
            result = start(argv, required, build)
        except (ModelNotFoundError, IndexMismatchError) as e:
            # Also raised while the DirectRunner runs a bounded job inside
            # `start`, as when an index segment fails its checksum.
            _refuse(e, verbose="--verbose" in argv)
        result.wait_until_finish()


def _input_bytes(argv) -> int | None:
    """The size of the job's input files, or None (a stream, or unknown)."""
    flags = PipelineOptions(argv).get_all_options()
    pattern = flags.get("input") or flags.get("train")
    if not pattern:
        return None
    try:
        found = FileSystems.match([pattern])[0].metadata_list
    except Exception:  # the job itself reports a bad pattern
        return None
    return sum(metadata.size_in_bytes for metadata in found) or None


def start(argv, required, build) -> PipelineResult:
    """As `run`, but returns once the job is started: a stream runs until
    the returned result is cancelled."""
    options = PipelineOptions(argv)
    job = types.SimpleNamespace(**options.get_all_options())
    if job.verbose:
        os.environ[VERBOSE_ENV_VAR] = "1"
    logging.getLogger().setLevel(logging.INFO if job.verbose
                                 else logging.WARNING)
    for flag in required:
        if getattr(job, flag) in (None, ""):
            sys.exit(f"--{flag} is required; see --help")
    without_local_cache()
    pipeline = beam.Pipeline(options=options)
    try:
        build(pipeline, job)
    except (ValueError, ModelNotFoundError) as e:
        # A bad flag or artifact, found before any worker starts.
        _refuse(e, job.verbose)
    return pipeline.run()


def _refuse(error: Exception, verbose: bool) -> NoReturn:
    """Ends the program with `error`'s message, which says what to do: a
    traceback would only bury it (--verbose keeps it)."""
    if verbose:
        raise error
    sys.exit(f"error: {error}")


def _print_help(groups, description):
    parser = argparse.ArgumentParser(
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Any Beam pipeline option (--runner, --project, --region, "
               "--temp_location, ...) is accepted too.")
    for group in groups:
        group._add_argparse_args(parser.add_argument_group(
            group.__doc__.split("\n")[0].rstrip(".")))
    parser.print_help()
