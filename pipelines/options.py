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
import sys
import types

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from embgemma_keras.artifacts import ModelIdentity
from embgemma_keras.config import EmbedConfig
from embgemma_keras.config import MinHashConfig
from embgemma_keras.config import SemanticDedupConfig
from embgemma_keras.config import add_flags
from embgemma_keras.config import from_flags
from embgemma_keras.presets import fingerprint_files
from embgemma_keras.presets import resolve_handle
from embgemma_keras.schema import TEXT


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
    """Parses all flags, checks `required`, runs `build(pipeline, job)`.

    `groups` are the option classes the job takes (for `--help`); `job`
    holds every flag by name. Flags are not declared required=True: that
    would break every other pipeline in the process (see above). Beam's
    runner flags (`--runner`, `--project`, ...) are passed through.
    """
    argv = sys.argv[1:] if argv is None else argv
    if "--help" in argv or "-h" in argv:
        _print_help(groups, description)
        return
    logging.getLogger().setLevel(logging.WARNING)
    options = PipelineOptions(argv)
    job = types.SimpleNamespace(**options.get_all_options())
    for flag in required:
        if getattr(job, flag) in (None, ""):
            sys.exit(f"--{flag} is required; see --help")
    with beam.Pipeline(options=options) as pipeline:
        build(pipeline, job)


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
