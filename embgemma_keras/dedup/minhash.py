"""Text normalisation, shingles and MinHash signatures with LSH band keys.

Pure Python and NumPy (no Beam), so a batch job, a streaming job and a test
compute the same signature.

Signatures follow datasketch 2.0's "affine32" scheme exactly (its seeded
permutations, the MurmurHash3 finalizer, then `a * h + b` in uint32) with
one change that makes them several times faster: a shingle's input hash is
a polynomial hash of its code points (or of its words' CRC-32s), computed
for every shingle of a batch of texts at once in NumPy, instead of one
SHA-1 call per shingle in Python. A signature equals
`datasketch.MinHash(num_perm, seed, hashfunc=<that hash>)` fed the same
shingles (tested).

>>> normalize("  Héllo\\u00a0  WORLD ")
'héllo world'
"""

from __future__ import annotations

import re
import unicodedata
import zlib

import numpy as np

from embgemma_keras.config import MinHashConfig
from embgemma_keras.records.schema import MINHASH
from embgemma_keras.records.schema import TEXT

_SPACES = re.compile(r"\s+")
_POLY = np.uint32(0x01000193)  # the 32-bit FNV prime: odd, well mixed bits
_FNV64_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV64_PRIME = np.uint64(0x100000001B3)
_BLOCK_ROWS = 8192


def normalize(text: str, nfkc: bool = True, casefold: bool = True,
              collapse_whitespace: bool = True) -> str:
    """The text compared for duplicates: NFKC, case-folded, spaces collapsed."""
    if nfkc:
        text = unicodedata.normalize("NFKC", text)
    if casefold:
        text = text.casefold()
    if collapse_whitespace:
        text = _SPACES.sub(" ", text).strip()
    return text


def fmix32(values: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finalizer: an avalanching bijection on uint32."""
    values = np.asarray(values, dtype=np.uint32)
    values = values ^ (values >> np.uint32(16))
    values = values * np.uint32(0x85EBCA6B)
    values = values ^ (values >> np.uint32(13))
    values = values * np.uint32(0xC2B2AE35)
    return values ^ (values >> np.uint32(16))


class MinHasher:
    """MinHash signatures and LSH band keys for one `MinHashConfig`.

    Shingles are `size` consecutive characters ("char:N") or words
    ("word:N") of the normalised text; a text shorter than one shingle is
    one shingle. Two texts share a band key with probability
    1 - (1 - J^rows)^bands for Jaccard J, an S-curve whose midpoint is
    about (1 / bands) ** (1 / rows).
    """

    def __init__(self, config: MinHashConfig = MinHashConfig()):
        self.config = config
        self.num_perm, self.bands, self.rows = (config.num_perm, config.bands,
                                                config.rows)
        self.kind, self.size = config.shingle_kind, config.shingle_size
        self._a, self._b = _affine32_permutations(self.num_perm, config.seed)
        self._powers = np.array(
            [_POLY ** np.uint32(self.size - 1 - j) for j in range(self.size)],
            dtype=np.uint32)

    @property
    def lsh_midpoint(self) -> float:
        """Jaccard similarity at the middle of the LSH S-curve."""
        return (1 / self.bands) ** (1 / self.rows)

    def signature(self, text: str) -> np.ndarray:
        """The signature (uint32, `num_perm`) of one normalised text."""
        return self.signatures([text])[0]

    def signatures(self, texts: list[str]) -> np.ndarray:
        """Signatures of many normalised texts, as a `(n, num_perm)` array."""
        units = [self._units(text) for text in texts]
        lengths = np.array([max(len(u), self.size) for u in units])
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        joined = np.zeros(int(lengths.sum()), dtype=np.uint32)
        for start, unit in zip(starts, units, strict=True):
            joined[start:start + len(unit)] = unit
        hashes = self._window_hashes(joined)
        # Windows that straddle two texts are dropped.
        valid = np.ones(len(joined), dtype=bool)
        for back in range(1, self.size):
            valid[starts + lengths - back] = False
        hashes = fmix32(hashes[valid[:len(hashes)]])
        counts = lengths - self.size + 1
        ends = np.cumsum(counts)
        offsets = ends - counts
        result = np.full((len(texts), self.num_perm), np.iinfo(np.uint32).max,
                         dtype=np.uint32)
        # Shingles are permuted a block at a time, so memory stays bounded
        # (block x num_perm) whatever the texts' length: a 1 MB text has a
        # million shingles.
        for start in range(0, len(hashes), _BLOCK_ROWS):
            stop = min(start + _BLOCK_ROWS, len(hashes))
            first = int(np.searchsorted(ends, start, side="right"))
            last = int(np.searchsorted(offsets, stop, side="left"))
            block = hashes[start:stop, None] * self._a + self._b
            segment_starts = np.maximum(offsets[first:last], start) - start
            result[first:last] = np.minimum(
                result[first:last],
                np.minimum.reduceat(block, segment_starts, axis=0))
        return result

    def shingle_hashes(self, text: str) -> np.ndarray:
        """Input hashes of one text's shingles (for checks against
        datasketch)."""
        units = self._units(text)
        padded = np.zeros(max(len(units), self.size), dtype=np.uint32)
        padded[:len(units)] = units
        return self._window_hashes(padded)

    def band_hashes(self, signatures: np.ndarray) -> np.ndarray:
        """A 64-bit hash of each band of each signature, `(n, bands)`.

        FNV-1a over the band's `rows` values, vectorised; two texts are LSH
        candidates when they share a band hash in the same band.
        """
        rows = np.asarray(signatures, dtype=np.uint64).reshape(
            -1, self.bands, self.rows)
        hashes = np.full(rows.shape[:2], _FNV64_OFFSET, dtype=np.uint64)
        for row in range(self.rows):
            hashes = (hashes ^ rows[:, :, row]) * _FNV64_PRIME
        return hashes

    def band_keys(self, signature: np.ndarray) -> list[tuple[int, int]]:
        """One `(band, hash)` key per band; equal keys are LSH candidates."""
        return list(enumerate(self.band_hashes([signature])[0].tolist()))

    def _units(self, text):
        # surrogatepass: a lone surrogate (which JSON parsing refuses, but
        # the Python API may be given) hashes like any other code point.
        if self.kind == "char":
            return np.frombuffer(text.encode("utf-32-le", "surrogatepass"),
                                 dtype=np.uint32)
        return np.array([zlib.crc32(word.encode("utf-8", "surrogatepass"))
                         for word in text.split(" ")], dtype=np.uint32)

    def _window_hashes(self, units):
        windows = np.lib.stride_tricks.sliding_window_view(units, self.size)
        return (windows * self._powers).sum(axis=1, dtype=np.uint32)


def _affine32_permutations(num_perm, seed):
    """datasketch's seeded (a, b) for the affine32 scheme, as uint32."""
    from datasketch import MinHash

    a, b = MinHash(num_perm, seed).permutations
    return a.astype(np.uint32), b.astype(np.uint32)


def signed(records: list[dict], hasher: MinHasher) -> list[dict]:
    """The records, each with the signature of its normalised text under
    `MINHASH`: computed once, a batch at a time, for every stage that
    compares or indexes it. A record that carries one already (signed by
    an earlier step with the same hasher) keeps it.

    >>> [record] = signed([{"text": "hello"}], MinHasher())
    >>> record["_minhash"].dtype, record["_minhash"].shape
    (dtype('uint32'), (128,))
    >>> signed([record], MinHasher())[0] is record
    True
    """
    unsigned = [r for r in records if MINHASH not in r]
    if not unsigned:
        return list(records)
    signatures = iter(hasher.signatures([normalize(r[TEXT])
                                         for r in unsigned]))
    return [record if MINHASH in record
            else {**record, MINHASH: next(signatures)}
            for record in records]


def estimated_jaccard(signature_a: np.ndarray,
                      signature_b: np.ndarray) -> float:
    """The fraction of equal MinHash values, an estimate of Jaccard."""
    return float(np.mean(np.asarray(signature_a) == np.asarray(signature_b)))
