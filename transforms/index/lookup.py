"""A dedup index in PostgreSQL in a pipeline: each stage gets the entries
its records may match, looked up a batch at a time, never the whole index.

`LookUpByKeys` signs each record once (its MinHash signature, which the
lexical stage reuses) and finds the entries sharing an exact key or an LSH
band key with a record of the batch: all the exact and lexical stages can
join. `LookUpByVectors` finds the entries near an embedded record's
similarity vector: all the semantic stage can pair. An entry several
batches find comes out once.

```python
looked_up = records | LookUpByKeys(index, config)
exact = looked_up.records | ExactDuplicates(against=looked_up.entries)
```

A stream looks each record up as it comes (`LookUpForStream`, through
Beam's `Enrichment`: batched per bundle, retried with backoff and
throttled by Beam) and carries the entries it may match on the record
(`INDEX_MATCHES`) to the near-duplicate buckets, so nothing is loaded at
start-up and a version committed while the stream runs is seen within
`REFRESH_SECS`.
"""

from __future__ import annotations

import logging
import time
import typing
from collections.abc import Sequence

import apache_beam as beam
import numpy as np
import psycopg
from apache_beam.io.requestresponse import Caller
from apache_beam.io.requestresponse import NoOpsRepeater
from apache_beam.io.requestresponse import Repeater
from apache_beam.io.requestresponse import UserCodeQuotaException
from apache_beam.io.requestresponse import UserCodeTimeoutException
from apache_beam.transforms.enrichment import Enrichment
from apache_beam.transforms.enrichment import EnrichmentSourceHandler
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from embgemma_keras.config import DedupConfig
from embgemma_keras.config import MinHashConfig
from embgemma_keras.dedup.grouping import exact_key
from embgemma_keras.dedup.minhash import MinHasher
from embgemma_keras.dedup.minhash import signed
from embgemma_keras.index.database import DatabaseIndex
from embgemma_keras.index.format import IndexEntry
from embgemma_keras.index.format import IndexSettings
from embgemma_keras.records.schema import EMBEDDINGS
from embgemma_keras.records.schema import INDEX_MATCHES
from embgemma_keras.records.schema import MINHASH
from embgemma_keras.records.schema import TEXT
from transforms.dedup.semantic import similarity_vector

_ENTRIES = "entries"
# Records a lookup takes at once: one query for the whole batch (by keys:
# one for its exact keys, one for its band keys).
MIN_BATCH, MAX_BATCH = 64, 512
# The semantic stage compares in float32 itself; looked up a hair below
# its threshold, an entry at the threshold is not lost to pgvector's
# rounding of the cosine.
VECTOR_SLACK = 1e-4
# A stream's buckets compare float16 sketches (cosines within 1e-3 of
# float32's): looked up this far below their threshold, an entry they
# would match is not missed.
SKETCH_SLACK = 2e-3
# How stale a stream's view of the index may get: a version committed
# while it runs is looked up at most this long after.
REFRESH_SECS = 2.0
# How long a stream waits for an unreachable index before its bundle
# fails (and the runner retries it): a server restart, a failover.
WAIT_FOR_INDEX_SECS = 600.0

_LOG = logging.getLogger(__name__)


class LookedUp(typing.NamedTuple):
    """The records, signed, and the index entries they may match."""

    records: beam.PCollection
    entries: beam.PCollection


class LookUpByKeys(beam.PTransform):
    """Records -> `LookedUp`: each record with its MinHash signature
    (`MINHASH`), and the index's entries that share an exact key or an LSH
    band key with any of them, each once.

    Args:
        index: the index, opened with this run's settings (`open_index`).
        config: the run's settings: its exact-key normalisation and
            MinHash hasher are the index's.
    """

    def __init__(self, index: DatabaseIndex, config: DedupConfig):
        super().__init__()
        self._index, self._config = index, config

    def expand(self, records) -> LookedUp:
        looked_up = (
            records
            | "Batch" >> beam.BatchElements(min_batch_size=MIN_BATCH,
                                            max_batch_size=MAX_BATCH)
            | "LookUp" >> beam.ParDo(_ByKeys(self._index, self._config))
            .with_outputs(_ENTRIES, main="records"))
        return LookedUp(looked_up.records,
                        looked_up[_ENTRIES] | "Once" >> _Once())


class LookUpByVectors(beam.PTransform):
    """Embedded records -> the index's entries at cosine >= `threshold`
    from any record's similarity vector, each once.

    The database finds each vector's nearest entries through its HNSW
    index: approximate, its candidate list growing where it comes back
    full (`DatabaseIndex.by_vectors`).
    """

    def __init__(self, index: DatabaseIndex, threshold: float):
        super().__init__()
        self._index, self._threshold = index, threshold

    def expand(self, records):
        return (records
                | "Batch" >> beam.BatchElements(min_batch_size=MIN_BATCH,
                                                max_batch_size=MAX_BATCH)
                | "LookUp" >> beam.ParDo(_ByVectors(self._index,
                                                    self._threshold))
                | "Once" >> _Once())


class _ByKeys(beam.DoFn):
    """A batch of records -> the records, signed, and (tagged) the entries
    their exact keys and band keys find."""

    def __init__(self, index: DatabaseIndex, config: DedupConfig):
        self._index = index
        self._hasher = MinHasher(config.lexical)
        self._case_fold = config.case_fold

    def process(self, batch):
        batch = signed(batch, self._hasher)
        keys = [exact_key(r[TEXT], casefold=self._case_fold) for r in batch]
        bands = self._hasher.band_hashes(np.stack([r[MINHASH]
                                                   for r in batch]))
        yield from batch
        for entry in (self._index.by_exact_keys(keys)
                      + self._index.by_band_keys(bands)):
            yield beam.pvalue.TaggedOutput(_ENTRIES, entry)

    def teardown(self):
        self._index.close()


class _ByVectors(beam.DoFn):
    """A batch of embedded records -> the entries near their vectors."""

    def __init__(self, index: DatabaseIndex, threshold: float):
        self._index, self._threshold = index, threshold

    def process(self, batch):
        vectors = np.stack([similarity_vector(r) for r in batch])
        yield from self._index.by_vectors(vectors,
                                          self._threshold - VECTOR_SLACK)

    def teardown(self):
        self._index.close()


class _Once(beam.PTransform):
    """Entries -> each entry once (by run and id)."""

    def expand(self, entries):
        return (entries
                | "ByNode" >> beam.Map(lambda entry: (entry.node, entry))
                | "Group" >> beam.GroupByKey()
                | "First" >> beam.Map(lambda item: next(iter(item[1]))))


class LookUpForStream(beam.PTransform):
    """Records (embedded, in a stream) -> the same records, each carrying
    under `INDEX_MATCHES` the index entries it may near-duplicate: those
    sharing an LSH band key of the index with it, and those at cosine >=
    `semantic_threshold` (less `SKETCH_SLACK`) from its similarity vector.
    `StreamingNearDuplicates` judges them in the record's buckets as it
    judges a directory index's entries.

    Runs through Beam's `Enrichment` (batches per bundle, client-side
    throttling); while the database is unreachable, a lookup waits for it
    (`WaitForIndex`) rather than fail its records. Each record keeps its
    event time.

    Args:
        index: the index, opened for a stream (`DatabaseIndex.open_for_stream`).
        semantic_threshold: the stream's; None for lexical lookups only.
        wait_secs: how long a lookup waits for an unreachable database.
    """

    def __init__(self, index: DatabaseIndex,
                 semantic_threshold: float | None,
                 wait_secs: float = WAIT_FOR_INDEX_SECS):
        super().__init__()
        self._handler = _StreamLookup(index, semantic_threshold)
        self._wait_secs = wait_secs

    def expand(self, records):
        return (records
                | "WithTime" >> beam.Map(_with_time)
                | "LookUp" >> Enrichment(
                    self._handler, join_fn=_carrying_matches,
                    use_custom_types=True,
                    repeater=WaitForIndex(self._wait_secs)))


class WaitForIndex(Repeater):
    """Repeats a lookup while the index is unreachable (a timeout, or a
    connection refused or lost): after 1 s, then twice as long each time,
    at most 30 s apart, logging each wait, for up to `give_up_secs`; then
    the error fails the bundle, which the runner retries. Beam's own
    `ExponentialBackOffRepeater` gives up after two tries (about 15 s).
    """

    def __init__(self, give_up_secs: float = WAIT_FOR_INDEX_SECS):
        self._give_up_secs = give_up_secs

    def repeat(self, caller: Caller, request: object, timeout: float,
               metrics_collector: object = None) -> object:
        started, delay = time.monotonic(), 1.0
        while True:
            try:
                return NoOpsRepeater().repeat(caller, request, timeout,
                                              metrics_collector)
            except (UserCodeTimeoutException, UserCodeQuotaException) as e:
                waited = time.monotonic() - started
                if waited + delay > self._give_up_secs:
                    raise
                # Beam's timeout message holds the request: the records.
                why = e.__cause__ or f"no answer within {timeout:.0f} s"
                _LOG.warning("the dedup index is unreachable (%s); waited "
                             "%.0f s, trying again in %.0f s", why, waited,
                             delay)
                time.sleep(delay)
                delay = min(2 * delay, 30.0)


def _with_time(record: dict, timestamp=beam.DoFn.TimestampParam
               ) -> tuple[dict, int]:
    # Batching stamps a batch at the end of the window: the record's own
    # time rides along, restored when it leaves.
    return record, timestamp.micros


def _carrying_matches(request: tuple[dict, int],
                      entries: tuple[IndexEntry, ...]) -> TimestampedValue:
    record, micros = request
    return TimestampedValue({**record, INDEX_MATCHES: entries},
                            Timestamp(micros=micros))


class _StreamLookup(EnrichmentSourceHandler):
    """A batch of `(record, micros)` -> each with the entries it may
    match: one query by band keys and one by vectors a batch."""

    def __init__(self, index: DatabaseIndex,
                 semantic_threshold: float | None):
        self._index = index
        self._threshold = semantic_threshold
        self._hasher = MinHasher(_minhash_config(index.settings))
        self._refreshed = 0.0

    def __exit__(self, *exc_info) -> None:
        self._index.close()

    def batch_elements_kwargs(self) -> dict:
        return {"min_batch_size": 1, "max_batch_size": MAX_BATCH}

    def __call__(self, batch: list[tuple[dict, int]], *args, **kwargs
                 ) -> list[tuple[tuple[dict, int], tuple[IndexEntry, ...]]]:
        try:
            return self._look_up(batch)
        except psycopg.OperationalError as e:
            # The server is unreachable: Beam's repeater retries a timeout
            # with backoff, on a new connection.
            self._index.close()
            raise UserCodeTimeoutException(str(e)) from e

    def _look_up(self, batch):
        if time.monotonic() - self._refreshed >= REFRESH_SECS:
            self._index.refresh()
            self._refreshed = time.monotonic()
        records = signed([record for record, _ in batch], self._hasher)
        bands = self._hasher.band_hashes(np.stack([r[MINHASH]
                                                   for r in records]))
        found = self._index.by_band_keys(bands)
        matches = [_sharing_a_band(row, found) for row in bands]
        if self._semantic(records):
            vectors = np.stack([similarity_vector(r) for r in records])
            near = self._index.by_vectors(
                vectors, self._threshold - SKETCH_SLACK)
            for i, vector in enumerate(vectors):
                matches[i] += _near(vector, near,
                                    self._threshold - SKETCH_SLACK)
        return [((record, micros), _once(entries)) for record, (_, micros),
                entries in zip(records, batch, matches, strict=True)]

    def _semantic(self, records: Sequence[dict]) -> bool:
        return (self._threshold is not None and self._index.settings.semantic
                and all(EMBEDDINGS in r for r in records))


def _minhash_config(settings: IndexSettings) -> MinHashConfig:
    """The index's MinHash hasher settings: its band keys' banding."""
    return MinHashConfig(shingles=settings.shingles,
                         num_perm=settings.num_perm, bands=settings.bands,
                         rows=settings.rows, seed=settings.minhash_seed)


def _sharing_a_band(bands: np.ndarray, entries: list[IndexEntry]
                    ) -> list[IndexEntry]:
    return [entry for entry in entries
            if np.any(np.asarray(entry.bands, np.uint64) == bands)]


def _near(vector: np.ndarray, entries: list[IndexEntry], threshold: float
          ) -> list[IndexEntry]:
    return [entry for entry in entries
            if float(np.dot(entry.vector, vector)) >= threshold]


def _once(entries: list[IndexEntry]) -> tuple[IndexEntry, ...]:
    return tuple({entry.node: entry for entry in entries}.values())
