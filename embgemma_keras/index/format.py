"""The dedup index: what earlier `dedup_corpus` runs kept, versioned.

Beam-free: the formats, the entries and the compatibility check. Reading
and writing them through Beam's FileSystems is `transforms.index.read_commit`.

An index directory (local or gs://) holds:

    CURRENT                        the name of the current version
    versions/<version>.json        a version's manifest
    segments/<run>/<uuid>.parquet  the entries one run kept (never changed)
    centroids/<run>.npz            the semantic stage's k-means centroids

A manifest names every segment of every run so far with its SHA-256 and
size, the centroids likewise, the runs, and the settings the entries were
made with. A run writes its segments and its manifest, and moves CURRENT
last: a run that fails or is killed before that leaves CURRENT where it
was, and its files are never read. Nothing is pickled: Parquet, npz
(`allow_pickle=False`) and JSON.

>>> old = IndexSettings.of(DedupConfig(semantic=False))
>>> IndexSettings.of(DedupConfig(case_fold=False, semantic=False)
...                  ).mismatches(old)
['case_fold: the index has True, this run False']
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import io
import json
import secrets
import typing
from collections.abc import Iterable
from collections.abc import Iterator

import numpy as np

from embgemma_keras.artifacts import ModelIdentity
from embgemma_keras.config import DedupConfig
from embgemma_keras.config import MinHashConfig
from embgemma_keras.dedup.grouping import exact_key
from embgemma_keras.dedup.minhash import MinHasher
from embgemma_keras.records.schema import EMBEDDINGS
from embgemma_keras.records.schema import ID
from embgemma_keras.records.schema import MINHASH
from embgemma_keras.records.schema import TEXT
from embgemma_keras.records.schema import Vector
from embgemma_keras.tasks import Task

FORMAT_VERSION = 1
CURRENT = "CURRENT"
VERSIONS = "versions"
SEGMENTS = "segments"
CENTROIDS = "centroids"
# The prompt the semantic stage embeds with, so the one an index's vectors
# were made with.
SEMANTIC_TASK = Task.SENTENCE_SIMILARITY


class IndexMismatchError(ValueError):
    """An index made with other settings, or corrupt: refused."""


class IndexConflictError(RuntimeError):
    """Another run moved CURRENT while this one ran."""


@dataclasses.dataclass(frozen=True)
class IndexSettings:
    """What makes entries of two runs comparable; a later run must match."""

    case_fold: bool
    shingles: str
    num_perm: int
    bands: int
    rows: int
    minhash_seed: int
    semantic: bool
    model: str | None  # the weights' fingerprint
    dim: int | None
    task: str | None  # the prompt the vectors were embedded with

    @classmethod
    def of(cls, config: DedupConfig, identity: ModelIdentity | None = None,
           dim: int | None = None) -> IndexSettings:
        lexical = config.lexical
        semantic = config.semantic
        return cls(config.case_fold, lexical.shingles, lexical.num_perm,
                   lexical.bands, lexical.rows, lexical.seed, semantic,
                   identity.fingerprint if semantic and identity else None,
                   dim if semantic else None,
                   SEMANTIC_TASK.value if semantic else None)

    def mismatches(self, index: IndexSettings) -> list[str]:
        """Why entries made with `index` cannot be compared with this run's."""
        return _differences(index, {field.name: getattr(self, field.name)
                                    for field in dataclasses.fields(self)},
                            "this run")


def stream_mismatches(index: IndexSettings, lexical: MinHashConfig,
                      identity: ModelIdentity | None,
                      dim: int | None) -> list[str]:
    """Why a stream cannot look its records up in an index made with `index`.

    Its MinHash signatures must be computed alike (it re-bands the kept
    signatures, so its bands and rows may differ), and where the index
    kept vectors, its similarity vectors must come from the same model,
    dim and prompt.
    """
    ours = {"shingles": lexical.shingles, "num_perm": lexical.num_perm,
            "minhash_seed": lexical.seed}
    if index.semantic:
        ours.update(model=identity.fingerprint if identity else None,
                    dim=dim, task=SEMANTIC_TASK.value)
    return _differences(index, ours, "this job")


def _differences(index: IndexSettings, ours: dict, who: str) -> list[str]:
    return [f"{name}: the index has {getattr(index, name)!r}, {who} {value!r}"
            for name, value in ours.items() if getattr(index, name) != value]


@dataclasses.dataclass(frozen=True)
class FileSum:
    """A file of the index (relative path) with its checksum and size."""

    path: str
    sha256: str
    bytes: int
    records: int = 0

    @classmethod
    def of(cls, path: str, content: bytes, records: int = 0) -> FileSum:
        return cls(path, hashlib.sha256(content).hexdigest(), len(content),
                   records)

    def check(self, content: bytes, where: str) -> bytes:
        """`content`, if it is this file's; else IndexMismatchError."""
        if (len(content) != self.bytes
                or hashlib.sha256(content).hexdigest() != self.sha256):
            raise IndexMismatchError(
                f"{where}: {self.path} does not match its checksum in the "
                "manifest; the index was modified or corrupted")
        return content


@dataclasses.dataclass(frozen=True)
class RunInfo:
    run: str
    kept: int
    created: str


@dataclasses.dataclass(frozen=True)
class Manifest:
    """One version of an index: its files, runs and settings."""

    version: str
    parent: str | None
    settings: IndexSettings
    runs: tuple[RunInfo, ...]
    segments: tuple[FileSum, ...]
    centroids: FileSum | None

    @property
    def entries(self) -> int:
        return sum(segment.records for segment in self.segments)

    def segments_of(self, run: str) -> tuple[FileSum, ...]:
        """The segments run `run` wrote (`segments/<run>/...`)."""
        return tuple(segment for segment in self.segments
                     if segment.path.startswith(f"{SEGMENTS}/{run}/"))

    def to_json(self) -> str:
        return json.dumps({"format_version": FORMAT_VERSION,
                           **dataclasses.asdict(self)}, indent=2)

    @classmethod
    def from_json(cls, text: str, where: str) -> Manifest:
        try:
            raw = json.loads(text)
            if raw.pop("format_version") != FORMAT_VERSION:
                raise IndexMismatchError(
                    f"{where}: index format is not version {FORMAT_VERSION}")
            centroids = raw.pop("centroids")
            return cls(
                settings=IndexSettings(**raw.pop("settings")),
                runs=tuple(RunInfo(**run) for run in raw.pop("runs")),
                segments=tuple(FileSum(**s) for s in raw.pop("segments")),
                centroids=FileSum(**centroids) if centroids else None, **raw)
        except (KeyError, TypeError, ValueError) as e:
            if isinstance(e, IndexMismatchError):
                raise
            raise IndexMismatchError(
                f"{where}: not an index manifest: {e}") from e


def next_manifest(parent: Manifest | None, settings: IndexSettings,
                  run: str, kept: int, segments: Iterable[FileSum],
                  centroids: FileSum | None) -> Manifest:
    """The version a run makes: its parent's files and runs, plus its own."""
    number = 1 + (int(parent.version[1:7]) if parent else 0)
    created = datetime.datetime.now(datetime.timezone.utc).isoformat(
        timespec="seconds")
    return Manifest(
        version=f"v{number:06d}-{run}",
        parent=parent.version if parent else None, settings=settings,
        runs=(*(parent.runs if parent else ()), RunInfo(run, kept, created)),
        segments=(*(parent.segments if parent else ()), *sorted(
            segments, key=lambda s: s.path)),
        centroids=(parent.centroids if parent and parent.centroids
                   else centroids))


def new_run_id() -> str:
    """Sorts by start time: `20261128T201406Z-3f9a1c`."""
    now = datetime.datetime.now(datetime.timezone.utc)
    return f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


class IndexEntry(typing.NamedTuple):
    """A record an earlier run kept: what a later run compares with."""

    id: str
    run: str
    exact_key: bytes
    bands: np.ndarray  # uint64, one LSH band hash per band
    signature: np.ndarray  # uint32 MinHash signature
    bucket: int  # k-means bucket of `vector`; -1 without the semantic stage
    vector: np.ndarray | None  # float32 sentence-similarity embedding

    @property
    def node(self) -> tuple[str, str]:
        return self.run, self.id


def segment_bytes(entries: list[IndexEntry], settings: IndexSettings
                  ) -> bytes:
    """A Parquet file of `entries` (one column per field)."""
    import pyarrow as pa  # only where segments are made or read
    import pyarrow.parquet as pq

    def fixed(rows, dtype, width):
        flat = np.concatenate([np.asarray(r, dtype) for r in rows]) if rows \
            else np.zeros(0, dtype)
        return pa.FixedSizeListArray.from_arrays(pa.array(flat), width)

    columns = {
        "id": pa.array([e.id for e in entries], pa.string()),
        "run": pa.array([e.run for e in entries], pa.string()),
        "exact_key": pa.array([e.exact_key for e in entries], pa.binary(32)),
        "bands": fixed([e.bands for e in entries], np.uint64,
                       settings.bands),
        "signature": fixed([e.signature for e in entries], np.uint32,
                           settings.num_perm),
        "bucket": pa.array([e.bucket for e in entries], pa.int32()),
    }
    if settings.semantic:
        columns["vector"] = fixed([e.vector for e in entries], np.float32,
                                  settings.dim)
    buffer = io.BytesIO()
    pq.write_table(pa.table(columns), buffer)
    return buffer.getvalue()


def segment_entries(content: bytes) -> Iterator[IndexEntry]:
    """The entries of a Parquet file from `segment_bytes`."""
    import pyarrow.parquet as pq

    table = pq.read_table(io.BytesIO(content))
    n = table.num_rows

    def matrix(name, dtype):
        column = table.column(name).combine_chunks()
        return column.flatten().to_numpy().astype(dtype).reshape(n, -1)

    bands = matrix("bands", np.uint64)
    signatures = matrix("signature", np.uint32)
    vectors = (matrix("vector", np.float32)
               if "vector" in table.column_names else [None] * n)
    columns = table.select(["id", "run", "exact_key", "bucket"]).to_pydict()
    for i in range(n):
        yield IndexEntry(columns["id"][i], columns["run"][i],
                         columns["exact_key"][i], bands[i], signatures[i],
                         columns["bucket"][i], vectors[i])


def centroids_bytes(centroids: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, centroids=np.asarray(centroids, np.float32))
    return buffer.getvalue()


def centroids_from(content: bytes) -> np.ndarray:
    with np.load(io.BytesIO(content), allow_pickle=False) as arrays:
        return arrays["centroids"]


def index_entries(records: list[dict], run: str, hasher: MinHasher,
                  case_fold: bool,
                  centroids: np.ndarray | None) -> list[IndexEntry]:
    """The entries of records a run kept, a batch at a time (band hashes
    vectorised; buckets from `centroids` when the semantic stage ran).

    Each record carries its MinHash signature (`MINHASH`, from
    `minhash.signed`: the lexical stage's, not computed again); `hasher`
    is the run's `MinHasher`, which bands it.
    """
    signatures = np.stack([record[MINHASH] for record in records])
    bands = hasher.band_hashes(signatures)
    vectors = buckets = None
    if centroids is not None:
        vectors = np.stack([np.asarray(
            record[EMBEDDINGS][Vector.SIMILARITY], np.float32)
            for record in records])
        buckets = np.argmax(vectors @ np.asarray(centroids).T, axis=1)
    return [IndexEntry(
        record[ID], run, exact_key(record[TEXT], casefold=case_fold),
        bands[i], signatures[i],
        int(buckets[i]) if buckets is not None else -1,
        vectors[i] if vectors is not None else None)
        for i, record in enumerate(records)]
