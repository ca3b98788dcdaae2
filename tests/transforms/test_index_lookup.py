"""Looking a run's records up in a PostgreSQL dedup index: only the
entries they may match, each once, however the records are batched."""

import uuid

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that
from apache_beam.testing.util import equal_to

from embgemma_keras.artifacts import ModelIdentity
from embgemma_keras.config import DedupConfig
from embgemma_keras.dedup.minhash import MinHasher
from embgemma_keras.dedup.minhash import signed
from embgemma_keras.index.database import DatabaseIndex
from embgemma_keras.index.format import IndexEntry
from embgemma_keras.index.format import IndexSettings
from embgemma_keras.index.format import index_entries
from embgemma_keras.records.schema import EMBEDDINGS
from embgemma_keras.records.schema import MINHASH
from embgemma_keras.records.schema import Vector
from transforms.index import lookup
from transforms.index.lookup import LookUpByKeys
from transforms.index.lookup import LookUpByVectors

pytestmark = pytest.mark.slow

CONFIG = DedupConfig(semantic=False)
WORDS = ("amber", "basil", "cobalt", "dune", "ember", "fjord", "garnet",
         "harbour", "indigo", "juniper", "kelp", "lantern", "meadow",
         "nectar", "orchid", "pebble", "quartz", "ripple", "saffron",
         "thistle", "umber", "velvet", "willow", "yarrow", "zephyr")
DIM = 16


@pytest.fixture
def url(postgres):
    return f"{postgres.url}&schema=t_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def one_record_a_batch(monkeypatch):
    """Each record its own lookup: an entry two records match is found by
    two batches."""
    monkeypatch.setattr(lookup, "MIN_BATCH", 1)
    monkeypatch.setattr(lookup, "MAX_BATCH", 1)


def _records(texts: list[str], prefix: str) -> list[dict]:
    return [{"id": f"{prefix}{i}", "text": text}
            for i, text in enumerate(texts)]


def _entries(records: list[dict], run: str) -> list[IndexEntry]:
    hasher = MinHasher(CONFIG.lexical)
    return index_entries(signed(records, hasher), run, hasher,
                         CONFIG.case_fold, None)


def test_keys_find_exactly_the_entries_sharing_a_key_each_once(
        url, one_record_a_batch):
    words = np.random.default_rng(2).choice(WORDS, size=(60, 8))
    texts = [" ".join(line) for line in words]
    kept = _entries(_records(texts, "k"), "r1")
    with DatabaseIndex.open(url, IndexSettings.of(CONFIG)) as index:
        index.commit("r1", kept)
    records = _records([texts[3].upper(), texts[3], texts[5] + "!",
                        "nothing like any line of the index at all"], "q")
    queries = _entries(records, "q")
    expected = {entry.node for entry in kept for query in queries
                if entry.exact_key == query.exact_key
                or np.any(entry.bands == query.bands)}
    assert {("r1", "k3"), ("r1", "k5")} <= expected
    assert len(expected) < len(kept) // 4  # not the whole index

    looked_up_index = DatabaseIndex.open(url, IndexSettings.of(CONFIG))
    with TestPipeline() as p:
        looked_up = (p | beam.Create(records)
                     | LookUpByKeys(looked_up_index, CONFIG))
        assert_that(looked_up.entries | beam.Map(lambda e: e.node),
                    equal_to(sorted(expected)), label="Entries")
        assert_that(looked_up.records | beam.Map(
            lambda r: (r["id"], r[MINHASH].tolist())),
            equal_to([(q.id, q.signature.tolist()) for q in queries]),
            label="Signed")


def test_vectors_find_the_entries_at_the_threshold_each_once(
        url, one_record_a_batch):
    rng = np.random.default_rng(5)
    vectors = rng.normal(size=(200, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    kept = [IndexEntry(f"v{i}", "r1", rng.bytes(32),
                       rng.integers(0, 2**63, 16, dtype=np.uint64),
                       rng.integers(0, 2**32, 128, dtype=np.uint32), 0, v)
            for i, v in enumerate(vectors)]
    settings = IndexSettings.of(DedupConfig(), ModelIdentity("m", "w"), DIM)
    with DatabaseIndex.open(url, settings) as index:
        index.commit("r1", kept)
    # Two records near one entry, one near none.
    queries = np.stack([vectors[0] + 0.05 * rng.normal(size=DIM),
                        vectors[0] + 0.05 * rng.normal(size=DIM),
                        rng.normal(size=DIM)]).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    threshold = 0.8
    expected = {kept[i].node for i in np.flatnonzero(
        (queries @ vectors.T >= threshold).any(axis=0))}
    assert ("r1", "v0") in expected and len(expected) < 10

    records = [{"id": f"q{i}", "text": "", EMBEDDINGS: {
        Vector.SIMILARITY: vector}} for i, vector in enumerate(queries)]
    with TestPipeline() as p:
        found = (p | beam.Create(records)
                 | LookUpByVectors(DatabaseIndex.open(url, settings),
                                   threshold))
        assert_that(found | beam.Map(lambda e: e.node),
                    equal_to(sorted(expected)))
