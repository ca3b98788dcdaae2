import numpy as np
import pytest

from embgemma_keras.artifacts import ModelIdentity
from embgemma_keras.config import DedupConfig
from embgemma_keras.config import MinHashConfig
from embgemma_keras.dedup.minhash import MinHasher
from embgemma_keras.dedup.minhash import normalize
from embgemma_keras.dedup.minhash import signed
from embgemma_keras.dedup.sketches import LexicalSketch
from embgemma_keras.dedup.sketches import SemanticSketch
from embgemma_keras.index.format import FileSum
from embgemma_keras.index.format import IndexMismatchError
from embgemma_keras.index.format import IndexSettings
from embgemma_keras.index.format import Manifest
from embgemma_keras.index.format import index_entries
from embgemma_keras.index.format import next_manifest
from embgemma_keras.index.format import segment_bytes
from embgemma_keras.index.format import segment_entries
from embgemma_keras.index.format import stream_mismatches
from embgemma_keras.records.schema import MINHASH

RECORDS = [{"id": "a", "text": "The cat sat on the mat."},
           {"id": "b", "text": "An unrelated line about planets."}]


@pytest.mark.parametrize("semantic", [False, True])
def test_entries_survive_a_parquet_round_trip(semantic):
    config = DedupConfig(semantic=semantic)
    dim = 8 if semantic else None
    settings = IndexSettings.of(config, ModelIdentity("m", "f"), dim)
    centroids = None
    records = signed(RECORDS, MinHasher(config.lexical))
    if semantic:
        rng = np.random.default_rng(0)
        vectors = rng.normal(size=(2, dim)).astype(np.float32)
        records = [{**r, "embeddings": {"similarity": v}}
                   for r, v in zip(records, vectors, strict=True)]
        centroids = np.eye(2, dim, dtype=np.float32)
    entries = index_entries(records, "run1", MinHasher(config.lexical),
                            config.case_fold, centroids)
    back = list(segment_entries(segment_bytes(entries, settings)))
    assert len(back) == 2
    for entry, read in zip(entries, back, strict=True):
        assert (read.id, read.run, read.exact_key, read.bucket) == (
            entry.id, entry.run, entry.exact_key, entry.bucket)
        np.testing.assert_array_equal(read.bands, entry.bands)
        np.testing.assert_array_equal(read.signature, entry.signature)
        if semantic:
            np.testing.assert_array_equal(read.vector, entry.vector)
        else:
            assert read.vector is None and read.bucket == -1


def test_versions_chain_and_keep_the_first_centroids():
    settings = IndexSettings.of(DedupConfig(semantic=False))
    first = next_manifest(None, settings, "r1", 2,
                          [FileSum.of("segments/r1/x.parquet", b"12", 2)],
                          FileSum.of("centroids/r1.npz", b"c"))
    second = next_manifest(first, settings, "r2", 1,
                           [FileSum.of("segments/r2/y.parquet", b"3", 1)],
                           FileSum.of("centroids/r2.npz", b"d"))
    assert first.version == "v000001-r1" and first.parent is None
    assert second.version == "v000002-r2" and second.parent == first.version
    assert second.entries == 3 and second.centroids == first.centroids
    assert Manifest.from_json(second.to_json(), "m") == second


def test_a_file_that_does_not_match_its_checksum_is_refused():
    stored = FileSum.of("segments/r1/x.parquet", b"content")
    assert stored.check(b"content", "ix") == b"content"
    with pytest.raises(IndexMismatchError, match="does not match"):
        stored.check(b"c0ntent", "ix")


def test_another_format_version_is_refused():
    manifest = next_manifest(None, IndexSettings.of(DedupConfig()), "r", 0,
                             [], None)
    text = manifest.to_json().replace('"format_version": 1',
                                      '"format_version": 2')
    with pytest.raises(IndexMismatchError, match="format"):
        Manifest.from_json(text, "m")


def test_settings_mismatches_name_each_difference():
    ours = IndexSettings.of(DedupConfig(lexical=MinHashConfig(
        shingles="word:3")), ModelIdentity("m", "new"), 256)
    theirs = IndexSettings.of(DedupConfig(), ModelIdentity("m", "old"), 768)
    assert ours.mismatches(theirs) == [
        "shingles: the index has 'char:5', this run 'word:3'",
        "model: the index has 'old', this run 'new'",
        "dim: the index has 768, this run 256"]
    assert ours.mismatches(ours) == []


def test_a_stream_matches_an_index_by_signature_whatever_its_bands():
    """The stream re-bands the kept signatures: only how signatures and
    vectors are made must agree."""
    config = DedupConfig(lexical=MinHashConfig(bands=32, rows=4))
    identity = ModelIdentity("m", "weights")
    index = IndexSettings.of(config, identity, 768)
    assert stream_mismatches(index, MinHashConfig(), identity, 768) == []
    assert stream_mismatches(
        index, MinHashConfig(shingles="word:3", seed=2),
        ModelIdentity("m", "other"), 256) == [
        "shingles: the index has 'char:5', this job 'word:3'",
        "minhash_seed: the index has 1, this job 2",
        "model: the index has 'weights', this job 'other'",
        "dim: the index has 768, this job 256"]
    lexical_only = IndexSettings.of(DedupConfig(semantic=False))
    assert stream_mismatches(lexical_only, MinHashConfig(), None, 768) == []

    stream = LexicalSketch(MinHashConfig())
    hasher = MinHasher(config.lexical)
    entries = index_entries(signed(RECORDS, hasher), "run1", hasher,
                            case_fold=True, centroids=None)
    for record, entry in zip(RECORDS, entries, strict=True):
        assert stream.sketch_entry(entry) == stream.sketch(record)
    assert SemanticSketch(768).sketch_entry(entries[0]) is None


def test_an_entry_keeps_the_signature_its_record_carries():
    """The lexical stage signs each record once (`signed`); the record's
    index entry keeps that signature and bands it, never signing the text
    again."""
    hasher = MinHasher(MinHashConfig())
    a, b = signed(RECORDS, hasher)
    np.testing.assert_array_equal(
        a[MINHASH], hasher.signature(normalize(a["text"])))
    # Given b's signature, a's entry has it, not one made from a's text.
    (entry,) = index_entries([{**a, MINHASH: b[MINHASH]}], "run1", hasher,
                             case_fold=True, centroids=None)
    assert entry.id == "a"
    np.testing.assert_array_equal(entry.signature, b[MINHASH])
    np.testing.assert_array_equal(entry.bands,
                                  hasher.band_hashes([b[MINHASH]])[0])
