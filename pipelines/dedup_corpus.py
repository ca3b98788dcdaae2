"""Deduplicate a corpus: exact, then lexical, then semantic duplicates.

    python -m pipelines.dedup_corpus --input GLOB --output DIR --model M \\
        [--lexical_threshold 0.7] [--semantic_threshold 0.9] [--no_semantic]

Reads JSONL, CSV, TSV or plain-text lines (local paths or gs://) and writes
to DIR:

- `unique-*.jsonl`: the records kept, as they came in;
- `duplicates-*.jsonl`: every other record, with `duplicate_of` (the id of
  the record it duplicates; that record may itself be a duplicate found by
  a later stage, so follow the chain to the kept record), `similarity` and
  `kind` (exact, lexical or semantic);
- `dead_letters-*.jsonl`: lines that could not be parsed, and records
  reusing another record's id for a different text, each with the reason;
- `report.json` and `report.html`: counts per kind, group sizes, similarity
  histograms with the thresholds, example pairs, the settings used.

Cheapest first: only records that survive the exact and lexical stages are
embedded, and `--no_semantic` needs no model (nor TensorFlow). Every input
record lands in exactly one of unique, duplicates or dead letters.

Against earlier runs: `--index DIR` (local or gs://) or `--index
postgresql://...` also dedups against every record earlier runs with that
index kept (a duplicate of one gets `duplicate_of_run`), then adds the
records this run keeps as a new index version, made current once every
output is written; `--index_read_only` leaves the index as it is. A
directory is read whole; a database is looked up for the entries this
run's records may match. An index made with another model, dim or MinHash
or exact-match setting is refused before the job starts.
"""

from __future__ import annotations

import argparse
import dataclasses

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from embgemma_keras.config import DedupConfig
from embgemma_keras.config import EmbedConfig
from embgemma_keras.config import IndexConfig
from embgemma_keras.config import MinHashConfig
from embgemma_keras.config import SemanticDedupConfig
from embgemma_keras.config import add_flags
from embgemma_keras.config import from_flags
from embgemma_keras.index.format import IndexSettings
from embgemma_keras.index.format import new_run_id
from pipelines.options import FileOptions
from pipelines.options import Files
from pipelines.options import IndexOptions
from pipelines.options import JobConfig
from pipelines.options import LexicalOptions
from pipelines.options import ModelOptions
from pipelines.options import SemanticOptions
from pipelines.options import checked_model
from pipelines.options import run
from transforms.dedup.corpus import DeduplicateFiles
from transforms.embedding.model_handler import EmbeddingGemmaModelHandler
from transforms.index.read_commit import open_index

REQUIRED = ("input", "output")


class DedupCorpusOptions(PipelineOptions):
    """dedup_corpus: the stages that run, the semantic buckets."""

    @classmethod
    def _add_argparse_args(cls, parser):
        add_flags(parser, DedupConfig)
        add_flags(parser, SemanticDedupConfig, skip=("threshold",))
        add_flags(parser, IndexConfig, skip=("index",))


@dataclasses.dataclass(frozen=True)
class DedupCorpusConfig(JobConfig):
    """dedup_corpus's flags, parsed once.

    Args:
        files: the corpus and the output directory.
        dedup: the stages and their settings.
        embed: the model of the semantic stage.
        index: the dedup index to dedup against and add to.
    """

    files: Files
    dedup: DedupConfig = dataclasses.field(default_factory=DedupConfig)
    embed: EmbedConfig = dataclasses.field(default_factory=EmbedConfig)
    index: IndexConfig = dataclasses.field(default_factory=IndexConfig)

    # The option groups the job takes, its own first.
    OPTIONS = (DedupCorpusOptions, IndexOptions, FileOptions, LexicalOptions,
               SemanticOptions, ModelOptions)

    @classmethod
    def from_flags(cls, flags: argparse.Namespace) -> DedupCorpusConfig:
        return cls(
            Files.from_flags(flags),
            from_flags(DedupConfig, flags,
                       lexical=from_flags(MinHashConfig, flags),
                       similar=from_flags(SemanticDedupConfig, flags)),
            from_flags(EmbedConfig, flags), from_flags(IndexConfig, flags))


OPTIONS = DedupCorpusConfig.OPTIONS


def build(pipeline: beam.Pipeline,
          config: DedupCorpusConfig) -> beam.PCollection:
    """Wires the job; returns the PCollection of its report."""
    handler = identity = None
    if config.dedup.semantic:
        handle, identity = checked_model(config.embed)
        handler = EmbeddingGemmaModelHandler.from_config(config.embed,
                                                         handle)
    indexing, index = config.index, None
    if indexing.index:
        index = open_index(indexing.index, IndexSettings.of(
            config.dedup, identity, handler.dim if handler else None),
            must_exist=indexing.index_read_only)
    run_id = None if indexing.index_read_only else (
        indexing.run_id or new_run_id())
    return pipeline | DeduplicateFiles(
        config.files.input, config.files.output, config.dedup, handler,
        config.files.text_column, index, run_id)


def main(argv: list[str] | None = None) -> None:
    run(argv, REQUIRED, build, __doc__)


if __name__ == "__main__":
    main()
