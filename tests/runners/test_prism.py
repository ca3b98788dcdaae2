"""Jobs on Prism, Beam's portable runner: the same outputs as on the
DirectRunner, every record accounted for (tiny model).

stream_tag is not here yet: in one of four runs on Prism it lost one of
213 records that the DirectRunner tagged (issue #13)."""

import json
import pathlib

import pytest

from embgemma_keras import load_centroids
from embgemma_keras import load_head
from pipelines import dedup_corpus
from pipelines import fit_clusters
from pipelines import train_classifier
from tests.helpers import SPAM_ROWS
from tests.helpers import read_outputs
from tests.helpers import write_tsv

pytestmark = pytest.mark.runners

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples"
BAD_LINES = [b"{not json", b'{"text": ""}', b'{"id": "x", "text": 7}']


@pytest.fixture
def corpus(tmp_path):
    """The sample corpus (210 records) with three bad lines."""
    path = tmp_path / "corpus.jsonl"
    records = (EXAMPLES / "corpus.jsonl").read_bytes().rstrip(b"\n")
    path.write_bytes(records + b"\n" + b"\n".join(BAD_LINES) + b"\n")
    return path


def _lines(path):
    return len(path.read_bytes().splitlines())


def test_dedup_corpus_on_prism_matches_the_direct_runner(
        tiny_preset, corpus, tmp_path, on_prism):
    outputs = {}
    for runner, flags in (("direct", []), ("prism", on_prism)):
        out = tmp_path / runner
        dedup_corpus.main(["--input", str(corpus), "--output", str(out),
                           "--model", tiny_preset, *flags])
        outputs[runner] = (
            sorted(r["id"] for r in read_outputs(out, "unique")),
            sorted((r["id"], r["duplicate_of"], r["kind"])
                   for r in read_outputs(out, "duplicates")),
            sorted(d["error"] for d in read_outputs(out, "dead_letters")))
    assert outputs["prism"] == outputs["direct"]
    unique, duplicates, dead = outputs["prism"]
    assert len(unique) + len(duplicates) + len(dead) == _lines(corpus)
    assert len(dead) == len(BAD_LINES) and duplicates


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
