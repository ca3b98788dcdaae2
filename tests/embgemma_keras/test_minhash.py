import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from embgemma_keras.config import MinHashConfig
from embgemma_keras.dedup.minhash import MinHasher
from embgemma_keras.dedup.minhash import estimated_jaccard
from embgemma_keras.dedup.minhash import fmix32
from embgemma_keras.dedup.minhash import normalize


def test_normalisation_folds_case_width_and_spaces():
    assert normalize("ＦＲＥＥ\tPrize\u00a0\u00a0NOW ") == "free prize now"
    assert normalize("A  b", casefold=False) == "A b"
    assert normalize("A  b", collapse_whitespace=False) == "a  b"


@given(st.text(max_size=200))
def test_normalisation_is_idempotent(text):
    once = normalize(text)
    assert normalize(once) == once


def test_short_texts_still_have_one_shingle():
    chars = MinHasher(MinHashConfig(shingles="char:5"))
    words = MinHasher(MinHashConfig(shingles="word:3"))
    assert len(chars.shingle_hashes("hi")) == 1
    assert len(words.shingle_hashes("a b")) == 1


@settings(max_examples=40, deadline=None)
@given(st.text(max_size=120), st.sampled_from(["char", "word"]))
def test_signatures_equal_datasketch_with_the_same_hash(text, kind):
    from datasketch import MinHash

    hasher = MinHasher(MinHashConfig(shingles=f"{kind}:3"))
    text = normalize(text)
    reference = MinHash(128, 1, hashfunc=int, scheme="affine32")
    reference.update_batch(hasher.shingle_hashes(text).tolist())
    np.testing.assert_array_equal(hasher.signature(text),
                                  reference.hashvalues)


@given(st.lists(st.text(max_size=60), min_size=1, max_size=12))
def test_batched_signatures_equal_one_at_a_time(texts):
    hasher = MinHasher()
    batched = hasher.signatures(texts)
    for text, signature in zip(texts, batched, strict=True):
        np.testing.assert_array_equal(signature, hasher.signature(text))


def test_fmix32_matches_datasketch():
    from datasketch.minhash import _fmix

    values = np.arange(0, 2**32 - 1, 7919 * 4099, dtype=np.uint32)
    np.testing.assert_array_equal(fmix32(values), _fmix(values, 32))


def test_band_and_row_counts_must_match_the_permutations():
    with pytest.raises(ValueError, match="must equal num_perm"):
        MinHashConfig(num_perm=128, bands=10, rows=10)


@settings(max_examples=30, deadline=None)
@given(st.text(min_size=1, max_size=300))
def test_signatures_are_deterministic_across_instances(text):
    assert np.array_equal(MinHasher().signature(text),
                          MinHasher().signature(text))


def test_estimated_jaccard_tracks_the_true_jaccard():
    hasher = MinHasher(MinHashConfig(num_perm=256, bands=32, rows=8,
                                    shingles="word:1"))
    words = [f"w{i}" for i in range(200)]
    a, b = " ".join(words[:150]), " ".join(words[50:])  # J = 100 / 200
    estimate = estimated_jaccard(hasher.signature(a), hasher.signature(b))
    assert abs(estimate - 0.5) < 0.1


def test_identical_texts_share_every_band_key():
    hasher = MinHasher()
    keys = hasher.band_keys(hasher.signature("the same text"))
    assert keys == hasher.band_keys(hasher.signature("the same text"))
    assert len(keys) == hasher.bands
    assert 0.7 < hasher.lsh_midpoint < 0.72


@pytest.mark.slow
def test_long_texts_are_signed_in_bounded_memory_and_match():
    import tracemalloc

    hasher = MinHasher()
    long_text = "lorem ipsum dolor sit amet " * 40_000  # ~1 MB
    tracemalloc.start()
    batched = hasher.signatures([long_text, "short text", long_text[:5000]])
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 200 * 2**20  # not 1M shingles x 128 permutations
    from datasketch import MinHash

    reference = MinHash(128, 1, hashfunc=int, scheme="affine32")
    reference.update_batch(hasher.shingle_hashes(long_text[:5000]).tolist())
    np.testing.assert_array_equal(batched[2], reference.hashvalues)
    np.testing.assert_array_equal(batched[1], hasher.signature("short text"))


@settings(max_examples=300, deadline=None)
@given(st.text(st.characters(codec=None), max_size=60),
       st.sampled_from([("char", 5), ("char", 3), ("word", 2)]))
def test_any_text_has_a_signature_and_matches_itself(text, shingles):
    # Surrogates, control characters, empty and one-character texts alike.
    hasher = MinHasher(MinHashConfig(shingles=f"{shingles[0]}:{shingles[1]}"))
    signature = hasher.signature(normalize(text))
    assert signature.shape == (hasher.num_perm,)
    assert estimated_jaccard(signature, signature) == 1.0
    assert len(hasher.band_keys(signature)) == hasher.bands
