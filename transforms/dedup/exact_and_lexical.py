"""Exact and lexical (MinHash LSH) duplicate detection over records.

Both transforms split records into `unique` (one representative per group)
and `duplicates` (the others, with `duplicate_of`, `similarity` and `kind`).
The representative of a group is its record with the longest text, ties
broken by the smallest `id`: the most complete version is kept, and the
choice does not depend on input order or worker count.

Lexical detection runs in four distributed steps: MinHash signature per
record (kept on the record as `MINHASH` for the later stages, which drop
it before output) -> records keyed by (band, bucket) -> candidate pairs
within each bucket, verified by estimated Jaccard >= threshold ->
connected components.
Banding is a GroupByKey, so it scales with the cluster, not one worker. The
components step gathers the verified edges (duplicates only, usually a small
fraction of the corpus) on one worker and runs union-find over them, whose
few bytes an edge let one worker hold a large corpus's duplicate pairs
(docs/jobs/dedup_corpus.md).
Records keep flowing in parallel; only the id -> group map is broadcast.
Ids must be unique within a job (`ParseRecords` derives them from content
when absent); `UniqueIds` turns records that reuse an id for another text
into dead letters.

Against a dedup index (`against=`, the `IndexEntry`s earlier runs kept):
index entries join the groups through the same keys (exact keys, band
keys; never compared with each other), each key's records and entries
co-grouped apart (`co_group`), and a group holding one is kept by it: its
records of this run are all duplicates, with `duplicate_of_run`.
"""

from __future__ import annotations

import itertools
import typing
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics

from embgemma_keras.config import MinHashConfig
from embgemma_keras.dedup.grouping import connected_components
from embgemma_keras.dedup.grouping import exact_key
from embgemma_keras.dedup.grouping import node
from embgemma_keras.dedup.grouping import representative_order
from embgemma_keras.dedup.minhash import MinHasher
from embgemma_keras.dedup.minhash import estimated_jaccard
from embgemma_keras.dedup.minhash import signed
from embgemma_keras.index.format import IndexEntry
from embgemma_keras.records.schema import DEAD_LETTERS
from embgemma_keras.records.schema import DUPLICATE_OF
from embgemma_keras.records.schema import DUPLICATE_OF_RUN
from embgemma_keras.records.schema import ID
from embgemma_keras.records.schema import KIND
from embgemma_keras.records.schema import MINHASH
from embgemma_keras.records.schema import SIMILARITY
from embgemma_keras.records.schema import TEXT
from embgemma_keras.records.schema import DuplicateKind
from embgemma_keras.records.schema import Stage
from embgemma_keras.records.schema import dead_letter
from transforms.records.dead_letters import WithDeadLetters

_DUPLICATES_OUTPUT = "duplicates"
_BANDS_OUTPUT = "bands"
# The tags of a key's co-group: this run's records, the index's entries.
_RECORDS, _INDEX = "records", "index"


class Deduplicated(typing.NamedTuple):
    """Records kept (one per group) and the others, tagged."""

    unique: beam.PCollection
    duplicates: beam.PCollection


class Similarity(typing.NamedTuple):
    """How a stage scores a duplicate against what its group kept: a
    record of this run or an index entry, each read its own way."""

    of_record: Callable[[dict], Any]  # what a record is compared by
    of_entry: Callable[[IndexEntry], Any]  # the same, from an index entry
    between: Callable[[Any, Any], float]  # (kept's, duplicate's) -> score


# Exact duplicates are identical once normalised.
SAME_TEXT = Similarity(lambda record: None, lambda entry: None,
                       lambda kept, duplicate: 1.0)
# Lexical duplicates: the estimated Jaccard of their MinHash signatures.
MINHASH_JACCARD = Similarity(lambda record: record[MINHASH],
                             lambda entry: entry.signature, estimated_jaccard)


def co_group(label: str, keyed: beam.PCollection,
             index: beam.PCollection | None) -> beam.PCollection:
    """`(key, record)` pairs and, when there is an index, `(key, entry)`
    pairs -> `(key, {"records": [...], "index": [...]})`: a tagged
    `CoGroupByKey` (`records_and_entries` reads a group). Call inside a
    composite's `expand`: `label` is local to it."""
    tagged = {_RECORDS: keyed}
    if index is not None:
        tagged[_INDEX] = index
    return tagged | label >> beam.CoGroupByKey()


def records_and_entries(grouped: dict) -> tuple[list, list]:
    """A `co_group`'s records of this run and index entries, apart."""
    return grouped[_RECORDS], grouped.get(_INDEX, [])


def split_group(records: Iterable[dict], entries: Iterable[IndexEntry],
                kind: DuplicateKind, similarity: Similarity
                ) -> Iterator[beam.pvalue.TaggedOutput | dict]:
    """Yields the kept record, then the others tagged as its duplicates.

    The earliest of `entries` (index entries in the group: kept by earlier
    runs) keeps the group when there is one, and is not yielded: it is not
    a record of this run. Else `representative_order` chooses the record.
    """
    records = sorted(records, key=representative_order)
    entries = sorted(entries, key=lambda entry: entry.node)
    if entries:
        keep = entries[0]
        kept = similarity.of_entry(keep)
        of = {DUPLICATE_OF: keep.id, DUPLICATE_OF_RUN: keep.run}
    else:
        keep, records = records[0], records[1:]
        kept = similarity.of_record(keep)
        of = {DUPLICATE_OF: keep[ID]}
        yield keep
    for record in records:
        yield beam.pvalue.TaggedOutput(_DUPLICATES_OUTPUT, {
            **record, **of,
            SIMILARITY: similarity.between(kept, similarity.of_record(record)),
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
        index = None
        if self._against is not None:
            index = self._against | "KeyIndex" >> beam.Map(
                lambda entry: (entry.exact_key, entry))
        return _split_groups(co_group("Group", keyed, index),
                             DuplicateKind.EXACT, SAME_TEXT)


class LexicalDuplicates(beam.PTransform):
    """Groups near-identical texts: MinHash LSH, verified, made transitive.

    Args:
        config: shingles, permutations, bands x rows and the estimated
            Jaccard a candidate pair needs to be an edge.
        max_all_pairs: a bucket with more records than this (boilerplate
            shared by thousands of texts) is compared as a star around its
            first member instead of all pairs, bounding the work at O(n).
        against: index entries made with the same MinHash settings.
        keep_signatures: records leave with the signature computed here
            (`MINHASH`, a uint32 array) for later stages (the index entries
            of the records kept), to drop before output
            (`without_working_fields`) as embeddings are; else without.
    """

    def __init__(self, config: MinHashConfig = MinHashConfig(),
                 max_all_pairs: int = 200,
                 against: beam.PCollection | None = None,
                 keep_signatures: bool = False):
        super().__init__()
        self._hasher = MinHasher(config)
        self._threshold = config.threshold
        self._max_all_pairs = max_all_pairs
        self._against = against
        self._keep_signatures = keep_signatures

    def expand(self, records):
        hasher, threshold = self._hasher, self._threshold
        max_all_pairs = self._max_all_pairs
        signed_records = (
            records
            # Signatures and band keys a batch at a time: vectorised.
            | "Batch" >> beam.BatchElements(min_batch_size=64,
                                            max_batch_size=256)
            | "Sign" >> beam.FlatMap(_signed_and_banded, hasher)
            .with_outputs(_BANDS_OUTPUT, main="records"))
        index = None
        if self._against is not None:
            index = self._against | "IndexBandKeys" >> beam.FlatMap(
                _index_band_keys).with_output_types(typing.Any)
        edges = (
            co_group("Bucket", signed_records[_BANDS_OUTPUT], index)
            | "Candidates" >> beam.FlatMapTuple(
                lambda _, grouped: _candidate_pairs(
                    *records_and_entries(grouped), max_all_pairs))
            | "Verify" >> beam.Filter(
                lambda pair: estimated_jaccard(pair[0][1], pair[1][1])
                >= threshold)
            | "Edge" >> beam.Map(lambda pair: tuple(sorted(
                (pair[0][0], pair[1][0]))))
            | "DistinctEdges" >> beam.Distinct())
        split = split_by_edges(signed_records.records, edges,
                               DuplicateKind.LEXICAL, MINHASH_JACCARD,
                               self._against)
        if self._keep_signatures:
            return split
        return Deduplicated(
            split.unique | "UnsignUnique" >> beam.Map(_unsigned),
            split.duplicates | "UnsignDuplicates" >> beam.Map(_unsigned))


def split_by_edges(records: beam.PCollection, edges: beam.PCollection,
                   kind: DuplicateKind, similarity: Similarity,
                   against: beam.PCollection | None = None
                   ) -> Deduplicated:
    """Groups records along `(node, node)` edges (`grouping.node`),
    transitively; keeps one each (an index entry, if the group has one).

    Call inside a composite's `expand` (its labels are local to it).
    `similarity` fills each duplicate's `similarity`.
    """
    groups = beam.pvalue.AsDict(
        edges | "Edges" >> beam.combiners.ToList()
        | "Components" >> beam.FlatMap(connected_components))
    keyed = records | "KeyByGroup" >> beam.Map(
        lambda r, group_of: (group_of.get(node(r), node(r)), r),
        group_of=groups)
    index = None
    if against is not None:
        # A fusion break: the index's other consumers make `groups`, so a
        # runner fusing this step with them would wait on itself.
        index = (against | "Apart" >> beam.Reshuffle()
                 | "IndexInGroups" >> beam.FlatMap(
                     lambda e, group_of: ([(group_of[e.node], e)]
                                          if e.node in group_of else []),
                     group_of=groups))
    return _split_groups(co_group("Group", keyed, index), kind, similarity)


def _split_groups(grouped, kind: DuplicateKind,
                  similarity: Similarity) -> Deduplicated:
    """`co_group`'s groups -> the record each keeps, and its duplicates."""
    split = grouped | "Split" >> beam.FlatMapTuple(
        lambda _, members: split_group(*records_and_entries(members), kind,
                                       similarity)
    ).with_outputs(_DUPLICATES_OUTPUT, main="unique")
    return Deduplicated(split.unique, split[_DUPLICATES_OUTPUT])


def _signed_and_banded(batch, hasher):
    """Each record of a batch with its signature (`MINHASH`), and, tagged
    `_BANDS_OUTPUT`, `((band, hash), (node, signature))` for each band."""
    batch = signed(batch, hasher)
    hashes = hasher.band_hashes([r[MINHASH] for r in batch]).tolist()
    for record, row in zip(batch, hashes, strict=True):
        yield record
        for band, key in enumerate(row):
            yield beam.pvalue.TaggedOutput(
                _BANDS_OUTPUT, ((band, key), (node(record), record[MINHASH])))


def _unsigned(record: dict) -> dict:
    return {k: v for k, v in record.items() if k != MINHASH}


def _index_band_keys(entry):
    """`_keyed_by_band` for an index entry, from its stored band hashes."""
    for band, key in enumerate(entry.bands.tolist()):
        yield (band, key), (entry.node, entry.signature)


def _candidate_pairs(new, old, max_all_pairs):
    """Pairs to verify in one LSH bucket: this run's records (`new`) with
    each other and with the index's entries (`old`), never two index
    entries."""
    new, old = list(new), list(old)
    if len(new) + len(old) <= max_all_pairs:
        return itertools.chain(itertools.combinations(new, 2),
                               itertools.product(new, old))
    Metrics.counter("LexicalDuplicates", "star_buckets").inc()
    new.sort(key=lambda item: item[0])
    return ((new[0], other) for other in new[1:] + old) if new else ()
