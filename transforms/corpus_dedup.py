"""The corpus deduplication graph of `dedup_corpus`.

`DeduplicateCorpus` runs the detectors cheapest first (exact, lexical, then
semantic on what survives, so only survivors are embedded) over records;
`DeduplicateFiles` wraps it with reading, the three outputs and the report:

```python
report = pipeline | DeduplicateFiles("in/*.jsonl", "out", DedupConfig(),
                                     handler)
```
"""

from __future__ import annotations

import json
import typing

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from embgemma_keras.config import DedupConfig
from embgemma_keras.dedup_report import build_report
from embgemma_keras.dedup_report import render_html
from embgemma_keras.minhash import MinHasher
from embgemma_keras.progress import DUPLICATES
from embgemma_keras.progress import say
from embgemma_keras.schema import DEAD_LETTERS
from embgemma_keras.schema import DUPLICATE_OF
from embgemma_keras.schema import ID
from embgemma_keras.schema import KIND
from embgemma_keras.schema import SIMILARITY
from embgemma_keras.schema import TEXT
from embgemma_keras.schema import Vector
from embgemma_keras.schema import without_embeddings
from transforms.dedup import ExactDuplicates
from transforms.dedup import LexicalDuplicates
from transforms.dedup import UniqueIds
from transforms.embed import EmbedRecords
from transforms.files import ReadRecords
from transforms.files import write_jsonl
from transforms.model_handler import EmbeddingGemmaModelHandler
from transforms.semantic_dedup import SemanticDuplicates

EXAMPLES_PER_KIND = 5


class CorpusDuplicates(typing.NamedTuple):
    """Every record lands in exactly one of the first three."""

    unique: beam.PCollection
    duplicates: beam.PCollection  # with duplicate_of, similarity, kind
    dead_letters: beam.PCollection
    embedded: beam.PCollection  # one element: how many were embedded


class DeduplicateCorpus(beam.PTransform):
    """Records -> `CorpusDuplicates`: exact, lexical, then semantic.

    Args:
        config: the detectors' settings; `config.semantic` needs `handler`.
        handler: the model handler for the semantic stage.

    A `duplicate_of` may name a record that a later stage found to be a
    duplicate itself: follow the chain to the kept record.
    """

    def __init__(self, config: DedupConfig = DedupConfig(),
                 handler: EmbeddingGemmaModelHandler | None = None):
        super().__init__()
        if config.semantic and handler is None:
            raise ValueError("the semantic stage needs a model handler; "
                             "pass one, or DedupConfig(semantic=False)")
        self._config = config
        self._handler = handler

    def expand(self, records) -> CorpusDuplicates:
        config = self._config
        ids = records | "UniqueIds" >> UniqueIds()
        exact = ids.output | "Exact" >> ExactDuplicates(
            casefold=config.case_fold)
        lexical = exact.unique | "Lexical" >> LexicalDuplicates(config.lexical)
        unique, duplicates = lexical.unique, [exact.duplicates,
                                              lexical.duplicates]
        dead = [ids.dead_letters]
        if not config.semantic:
            embedded = records.pipeline | "NoEmbeddings" >> beam.Create([0])
        else:
            embedded = lexical.unique | "Embed" >> EmbedRecords(
                self._handler, {Vector.SIMILARITY: "sentence_similarity"})
            semantic = embedded.output | "Semantic" >> SemanticDuplicates(
                config.similar)
            unique = semantic.unique | "StripKept" >> beam.Map(
                without_embeddings)
            duplicates.append(semantic.duplicates | "StripDuplicates" >> (
                beam.Map(without_embeddings)))
            dead.append(embedded.dead_letters)
            embedded = embedded.output | "CountEmbedded" >> (
                beam.combiners.Count.Globally())
        return CorpusDuplicates(
            unique, duplicates | "AllDuplicates" >> beam.Flatten(),
            dead | "AllDeadLetters" >> beam.Flatten(), embedded)


class DeduplicateFiles(beam.PTransform):
    """Reads files, deduplicates, writes `unique-*`, `duplicates-*`,
    `dead_letters-*` and `report.json`/`report.html` to `output`.

    Applied to the pipeline; returns the PCollection of the report.
    """

    def __init__(self, pattern: str, output: str,
                 config: DedupConfig = DedupConfig(),
                 handler: EmbeddingGemmaModelHandler | None = None,
                 text_column: str = TEXT):
        super().__init__()
        self._read = ReadRecords(pattern, text_column)
        self._dedup = DeduplicateCorpus(config, handler)
        self._output = output
        self._settings = _settings(config, handler)

    def expand(self, pipeline):
        read = pipeline | "Read" >> self._read
        result = read.output | "Dedup" >> self._dedup
        dead = ((read.dead_letters, result.dead_letters)
                | "DeadLetters" >> beam.Flatten())
        out = self._output
        write_jsonl(result.unique, FileSystems.join(out, "unique"), "Unique")
        write_jsonl(result.duplicates, FileSystems.join(out, "duplicates"),
                    "Duplicates", count_as=DUPLICATES)
        write_jsonl(dead, FileSystems.join(out, "dead_letters"),
                    "DeadLetters", count_as=DEAD_LETTERS)
        return self._report(pipeline, read, result, dead)

    def _report(self, pipeline, read, result, dead):
        out, settings = self._output, self._settings
        duplicates = result.duplicates

        def count(pcoll, label):
            return beam.pvalue.AsSingleton(
                pcoll | label >> beam.combiners.Count.Globally())

        summaries = duplicates | "Summaries" >> beam.Map(
            lambda r: (r[KIND], r[SIMILARITY], r[DUPLICATE_OF]))
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
        examples = samples | "Pair" >> beam.Map(
            lambda r, texts: (r[KIND], r[SIMILARITY], r[TEXT],
                              texts.get(r[DUPLICATE_OF], "")),
            texts=beam.pvalue.AsDict(kept_texts))
        return (
            pipeline | "One" >> beam.Create([None])
            | "Report" >> beam.Map(
                lambda _, dups, exs, n_in, n_unique, n_dead, n_embedded:
                _write_report(out, build_report(
                    {"input": n_in, "unique": n_unique,
                     "dead_letters": n_dead, "embedded": n_embedded},
                    dups, exs, settings)),
                dups=beam.pvalue.AsList(summaries),
                exs=beam.pvalue.AsList(examples),
                n_in=count((read.output, read.dead_letters)
                           | "AllIn" >> beam.Flatten(), "CountIn"),
                n_unique=count(result.unique, "CountUnique"),
                n_dead=count(dead, "CountDead"),
                n_embedded=beam.pvalue.AsSingleton(result.embedded)))


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


def _write_report(directory, report):
    for name, content in (("report.json", json.dumps(report, indent=2,
                                                     ensure_ascii=False)),
                          ("report.html", render_html(report))):
        with FileSystems.create(FileSystems.join(directory, name)) as f:
            f.write(content.encode("utf-8"))
    say(json.dumps(report["counts"], indent=2))
    return report
