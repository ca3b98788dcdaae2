"""Exact and lexical (MinHash LSH) duplicate detection over records.

Both transforms split records into `unique` (one representative per group)
and `duplicates` (the others, with `duplicate_of`, `similarity` and `kind`).
The representative of a group is its record with the longest text, ties
broken by the smallest `id`: the most complete version is kept, and the
choice does not depend on input order or worker count.

Lexical detection runs in four distributed steps: MinHash signature per
record -> records keyed by (band, bucket) -> candidate pairs within each
bucket, verified by estimated Jaccard >= threshold -> connected components.
Banding is a GroupByKey, so it scales with the cluster, not one worker. The
components step gathers the verified edges (duplicates only, usually a small
fraction of the corpus) on one worker and runs union-find over them: about
40 bytes an edge, so tens of millions of duplicate pairs fit one worker.
Records keep flowing in parallel; only the id -> group map is broadcast.
Ids must be unique within a job (`ParseRecords` derives them from content
when absent); `UniqueIds` turns records that reuse an id for another text
into dead letters.

Against a dedup index (`against=`, the `IndexEntry`s earlier runs kept):
index entries join the groups through the same keys (exact keys, band
keys; never compared with each other), and a group holding one is kept by
it: its records of this run are all duplicates, with `duplicate_of_run`.
"""

from __future__ import annotations

import itertools
import typing

import apache_beam as beam
from apache_beam.metrics import Metrics

from embgemma_keras.config import MinHashConfig
from embgemma_keras.dedup.grouping import THIS_RUN
from embgemma_keras.dedup.grouping import connected_components
from embgemma_keras.dedup.grouping import exact_key
from embgemma_keras.dedup.grouping import node
from embgemma_keras.dedup.grouping import representative_order
from embgemma_keras.dedup.minhash import MinHasher
from embgemma_keras.dedup.minhash import estimated_jaccard
from embgemma_keras.dedup.minhash import normalize
from embgemma_keras.index.format import IndexEntry
from embgemma_keras.records.schema import DEAD_LETTERS
from embgemma_keras.records.schema import DUPLICATE_OF
from embgemma_keras.records.schema import DUPLICATE_OF_RUN
from embgemma_keras.records.schema import ID
from embgemma_keras.records.schema import KIND
from embgemma_keras.records.schema import SIMILARITY
from embgemma_keras.records.schema import TEXT
from embgemma_keras.records.schema import DuplicateKind
from embgemma_keras.records.schema import Stage
from embgemma_keras.records.schema import dead_letter
from transforms.records.dead_letters import WithDeadLetters

_DUPLICATES_OUTPUT = "duplicates"


class Deduplicated(typing.NamedTuple):
    """Records kept (one per group) and the others, tagged."""

    unique: beam.PCollection
    duplicates: beam.PCollection


def split_group(members, kind: DuplicateKind, similarity):
    """Yields the kept record, then the others tagged as its duplicates.

    An `IndexEntry` among `members` (kept by an earlier run: the earliest)
    keeps the group, and is not yielded: it is not a record of this run.
    """
    earlier = sorted((m for m in members if isinstance(m, IndexEntry)),
                     key=lambda entry: entry.node)
    records = sorted((m for m in members if not isinstance(m, IndexEntry)),
                     key=representative_order)
    if earlier:
        keep, of = earlier[0], {DUPLICATE_OF: earlier[0].id,
                                DUPLICATE_OF_RUN: earlier[0].run}
    else:
        keep, records = records[0], records[1:]
        of = {DUPLICATE_OF: keep[ID]}
        yield keep
    for record in records:
        yield beam.pvalue.TaggedOutput(_DUPLICATES_OUTPUT, {
            **record, **of, SIMILARITY: similarity(keep, record),
            KIND: kind.value})


class UniqueIds(beam.PTransform):
    """Refuses records that reuse another record's id for a different text.

    Duplicates are reported by id (`duplicate_of`), so an id must name one
    text. Of the records sharing an id, those with the text of the one kept
    by `representative_order` pass (exact copies, for `ExactDuplicates` to
    flag); the others become dead letters (stage "ids").
    """

    def expand(self, records):
        results = (
            records
            | "KeyById" >> beam.Map(lambda r: (r[ID], r))
            | "GroupById" >> beam.GroupByKey()
            | "Check" >> beam.FlatMapTuple(_refuse_shared_ids)
            .with_outputs(DEAD_LETTERS, main="records"))
        return WithDeadLetters(results.records, results[DEAD_LETTERS])


def _refuse_shared_ids(record_id, members):
    members = sorted(members, key=representative_order)
    for record in members:
        if record[TEXT] == members[0][TEXT]:
            yield record
        else:
            yield beam.pvalue.TaggedOutput(DEAD_LETTERS, dead_letter(
                Stage.IDS, f"id {record_id!r} is already used by a record with "
                "another text; ids must be unique", record))


class ExactDuplicates(beam.PTransform):
    """Groups records whose normalised texts are identical.

    Normalisation (each step configurable): Unicode NFKC, case folding,
    whitespace runs collapsed to one space and trimmed. `against`: index
    entries whose exact keys were made with the same normalisation.
    """

    def __init__(self, nfkc: bool = True, casefold: bool = True,
                 collapse_whitespace: bool = True,
                 against: beam.PCollection | None = None):
        super().__init__()
        self._normalize = dict(nfkc=nfkc, casefold=casefold,
                               collapse_whitespace=collapse_whitespace)
        self._against = against

    def expand(self, records):
        options = self._normalize
        keyed = records | "KeyByText" >> beam.Map(
            lambda r: (exact_key(r[TEXT], **options), r))
        if self._against is not None:
            keyed = (keyed, self._against | "KeyIndex" >> beam.Map(
                lambda entry: (entry.exact_key, entry))
                     ) | "WithIndex" >> beam.Flatten()
        split = (
            keyed
            | "Group" >> beam.GroupByKey()
            | "Split" >> beam.FlatMapTuple(
                lambda _, members: split_group(members, DuplicateKind.EXACT,
                                                lambda a, b: 1.0))
            .with_outputs(_DUPLICATES_OUTPUT, main="unique"))
        return Deduplicated(split.unique, split[_DUPLICATES_OUTPUT])


class LexicalDuplicates(beam.PTransform):
    """Groups near-identical texts: MinHash LSH, verified, made transitive.

    Args:
        config: shingles, permutations, bands x rows and the estimated
            Jaccard a candidate pair needs to be an edge.
        max_all_pairs: a bucket with more records than this (boilerplate shared
            by thousands of texts) is compared as a star around its first
            member instead of all pairs, bounding the work at O(n).
        against: index entries made with the same MinHash settings.
    """

    def __init__(self, config: MinHashConfig = MinHashConfig(),
                 max_all_pairs: int = 200,
                 against: beam.PCollection | None = None):
        super().__init__()
        self._hasher = MinHasher(config)
        self._threshold = config.threshold
        self._max_all_pairs = max_all_pairs
        self._against = against

    def expand(self, records):
        hasher, threshold = self._hasher, self._threshold
        max_all_pairs = self._max_all_pairs
        keyed = (records
                 # Signatures and band keys a batch at a time: vectorised.
                 | "Batch" >> beam.BatchElements(min_batch_size=64,
                                                 max_batch_size=256)
                 | "BandKeys" >> beam.FlatMap(_keyed_by_band, hasher))
        if self._against is not None:
            keyed = (keyed, self._against | "IndexBandKeys" >> beam.FlatMap(
                _index_band_keys).with_output_types(typing.Any)
                     ) | "WithIndex" >> beam.Flatten()
        edges = (
            keyed
            | "Bucket" >> beam.GroupByKey()
            | "Candidates" >> beam.FlatMapTuple(
                lambda _, members: _candidate_pairs(list(members),
                                                    max_all_pairs))
            | "Verify" >> beam.Filter(
                lambda pair: estimated_jaccard(pair[0][1], pair[1][1])
                >= threshold)
            | "Edge" >> beam.Map(lambda pair: tuple(sorted(
                (pair[0][0], pair[1][0]))))
            | "DistinctEdges" >> beam.Distinct())

        def signature(member):
            if isinstance(member, IndexEntry):
                return member.signature
            return hasher.signature(normalize(member[TEXT]))

        return split_by_edges(
            records, edges, DuplicateKind.LEXICAL,
            lambda a, b: estimated_jaccard(signature(a), signature(b)),
            self._against)


def split_by_edges(records, edges, kind: DuplicateKind, similarity,
                   against=None) -> Deduplicated:
    """Groups records along `(node, node)` edges (`grouping.node`),
    transitively; keeps one each (an index entry, if the group has one).

    Call inside a composite's `expand` (its labels are local to it).
    `similarity(kept, duplicate)` fills each duplicate's `similarity`.
    """
    groups = beam.pvalue.AsDict(
        edges | "Edges" >> beam.combiners.ToList()
        | "Components" >> beam.FlatMap(connected_components))
    keyed = records | "KeyByGroup" >> beam.Map(
        lambda r, group_of: (group_of.get(node(r), node(r)), r),
        group_of=groups)
    if against is not None:
        # A fusion break: the index's other consumers make `groups`, so a
        # runner fusing this step with them would wait on itself.
        keyed = (keyed, against | "Apart" >> beam.Reshuffle()
                 | "IndexInGroups" >> beam.FlatMap(
            lambda e, group_of: ([(group_of[e.node], e)]
                                 if e.node in group_of else []),
            group_of=groups)) | "GroupsWithIndex" >> beam.Flatten()
    split = (
        keyed
        | "Group" >> beam.GroupByKey()
        | "Split" >> beam.FlatMapTuple(
            lambda _, members: split_group(members, kind, similarity))
        .with_outputs(_DUPLICATES_OUTPUT, main="unique"))
    return Deduplicated(split.unique, split[_DUPLICATES_OUTPUT])


def _keyed_by_band(batch, hasher):
    """`((band, hash), (node, signature))` for every band of every record."""
    signatures = hasher.signatures([normalize(r[TEXT]) for r in batch])
    hashes = hasher.band_hashes(signatures).tolist()
    for record, signature, row in zip(batch, signatures, hashes):
        for band, key in enumerate(row):
            yield (band, key), (node(record), signature)


def _index_band_keys(entry):
    """`_keyed_by_band` for an index entry, from its stored band hashes."""
    for band, key in enumerate(entry.bands.tolist()):
        yield (band, key), (entry.node, entry.signature)


def _candidate_pairs(members, max_all_pairs):
    """Pairs to verify in one LSH bucket: this run's records with each
    other and with the index's entries, never two index entries."""
    new = [m for m in members if m[0][0] == THIS_RUN]
    old = [m for m in members if m[0][0] != THIS_RUN]
    if len(members) <= max_all_pairs:
        return itertools.chain(itertools.combinations(new, 2),
                               itertools.product(new, old))
    Metrics.counter("LexicalDuplicates", "star_buckets").inc()
    new.sort(key=lambda item: item[0])
    return ((new[0], other) for other in new[1:] + old) if new else ()
