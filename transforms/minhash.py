"""Text normalisation, shingles and MinHash signatures with LSH band keys.

Pure Python (datasketch underneath, no Beam), so the same signature is
computed in a batch job, a streaming job and a test.

>>> normalize("  Héllo\\u00a0  WORLD ")
'héllo world'
>>> sorted(shingles("a b c d", kind="word", size=2))
[b'a b', b'b c', b'c d']
"""

import hashlib
import re
import unicodedata

import numpy as np
from datasketch import MinHash

_SPACES = re.compile(r"\s+")


def normalize(text, nfkc=True, casefold=True, collapse_whitespace=True):
    """The text compared for duplicates: NFKC, case-folded, spaces collapsed."""
    if nfkc:
        text = unicodedata.normalize("NFKC", text)
    if casefold:
        text = text.casefold()
    if collapse_whitespace:
        text = _SPACES.sub(" ", text).strip()
    return text


def shingles(text, kind="char", size=5):
    """The set of `size`-grams of characters or words, as UTF-8 bytes.

    A text shorter than one shingle gives a single shingle of all of it, so
    short texts still have a signature.
    """
    units = text.split(" ") if kind == "word" else text
    joiner = " " if kind == "word" else ""
    if len(units) <= size:
        return {joiner.join(units).encode("utf-8")}
    return {joiner.join(units[i:i + size]).encode("utf-8")
            for i in range(len(units) - size + 1)}


class MinHasher:
    """MinHash signatures and LSH band keys for one parameter set.

    `bands` x `rows` must equal `num_perm`; two texts share a band key with
    probability 1 - (1 - J^rows)^bands for Jaccard similarity J, an S-curve
    whose midpoint is about (1 / bands) ** (1 / rows).
    """

    def __init__(self, num_perm=128, bands=16, rows=8, kind="char", size=5,
                 seed=1):
        if bands * rows != num_perm:
            raise ValueError(f"bands x rows ({bands} x {rows}) must equal "
                             f"num_perm ({num_perm})")
        if kind not in ("char", "word"):
            raise ValueError(f"shingle kind must be 'char' or 'word', "
                             f"got {kind!r}")
        self.num_perm, self.bands, self.rows = num_perm, bands, rows
        self.kind, self.size, self.seed = kind, size, seed
        self._permutations = None

    @property
    def threshold(self):
        """Jaccard similarity at the middle of the LSH S-curve."""
        return (1 / self.bands) ** (1 / self.rows)

    def signature(self, text):
        """The MinHash signature (uint64 array) of the normalised text."""
        if self._permutations is None:  # built lazily: not pickled with DoFns
            template = MinHash(self.num_perm, self.seed)
            self._permutations = (template.permutations, template.scheme)
        permutations, scheme = self._permutations
        minhash = MinHash(self.num_perm, self.seed, permutations=permutations,
                          scheme=scheme)
        minhash.update_batch(list(shingles(text, self.kind, self.size)))
        return minhash.hashvalues.astype(np.uint64)

    def band_keys(self, signature):
        """One `(band, digest)` key per band; equal keys are LSH candidates."""
        rows = np.asarray(signature, dtype=np.uint64).reshape(self.bands,
                                                               self.rows)
        return [(band, hashlib.blake2b(row.tobytes(), digest_size=8).digest())
                for band, row in enumerate(rows)]

    def __getstate__(self):
        return {**self.__dict__, "_permutations": None}


def estimated_jaccard(signature_a, signature_b):
    """The fraction of equal MinHash values, an estimate of Jaccard."""
    return float(np.mean(np.asarray(signature_a) == np.asarray(signature_b)))
