"""The dedup index in a pipeline: opened, read and written through Beam's
FileSystems (local or gs://); its formats are `embgemma_keras.index.format`.

```python
index = open_index("gs://b/index", IndexSettings.of(config, identity, 768))
entries = pipeline | ReadIndex(index)          # every IndexEntry kept so far
kept_entries | CommitIndex(index, run, centroids)  # a new version, then CURRENT
```
"""

from __future__ import annotations

import dataclasses
import uuid

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.windowed_value import WindowedValue

from embgemma_keras.artifacts import ModelIdentity
from embgemma_keras.config import MinHashConfig
from embgemma_keras.index.format import CENTROIDS
from embgemma_keras.index.format import CURRENT
from embgemma_keras.index.format import SEGMENTS
from embgemma_keras.index.format import VERSIONS
from embgemma_keras.index.format import FileSum
from embgemma_keras.index.format import IndexConflictError
from embgemma_keras.index.format import IndexMismatchError
from embgemma_keras.index.format import IndexSettings
from embgemma_keras.index.format import Manifest
from embgemma_keras.index.format import centroids_bytes
from embgemma_keras.index.format import centroids_from
from embgemma_keras.index.format import next_manifest
from embgemma_keras.index.format import segment_bytes
from embgemma_keras.index.format import segment_entries
from embgemma_keras.index.format import stream_mismatches
from embgemma_keras.progress import say

# Entries a segment file holds at most (one file per bundle or so many).
SEGMENT_ENTRIES = 50_000


@dataclasses.dataclass(frozen=True)
class OpenIndex:
    """An index directory as a run found it: its current version (None
    for a new index) and the settings this run writes with."""

    directory: str
    settings: IndexSettings
    current: Manifest | None

    def path(self, relative: str) -> str:
        return FileSystems.join(self.directory, *relative.split("/"))

    def centroids(self) -> np.ndarray | None:
        """The kept k-means centroids, checked, or None (none fitted yet)."""
        if self.current is None or self.current.centroids is None:
            return None
        stored = self.current.centroids
        return centroids_from(stored.check(
            _read(self.path(stored.path)), self.directory))


def open_index(directory: str, settings: IndexSettings,
               must_exist: bool = False) -> OpenIndex:
    """Reads CURRENT and its manifest; refuses an index made with other
    settings, with the reasons, before any record is read."""
    manifest = _current_manifest(directory)
    if manifest is None:
        if must_exist:
            raise IndexMismatchError(f"no index at {directory} (no {CURRENT} "
                                     "file); run once without "
                                     "--index_read_only to create it")
        return OpenIndex(directory, settings, None)
    _refuse(directory, settings.mismatches(manifest.settings))
    return OpenIndex(directory, settings, manifest)


def open_index_for_stream(directory: str, lexical: MinHashConfig,
                          identity: ModelIdentity | None,
                          dim: int | None) -> OpenIndex:
    """The index a stream looks its records up in (read only); refuses a
    missing one, or one whose entries the stream's sketches cannot match
    (`stream_mismatches`), with the reasons, before the job starts."""
    manifest = _current_manifest(directory)
    if manifest is None:
        raise IndexMismatchError(f"no index at {directory} (no {CURRENT} "
                                 "file); make it with dedup_corpus --index")
    _refuse(directory, stream_mismatches(manifest.settings, lexical,
                                         identity, dim))
    return OpenIndex(directory, manifest.settings, manifest)


def _current_manifest(directory: str) -> Manifest | None:
    current = current_version(directory)
    if current is None:
        return None
    where = FileSystems.join(directory, VERSIONS, f"{current}.json")
    return Manifest.from_json(_read(where).decode("utf-8"), where)


def _refuse(directory: str, reasons: list[str]) -> None:
    if reasons:
        raise IndexMismatchError(
            f"the index at {directory} was made with other settings, so its "
            "entries cannot be compared with this job's records: "
            + "; ".join(reasons) + ". Use another --index, or the index's "
            "settings.")


def current_version(directory: str) -> str | None:
    """The version CURRENT names, or None when there is none."""
    pointer = FileSystems.join(directory, CURRENT)
    if not FileSystems.exists(pointer):
        return None
    return _read(pointer).decode("utf-8").strip()


class ReadIndex(beam.PTransform):
    """Pipeline -> every `IndexEntry` of the index's current version, each
    segment checked against its checksum, segments read in parallel."""

    def __init__(self, index: OpenIndex):
        super().__init__()
        self._index = index

    def expand(self, pipeline):
        index = self._index
        segments = list(index.current.segments) if index.current else []
        return (pipeline
                | "Segments" >> beam.Create(segments)
                | "Spread" >> beam.Reshuffle()
                | "Entries" >> beam.FlatMap(lambda segment: segment_entries(
                    segment.check(_read(index.path(segment.path)),
                                  index.directory))))


class CommitIndex(beam.PTransform):
    """Kept entries -> a new version of the index, CURRENT moved last.

    Args:
        index: the index as the run opened it.
        run: this run's id (its segments' folder).
        centroids: a singleton PCollection of the centroids this run
            bucketed with (stored when the index had none), or None.
        after: a PCollection (the run's written output files) that must be
            complete before the new version is made current.

    Returns a one-element PCollection: the new `Manifest`. Raises
    `IndexConflictError` when another run moved CURRENT meanwhile (its
    version is kept; run this one again to add to it).
    """

    def __init__(self, index: OpenIndex, run: str,
                 centroids: beam.PCollection | None = None,
                 after: beam.PCollection | None = None):
        super().__init__()
        self._index, self._run, self._centroids = index, run, centroids
        self._after = after

    def expand(self, entries):
        index, run = self._index, self._run
        segments = entries | "WriteSegments" >> beam.ParDo(
            _WriteSegments(index, run))
        centroids = (beam.pvalue.AsSingleton(self._centroids)
                     if self._centroids is not None else None)
        after = beam.pvalue.AsIter(
            self._after if self._after is not None
            else entries.pipeline | "NothingToWait" >> beam.Create([]))
        return (segments | "AllSegments" >> beam.combiners.ToList()
                | "Commit" >> beam.Map(
                    lambda written, centroids, _: _commit(
                        index, run, written, centroids),
                    centroids=centroids, _=after))


class _WriteSegments(beam.DoFn):
    """Writes a bundle's entries to Parquet files; yields their `FileSum`."""

    def __init__(self, index: OpenIndex, run: str):
        self._index, self._run = index, run

    def start_bundle(self):
        self._entries = []

    def process(self, entry):
        self._entries.append(entry)
        if len(self._entries) >= SEGMENT_ENTRIES:
            yield self._flush()

    def finish_bundle(self):
        if self._entries:
            yield WindowedValue(self._flush(), GlobalWindow().max_timestamp(),
                                [GlobalWindow()])

    def _flush(self) -> FileSum:
        content = segment_bytes(self._entries, self._index.settings)
        relative = f"{SEGMENTS}/{self._run}/{uuid.uuid4().hex}.parquet"
        _write(self._index.path(relative), content)
        written = FileSum.of(relative, content, len(self._entries))
        self._entries = []
        return written


def _commit(index: OpenIndex, run: str, segments: list[FileSum],
            centroids) -> Manifest:
    stored = None
    if centroids is not None and (index.current is None
                                  or index.current.centroids is None):
        content = centroids_bytes(centroids)
        stored = FileSum.of(f"{CENTROIDS}/{run}.npz", content)
        _write(index.path(stored.path), content)
    manifest = next_manifest(index.current, index.settings, run,
                             sum(s.records for s in segments), segments,
                             stored)
    _write(index.path(f"{VERSIONS}/{manifest.version}.json"),
           manifest.to_json().encode("utf-8"))
    # Compare, then swap: FileSystems offers no conditional write, so two
    # runs finishing in the same instant can still race here; one that
    # finishes while another has already moved CURRENT is refused.
    found = current_version(index.directory)
    if found != manifest.parent:
        raise IndexConflictError(
            f"{index.directory}: another run moved {CURRENT} to {found} "
            f"while this one ran from {manifest.parent}; this run's version "
            f"{manifest.version} is written but not current. Run again to "
            "dedup against both.")
    pointer = index.path(CURRENT)
    staged = f"{pointer}.{run}"
    _write(staged, manifest.version.encode("utf-8"))
    FileSystems.rename([staged], [pointer])  # os.rename locally: atomic
    say(f"index {index.directory}: version {manifest.version}, "
        f"{manifest.entries} entries")
    return manifest


def _read(path: str) -> bytes:
    with FileSystems.open(path) as f:
        return f.read()


def _write(path: str, content: bytes) -> None:
    with FileSystems.create(path) as f:
        f.write(content)
