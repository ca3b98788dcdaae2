"""Fit k-means centroids on clustering-prompt embeddings of a corpus.

    python -m pipelines.fit_clusters --input FILE --model M --k K \\
        --output DIR [--text_column text] [--dim 768] \\
        [--cluster_task sentence_similarity]

Reads JSONL/TSV/CSV/plain-text records (local or gs://), embeds them with
the clustering prompt (`--cluster_task sentence_similarity` for centroids
that serve `stream_tag --prompts shared`), fits k-means (mini-batch above
20,000 records) and writes to DIR the centroids as plain data
(`artifact.json`, `arrays.npz`, with the model identity, prompt and dim;
load with `embgemma_keras.load_centroids`), `metrics.json` (cluster sizes,
mean cosine distance to the centroid, silhouette on a sample) and
`dead_letters-*.jsonl`.
"""

from __future__ import annotations

import argparse
import dataclasses

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from embgemma_keras.config import ClusterConfig
from embgemma_keras.config import EmbedConfig
from embgemma_keras.config import add_flags
from embgemma_keras.config import from_flags
from pipelines.options import FileOptions
from pipelines.options import Files
from pipelines.options import JobConfig
from pipelines.options import ModelOptions
from pipelines.options import checked_model
from pipelines.options import run
from transforms.clusters.fit_centroids import FitCentroids
from transforms.embedding.model_handler import EmbeddingGemmaModelHandler

REQUIRED = ("input", "output", "k")


class FitClustersOptions(PipelineOptions):
    """fit_clusters: k and the prompt (`ClusterConfig`)."""

    @classmethod
    def _add_argparse_args(cls, parser):
        add_flags(parser, ClusterConfig)


@dataclasses.dataclass(frozen=True)
class FitClustersConfig(JobConfig):
    """fit_clusters's flags, parsed once.

    Args:
        files: the corpus and the output directory.
        clusters: k and the prompt.
        embed: the model.
    """

    files: Files
    clusters: ClusterConfig
    embed: EmbedConfig = dataclasses.field(default_factory=EmbedConfig)

    # The option groups the job takes, its own first.
    OPTIONS = (FitClustersOptions, FileOptions, ModelOptions)

    @classmethod
    def from_flags(cls, flags: argparse.Namespace) -> FitClustersConfig:
        return cls(Files.from_flags(flags), from_flags(ClusterConfig, flags),
                   from_flags(EmbedConfig, flags))


OPTIONS = FitClustersConfig.OPTIONS


def build(pipeline: beam.Pipeline,
          config: FitClustersConfig) -> beam.PCollection:
    """Wires the job; returns the PCollection holding its metrics."""
    handle, identity = checked_model(config.embed)
    return pipeline | FitCentroids(
        config.files.input, config.files.output,
        EmbeddingGemmaModelHandler.from_config(config.embed, handle),
        config.clusters, identity, config.files.text_column)


def main(argv: list[str] | None = None) -> None:
    run(argv, REQUIRED, build, __doc__)


if __name__ == "__main__":
    main()
