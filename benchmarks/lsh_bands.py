"""LSH bands for the streaming detector: recall against state reads.

    python benchmarks/lsh_bands.py [--model DIR --dtype bfloat16]

The streaming detector reads one state cell per band of each sketcher for
every record, so fewer bands cost less; fewer bands also find fewer
duplicates. This measures both on real texts:

- lexical (MinHash, 128 permutations): the planted copies of
  `benchmarks/dedup_planted.py` (typos, a word inserted or deleted,
  truncation, case/whitespace) of 1,500 SMS and SST-2 texts; a copy is
  found when it shares a band with its source and its estimated Jaccard
  is >= 0.7;
- semantic (random hyperplanes on sentence-similarity vectors, with
  --model): MRPC pairs whose cosine is >= 0.9; a pair is found when it
  shares a band;

and, for both, the candidates a record meets among 1,500 unrelated texts
(comparisons the detector makes for nothing). Prints one row per setting.
"""

import argparse
import pathlib
import random
import sys

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.data import DATA_DIR  # noqa: E402
from benchmarks.data import read_tsv  # noqa: E402
from benchmarks.dedup_planted import PLANTS  # noqa: E402
from embgemma_keras.config import MinHashConfig  # noqa: E402
from embgemma_keras.dedup.minhash import MinHasher  # noqa: E402
from embgemma_keras.dedup.minhash import normalize  # noqa: E402

LEXICAL = [(16, 8), (8, 16), (32, 4), (12, 10), (20, 6), (10, 12)]
SEMANTIC = [(16, 12), (8, 12), (8, 8), (12, 10), (16, 10), (6, 8)]


def planted_pairs(data_dir, count, rng):
    sms = [r["text"] for r in read_tsv(data_dir, "sms_spam_train.tsv")]
    sst = [r["text"] for r in read_tsv(data_dir, "sst2_train.tsv")
           if len(r["text"].split()) >= 8]
    bases = rng.sample(sms, count // 2) + rng.sample(sst, count // 2)
    pairs = [(base, " ".join(plant(base.split(), rng)))
             for base in bases for kind, plant in PLANTS.items()
             if kind != "exact copy"]
    return bases, pairs


def lexical_rows(bases, pairs):
    rows = []
    for bands, rows_per_band in LEXICAL:
        perms = bands * rows_per_band
        hasher = MinHasher(MinHashConfig(num_perm=perms, bands=bands,
                                         rows=rows_per_band))
        a = hasher.signatures([normalize(s) for s, _ in pairs])
        b = hasher.signatures([normalize(c) for _, c in pairs])
        shared = (hasher.band_hashes(a) == hasher.band_hashes(b)).any(1)
        found = shared & ((a == b).mean(1) >= 0.7)
        keys = hasher.band_hashes(hasher.signatures(
            [normalize(t) for t in bases]))
        rows.append((f"lexical {bands} x {rows_per_band}", bands,
                     found.mean(), _stray_candidates(keys)))
    return rows


def semantic_rows(model_dir, dtype, data_dir, rng):
    from embgemma_keras import EmbeddingGemma

    model = EmbeddingGemma.from_preset(model_dir, dtype=dtype)
    mrpc = read_tsv(data_dir, "mrpc_train.tsv")
    a = model.encode([r["text_a"] for r in mrpc], task="sentence_similarity")
    b = model.encode([r["text_b"] for r in mrpc], task="sentence_similarity")
    close = (a * b).sum(1) >= 0.9
    a, b = a[close], b[close]
    rows = []
    for bands, bits in SEMANTIC:
        planes = np.random.default_rng(0).normal(size=(a.shape[1],
                                                       bands * bits))

        def keys(vectors, planes=planes, bands=bands, bits=bits):
            signs = (vectors @ planes > 0).reshape(len(vectors), bands, bits)
            return np.packbits(signs, axis=2).view(np.uint8).reshape(
                len(vectors), bands, -1)

        shared = (keys(a) == keys(b)).all(2).any(1)
        unrelated = np.concatenate([a, b])[rng.sample(range(2 * len(a)),
                                                      min(1500, 2 * len(a)))]
        packed = keys(unrelated)
        as_ints = np.array([[hash(band.tobytes()) for band in row]
                            for row in packed])
        rows.append((f"semantic {bands} x {bits} bits", bands,
                     shared.mean(), _stray_candidates(as_ints)))
    return rows, int(close.sum())


def _stray_candidates(keys):
    """Mean number of other texts sharing a band with a text."""
    keys = np.asarray(keys)
    shared = np.zeros((len(keys), len(keys)), bool)
    for band in range(keys.shape[1]):
        shared |= keys[:, band][:, None] == keys[:, band][None, :]
    np.fill_diagonal(shared, False)
    return shared.sum(1).mean()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--texts", type=int, default=1500)
    parser.add_argument("--data-dir", type=pathlib.Path, default=DATA_DIR)
    args = parser.parse_args()
    rng = random.Random(0)
    bases, pairs = planted_pairs(args.data_dir, args.texts, rng)
    rows = lexical_rows(bases, pairs)
    note = f"{len(pairs)} planted copies"
    if args.model:
        semantic, close = semantic_rows(args.model, args.dtype,
                                        args.data_dir, rng)
        rows += semantic
        note += f"; {close} MRPC pairs at cosine >= 0.9"
    print(f"\n{note}\n\n{'setting':28} {'reads/record':>12} {'found':>6} "
          f"{'stray candidates/record':>24}")
    for name, reads, found, stray in rows:
        print(f"{name:28} {reads:12d} {found:6.3f} {stray:24.2f}")


if __name__ == "__main__":
    main()
