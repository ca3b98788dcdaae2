"""Fit k-means centroids on clustering-prompt embeddings of a corpus.

    python -m pipelines.fit_clusters --input FILE --model M --k K --output DIR \\
        [--text_column text] [--dim 768] [--cluster_task sentence_similarity]

Reads JSONL/TSV/CSV/plain-text records (local or gs://), embeds them with
the clustering prompt (`--cluster_task sentence_similarity` for centroids
that serve `stream_tag --prompts shared`), fits k-means (mini-batch above
20,000 records) and writes to DIR the centroids as plain data
(`artifact.json`, `arrays.npz`, with the model identity, prompt and dim;
load with `embgemma_keras.load_centroids`), `metrics.json` (cluster sizes,
mean cosine distance to the centroid, silhouette on a sample) and
`dead_letters-*.jsonl`.
"""

from apache_beam.options.pipeline_options import PipelineOptions

from embgemma_keras.config import ClusterConfig
from embgemma_keras.config import add_flags
from embgemma_keras.config import from_flags
from pipelines.options import FileOptions
from pipelines.options import ModelOptions
from pipelines.options import checked_model
from pipelines.options import embed_config
from pipelines.options import run
from transforms.clusters.fit_centroids import FitCentroids
from transforms.embedding.model_handler import EmbeddingGemmaModelHandler

REQUIRED = ("input", "output", "k")


class FitClustersOptions(PipelineOptions):
    """fit_clusters: k and the prompt (`ClusterConfig`)."""

    @classmethod
    def _add_argparse_args(cls, parser):
        add_flags(parser, ClusterConfig)


def build(pipeline, job):
    """Wires the job; returns the PCollection holding its metrics."""
    embed = embed_config(job)
    handle, identity = checked_model(embed)
    return pipeline | FitCentroids(
        job.input, job.output, EmbeddingGemmaModelHandler.from_config(
            embed, handle), from_flags(ClusterConfig, job), identity,
        job.text_column)


# The option groups the job takes, its own first.
OPTIONS = [FitClustersOptions, FileOptions, ModelOptions]


def main(argv=None):
    run(argv, OPTIONS, REQUIRED, build, __doc__)


if __name__ == "__main__":
    main()
