"""The corpus deduplication graph of `dedup_corpus`.

`DeduplicateCorpus` runs the detectors cheapest first (exact, lexical, then
semantic on what survives, so only survivors are embedded) over records,
and gives every duplicate the id of the record its group kept (`kept_id`);
`DeduplicateFiles` wraps it with reading, the three outputs and the report
(what the run found, and what it was: model, input files, wall time):

```python
report = pipeline | DeduplicateFiles("in/*.jsonl", "out", DedupConfig(),
                                     handler)
```
"""

from __future__ import annotations

import datetime
import json
import time
import typing

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from embgemma_keras.config import DedupConfig
from embgemma_keras.dedup.grouping import node
from embgemma_keras.dedup.grouping import with_kept_id
from embgemma_keras.dedup.minhash import MinHasher
from embgemma_keras.dedup.report import RunTally
from embgemma_keras.dedup.report import build_report
from embgemma_keras.dedup.report import render_html
from embgemma_keras.index.database import DatabaseIndex
from embgemma_keras.index.format import index_entries
from embgemma_keras.progress import DUPLICATES
from embgemma_keras.progress import say
from embgemma_keras.records.schema import DEAD_LETTERS
from embgemma_keras.records.schema import DUPLICATE_OF
from embgemma_keras.records.schema import DUPLICATE_OF_RUN
from embgemma_keras.records.schema import ID
from embgemma_keras.records.schema import KEPT_ID
from embgemma_keras.records.schema import KIND
from embgemma_keras.records.schema import SIMILARITY
from embgemma_keras.records.schema import TEXT
from embgemma_keras.records.schema import Vector
from embgemma_keras.records.schema import without_working_fields
from transforms.dedup.exact_and_lexical import ExactDuplicates
from transforms.dedup.exact_and_lexical import LexicalDuplicates
from transforms.dedup.exact_and_lexical import UniqueIds
from transforms.dedup.semantic import FitBuckets
from transforms.dedup.semantic import SemanticDuplicates
from transforms.dedup.semantic import similarity_vector
from transforms.embedding.embed import EmbedRecords
from transforms.embedding.model_handler import EmbeddingGemmaModelHandler
from transforms.index.lookup import LookUpByKeys
from transforms.index.lookup import LookUpByVectors
from transforms.index.read_commit import CommitIndex
from transforms.index.read_commit import Index
from transforms.index.read_commit import OpenIndex
from transforms.index.read_commit import ReadIndex
from transforms.records.files import ReadRecords
from transforms.records.files import write_jsonl

EXAMPLES_PER_KIND = 5


class CorpusDuplicates(typing.NamedTuple):
    """Every record lands in exactly one of the first three."""

    unique: beam.PCollection
    # with duplicate_of, kept_id, similarity and kind
    duplicates: beam.PCollection
    dead_letters: beam.PCollection
    embedded: beam.PCollection  # one element: how many were embedded
    # With an index: the `IndexEntry` of every record kept, and the
    # centroids the semantic stage bucketed with (None without it).
    index_entries: beam.PCollection | None = None
    centroids: beam.PCollection | None = None


class DeduplicateCorpus(beam.PTransform):
    """Records -> `CorpusDuplicates`: exact, then lexical, then semantic.

    Args:
        config: the detectors' settings; `config.semantic` needs `handler`.
        handler: the model handler for the semantic stage.
        index: a dedup index (`transforms.index.read_commit.open_index`) to
            dedup against too: a record near-duplicating an entry is its
            duplicate (`duplicate_of_run` says which run kept it), and the
            semantic stage buckets with the index's centroids. A directory
            is read whole; a database is looked up, a batch at a time, for
            the entries the run's records may match
            (`transforms.index.lookup`), with the same verdicts.
        run: this run's id: the records it keeps become `index_entries`
            under it. None: the run only reads the index.

    A `duplicate_of` names the record its stage kept, which a later stage
    may have found to be a duplicate itself; `kept_id` names the record
    the group kept in the end (in `unique`, or an index entry): the end of
    that chain. Each record's MinHash signature is computed once (by the
    lexical stage, or against a database by the lookup before the exact
    stage) and serves the index entries too; neither it nor the
    embeddings are in the outputs.
    """

    def __init__(self, config: DedupConfig = DedupConfig(),
                 handler: EmbeddingGemmaModelHandler | None = None,
                 index: Index | None = None, run: str | None = None):
        super().__init__()
        if config.semantic and handler is None:
            raise ValueError("the semantic stage needs a model handler; "
                             "pass one, or DedupConfig(semantic=False)")
        self._config = config
        self._handler = handler
        self._index = index
        self._run = run

    def expand(self, records) -> CorpusDuplicates:
        config, index = self._config, self._index
        ids = records | "UniqueIds" >> UniqueIds()
        checked, against = self._against_records(ids.output)
        exact = checked | "Exact" >> ExactDuplicates(
            casefold=config.case_fold, against=against)
        lexical = exact.unique | "Lexical" >> LexicalDuplicates(
            config.lexical, against=against, keep_signatures=True)
        kept = lexical.unique
        stages = {"Exact": exact.duplicates, "Lexical": lexical.duplicates}
        dead = [ids.dead_letters]
        centroids = None
        if not config.semantic:
            embedded = records.pipeline | "NoEmbeddings" >> beam.Create([0])
        else:
            embedded = lexical.unique | "Embed" >> EmbedRecords(
                self._handler, {Vector.SIMILARITY: "sentence_similarity"})
            centroids = self._centroids(embedded.output)
            semantic = embedded.output | "Semantic" >> SemanticDuplicates(
                config.similar, centroids,
                self._against_embedded(embedded.output, against))
            kept = semantic.unique
            stages["Semantic"] = semantic.duplicates
            dead.append(embedded.dead_letters)
            embedded = embedded.output | "CountEmbedded" >> (
                beam.combiners.Count.Globally())
        entries = None
        if index is not None and self._run is not None:
            entries = kept | "IndexEntries" >> _IndexEntries(
                self._run, config, centroids)
        duplicates = (_with_kept_ids(stages) | "AllDuplicates" >> beam.Flatten()
                      | "StripDuplicates" >> beam.Map(without_working_fields))
        return CorpusDuplicates(
            kept | "StripKept" >> beam.Map(without_working_fields),
            duplicates, dead | "AllDeadLetters" >> beam.Flatten(), embedded,
            entries, centroids)

    def _against_records(self, records):
        """The records (signed, against a database) and the index entries
        the exact and lexical stages compare them with (None: no index)."""
        index = self._index
        if index is None:
            return records, None
        if isinstance(index, OpenIndex):
            return records, records.pipeline | "ReadIndex" >> ReadIndex(index)
        looked_up = records | "LookUpIndex" >> LookUpByKeys(index,
                                                            self._config)
        return looked_up.records, looked_up.entries

    def _against_embedded(self, embedded, against):
        """The entries the semantic stage compares the embedded records
        with: a directory's (`against`), or those a database finds near
        them."""
        if not isinstance(self._index, DatabaseIndex):
            return against
        return embedded | "LookUpIndexVectors" >> LookUpByVectors(
            self._index, self._config.similar.threshold)

    def _centroids(self, embedded):
        """The index's kept centroids, else fitted on this run's records."""
        kept = self._index.centroids() if self._index is not None else None
        if kept is not None:
            return embedded.pipeline | "IndexCentroids" >> beam.Create([kept])
        return (embedded
                | "Vectors" >> beam.Map(lambda r: (node(r),
                                                   similarity_vector(r)))
                | "FitBuckets" >> FitBuckets(self._config.similar))


def _with_kept_ids(stages: dict[str, beam.PCollection]
                   ) -> list[beam.PCollection]:
    """Each stage's duplicates (stage name -> duplicates, in stage order)
    with `kept_id` (`with_kept_id`).

    The last stage's duplicates name the records kept in the end. An
    earlier stage's duplicate names a record its stage kept, which a later
    stage may have flagged: it takes that one's `kept_id`, from a map of
    the later stages' duplicates (id -> kept_id) given as a side input, as
    the lexical stage's id -> group map is.
    """
    resolved = []
    for name, duplicates in reversed(stages.items()):
        kept_later = {}
        if resolved:
            kept_later = beam.pvalue.AsDict(
                resolved | f"FlaggedAfter{name}" >> beam.Flatten()
                | f"KeptAfter{name}" >> beam.Map(
                    lambda r: (r[ID], r[KEPT_ID])))
        resolved.append(duplicates | f"KeptIds{name}" >> beam.Map(
            with_kept_id, kept_later))
    return resolved


class _IndexEntries(beam.PTransform):
    """Kept records (signed by the lexical stage) -> their `IndexEntry`s,
    a batch at a time."""

    def __init__(self, run, config: DedupConfig, centroids):
        super().__init__()
        self._run, self._config, self._centroids = run, config, centroids

    def expand(self, kept):
        run, config = self._run, self._config
        hasher = MinHasher(config.lexical)
        centroids = (beam.pvalue.AsSingleton(self._centroids)
                     if self._centroids is not None else None)
        return (kept
                | "Batch" >> beam.BatchElements(min_batch_size=64,
                                                max_batch_size=512)
                | "Entries" >> beam.FlatMap(
                    lambda batch, centroids: index_entries(
                        batch, run, hasher, config.case_fold, centroids),
                    centroids=centroids))


class DeduplicateFiles(beam.PTransform):
    """Reads files, deduplicates, writes `unique-*`, `duplicates-*`,
    `dead_letters-*` and `report.json`/`report.html` to `output`.

    With `index`, dedups against it too and, with `run` (its name in the
    index), adds the records kept to a new version of it, made current only
    once every output file is written.

    The report says what the run found and what it was: the model and its
    dtype ("no model" without the semantic stage), the input pattern and
    the files it matched, and the wall time from building the graph to the
    report (made once every output is written) with the records read a
    second.

    Applied to the pipeline; returns the PCollection of the report.
    """

    def __init__(self, pattern: str, output: str,
                 config: DedupConfig = DedupConfig(),
                 handler: EmbeddingGemmaModelHandler | None = None,
                 text_column: str = TEXT, index: Index | None = None,
                 run: str | None = None):
        super().__init__()
        self._pattern = pattern
        self._read = ReadRecords(pattern, text_column)
        self._dedup = DeduplicateCorpus(config, handler, index, run)
        self._output = output
        self._index, self._run = index, run
        self._model = handler if config.semantic else None
        self._settings = _settings(config, handler)

    def expand(self, pipeline):
        started = time.time()  # the run's wall time counts from here
        read = pipeline | "Read" >> self._read
        result = read.output | "Dedup" >> self._dedup
        dead = ((read.dead_letters, result.dead_letters)
                | "DeadLetters" >> beam.Flatten())
        out = self._output
        written = [
            write_jsonl(result.unique, FileSystems.join(out, "unique"),
                        "Unique"),
            write_jsonl(result.duplicates, FileSystems.join(out, "duplicates"),
                        "Duplicates", count_as=DUPLICATES),
            write_jsonl(dead, FileSystems.join(out, "dead_letters"),
                        "DeadLetters", count_as=DEAD_LETTERS)]
        version = self._index_version(pipeline, result, written)
        tallies = self._tallies(read, result, dead, written, version)
        settings = self._settings
        if self._index is not None:
            # A database's URL with its password masked.
            settings = {**settings, "index": self._index.where,
                        "run": self._run}
        what_ran = _what_ran(self._pattern, self._model, started)
        return (tallies | "Tallies" >> beam.Flatten()
                | "Tally" >> beam.combiners.ToDict()
                | "AsTally" >> beam.Map(lambda fields: RunTally(**fields))
                | "Report" >> beam.Map(_write_report, out, settings,
                                       what_ran, started))

    def _index_version(self, pipeline, result, written):
        """The index version the run leaves current (one element), or None.

        The new version is committed only after every output is written,
        so a run that dies earlier leaves no trace in the index.
        """
        index = self._index
        if index is None:
            return None
        if self._run is None:
            return pipeline | "IndexVersion" >> beam.Create([index.version])
        outputs = written | "Written" >> beam.Flatten()
        return result.index_entries | "CommitIndex" >> CommitIndex(
            index, self._run, result.centroids, outputs)

    def _tallies(self, read, result, dead, written, version
                 ) -> list[beam.PCollection]:
        """One `(RunTally field, value)` element per field of the report."""
        duplicates = result.duplicates
        tallies = [
            _counted("input", (read.output, read.dead_letters)
                     | "AllIn" >> beam.Flatten()),
            _counted("unique", result.unique),
            _counted("dead_letters", dead),
            _tally("embedded", result.embedded),
            _listed("duplicates", duplicates | "Summaries" >> beam.Map(
                lambda r: (r[KIND], r[SIMILARITY], r[KEPT_ID]))),
            _listed("examples", _examples(result)),
            # Counted once they are all written: the report comes last.
            _counted("output_files", written | "AllWritten" >> beam.Flatten()),
        ]
        if self._index is not None:
            tallies += [
                _counted("duplicates_of_index", duplicates | "OfIndex" >> (
                    beam.Filter(lambda r: DUPLICATE_OF_RUN in r))),
                _tally("index_version", version)]
        return tallies


def _tally(field: str, pcoll: beam.PCollection) -> beam.PCollection:
    """A one-element PCollection as `(field, its element)`."""
    return pcoll | f"Tally {field}" >> beam.Map(lambda value: (field, value))


def _counted(field: str, pcoll: beam.PCollection) -> beam.PCollection:
    """`(field, how many elements pcoll has)`."""
    return _tally(field, pcoll | f"Count {field}" >> (
        beam.combiners.Count.Globally()))


def _listed(field: str, pcoll: beam.PCollection) -> beam.PCollection:
    """`(field, a list of pcoll's elements)`."""
    return _tally(field, pcoll | f"List {field}" >> beam.combiners.ToList())


def _examples(result: CorpusDuplicates) -> beam.PCollection:
    """A few duplicates of each kind, as `(kind, similarity, text, the
    text of the record it duplicates)`."""
    duplicates = result.duplicates
    samples = (duplicates
               | "ByKind" >> beam.Map(lambda r: (r[KIND], r))
               | "Sample" >> beam.combiners.Sample.FixedSizePerKey(
                   EXAMPLES_PER_KIND)
               | "Flat" >> beam.FlatMap(lambda kv: kv[1]))
    wanted = samples | "WantedIds" >> beam.Map(lambda r: r[DUPLICATE_OF])
    kept_texts = (
        (result.unique, duplicates) | "Everything" >> beam.Flatten()
        | "Wanted" >> beam.Filter(lambda r, ids: r[ID] in set(ids),
                                  ids=beam.pvalue.AsList(wanted))
        | "IdText" >> beam.Map(lambda r: (r[ID], r[TEXT])))
    return samples | "Pair" >> beam.Map(
        lambda r, texts: (r[KIND], r[SIMILARITY], r[TEXT], _kept_text(
            r, texts)), texts=beam.pvalue.AsDict(kept_texts))


def _kept_text(duplicate: dict, texts: dict) -> str:
    """The text of the record a duplicate names (an index keeps no text)."""
    if DUPLICATE_OF_RUN in duplicate:
        return (f"(record {duplicate[DUPLICATE_OF]!r} kept by run "
                f"{duplicate[DUPLICATE_OF_RUN]}, in the index)")
    return texts.get(duplicate[DUPLICATE_OF], "")


def _settings(config: DedupConfig, handler) -> dict:
    """The settings a report states, from the config that ran."""
    lexical = config.lexical
    return {
        "exact_normalisation": "NFKC, whitespace collapsed" + (
            ", case-folded" if config.case_fold else ""),
        "shingles": lexical.shingles, "num_perm": lexical.num_perm,
        "bands": lexical.bands, "rows": lexical.rows,
        "lsh_midpoint": round(MinHasher(lexical).lsh_midpoint, 4),
        "lexical_threshold": lexical.threshold,
        "semantic": config.semantic,
        "semantic_threshold": config.similar.threshold,
        "clusters": config.similar.clusters,
        "dim": handler.dim if handler is not None else None,
    }


def _what_ran(pattern: str, handler: EmbeddingGemmaModelHandler | None,
              started: float) -> dict:
    """What a report says the run was: its model and dtype ("no model"
    when it embeds nothing), its input pattern and the files it matched,
    and when it started (UTC)."""
    matched = FileSystems.match([pattern])[0].metadata_list
    model, dtype = "no model", None
    if handler is not None:
        # The handler keeps them private; None: EMBGEMMA_MODEL on workers.
        model = handler.model_handle or "$EMBGEMMA_MODEL"
        dtype = handler.dtype
    return {
        "model": model, "dtype": dtype, "input_pattern": pattern,
        "input_files": sorted(metadata.path for metadata in matched),
        "started": datetime.datetime.fromtimestamp(
            started, datetime.timezone.utc).isoformat(timespec="seconds")}


def _write_report(tally: RunTally, directory: str, settings: dict,
                  what_ran: dict, started: float) -> dict:
    """Writes report.json and report.html to `directory` and prints the
    counts; returns the report.

    Args:
        tally: what the run gathered (`RunTally`).
        directory: the run's output directory (local or gs://).
        settings: the settings the report states.
        what_ran: the run's model, input and start (`_what_ran`).
        started: the run's start (`time.time()`), for its wall time.
    """
    report = build_report(tally, settings, what_ran, time.time() - started)
    for name, content in (("report.json", json.dumps(report, indent=2,
                                                     ensure_ascii=False)),
                          ("report.html", render_html(report))):
        with FileSystems.create(FileSystems.join(directory, name)) as f:
            f.write(content.encode("utf-8"))
    say(json.dumps(report["counts"], indent=2))
    return report
