"""Records/s through a Beam pipeline vs `EmbeddingGemma.encode` alone.

    python benchmarks/pipeline_overhead.py --model DIR [--records 512]
        [--dtype float32] [--direct_num_workers 1]

Runs ParseRecords -> EmbedRecords (one prompt) on the DirectRunner over
JSONL records of real SMS and SST-2 texts, and `encode` on the same texts
with the same settings in the same process. The model load is left out of
both (the pipeline's is read from RunInference's load-latency metric), so
the overhead column is what Beam adds: serialisation, batching, metrics.
"""

import argparse
import json
import os
import pathlib
import random
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import apache_beam as beam  # noqa: E402
from apache_beam.options.pipeline_options import PipelineOptions  # noqa: E402

from benchmarks.data import DATA_DIR  # noqa: E402
from benchmarks.data import read_tsv  # noqa: E402
from benchmarks.machine import describe_cpu  # noqa: E402
from embgemma_keras import EmbeddingGemma  # noqa: E402
from transforms import EmbeddingGemmaModelHandler  # noqa: E402
from transforms import EmbedRecords  # noqa: E402
from transforms import ParseRecords  # noqa: E402


def real_texts(data_dir, count):
    texts = []
    for name in ("sms_spam_train.tsv", "sst2_train.tsv"):
        texts += [row["text"] for row in read_tsv(data_dir, name)][:count * 2]
    random.Random(0).shuffle(texts)
    return texts[:count]


def time_pipeline(lines, handler, options):
    pipeline = beam.Pipeline(options=PipelineOptions(**options))
    _ = (pipeline | beam.Create(lines) | ParseRecords()).output | EmbedRecords(
        handler, prompts={"classification": "classification"})
    start = time.perf_counter()
    result = pipeline.run()
    result.wait_until_finish()
    seconds = time.perf_counter() - start
    metrics = result.metrics().query()["distributions"]

    def distribution(name):
        return [d.committed for d in metrics if d.key.metric.name == name]

    load_seconds = sum(d.sum for d in distribution(
        "load_model_latency_milli_secs")) / 1000
    sizes = distribution("inference_request_batch_size")
    batches = sum(d.count for d in sizes)
    inference_seconds = sum(d.sum for d in distribution(
        "inference_batch_latency_micro_secs")) / 1e6
    return seconds - load_seconds, load_seconds, batches, inference_seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=os.environ.get("EMBGEMMA_MODEL"))
    parser.add_argument("--records", type=int, default=512)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--data-dir", type=pathlib.Path,
                        default=DATA_DIR)
    parser.add_argument("--direct_num_workers", type=int, default=1)
    args = parser.parse_args()
    texts = real_texts(args.data_dir, args.records)
    lines = [json.dumps({"id": str(i), "text": t}) for i, t in enumerate(texts)]

    model = EmbeddingGemma.from_preset(args.model, dtype=args.dtype)
    model.encode(texts[:32])  # warm-up, as the pipeline's first batch is
    start = time.perf_counter()
    model.encode(texts)
    encode_seconds = time.perf_counter() - start

    handler = EmbeddingGemmaModelHandler(args.model, dtype=args.dtype)
    options = {"direct_num_workers": args.direct_num_workers}
    if args.direct_num_workers > 1:
        options["direct_running_mode"] = "multi_processing"
    pipeline_seconds, load_seconds, batches, inference_seconds = (
        time_pipeline(lines, handler, options))

    n = len(texts)
    print(f"\nCPU: {describe_cpu()}")
    print(f"\n{'path':28} {'records':>8} {'seconds':>8} {'records/s':>10}")
    print(f"{'encode (in process)':28} {n:8} {encode_seconds:8.1f} "
          f"{n / encode_seconds:10.1f}")
    print(f"{'pipeline (DirectRunner)':28} {n:8} {pipeline_seconds:8.1f} "
          f"{n / pipeline_seconds:10.1f}")
    print(f"\nmodel load in pipeline: {load_seconds:.1f} s (excluded); "
          f"{batches} RunInference batches, {n / batches:.0f} records each, "
          f"{inference_seconds:.1f} s inside run_inference")
    print(f"pipeline overhead: {pipeline_seconds / encode_seconds - 1:+.1%}")


if __name__ == "__main__":
    main()
