"""The dedup index in a pipeline: opened, read and committed.

A directory index (local or gs://) is read and written through Beam's
FileSystems, in the formats of `embgemma_keras.index.format`; an index in
PostgreSQL (`embgemma_keras.index.database`) is looked up a batch at a
time (`transforms.index.lookup`) and committed in one transaction.
`open_index` opens either kind from its location; `CommitIndex` commits
to either.

```python
index = open_index("gs://b/index", IndexSettings.of(config, identity, 768))
entries = pipeline | ReadIndex(index)          # every IndexEntry kept so far
kept_entries | CommitIndex(index, run, centroids)  # a new version, then CURRENT
```

`copy_to_database` copies a directory index into PostgreSQL
(`python -m pipelines.copy_index`).
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterable
from collections.abc import Iterator

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.windowed_value import WindowedValue

from embgemma_keras.artifacts import ModelIdentity
from embgemma_keras.config import MinHashConfig
from embgemma_keras.index.database import DatabaseIndex
from embgemma_keras.index.database import is_database_url
from embgemma_keras.index.format import CENTROIDS
from embgemma_keras.index.format import CURRENT
from embgemma_keras.index.format import SEGMENTS
from embgemma_keras.index.format import VERSIONS
from embgemma_keras.index.format import FileSum
from embgemma_keras.index.format import IndexConflictError
from embgemma_keras.index.format import IndexEntry
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

    @property
    def where(self) -> str:
        """The index as messages and reports name it."""
        return self.directory

    @property
    def version(self) -> str | None:
        """The version the run sees (None: no run committed)."""
        return self.current.version if self.current else None

    def path(self, relative: str) -> str:
        return FileSystems.join(self.directory, *relative.split("/"))

    def entries(self, segment: FileSum) -> Iterator[IndexEntry]:
        """The entries of one of its segments, checked against its
        checksum first."""
        return segment_entries(segment.check(_read(self.path(segment.path)),
                                             self.directory))

    def centroids(self) -> np.ndarray | None:
        """The kept k-means centroids, checked, or None (none fitted yet)."""
        if self.current is None or self.current.centroids is None:
            return None
        stored = self.current.centroids
        return centroids_from(stored.check(
            _read(self.path(stored.path)), self.directory))


# A dedup index as a run opened it: a directory or a database.
Index = OpenIndex | DatabaseIndex


def open_index(location: str, settings: IndexSettings,
               must_exist: bool = False) -> Index:
    """The index at `location`: a `DatabaseIndex` for a `postgresql://`
    URL, else the directory's CURRENT version (`OpenIndex`).

    Refuses an index made with other settings, with the reasons, before
    any record is read; with `must_exist` (a read-only run), a missing
    one too.
    """
    if is_database_url(location):
        return DatabaseIndex.open(location, settings, must_exist)
    directory = location
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
                          dim: int | None) -> OpenIndex | DatabaseIndex:
    """The index a stream looks its records up in (read only): a
    directory (read whole, `ReadIndex`) or a database (looked up a record
    at a time, `LookUpForStream`). Refuses a missing one, or one whose
    entries the stream's sketches cannot match (`stream_mismatches`), with
    the reasons, before the job starts."""
    if is_database_url(directory):
        return DatabaseIndex.open_for_stream(directory, lexical, identity,
                                             dim)
    manifest = _current_manifest(directory)
    if manifest is None:
        raise IndexMismatchError(f"no index at {directory} (no {CURRENT} "
                                 "file); make it with dedup_corpus --index")
    _refuse(directory, stream_mismatches(manifest.settings, lexical,
                                         identity, dim))
    return OpenIndex(directory, manifest.settings, manifest)


def open_directory(directory: str) -> OpenIndex:
    """The index directory's CURRENT version with its own settings (to
    copy it); refuses a missing one."""
    manifest = _current_manifest(directory)
    if manifest is None:
        raise IndexMismatchError(f"no index at {directory} (no {CURRENT} "
                                 "file)")
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
                | "Entries" >> beam.FlatMap(index.entries))


class CommitIndex(beam.PTransform):
    """Kept entries -> a new version of the index, made current last.

    A directory gets the entries as segment files, then the version's
    manifest, then CURRENT moved to it; a database gets them, with the
    version, in one transaction, streamed into it. Either way the new
    version is made current only once `after` is complete, and a run that
    fails before leaves the index as it was.

    Args:
        index: the index as the run opened it (`open_index`).
        run: this run's id (its segments' folder).
        centroids: a singleton PCollection of the centroids this run
            bucketed with (stored when the index had none), or None.
        after: a PCollection (the run's written output files) that must be
            complete before the new version is made current.

    Returns a one-element PCollection: the new version's name. A directory
    raises `IndexConflictError` when another run moved CURRENT meanwhile
    (its version is kept; run this one again to add to it); a database
    takes both runs, one after the other, and a commit retried with the
    same run changes nothing.
    """

    def __init__(self, index: Index, run: str,
                 centroids: beam.PCollection | None = None,
                 after: beam.PCollection | None = None):
        super().__init__()
        self._index, self._run, self._centroids = index, run, centroids
        self._after = after

    def expand(self, entries):
        centroids = (beam.pvalue.AsSingleton(self._centroids)
                     if self._centroids is not None else None)
        after = beam.pvalue.AsIter(
            self._after if self._after is not None
            else entries.pipeline | "NothingToWait" >> beam.Create([]))
        if isinstance(self._index, DatabaseIndex):
            return self._into_database(entries, centroids, after)
        return self._into_directory(entries, centroids, after)

    def _into_directory(self, entries, centroids, after):
        index, run = self._index, self._run
        segments = entries | "WriteSegments" >> beam.ParDo(
            _WriteSegments(index, run))
        return (segments | "AllSegments" >> beam.combiners.ToList()
                | "Commit" >> beam.Map(
                    lambda written, centroids, _: _commit(
                        index, run, written, centroids).version,
                    centroids=centroids, _=after))

    def _into_database(self, entries, centroids, after):
        """One commit of every entry, an iterable side input: read as the
        rows are written, never gathered into one list."""
        index = self._index
        return (entries.pipeline | "Run" >> beam.Create([self._run])
                | "Commit" >> beam.Map(
                    lambda run, entries, centroids, _: commit_to_database(
                        index, run, entries, centroids),
                    entries=beam.pvalue.AsIter(entries),
                    centroids=centroids, _=after))


def commit_to_database(index: DatabaseIndex, run: str,
                       entries: Iterable[IndexEntry],
                       centroids: np.ndarray | None) -> str:
    """`index.commit`, its connection closed after: what `CommitIndex`
    runs once a run's outputs are written. Run again with the same `run`
    (a retried step), it changes nothing and returns the same version."""
    with index:
        return index.commit(run, entries, centroids)


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


def copy_to_database(source: OpenIndex, target: DatabaseIndex
                     ) -> dict[str, int]:
    """Copies every run of `source`'s current version into `target`, in
    the same order, each run one version (its entries, each segment
    checked against its checksum first; the centroids with the first).

    `target` (opened with `source.settings`) must hold no run, or the
    first runs of `source` (a copy that failed midway): those are kept as
    they are, the rest added. Afterwards each run's entry count in
    `target` must equal the directory's.

    Returns each run copied with its entries.

    Raises:
        IndexMismatchError: `target` holds other runs, or a count differs.
    """
    manifest = source.current
    expected = {info.run: sum(segment.records for segment in
                              manifest.segments_of(info.run))
                for info in manifest.runs}
    held = list(target.runs())
    if held != list(expected)[:len(held)]:
        raise IndexMismatchError(
            f"the index at {target.where} holds runs that are not the first "
            f"runs of {source.directory} ({', '.join(held)}); copy into an "
            "empty one (another ?schema=)")
    centroids = source.centroids()
    for run in expected:
        target.commit(run, (entry for segment in manifest.segments_of(run)
                            for entry in source.entries(segment)),
                      centroids)
    copied = target.runs()
    wrong = [f"{run}: {copied.get(run, 0)} entries, the directory {count}"
             for run, count in expected.items() if copied.get(run) != count]
    if sum(copied.values()) != manifest.entries:
        wrong.append(f"{sum(copied.values())} entries in all, the directory "
                     f"{manifest.entries}")
    if wrong:
        raise IndexMismatchError(f"the copy in {target.where} differs from "
                                 f"{source.directory}: " + "; ".join(wrong))
    return copied


def _read(path: str) -> bytes:
    with FileSystems.open(path) as f:
        return f.read()


def _write(path: str, content: bytes) -> None:
    with FileSystems.create(path) as f:
        f.write(content)
