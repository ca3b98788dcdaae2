"""What a stream's micro-batch size costs the encoder.

    python benchmarks/encode_batches.py --model DIR [--dtype bfloat16] \
        [--texts 1024] [--sizes 512 128 64 32]

A stream hands `RunInference` a micro-batch at a time (at least
`min_batch_size` texts, or fewer when the deadline comes first); the
encoder sorts each batch by length and pads each forward pass to its
longest text, so a smaller batch pads more. This encodes the same real
texts (SMS, SST-2, MRPC, shuffled: the order a stream sees) with the
sentence-similarity prompt, in consecutive batches of each size (best of
two passes), and prints texts/s beside one call over them all: the rate
a raw `encode` benchmark measures, which a stream of small batches cannot
reach.
"""

import argparse
import pathlib
import random
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.data import DATA_DIR  # noqa: E402
from benchmarks.load_run import real_texts  # noqa: E402
from benchmarks.machine import describe_cpu  # noqa: E402
from embgemma_keras import EmbeddingGemma  # noqa: E402

TASK = "sentence_similarity"


def texts_per_second(model: EmbeddingGemma, texts: list[str],
                     size: int, repeats: int = 2) -> float:
    """Texts/s encoding `texts` in consecutive batches of `size`, the best
    of `repeats` passes (the first may trace shapes the model has not
    seen)."""
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(0, len(texts), size):
            model.encode(texts[i:i + size], task=TASK)
        best = max(best, len(texts) / (time.perf_counter() - start))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--texts", type=int, default=1024)
    parser.add_argument("--sizes", type=int, nargs="+",
                        default=[512, 128, 64, 32])
    parser.add_argument("--data-dir", type=pathlib.Path, default=DATA_DIR)
    args = parser.parse_args()
    texts = real_texts(args.data_dir)
    random.Random(0).shuffle(texts)
    texts = texts[:args.texts]
    model = EmbeddingGemma.from_preset(args.model, dtype=args.dtype)
    whole = texts_per_second(model, texts, len(texts))
    print(f"\n{describe_cpu()}; {args.dtype}, {len(texts)} real texts")
    print(f"{'batch':>6}  {'texts/s':>8}  {'/ one call':>10}")
    print(f"{len(texts):>6}  {whole:>8.1f}  {1:>10.2f}  (one call)")
    for size in args.sizes:
        rate = texts_per_second(model, texts, size)
        print(f"{size:>6}  {rate:>8.1f}  {rate / whole:>10.2f}")


if __name__ == "__main__":
    main()
