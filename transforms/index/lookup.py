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
"""

from __future__ import annotations

import typing

import apache_beam as beam
import numpy as np

from embgemma_keras.config import DedupConfig
from embgemma_keras.dedup.grouping import exact_key
from embgemma_keras.dedup.minhash import MinHasher
from embgemma_keras.dedup.minhash import signed
from embgemma_keras.index.database import DatabaseIndex
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
    index: approximate, and at most `index.ef_search` a vector.
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
