"""Fit k-means centroids on clustering-prompt embeddings of a corpus.

    python -m pipelines.fit_clusters --input FILE --model M --k K --output DIR \\
        [--text_column text] [--dim 768]

Reads JSONL/TSV/CSV/plain-text records (local or gs://), embeds them with
the clustering prompt, fits k-means (mini-batch above 20,000 records) and
writes to DIR the centroids as plain data (`artifact.json`, `arrays.npz`,
with the model identity, prompt and dim; load with
`embgemma_keras.load_centroids`), `metrics.json` (cluster sizes, mean
cosine distance to the centroid, silhouette on a sample) and
`dead_letters-*.jsonl`.
"""

import json

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from embgemma_keras import Centroids
from pipelines.files import ReadRecords
from pipelines.files import save_artifact_to
from pipelines.files import write_jsonl
from pipelines.jobs import model_handler
from pipelines.jobs import model_identity
from pipelines.jobs import run
from transforms import EMBEDDINGS
from transforms import EmbedRecords

STAGE = "clustering"
SILHOUETTE_SAMPLE = 5000


# Flags the job cannot run without (checked by jobs.run).
REQUIRED = ("input", "output", "k")


class FitClustersOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument("--k", type=int,
                            help="fit_clusters: number of clusters.")


def fit_and_write(vectors, options, identity):
    """Fits the centroids, computes metrics, writes both; returns metrics."""
    from sklearn.metrics import silhouette_score

    vectors = np.stack(vectors)
    centroids = Centroids.fit(vectors, options.k, task=STAGE,
                              model_identity=identity)
    labels, distances = centroids.assign(vectors)
    metrics = {"records": len(vectors), "k": options.k,
               "sizes": centroids.sizes.tolist(),
               "mean_cosine_distance": float(distances.mean())}
    if 1 < options.k < len(vectors):
        sample = np.random.default_rng(0).permutation(len(vectors))[
            :SILHOUETTE_SAMPLE]
        metrics["silhouette_cosine"] = float(silhouette_score(
            vectors[sample], labels[sample], metric="cosine"))
    save_artifact_to(options.output, centroids, metrics)
    print(json.dumps({k: v for k, v in metrics.items() if k != "sizes"}),
          flush=True)
    return metrics


def build(pipeline, options):
    handle, identity = model_identity(options.model)
    handler = model_handler(handle, options)
    read = pipeline | "Read" >> ReadRecords(options.input, options.text_column)
    embedded = read.output | "Embed" >> EmbedRecords(handler,
                                                     prompts={STAGE: STAGE})
    write_jsonl((read.dead_letters, embedded.dead_letters)
                | "AllDeadLetters" >> beam.Flatten(),
                FileSystems.join(options.output, "dead_letters"),
                "DeadLetters")
    return (embedded.output
            | "Vector" >> beam.Map(lambda r: r[EMBEDDINGS][STAGE])
            | "Collect" >> beam.combiners.ToList()
            | "Fit" >> beam.Map(fit_and_write, options, identity))


def main(argv=None):
    run(argv, FitClustersOptions, REQUIRED, build, __doc__)


if __name__ == "__main__":
    main()
