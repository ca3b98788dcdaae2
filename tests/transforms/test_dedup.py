import json
import os
import random

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that
from apache_beam.testing.util import equal_to
from hypothesis import given
from hypothesis import strategies as st

from embgemma_keras.config import MinHashConfig
from embgemma_keras.dedup.grouping import connected_components
from embgemma_keras.dedup.minhash import MinHasher
from embgemma_keras.dedup.minhash import normalize
from embgemma_keras.records.schema import MINHASH
from transforms.dedup.exact_and_lexical import ExactDuplicates
from transforms.dedup.exact_and_lexical import LexicalDuplicates
from transforms.dedup.exact_and_lexical import UniqueIds

BASE = ("the quarterly report shows that revenue grew by twelve percent "
        "while costs stayed flat across all regions")
RECORDS = [
    {"id": "a", "text": BASE},
    {"id": "b", "text": "  THE quarterly report shows that revenue grew by "
                        "twelve percent while costs stayed flat across all "
                        "regions "},
    {"id": "c", "text": BASE.replace("twelve", "twelv")},  # typo
    {"id": "d", "text": BASE + " and beyond"},  # insertion
    {"id": "e", "text": "see you at lunch tomorrow, bring the documents"},
    {"id": "f", "text": "an entirely different sentence about planets"},
]


def test_exact_duplicates_after_normalisation():
    with TestPipeline() as p:
        result = p | beam.Create(RECORDS) | ExactDuplicates()
        assert_that(result.duplicates | beam.Map(
            lambda r: (r["id"], r["duplicate_of"], r["kind"],
                       r["similarity"])),
            equal_to([("a", "b", "exact", 1.0)]), label="dups")
        # The longest text is kept (b has extra spaces), the rest stay.
        assert_that(result.unique | beam.Map(lambda r: r["id"]),
                    equal_to(["b", "c", "d", "e", "f"]), label="unique")


@pytest.mark.slow
def test_lexical_duplicates_group_near_identical_texts_transitively():
    with TestPipeline() as p:
        result = p | beam.Create(RECORDS) | LexicalDuplicates()
        assert_that(result.duplicates | beam.Map(
            lambda r: (r["id"], r["duplicate_of"], r["kind"])),
            equal_to([("a", "d", "lexical"), ("b", "d", "lexical"),
                      ("c", "d", "lexical")]), label="dups")
        assert_that(result.unique | beam.Map(lambda r: r["id"]),
                    equal_to(["d", "e", "f"]), label="unique")


@pytest.mark.slow
def test_grouping_does_not_depend_on_order_or_worker_count(tmp_path):
    records = []
    for i in range(30):
        words = BASE.split()
        random.Random(i).shuffle(words)
        text = " ".join(words)
        records += [{"id": f"{i}-x", "text": text},
                    {"id": f"{i}-y", "text": text + " ok"}]

    def groups(order_seed, options):
        shuffled = records[:]
        random.Random(order_seed).shuffle(shuffled)
        out = tmp_path / f"run{order_seed}"
        pipeline = beam.Pipeline(options=options)
        result = pipeline | beam.Create(shuffled) | LexicalDuplicates()
        _ = (result.duplicates
             | beam.Map(lambda r: f"{r['id']} {r['duplicate_of']}")
             | beam.io.WriteToText(str(out)))
        pipeline.run().wait_until_finish()
        return sorted(line for path in tmp_path.glob(f"run{order_seed}*")
                      for line in path.read_text().splitlines())

    single = groups(1, PipelineOptions())
    multi = groups(2, PipelineOptions(direct_num_workers=2,
                                      direct_running_mode="multi_processing"))
    assert single == multi
    assert len(single) >= 30  # every "-x" record duplicates its "-y"


@pytest.mark.slow
def test_every_record_leaves_exactly_once():
    records = RECORDS * 1 + [{"id": f"n{i}", "text": f"note {i} " * 5}
                             for i in range(20)]
    with TestPipeline() as p:
        result = p | beam.Create(records) | LexicalDuplicates()
        ids = ((result.unique, result.duplicates) | beam.Flatten()
               | beam.Map(lambda r: r["id"]))
        assert_that(ids, equal_to([r["id"] for r in records]))


@given(st.lists(st.tuples(st.integers(0, 30), st.integers(0, 30)),
                max_size=60))
def test_components_are_an_equivalence_relation(edges):
    group = dict(connected_components(edges))
    for a, b in edges:
        assert group[a] == group[b]
    # Each group is named by its smallest member.
    for node, root in group.items():
        assert root <= node and group[root] == root


@given(st.lists(st.tuples(st.integers(0, 30), st.integers(0, 30)),
                max_size=60), st.randoms(use_true_random=False))
def test_components_do_not_depend_on_edge_order(edges, rnd):
    shuffled = [(b, a) for a, b in edges]
    rnd.shuffle(shuffled)
    assert dict(connected_components(edges)) == dict(
        connected_components(shuffled))


def test_an_id_reused_for_another_text_is_a_dead_letter():
    records = [{"id": "a", "text": "short"}, {"id": "a", "text": "short"},
               {"id": "a", "text": "the longer text is kept"},
               {"id": "b", "text": "alone"}]
    with TestPipeline() as p:
        result = p | beam.Create(records) | UniqueIds()
        assert_that(result.output | beam.Map(lambda r: (r["id"], r["text"])),
                    equal_to([("a", "the longer text is kept"),
                              ("b", "alone")]), label="kept")
        assert_that(result.dead_letters | beam.Map(lambda d: d["stage"]),
                    equal_to(["ids", "ids"]), label="refused")


class _FailFirstRun(beam.DoFn):
    """Fails on one record the first time the pipeline runs."""

    def __init__(self, mark):
        self._mark = mark

    def process(self, record):
        if record["id"] == "n7" and not os.path.exists(self._mark):
            open(self._mark, "w").close()
            raise RuntimeError("injected fault")
        yield record


@pytest.mark.slow
def test_a_failed_multi_process_run_leaves_no_output_and_a_rerun_is_exact(
        tmp_path, monkeypatch):
    # Beam's multi-process runner does not retry a failed bundle: the run
    # fails. It must leave no partial output behind, and the rerun must
    # give every record exactly once.
    records = RECORDS + [{"id": f"n{i}", "text": f"note {i} " * 5}
                         for i in range(30)]

    def run(out, **options):
        with beam.Pipeline(options=PipelineOptions(**options)) as p:
            result = (p | beam.Create(records) | ExactDuplicates()).unique | (
                "Fault" >> beam.ParDo(_FailFirstRun(str(tmp_path / "mark"))))
            _ = (result | LexicalDuplicates()).unique | beam.Map(
                json.dumps) | beam.io.WriteToText(str(tmp_path / out))
        return sorted(json.loads(line)["id"]
                      for path in tmp_path.glob(f"{out}*")
                      for line in path.read_text().splitlines())

    # Worker processes unpickle _FailFirstRun from tests.transforms.
    root = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [root, os.environ.get("PYTHONPATH", "")]))
    multi = dict(direct_num_workers=2, direct_running_mode="multi_processing")
    with pytest.raises(Exception, match="injected fault"):
        run("out", **multi)
    assert not list(tmp_path.glob("out*"))
    ids = run("out", **multi)
    assert len(ids) == len(set(ids)) and "n7" in ids
    assert ids == run("single")


def test_lexical_duplicates_keep_their_signatures_only_when_asked():
    """The signature is computed once and, when asked, carried on for the
    later stages; else records leave as they came, tagged."""
    hasher = MinHasher(MinHashConfig())

    def signed_ok(record):
        expected = hasher.signature(normalize(record["text"]))
        return bool((record[MINHASH] == expected).all())

    with TestPipeline() as p:
        records = p | beam.Create(RECORDS)
        plain = records | "Plain" >> LexicalDuplicates()
        kept = records | "Kept" >> LexicalDuplicates(keep_signatures=True)
        assert_that(
            (plain.unique, plain.duplicates) | "AllPlain" >> beam.Flatten()
            | "PlainSigned" >> beam.Map(lambda r: MINHASH in r),
            equal_to([False] * len(RECORDS)), label="plain")
        assert_that(
            (kept.unique, kept.duplicates) | "AllKept" >> beam.Flatten()
            | "KeptSigned" >> beam.Map(signed_ok),
            equal_to([True] * len(RECORDS)), label="kept")

