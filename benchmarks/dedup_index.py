"""dedup_corpus and stream_tag against a dedup index: a directory, or
PostgreSQL with pgvector.

    python -m benchmarks.dedup_index [--model DIR] [--sizes 10000,100000]
        [--index_kind directory,postgres] [--dim 768]
        [--postgres_url URL] [--maintenance_work_mem 2GB]
        [--shared_buffers 10GB] [--reuse]

For each size N and each kind of index:

- directory: builds the index from the first N texts (one
  `dedup_corpus --index DIR` run), then runs a batch of 2,000 records
  (1,500 texts not in the index and 500 copies of indexed ones) through
  `dedup_corpus` and through `stream_tag`, each once against the index and
  once on its own. Reported: the index's bytes per entry (Parquet
  segments, centroids, manifest), the build time, the batch's time and
  duplicates with and without the index, and for the stream the bytes of
  state each entry takes (it lives in the buckets' keyed state, spread
  over the workers).
- postgres: commits N entries made from the same texts straight through
  `DatabaseIndex.commit` (MinHash signatures, band keys and exact keys as
  a run makes them; vectors as below) and times the commit's statements
  (COPY, HNSW build, band keys); bytes an entry (`pg_total_relation_size`
  of its tables and indexes); the batch's lookups as
  `transforms/index/lookup.py` makes them (exact and band keys, then
  vectors, 512 records a query), a time a record; the stream's lookups
  (band keys and vectors) a bundle of 1, 8 and 64 records at a time; the
  whole `dedup_corpus --index_read_only` and `stream_tag` jobs over the
  batch, with the index and without it (start-up: the difference); and
  the HNSW lookup's recall against an exact (NumPy) search at the
  semantic threshold, over copies, near-copies (a word dropped or two
  swapped) and unrelated texts as queries.

Both kinds print one summary table (entries, dim, build, bytes/entry,
lookup cost a record, stream start-up, recall) with the targets of
issue #25 beside it, and the CPU model.

Texts are the real ones of ../shared/data (SMS Spam, SST-2, both MRPC
sentences: about 72,000); past those, a text is two of them joined, so
all texts are distinct strings. The jobs run the tiny random preset
(`embgemma_keras.tiny`) unless --model is given: the index's size and the
lookups' cost do not depend on the weights. Its random vectors are all
close to each other, so with it only identical vectors count as semantic
duplicates (`--semantic_threshold 0.9999`). Those vectors have no
neighbourhood structure to test HNSW on (and embedding a million texts
with a model is slow on a few cores), so the postgres index's vectors are
TF-IDF of word 1- and 2-grams (IDF fitted on the indexed texts), randomly
projected to --dim and normalised: copies coincide, near-copies and
texts sharing half their words are near, unrelated texts far. Recall and
the postgres lookups use those vectors at the default threshold (0.9);
the jobs query them with the model's vectors (a cost, not a result).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pathlib
import random
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Iterator
from collections.abc import Sequence

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.data import DATA_DIR  # noqa: E402
from benchmarks.data import column_texts  # noqa: E402
from benchmarks.machine import cpu_model  # noqa: E402
from embgemma_keras.tiny import make_tiny_preset  # noqa: E402
from pipelines import dedup_corpus  # noqa: E402
from pipelines import stream_tag  # noqa: E402

SOURCES = [("sms_spam_train.tsv", ["text"]), ("sst2_train.tsv", ["text"]),
           ("mrpc_train.tsv", ["text_a", "text_b"])]
BATCH_NEW, BATCH_COPIES = 1_500, 500
# Records a batch lookup query takes (`lookup.MAX_BATCH`).
LOOKUP_BATCH = 512
# Records a stream bundle may hold, and how many records each is timed on.
STREAM_BUNDLES, STREAM_RECORDS = (1, 8, 64), 512
# Query vectors of each kind (copy, near-copy, unrelated) for recall.
RECALL_QUERIES = 500
# First HNSW candidate lists tried besides the index's default (each
# grows where a vector's list comes back full: `DatabaseIndex.by_vectors`).
EF_SEARCH_ALSO = (40, 100, 200)
# Records of the short stream job whose time with the index less its time
# without is the index's start-up.
STARTUP_RECORDS = 10
# Issue #25's targets, at a million entries.
TARGET_SIZE, TARGET_STARTUP_S, TARGET_MS, TARGET_RECALL = (
    1_000_000, 30.0, 5.0, 0.99)
CHUNK = 20_000


def texts(n: int) -> list[str]:
    """`n` distinct texts: the real ones, then pairs of them joined."""
    real = list(dict.fromkeys(column_texts(DATA_DIR, SOURCES)))
    rng = random.Random(0)
    out, seen = list(real), set(real)
    while len(out) < n:
        joined = f"{rng.choice(real)} {rng.choice(real)}"
        if joined not in seen:
            seen.add(joined)
            out.append(joined)
    return out[:n]


def batch_of(corpus: list[str], size: int) -> list[tuple[str, str]]:
    """The 2,000-record batch: texts after the first `size`, and copies of
    indexed ones."""
    rng = random.Random(size)
    batch = [(f"new{i}", t) for i, t in enumerate(
        corpus[size:size + BATCH_NEW])]
    batch += [(f"copy{i}", corpus[j]) for i, j in enumerate(
        rng.sample(range(size), BATCH_COPIES))]
    return batch


def write_jsonl(path: pathlib.Path, records: Sequence[tuple[str, str]]
                ) -> pathlib.Path:
    with open(path, "w", encoding="utf-8") as f:
        for record_id, text in records:
            f.write(json.dumps({"id": record_id, "text": text}) + "\n")
    return path


def timed_run(source: pathlib.Path, out: pathlib.Path, flags: list[str]
              ) -> tuple[float, dict]:
    """dedup_corpus over `source`: (seconds, the report's counts)."""
    start = time.perf_counter()
    dedup_corpus.main(["--input", str(source), "--output", str(out),
                       *flags])
    seconds = time.perf_counter() - start
    counts = json.loads((out / "report.json").read_text())["counts"]
    return seconds, counts


def timed_stream(source: pathlib.Path, out: pathlib.Path, flags: list[str]
                 ) -> tuple[float, int, int]:
    """stream_tag over `source`: (seconds, duplicates, of the index)."""
    start = time.perf_counter()
    stream_tag.main(["--input", str(source), "--output", str(out), *flags])
    seconds = time.perf_counter() - start
    tagged = [json.loads(line) for path in out.glob("tagged*")
              for line in path.read_text().splitlines()]
    return (seconds, sum("duplicate_of" in r for r in tagged),
            sum("duplicate_of_run" in r for r in tagged))


def stream_startup(batch: Sequence[tuple[str, str]], with_index: list[str],
                   alone: list[str], work: pathlib.Path) -> float | str:
    """stream_tag's start-up with the index: over a few records, its time
    with the index less its time without (a refusal: its message)."""
    work.mkdir(parents=True, exist_ok=True)
    source = write_jsonl(work / "few.jsonl", batch[-STARTUP_RECORDS:])
    try:
        with_secs = timed_stream(source, work / "few-with", with_index)[0]
    except Exception as e:  # stream_tag may not take a URL yet
        return f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"
    return with_secs - timed_stream(source, work / "few-alone", alone)[0]


# --- directory index ---------------------------------------------------


def measure_directory(size: int, flags: list[str], work: pathlib.Path
                      ) -> dict:
    """The directory index of `size` texts: built by a dedup_corpus run,
    then the batch through both jobs with it and without."""
    corpus = texts(size + BATCH_NEW)
    indexed = [(f"r{i}", t) for i, t in enumerate(corpus[:size])]
    batch = batch_of(corpus, size)
    index = work / f"index{size}"
    build_secs, _ = timed_run(write_jsonl(work / f"base{size}.jsonl",
                                          indexed), work / f"base{size}",
                              [*flags, "--index", str(index)])
    files = [p for p in index.rglob("*") if p.is_file()]
    entries = json.loads((index / "versions" / (
        (index / "CURRENT").read_text() + ".json")).read_text())
    entries = sum(s["records"] for s in entries["segments"])
    source = write_jsonl(work / f"batch{size}.jsonl", batch)
    with_secs, with_counts = timed_run(
        source, work / f"with{size}",
        [*flags, "--index", str(index), "--index_read_only"])
    alone_secs, alone_counts = timed_run(source, work / f"alone{size}",
                                         flags)
    stream_with = timed_stream(source, work / f"stream-with{size}",
                               [*flags, "--index", str(index)])
    stream_alone = timed_stream(source, work / f"stream-alone{size}", flags)
    startup = stream_startup(batch, [*flags, "--index", str(index)], flags,
                             work / f"dir{size}")
    return {"startup": startup, "size": size, "entries": entries,
            "bytes_per_entry": sum(p.stat().st_size for p in files) / entries,
            "build_secs": build_secs, "with_secs": with_secs,
            "with_dups": with_counts["duplicates"],
            "of_index": with_counts["duplicates_of_index"],
            "alone_secs": alone_secs, "alone_dups": alone_counts["duplicates"],
            "state_per_entry": stream_state_per_entry(index),
            "stream_with": stream_with, "stream_alone": stream_alone}


def stream_state_per_entry(index: pathlib.Path) -> float:
    """Bytes of bucket state an index entry takes in stream_tag: one
    bucket entry (with its bucket's key) per band of each sketcher,
    through the job's coder."""
    from embgemma_keras.config import StreamDedupConfig
    from embgemma_keras.dedup.sketches import stream_sketchers
    from embgemma_keras.dedup.stream_buckets import HELD
    from embgemma_keras.dedup.stream_buckets import BucketEntry
    from embgemma_keras.dedup.stream_buckets import ShardEntry
    from embgemma_keras.index.format import segment_entries
    from transforms.dedup.streaming import SHARD_CODER

    segment = next(index.rglob("*.parquet"))
    entries = list(segment_entries(segment.read_bytes()))[:1000]
    dim = len(entries[0].vector) if entries[0].vector is not None else None
    sketchers = stream_sketchers(StreamDedupConfig(), dim)
    total = 0
    for entry in entries:
        for sketcher in sketchers:
            sketch, keys = sketcher.sketch_entry(entry) or (b"", [])
            held = BucketEntry(HELD, entry.run, entry.id, sketch, 0)
            total += sum(len(SHARD_CODER.encode(ShardEntry(key, held)))
                         for key in keys)
    return total / len(entries)


def print_directory(rows: list[dict]) -> None:
    print(f"\nbatch: {BATCH_NEW:,} new texts + {BATCH_COPIES} copies of "
          "indexed ones; DirectRunner, this machine")
    print("| index entries | bytes/entry | build s | batch vs index s "
          "| duplicates (of index) | batch alone s | duplicates |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['entries']:,} | {r['bytes_per_entry']:,.0f} "
              f"| {r['build_secs']:.1f} | {r['with_secs']:.1f} "
              f"| {r['with_dups']} ({r['of_index']}) | {r['alone_secs']:.1f} "
              f"| {r['alone_dups']} |")
    print("\nstream_tag over the same batch (DirectRunner, this machine)")
    print("| index entries | state bytes/entry | with index s "
          "| duplicates (of index) | alone s | duplicates |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        (with_secs, with_dups, of_index), (alone_secs, alone_dups, _) = (
            r["stream_with"], r["stream_alone"])
        print(f"| {r['entries']:,} | {r['state_per_entry']:,.0f} "
              f"| {with_secs:.1f} | {with_dups} ({of_index}) "
              f"| {alone_secs:.1f} | {alone_dups} |")


# --- PostgreSQL index --------------------------------------------------


class HashedVectors:
    """Text -> unit vector of `dim`: TF-IDF of word 1- and 2-grams (IDF
    fitted on `fit_texts`), sparse random projection. A text with no word
    gets a random vector of its own (seeded by its CRC)."""

    def __init__(self, fit_texts: Sequence[str], dim: int):
        from sklearn.feature_extraction.text import HashingVectorizer
        from sklearn.feature_extraction.text import TfidfTransformer
        from sklearn.random_projection import SparseRandomProjection

        self.dim = dim
        self._hashing = HashingVectorizer(
            ngram_range=(1, 2), n_features=2 ** 20, alternate_sign=False,
            norm=None, token_pattern=r"(?u)\b\w+\b")
        sample = random.Random(1).sample(list(fit_texts),
                                         min(len(fit_texts), 200_000))
        self._tfidf = TfidfTransformer(sublinear_tf=True).fit(
            self._hashing.transform(sample))
        self._projection = SparseRandomProjection(
            dim, dense_output=True, random_state=0).fit(
                self._hashing.transform(sample[:10]))

    def __call__(self, batch: Sequence[str]) -> np.ndarray:
        out = np.empty((len(batch), self.dim), np.float32)
        for start in range(0, len(batch), CHUNK):
            chunk = batch[start:start + CHUNK]
            vectors = self._projection.transform(self._tfidf.transform(
                self._hashing.transform(chunk))).astype(np.float32)
            norms = np.linalg.norm(vectors, axis=1)
            for i in np.flatnonzero(norms == 0):
                vectors[i] = np.random.default_rng(zlib.crc32(
                    chunk[i].encode())).standard_normal(self.dim)
                norms[i] = np.linalg.norm(vectors[i])
            out[start:start + len(chunk)] = vectors / norms[:, None]
        return out


class Signed:
    """Records as a run signs them: exact keys, MinHash signatures and
    band hashes, with the index's settings."""

    def __init__(self, batch: Sequence[str], settings) -> None:
        from embgemma_keras.config import MinHashConfig
        from embgemma_keras.dedup.grouping import exact_key
        from embgemma_keras.dedup.minhash import MinHasher
        from embgemma_keras.dedup.minhash import normalize

        hasher = MinHasher(MinHashConfig(
            shingles=settings.shingles, num_perm=settings.num_perm,
            bands=settings.bands, rows=settings.rows,
            seed=settings.minhash_seed))
        self.exact_keys = [exact_key(t, casefold=settings.case_fold)
                           for t in batch]
        self.signatures = np.concatenate([
            hasher.signatures([normalize(t)
                               for t in batch[start:start + CHUNK]])
            for start in range(0, len(batch), CHUNK)])
        self.bands = hasher.band_hashes(self.signatures)


class StatementClock:
    """Polls pg_stat_activity for the statements other client backends
    run, so a commit's COPY, HNSW build and band keys can be timed."""

    def __init__(self, url: str):
        self._url = url
        self._seen: dict = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> StatementClock:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.ended = time.time()
        self._stop.set()
        self._thread.join()

    def _poll(self) -> None:
        import psycopg

        with psycopg.connect(self._url, autocommit=True) as connection:
            while not self._stop.wait(0.2):
                for started, query in connection.execute(
                        "SELECT query_start, query FROM pg_stat_activity "
                        "WHERE backend_type = 'client backend' AND state = "
                        "'active' AND pid <> pg_backend_pid()"):
                    self._seen[started.timestamp()] = " ".join(query.split())

    def durations(self, longer_than: float = 0.5) -> list[tuple[str, float]]:
        """(statement's first words, seconds) of each statement seen."""
        starts = sorted(self._seen)
        ends = starts[1:] + [self.ended]
        return [(self._seen[s][:48], e - s)
                for s, e in zip(starts, ends, strict=True)
                if e - s >= longer_than]


@contextlib.contextmanager
def pg_options(options: str) -> Iterator[None]:
    """Connections made meanwhile start with `options` (libpq PGOPTIONS)."""
    before = os.environ.get("PGOPTIONS")
    os.environ["PGOPTIONS"] = options
    try:
        yield
    finally:
        if before is None:
            del os.environ["PGOPTIONS"]
        else:
            os.environ["PGOPTIONS"] = before


def with_schema(url: str, schema: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}schema={schema}"


def build_postgres(url: str, server: str, settings, corpus: list[str],
                   size: int, embed: HashedVectors, clusters: int,
                   maintenance_work_mem: str) -> dict:
    """Commits the first `size` texts as one run; times preparing the
    entries and each statement of the commit (`server`: the URL without
    `schema=`, to watch it)."""
    from embgemma_keras.index.database import DatabaseIndex
    from embgemma_keras.index.format import IndexEntry
    from embgemma_keras.index.format import new_run_id

    start = time.perf_counter()
    indexed = corpus[:size]
    signed = Signed(indexed, settings)
    vectors = embed(indexed)
    centroids = vectors[random.Random(2).sample(range(size), clusters)]
    buckets = np.concatenate([
        np.argmax(vectors[s:s + CHUNK] @ centroids.T, axis=1)
        for s in range(0, size, CHUNK)])
    prepare_secs = time.perf_counter() - start
    run = new_run_id()
    entries = (IndexEntry(f"r{i}", run, signed.exact_keys[i],
                          signed.bands[i], signed.signatures[i],
                          int(buckets[i]), vectors[i])
               for i in range(size))
    options = (f"-c maintenance_work_mem={maintenance_work_mem}"
               if maintenance_work_mem else "")
    start = time.perf_counter()
    with pg_options(options), StatementClock(server) as clock:
        index = DatabaseIndex.open(url, settings)
        index.commit(run, entries, centroids)
    commit_secs = time.perf_counter() - start
    return {"index": index, "vectors": vectors, "prepare_secs": prepare_secs,
            "commit_secs": commit_secs, "statements": clock.durations()}


def relation_sizes(index) -> tuple[int, dict[str, int]]:
    """The index's total bytes (tables with their indexes and TOAST), and
    each relation's own."""
    connection = index._connection()
    rows = connection.execute(
        "SELECT c.relname, c.relkind, pg_total_relation_size(c.oid), "
        "pg_relation_size(c.oid) FROM pg_class c JOIN pg_namespace n "
        "ON n.oid = c.relnamespace WHERE n.nspname = %s "
        "AND c.relkind IN ('r', 'i') ORDER BY 4 DESC",
        [index.schema]).fetchall()
    total = sum(whole for _, kind, whole, _ in rows if kind == "r")
    return total, {name: own for name, _, _, own in rows}


def analyze(index) -> None:
    connection = index._connection()
    for table in ("dedup_entries", "dedup_band_keys"):
        connection.execute(f'ANALYZE "{index.schema}".{table}')


def batch_lookup(index, signed: Signed, vectors: np.ndarray,
                 threshold: float) -> tuple[float, int]:
    """Seconds a record for the batch's lookups as `LookUpByKeys` and
    `LookUpByVectors` make them; entries found."""
    from transforms.index.lookup import VECTOR_SLACK

    found = 0
    start = time.perf_counter()
    for s in range(0, len(vectors), LOOKUP_BATCH):
        found += len(index.by_exact_keys(signed.exact_keys[s:s + LOOKUP_BATCH]))
        found += len(index.by_band_keys(signed.bands[s:s + LOOKUP_BATCH]))
    for s in range(0, len(vectors), LOOKUP_BATCH):
        found += len(index.by_vectors(vectors[s:s + LOOKUP_BATCH],
                                      threshold - VECTOR_SLACK))
    return (time.perf_counter() - start) / len(vectors), found


def stream_lookup(index, signed: Signed, vectors: np.ndarray,
                  threshold: float, bundle: int) -> float:
    """Seconds a record for a stream's lookups (`LookUpForStream`: band
    keys, then vectors), `bundle` records at a time."""
    from transforms.index.lookup import SKETCH_SLACK

    order = random.Random(bundle).sample(range(len(vectors)), STREAM_RECORDS)
    start = time.perf_counter()
    for s in range(0, STREAM_RECORDS, bundle):
        rows = order[s:s + bundle]
        index.by_band_keys(signed.bands[rows])
        index.by_vectors(vectors[rows], threshold - SKETCH_SLACK)
    return (time.perf_counter() - start) / STREAM_RECORDS


def near_copy(text: str, rng: random.Random) -> str:
    """`text` with one word dropped or two neighbours swapped."""
    words = text.split()
    if len(words) < 3:
        return text.upper() + " !"
    i = rng.randrange(len(words) - 1)
    if rng.random() < 0.5:
        del words[i]
    else:
        words[i], words[i + 1] = words[i + 1], words[i]
    return " ".join(words)


def recall_queries(corpus: list[str], size: int) -> dict[str, list[str]]:
    """Query texts: copies and near-copies of indexed texts, and unrelated
    ones (not indexed)."""
    rng = random.Random(3)
    picked = [corpus[i] for i in rng.sample(range(size), 2 * RECALL_QUERIES)]
    return {"copies": picked[:RECALL_QUERIES],
            "near-copies": [near_copy(t, rng)
                            for t in picked[RECALL_QUERIES:]],
            "unrelated": corpus[size + BATCH_NEW:
                                size + BATCH_NEW + RECALL_QUERIES]}


def exact_pairs(queries: np.ndarray, stored: np.ndarray, threshold: float
                ) -> list[set[int]]:
    """Each query's entries at cosine >= `threshold` (NumPy, exact)."""
    found: list[set[int]] = [set() for _ in queries]
    for s in range(0, len(stored), 100_000):
        rows, columns = np.nonzero(queries @ stored[s:s + 100_000].T
                                   >= threshold)
        for row, column in zip(rows.tolist(), columns.tolist(), strict=True):
            found[row].add(s + column)
    return found


def recall(index, queries: dict[str, np.ndarray],
           truth: dict[str, list[set[int]]], threshold: float) -> dict:
    """HNSW lookups (one query vector at a time, from `index.ef_search`)
    against the exact search: (found, exact pairs, queries with more exact
    pairs than pgvector's longest candidate list) by kind of query."""
    from embgemma_keras.index.database import MAX_EF_SEARCH
    from transforms.index.lookup import VECTOR_SLACK

    out = {}
    for kind, vectors in queries.items():
        exact = found = limited = 0
        for vector, pairs in zip(vectors, truth[kind], strict=True):
            hits = {int(e.id[1:]) for e in index.by_vectors(
                vector[None], threshold - VECTOR_SLACK)}
            exact += len(pairs)
            found += len(pairs & hits)
            limited += len(pairs) > MAX_EF_SEARCH
        out[kind] = (found, exact, limited)
    return out


def with_ef_search(index, ef_search: int):
    """`index` looking up with HNSW's `ef_search` from its next query."""
    index.close()
    index.ef_search = ef_search
    return index


def measure_postgres(size: int, url: str, model: str, flags: list[str],
                     dim: int, threshold: float, maintenance_work_mem: str,
                     work: pathlib.Path, reuse: bool = False) -> dict:
    """The PostgreSQL index of `size` texts: build, bytes, lookups, jobs
    and recall (see the module's docstring). `reuse`: an index this
    benchmark built before on the server is measured, not built again."""
    from embgemma_keras.config import DedupConfig
    from embgemma_keras.config import EmbedConfig
    from embgemma_keras.index.database import DEFAULT_EF_SEARCH
    from embgemma_keras.index.database import DatabaseIndex
    from embgemma_keras.index.format import IndexSettings
    from pipelines.options import checked_model

    corpus = texts(size + BATCH_NEW + RECALL_QUERIES)
    schema = f"bench_{size}_{dim}"
    server, url = url, with_schema(url, schema)
    _, identity = checked_model(EmbedConfig(model=model))
    config = DedupConfig()
    settings = IndexSettings.of(config, identity, dim)
    embed = HashedVectors(corpus[:size], dim)
    if reuse:
        built = {"index": DatabaseIndex.open(url, settings),
                 "vectors": embed(corpus[:size]), "prepare_secs": 0.0,
                 "commit_secs": 0.0, "statements": [("reused", 0.0)]}
    else:
        with DatabaseIndex(url, None)._connection() as connection:
            connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        built = build_postgres(url, server, settings, corpus, size, embed,
                               config.similar.clusters, maintenance_work_mem)
    index = built["index"]
    say_row = {k: v for k, v in built.items() if k.endswith("secs")}
    print(f"postgres {size:,}: built {say_row}; {built['statements']}",
          flush=True)
    total_bytes, relations = relation_sizes(index)
    batch = batch_of(corpus, size)
    signed = Signed([t for _, t in batch], settings)
    vectors = embed([t for _, t in batch])
    index.by_exact_keys(signed.exact_keys[-64:])  # a connection, warm
    fresh = batch_lookup(index, signed, vectors, threshold)
    analyze(index)
    batch_secs, found = batch_lookup(index, signed, vectors, threshold)
    stream = {b: stream_lookup(index, signed, vectors, threshold, b)
              for b in STREAM_BUNDLES}
    print(f"postgres {size:,}: batch {batch_secs * 1e3:.2f} ms/record "
          f"(before ANALYZE {fresh[0] * 1e3:.2f}), stream "
          f"{ {b: round(s * 1e3, 2) for b, s in stream.items()} }",
          flush=True)
    queries = {kind: embed(batch_texts) for kind, batch_texts in
               recall_queries(corpus, size).items()}
    truth = {kind: exact_pairs(vectors, built["vectors"], threshold)
             for kind, vectors in queries.items()}
    recalled = recall(index, queries, truth, threshold)
    print(f"postgres {size:,}: recall {recalled}", flush=True)
    # HNSW's candidate list sets both the lookups' cost and their recall.
    by_ef = {}
    for ef in EF_SEARCH_ALSO:
        with_ef_search(index, ef)
        by_ef[ef] = (batch_lookup(index, signed, vectors, threshold)[0],
                     stream_lookup(index, signed, vectors, threshold, 1),
                     recall(index, queries, truth, threshold))
        print(f"postgres {size:,}: ef_search {ef}: {by_ef[ef]}", flush=True)
    with_ef_search(index, DEFAULT_EF_SEARCH).close()
    source = write_jsonl(work / f"pg-batch{size}.jsonl", batch)
    job_flags = [*flags, "--index", url]
    batch_job = timed_run(source, work / f"pg-with{size}",
                          [*job_flags, "--index_read_only"])
    batch_alone = timed_run(source, work / f"pg-alone{size}", flags)
    try:
        stream_with = timed_stream(source, work / f"pg-stream-with{size}",
                                   job_flags)
    except Exception as e:  # stream_tag may not take a URL yet
        stream_with = f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"
    stream_alone = timed_stream(source, work / f"pg-stream-alone{size}",
                                flags)
    startup = stream_startup(batch, job_flags, flags, work / f"pg{size}")
    return {"size": size, "entries": index.entry_count(), "dim": dim,
            "prepare_secs": built["prepare_secs"],
            "commit_secs": built["commit_secs"],
            "statements": built["statements"],
            "bytes_per_entry": total_bytes / size, "relations": relations,
            "batch_ms": batch_secs * 1e3, "batch_fresh_ms": fresh[0] * 1e3,
            "found": found, "stream_ms": {b: s * 1e3
                                          for b, s in stream.items()},
            "recall": recalled, "batch_job": batch_job,
            "batch_alone": batch_alone, "stream_with": stream_with,
            "stream_alone": stream_alone, "startup": startup,
            "by_ef": by_ef, "maintenance_work_mem": (
                "unused (an index built before)" if reuse
                else maintenance_work_mem),
            "shared_buffers": shared_buffers(index)}


def shared_buffers(index) -> str:
    return index._connection().execute("SHOW shared_buffers").fetchone()[0]


def recall_of(r: dict) -> tuple[float, int]:
    found = sum(f for f, _, _ in r["recall"].values())
    exact = sum(e for _, e, _ in r["recall"].values())
    return (found / exact if exact else float("nan")), exact


def print_postgres(rows: list[dict]) -> None:
    from embgemma_keras.index.database import DEFAULT_EF_SEARCH
    from embgemma_keras.index.database import MAX_EF_SEARCH

    mwm = rows[0]["maintenance_work_mem"] or "the server's"
    print("\nPostgreSQL 16 + pgvector (HNSW m 24, ef_construction 128, "
          f"ef_search {DEFAULT_EF_SEARCH} growing to {MAX_EF_SEARCH} where "
          f"full; maintenance_work_mem {mwm} for the build, shared_buffers "
          f"{rows[0]['shared_buffers']}); DirectRunner, "
          "this machine")
    print("| entries | dim | build s (prepare + commit) | bytes/entry "
          "| batch lookup ms/record | stream lookup ms/record "
          "(bundle 1 / 8 / 64) | recall (pairs) |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        rate, pairs = recall_of(r)
        stream = " / ".join(f"{r['stream_ms'][b]:.2f}"
                            for b in STREAM_BUNDLES)
        print(f"| {r['entries']:,} | {r['dim']} | {r['prepare_secs']:.0f} + "
              f"{r['commit_secs']:.0f} | {r['bytes_per_entry']:,.0f} "
              f"| {r['batch_ms']:.2f} | {stream} | {rate:.4f} ({pairs:,}) |")
    print("\ncommit statements (s), relation sizes (MB), recall by query "
          "kind (found / exact pairs; queries past the longest list)")
    for r in rows:
        print(f"{r['entries']:,}: " + "; ".join(
            f"{q} {s:.1f}" for q, s in r["statements"]))
        print("    " + ", ".join(f"{name} {b / 2**20:,.0f}"
                                 for name, b in r["relations"].items()
                                 if b >= 2**20))
        print("    " + ", ".join(f"{kind} {f}/{e} ({lim})" for kind,
                                 (f, e, lim) in r["recall"].items())
              + f"; batch lookup before ANALYZE {r['batch_fresh_ms']:.2f}"
                " ms/record")
    print("\nHNSW's first candidate list (ef_search): cost and recall")
    print("| entries | first ef_search | batch lookup ms/record "
          "| stream ms/record (bundle 1) | recall (pairs) |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        ef_rows = {**r["by_ef"], DEFAULT_EF_SEARCH: (r["batch_ms"] / 1e3,
                                       r["stream_ms"][1] / 1e3, r["recall"])}
        for ef, (batch, stream, recalled) in sorted(ef_rows.items()):
            rate, pairs = recall_of({"recall": recalled})
            print(f"| {r['entries']:,} | {ef} | {batch * 1e3:.2f} "
                  f"| {stream * 1e3:.2f} | {rate:.4f} ({pairs:,}) |")
    print(f"\nthe jobs over the batch (the model's vectors as queries); "
          f"start-up: a {STARTUP_RECORDS}-record stream_tag job with the "
          "index less without")
    print("| entries | dedup_corpus with index s | alone s "
          "| stream_tag with index s | alone s | with less alone s "
          "| stream start-up s |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['entries']:,} | {r['batch_job'][0]:.1f} "
              f"| {r['batch_alone'][0]:.1f} | {stream_cells(r)} "
              f"| {seconds(r['startup'])} |")


def seconds(value: float | str) -> str:
    return value if isinstance(value, str) else f"{value:.1f}"


def stream_cells(r: dict) -> str:
    """stream_tag's time with the index, without, and the difference."""
    stream = r["stream_with"]
    if isinstance(stream, str):
        return f"not run: {stream} | {r['stream_alone'][0]:.1f} | pending"
    return (f"{stream[0]:.1f} | {r['stream_alone'][0]:.1f} "
            f"| {stream[0] - r['stream_alone'][0]:.1f}")


def print_summary(directory: list[dict], postgres: list[dict]) -> None:
    """One row a kind and size, the targets beside."""
    records = BATCH_NEW + BATCH_COPIES
    print(f"\nsummary (targets at {TARGET_SIZE:,} entries: stream start-up "
          f"<= {TARGET_STARTUP_S:.0f} s, <= {TARGET_MS:.0f} ms a record, "
          f"recall >= {TARGET_RECALL}); stream ms/record: "
          f"(stream_tag with index - alone) / {records:,}")
    print("| kind | entries | dim | build s | bytes/entry "
          "| batch ms/record | stream ms/record | stream start-up s "
          "| recall |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in directory:
        batch = (r["with_secs"] - r["alone_secs"]) * 1e3 / records
        stream = (r["stream_with"][0] - r["stream_alone"][0]) * 1e3 / records
        print(f"| directory | {r['entries']:,} | {r['dim']} "
              f"| {r['build_secs']:.0f} | {r['bytes_per_entry']:,.0f} "
              f"| {batch:.2f} (job with - alone) | {stream:.2f} "
              f"| {seconds(r['startup'])} | exact |")
    for r in postgres:
        rate, pairs = recall_of(r)
        stream = r["stream_with"]
        job = ("pending" if isinstance(stream, str) else
               f"{(stream[0] - r['stream_alone'][0]) * 1e3 / records:.2f}")
        print(f"| postgres | {r['entries']:,} | {r['dim']} "
              f"| {r['prepare_secs'] + r['commit_secs']:.0f} "
              f"| {r['bytes_per_entry']:,.0f} | {r['batch_ms']:.2f} "
              f"| {job} (lookups alone: {r['stream_ms'][1]:.2f}) "
              f"| {seconds(r['startup'])} | {rate:.4f} ({pairs:,} pairs) |")


def print_row(row: dict) -> None:
    """A size's figures as soon as they are measured (a long run that is
    stopped keeps them)."""
    print("row:", json.dumps(row, default=str), flush=True)


@contextlib.contextmanager
def postgres_server(url: str | None, work: pathlib.Path,
                    buffers: str | None) -> Iterator[str]:
    """`url`, or a LocalPostgres in `work` for the run."""
    if url:
        yield url
        return
    from local_runners.postgres import LocalPostgres

    with LocalPostgres(work / "postgres", buffers) as server:
        yield server.url


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None,
                        help="Model directory (default: the tiny preset).")
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--index_kind", default="directory,postgres",
                        help="Comma-separated: directory, postgres.")
    parser.add_argument("--dim", type=int, default=768,
                        help="Vector dim (Matryoshka) of index and jobs.")
    parser.add_argument("--postgres_url", default=None,
                        help="A server with pgvector (default: a local one "
                             "in a temporary directory).")
    parser.add_argument("--maintenance_work_mem", default="2GB",
                        help="The HNSW build's memory ('' for the "
                             "server's setting).")
    parser.add_argument("--shared_buffers", default=None,
                        help="The local server's shared buffers (default: "
                             "a quarter of the memory; not with "
                             "--postgres_url).")
    parser.add_argument("--reuse", action="store_true",
                        help="Measure the indexes an earlier run left on "
                             "--postgres_url instead of building them.")
    args = parser.parse_args(argv)
    if args.postgres_url and args.shared_buffers:
        parser.error("--shared_buffers sizes the local server; set it on "
                     "the server of --postgres_url instead")
    if args.reuse and not args.postgres_url:
        parser.error("--reuse needs --postgres_url (the local server of a "
                     "run starts empty)")
    kinds = args.index_kind.split(",")
    sizes = [int(size) for size in args.sizes.split(",")]
    directory, postgres = [], []
    with tempfile.TemporaryDirectory() as tmp:
        work = pathlib.Path(tmp)
        model = str(args.model or make_tiny_preset(work / "tiny"))
        semantic = [] if args.model else ["--semantic_threshold", "0.9999"]
        flags = ["--model", model, "--dim", str(args.dim), *semantic]
        for size in sizes:
            if "directory" in kinds:
                directory.append({**measure_directory(size, flags, work),
                                  "dim": args.dim})
                print_row(directory[-1])
        if "postgres" in kinds:
            from embgemma_keras.config import SemanticDedupConfig

            threshold = SemanticDedupConfig().threshold
            with postgres_server(args.postgres_url, work,
                                 args.shared_buffers) as url:
                for size in sizes:
                    postgres.append(measure_postgres(
                        size, url, model, flags, args.dim, threshold,
                        args.maintenance_work_mem, work, args.reuse))
                    print_row(postgres[-1])
    print(f"\nCPU: {cpu_model()}, {os.cpu_count()} cores")
    if directory:
        print_directory(directory)
    if postgres:
        print_postgres(postgres)
    print_summary(directory, postgres)


if __name__ == "__main__":
    main()
