"""Jobs on Prism, Beam's portable runner: the same outputs as on the
DirectRunner, every record accounted for (tiny model)."""

import json

import pytest

from embgemma_keras import load_centroids
from embgemma_keras import load_head
from pipelines import fit_clusters
from pipelines import train_classifier
from tests.helpers import SPAM_ROWS
from tests.helpers import read_outputs
from tests.helpers import write_tsv
from tests.runners.conftest import BAD_LINES
from tests.runners.conftest import assert_tags_agree
from tests.runners.conftest import lines

pytestmark = pytest.mark.runners


def test_dedup_corpus_on_prism_matches_the_direct_runner(
        run_dedup, direct_dedup, corpus, on_prism):
    on_prism_verdicts = run_dedup(*on_prism)
    assert on_prism_verdicts == direct_dedup
    unique, duplicates, dead = on_prism_verdicts
    assert len(unique) + len(duplicates) + len(dead) == lines(corpus)
    assert len(dead) == len(BAD_LINES) and duplicates


def test_stream_tag_on_prism_agrees_with_the_direct_runner(
        run_tag, direct_tags, corpus, on_prism):
    # Three runs: Prism's dynamic splits once lost a record one run in
    # fifteen here (see local_runners.prism).
    for _ in range(3):
        assert_tags_agree(run_tag(*on_prism), direct_tags, corpus)


def test_train_classifier_and_fit_clusters_on_prism(
        tiny_preset, tiny_model, tmp_path, on_prism):
    train = write_tsv(tmp_path / "train.tsv", SPAM_ROWS, [b"\tno label"])
    head_dir = tmp_path / "head"
    train_classifier.main(["--train", train, "--output", str(head_dir),
                           "--model", tiny_preset, "--folds", "2",
                           *on_prism])
    metrics = json.loads((head_dir / "metrics.json").read_text())
    assert metrics["train_examples"] == len(SPAM_ROWS)
    assert len(read_outputs(head_dir, "dead_letters")) == 1
    assert load_head(head_dir, expect=tiny_model.identity).labels == [
        "ham", "spam"]

    clusters_dir = tmp_path / "clusters"
    fit_clusters.main(["--input", train, "--output", str(clusters_dir),
                       "--model", tiny_preset, "--k", "2", *on_prism])
    metrics = json.loads((clusters_dir / "metrics.json").read_text())
    # The TSV's header names "label" and "text": every row is a record.
    assert metrics["records"] == len(SPAM_ROWS) + 1
    assert load_centroids(clusters_dir).centroids.shape == (2, 768)
