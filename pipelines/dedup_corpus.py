"""Deduplicate a corpus: exact, then lexical, then semantic duplicates.

    python -m pipelines.dedup_corpus --input GLOB --output DIR --model M \\
        [--lexical_threshold 0.7] [--semantic_threshold 0.9] [--no_semantic]

Reads JSONL, CSV, TSV or plain-text lines (local paths or gs://) and writes
to DIR:

- `unique-*.jsonl`: the records kept, as they came in;
- `duplicates-*.jsonl`: every other record, with `duplicate_of` (the id of
  the record it duplicates; that record may itself be a duplicate found by
  a later stage, so follow the chain to the kept record), `similarity` and
  `kind` (exact, lexical or semantic);
- `dead_letters-*.jsonl`: lines that could not be parsed, and records
  reusing another record's id for a different text, each with the reason;
- `report.json` and `report.html`: counts per kind, group sizes, similarity
  histograms with the thresholds, example pairs, the settings used.

Cheapest first: only records that survive the exact and lexical stages are
embedded. Every input record lands in exactly one of unique, duplicates or
dead letters.
"""

import json

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines.dedup_report import build_report
from pipelines.dedup_report import render_html
from pipelines.files import ReadRecords
from pipelines.files import write_jsonl
from pipelines.jobs import add_switch
from pipelines.jobs import model_handler
from pipelines.jobs import model_identity
from pipelines.jobs import run
from transforms import EMBEDDINGS
from transforms import EmbedRecords
from transforms.dedup import ExactDuplicates
from transforms.dedup import LexicalDuplicates
from transforms.dedup import UniqueIds
from transforms.minhash import MinHasher
from transforms.semantic_dedup import SemanticDuplicates

EXAMPLES_PER_KIND = 5


# Flags the job cannot run without (checked by jobs.run).
REQUIRED = ("input", "output")


class DedupCorpusOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
        add_switch(parser, "no_case_fold",
                   "Exact stage: keep case differences.")
        parser.add_argument("--shingles", default="char:5",
                            help="Lexical stage: 'char:N' or 'word:N'.")
        parser.add_argument("--num_perm", type=int, default=128,
                            help="Lexical stage: MinHash permutations.")
        parser.add_argument("--bands", type=int, default=16,
                            help="Lexical stage: LSH bands (bands x rows = "
                                 "num_perm).")
        parser.add_argument("--rows", type=int, default=8,
                            help="Lexical stage: rows per LSH band.")
        parser.add_argument("--lexical_threshold", type=float, default=0.7,
                            help="Estimated Jaccard for a lexical duplicate.")
        parser.add_argument("--semantic_threshold", type=float, default=0.9,
                            help="Cosine for a semantic duplicate.")
        parser.add_argument("--clusters", type=int, default=100,
                            help="k-means buckets for the semantic stage.")
        add_switch(parser, "no_semantic",
                   "Skip the semantic stage (no model needed).")


def _without_embeddings(record):
    return {k: v for k, v in record.items() if k != EMBEDDINGS}


def build(pipeline, options):
    """Wires the job; returns the PCollection of its report."""
    kind, size = options.shingles.split(":")
    hasher = MinHasher(options.num_perm, options.bands, options.rows, kind,
                       int(size))
    read = pipeline | "Read" >> ReadRecords(options.input,
                                            options.text_column)
    records = read.output | "UniqueIds" >> UniqueIds()
    exact = records.output | "Exact" >> ExactDuplicates(
        casefold=not options.no_case_fold)
    lexical = exact.unique | "Lexical" >> LexicalDuplicates(
        hasher, options.lexical_threshold)
    duplicates = [exact.duplicates, lexical.duplicates]
    dead = [read.dead_letters, records.dead_letters]
    unique = lexical.unique
    embedded_count = pipeline | "NoEmbeddings" >> beam.Create([0])
    if not options.no_semantic:
        handle, _ = model_identity(options.model)
        handler = model_handler(handle, options)
        embedded = lexical.unique | "Embed" >> EmbedRecords(
            handler, prompts={"similarity": "sentence_similarity"})
        semantic = embedded.output | "Semantic" >> SemanticDuplicates(
            options.semantic_threshold, options.clusters)
        unique = semantic.unique | "StripKept" >> beam.Map(
            _without_embeddings)
        duplicates.append(semantic.duplicates | "StripDuplicates" >> beam.Map(
            _without_embeddings))
        dead.append(embedded.dead_letters)
        embedded_count = embedded.output | "CountEmbedded" >> (
            beam.combiners.Count.Globally())
    duplicates = duplicates | "AllDuplicates" >> beam.Flatten()
    dead = dead | "AllDeadLetters" >> beam.Flatten()

    out = options.output
    write_jsonl(unique, FileSystems.join(out, "unique"), "Unique")
    write_jsonl(duplicates, FileSystems.join(out, "duplicates"), "Duplicates")
    write_jsonl(dead, FileSystems.join(out, "dead_letters"), "DeadLetters")

    def count(pcoll, label):
        return beam.pvalue.AsSingleton(
            pcoll | label >> beam.combiners.Count.Globally())

    summaries = duplicates | "Summaries" >> beam.Map(
        lambda r: (r["kind"], r["similarity"], r["duplicate_of"]))
    samples = (duplicates
               | "ByKind" >> beam.Map(lambda r: (r["kind"], r))
               | "Sample" >> beam.combiners.Sample.FixedSizePerKey(
                   EXAMPLES_PER_KIND)
               | "Flat" >> beam.FlatMap(lambda kv: kv[1]))
    wanted = samples | "WantedIds" >> beam.Map(lambda r: r["duplicate_of"])
    kept_texts = (
        (unique, duplicates) | "Everything" >> beam.Flatten()
        | "Wanted" >> beam.Filter(lambda r, ids: r["id"] in set(ids),
                                  ids=beam.pvalue.AsList(wanted))
        | "IdText" >> beam.Map(lambda r: (r["id"], r["text"])))
    examples = samples | "Pair" >> beam.Map(
        lambda r, texts: (r["kind"], r["similarity"], r["text"],
                          texts.get(r["duplicate_of"], "")),
        texts=beam.pvalue.AsDict(kept_texts))
    settings = {
        "exact_normalisation": "NFKC, whitespace collapsed" + (
            "" if options.no_case_fold else ", case-folded"),
        "shingles": options.shingles, "num_perm": options.num_perm,
        "bands": options.bands, "rows": options.rows,
        "lsh_midpoint": round(hasher.threshold, 4),
        "lexical_threshold": options.lexical_threshold,
        "semantic": not options.no_semantic,
        "semantic_threshold": options.semantic_threshold,
        "clusters": options.clusters, "dim": options.dim,
    }
    return (
        pipeline | "One" >> beam.Create([None])
        | "Report" >> beam.Map(
            lambda _, dups, exs, n_in, n_unique, n_dead, n_embedded:
            _write_report(out, build_report(
                {"input": n_in, "unique": n_unique, "dead_letters": n_dead,
                 "embedded": n_embedded}, dups, exs, settings)),
            dups=beam.pvalue.AsList(summaries),
            exs=beam.pvalue.AsList(examples),
            n_in=count((read.output, read.dead_letters)
                       | "AllIn" >> beam.Flatten(), "CountIn"),
            n_unique=count(unique, "CountUnique"),
            n_dead=count(dead, "CountDead"),
            n_embedded=beam.pvalue.AsSingleton(embedded_count)))


def _write_report(directory, report):
    for name, content in (("report.json", json.dumps(report, indent=2,
                                                     ensure_ascii=False)),
                          ("report.html", render_html(report))):
        with FileSystems.create(FileSystems.join(directory, name)) as f:
            f.write(content.encode("utf-8"))
    print(json.dumps(report["counts"], indent=2), flush=True)
    return report


def main(argv=None):
    run(argv, DedupCorpusOptions, REQUIRED, build, __doc__)


if __name__ == "__main__":
    main()
