"""Sketches for near-duplicate detection in a stream, as plain bytes.

A sketcher turns a record into a compact `sketch` and one LSH bucket key
per band; records sharing a bucket key are compared by the `similarities`
of their sketches. Sketches and keys are `bytes`, so the streaming detector
keeps them in Beam state without pickling, and Beam's state cache weighs
them in constant time (it walks every object it caches: a numpy array
leads it through its type into whole modules).

>>> sketcher = LexicalSketch()
>>> a, keys = sketcher.sketch({"text": "the cat sat on the mat"})
>>> b, _ = sketcher.sketch({"text": "The cat sat on the mat!"})
>>> len(keys), sketcher.similarities(a, [b, a]).round(2).tolist()
(16, [0.91, 1.0])
"""

from __future__ import annotations

import functools
import typing

import numpy as np

from embgemma_keras.config import MinHashConfig
from embgemma_keras.config import StreamDedupConfig
from embgemma_keras.dedup.minhash import MinHasher
from embgemma_keras.dedup.minhash import normalize
from embgemma_keras.index.format import IndexEntry
from embgemma_keras.records.schema import EMBEDDINGS
from embgemma_keras.records.schema import TEXT
from embgemma_keras.records.schema import DuplicateKind
from embgemma_keras.records.schema import Vector


class Sketcher(typing.Protocol):
    """What the streaming detector needs of a kind of similarity."""

    kind: DuplicateKind
    bands: int
    threshold: float

    def sketch(self, record: dict) -> tuple[bytes, list[bytes]]:
        """The record's sketch and its bucket key in each band."""

    def sketch_entry(self, entry: IndexEntry
                     ) -> tuple[bytes, list[bytes]] | None:
        """The same for a record a `dedup_corpus` run kept in its index,
        from what the index holds; None if it holds nothing for this kind."""

    def similarities(self, sketch: bytes, others: list[bytes]) -> np.ndarray:
        """Similarity of `sketch` to each of `others`, comparable with
        `threshold`, computed at once (a hot bucket holds hundreds)."""


def _bucket_keys(kind: DuplicateKind, band_hashes) -> list[bytes]:
    prefix = kind.value.encode("ascii")
    return [prefix + band.to_bytes(2, "big") + bytes(value)
            for band, value in enumerate(band_hashes)]


class LexicalSketch:
    """MinHash signature of the normalised text; Jaccard estimate."""

    kind = DuplicateKind.LEXICAL

    def __init__(self, config: MinHashConfig = MinHashConfig()):
        self.hasher = MinHasher(config)
        self.bands = config.bands
        self.threshold = config.threshold

    def sketch(self, record: dict) -> tuple[bytes, list[bytes]]:
        return self._of(self.hasher.signature(normalize(record[TEXT])))

    def sketch_entry(self, entry: IndexEntry) -> tuple[bytes, list[bytes]]:
        # The index keeps the signature; this sketcher's bands may differ.
        return self._of(np.asarray(entry.signature, np.uint32))

    def _of(self, signature: np.ndarray) -> tuple[bytes, list[bytes]]:
        hashes = self.hasher.band_hashes([signature])[0]
        return signature.tobytes(), _bucket_keys(
            self.kind, (h.tobytes() for h in hashes))

    @staticmethod
    def similarities(sketch: bytes, others: list[bytes]) -> np.ndarray:
        signature = np.frombuffer(sketch, np.uint32)
        stacked = np.frombuffer(b"".join(others), np.uint32).reshape(
            len(others), len(signature))
        return (stacked == signature).mean(axis=1)


class SemanticSketch:
    """Random-hyperplane LSH on the similarity embedding; cosine.

    Each band is `bits` signs of projections on random hyperplanes; vectors
    at angle theta share a band with probability (1 - theta / pi) ** bits.
    The sketch is the vector in float16 (half the bytes in state; cosines
    within 1e-3 of float32's).
    """

    kind = DuplicateKind.SEMANTIC

    def __init__(self, dim: int, bands: int = StreamDedupConfig.semantic_bands,
                 bits: int = StreamDedupConfig.semantic_bits,
                 threshold: float = StreamDedupConfig.semantic_threshold,
                 seed: int = 0):
        self.dim, self.bands, self.bits = dim, bands, bits
        self.threshold, self.seed = threshold, seed

    @functools.cached_property
    def planes(self) -> np.ndarray:
        """The hyperplanes, drawn from `seed` where they are used: a
        pickled sketcher (in every DoFn that holds one) stays small."""
        return np.random.default_rng(self.seed).normal(
            size=(self.dim, self.bands * self.bits)).astype(np.float32)

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k != "planes"}

    @classmethod
    def from_config(cls, config: StreamDedupConfig, dim: int
                    ) -> SemanticSketch:
        return cls(dim, config.semantic_bands, config.semantic_bits,
                   config.semantic_threshold)

    def sketch(self, record: dict) -> tuple[bytes, list[bytes]]:
        return self._of(record[EMBEDDINGS][Vector.SIMILARITY])

    def sketch_entry(self, entry: IndexEntry
                     ) -> tuple[bytes, list[bytes]] | None:
        return None if entry.vector is None else self._of(entry.vector)

    def _of(self, vector) -> tuple[bytes, list[bytes]]:
        vector = np.asarray(vector, np.float32)
        signs = (vector @ self.planes > 0).reshape(self.bands, self.bits)
        return vector.astype(np.float16).tobytes(), _bucket_keys(
            self.kind, (np.packbits(row).tobytes() for row in signs))

    @staticmethod
    def similarities(sketch: bytes, others: list[bytes]) -> np.ndarray:
        vector = np.frombuffer(sketch, np.float16).astype(np.float32)
        stacked = np.frombuffer(b"".join(others), np.float16).reshape(
            len(others), len(vector)).astype(np.float32)
        return stacked @ vector


def stream_sketchers(config: StreamDedupConfig,
                     dim: int | None) -> list[Sketcher]:
    """Lexical, plus semantic when records carry vectors of size `dim`."""
    sketchers = [LexicalSketch(config.lexical)]
    if dim is not None:
        sketchers.append(SemanticSketch.from_config(config, dim))
    return sketchers
