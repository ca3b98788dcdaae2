"""What every job shares: common flags, required flags, running.

Beam parses the flags of every `PipelineOptions` subclass in the process
with one parser, so two jobs may not both declare `--output`: the flags all
jobs take are declared once here (`JobOptions`), each job declares only its
own, under names no other job uses.
"""

import argparse
import logging
import sys
import types

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from embgemma_keras import MATRYOSHKA_DIMS
from embgemma_keras import ModelIdentity
from embgemma_keras.presets import SUPPORTED_DTYPES
from embgemma_keras.presets import fingerprint_files
from embgemma_keras.presets import resolve_handle
from transforms import EmbeddingGemmaModelHandler


class JobOptions(PipelineOptions):
    """Flags of every job: input, output and the model."""

    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument("--input",
                            help="Records to read: a file or glob, local or "
                                 "gs:// (JSONL, TSV/CSV with a header, or "
                                 "*.txt lines).")
        parser.add_argument("--output",
                            help="Output directory, local or gs://.")
        parser.add_argument("--model", default=None,
                            help="Model directory, Keras preset, hf:// or "
                                 "kaggle:// handle (default: "
                                 "$EMBGEMMA_MODEL).")
        parser.add_argument("--dtype", default="float32",
                            choices=SUPPORTED_DTYPES,
                            help="Model dtype (float16 is not supported).")
        parser.add_argument("--dim", type=int, default=768,
                            choices=MATRYOSHKA_DIMS,
                            help="Embedding size (Matryoshka).")
        parser.add_argument("--text_column", default="text",
                            help="TSV/CSV column holding the text.")
        parser.add_argument("--model_copies", type=int, default=None,
                            help="Models per worker VM, shared by all its "
                                 "SDK processes (Beam's large_model). "
                                 "Default: one per process.")


def add_switch(parser, name, help):
    """A boolean flag: `--name` alone, or `--name=true|false`.

    Dataflow Flex Templates pass every parameter as `--name=value`, which
    argparse's `store_true` refuses; this accepts both forms.
    """
    parser.add_argument(f"--{name}", nargs="?", const=True, default=False,
                        type=_boolean, help=help)


def _boolean(value):
    if value.lower() in ("true", "1", "yes"):
        return True
    if value.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


def model_identity(model):
    """The checked handle and its identity, read without loading the model.

    Remote handles (hf://, kaggle://) are identified by the handle alone.
    """
    handle = resolve_handle(model)
    return handle, ModelIdentity(handle, fingerprint_files(handle) or handle)


def model_handler(handle, options, **kwargs):
    """The job's `EmbeddingGemmaModelHandler`, configured from its flags."""
    return EmbeddingGemmaModelHandler(
        handle, dim=options.dim, dtype=options.dtype,
        model_copies=options.model_copies, **kwargs)


def run(argv, job_options, required, build, description):
    """Parses all flags, checks `required`, runs `build(pipeline, job)`.

    `job` holds every flag by name. Flags are not declared required=True:
    that would break every other pipeline in the process (see above).
    `--help` lists the job's own flags, then the common ones; Beam's runner
    flags (`--runner`, `--project`, ...) are passed through.
    """
    argv = sys.argv[1:] if argv is None else argv
    if "--help" in argv or "-h" in argv:
        _print_help(job_options, description)
        return
    logging.getLogger().setLevel(logging.WARNING)
    options = PipelineOptions(argv)
    job = types.SimpleNamespace(**options.get_all_options())
    for flag in required:
        if getattr(job, flag) in (None, ""):
            sys.exit(f"--{flag} is required; see --help")
    with beam.Pipeline(options=options) as pipeline:
        build(pipeline, job)


def _print_help(job_options, description):
    parser = argparse.ArgumentParser(
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Any Beam pipeline option (--runner, --project, --region, "
               "--temp_location, ...) is accepted too.")
    job_options._add_argparse_args(parser.add_argument_group("job flags"))
    JobOptions._add_argparse_args(parser.add_argument_group("common flags"))
    parser.print_help()
