"""MinHash signature + LSH throughput: ours vs a plain datasketch loop.

    python benchmarks/minhash_throughput.py [--docs 100000]

Documents: every text of ../shared/data (SST-2 phrases, SMS messages, MRPC
sentences; about 72,000), cycled up to --docs. Both sides normalise the
text, take character 5-gram shingles, compute 128-permutation signatures
and insert them into 16 bands x 8 rows of LSH buckets:

- datasketch: one `MinHash` per document (`update_batch` on its shingles),
  inserted into `MinHashLSH(num_perm=128, params=(16, 8))`;
- ours: `MinHasher.signatures` and `band_hashes` on batches of 64, into a
  dict of buckets (what the Beam job groups by).
"""

import argparse
import collections
import pathlib
import resource
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.data import DATA_DIR  # noqa: E402
from benchmarks.data import column_texts  # noqa: E402
from benchmarks.machine import describe_cpu  # noqa: E402
from embgemma_keras.dedup.minhash import MinHasher  # noqa: E402
from embgemma_keras.dedup.minhash import normalize  # noqa: E402

BATCH = 64


def real_texts(data_dir, count):
    texts = column_texts(data_dir, (("sst2_train.tsv", ["text"]),
                                    ("sms_spam_train.tsv", ["text"]),
                                    ("mrpc_train.tsv", ["text_a", "text_b"])))
    distinct = len(texts)
    return [texts[i % distinct] for i in range(count)], distinct


def run_datasketch(texts):
    from datasketch import MinHash
    from datasketch import MinHashLSH

    permutations = MinHash(128, 1).permutations
    lsh = MinHashLSH(num_perm=128, params=(16, 8))
    for i, text in enumerate(texts):
        text = normalize(text)
        minhash = MinHash(128, 1, permutations=permutations,
                          scheme="affine32")
        minhash.update_batch({text[j:j + 5].encode("utf-8")
                              for j in range(max(1, len(text) - 4))})
        lsh.insert(i, minhash, check_duplication=False)


def run_ours(texts):
    hasher = MinHasher(num_perm=128, bands=16, rows=8, kind="char", size=5)
    buckets = collections.defaultdict(list)
    for start in range(0, len(texts), BATCH):
        batch = [normalize(t) for t in texts[start:start + BATCH]]
        hashes = hasher.band_hashes(hasher.signatures(batch)).tolist()
        for offset, row in enumerate(hashes):
            for band, key in enumerate(row):
                buckets[band, key].append(start + offset)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--data-dir", type=pathlib.Path,
                        default=DATA_DIR)
    args = parser.parse_args()
    texts, distinct = real_texts(args.data_dir, args.docs)
    print(f"{len(texts):,} documents ({distinct:,} distinct real texts, "
          f"mean {sum(map(len, texts)) / len(texts):.0f} characters)")
    results = {}
    for name, run in (("datasketch loop", run_datasketch),
                      ("MinHasher (vectorised)", run_ours)):
        start = time.perf_counter()
        run(texts)
        results[name] = len(texts) / (time.perf_counter() - start)
    base = results["datasketch loop"]
    print(f"\nCPU: {describe_cpu()}")
    print(f"\n{'signature + LSH':26} {'docs/s':>10} {'speed-up':>9}")
    for name, rate in results.items():
        print(f"{name:26} {rate:10,.0f} {rate / base:8.2f}x")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\npeak RSS {peak_mb:.0f} MB")


if __name__ == "__main__":
    main()
