"""Jobs on Prism, Beam's portable runner: the same outputs as on the
DirectRunner, every record accounted for (tiny model)."""

import json

import pytest

from embgemma_keras import load_centroids
from embgemma_keras import load_head
from embgemma_keras.config import StreamDedupConfig
from pipelines import dedup_corpus
from pipelines import fit_clusters
from pipelines import stream_tag
from pipelines import train_classifier
from tests.helpers import SPAM_ROWS
from tests.helpers import read_outputs
from tests.helpers import run_events
from tests.helpers import write_tsv
from tests.runners.conftest import BAD_LINES
from tests.runners.conftest import STREAM_EVENTS
from tests.runners.conftest import STREAM_HORIZON_SECS
from tests.runners.conftest import STREAM_VERDICTS
from tests.runners.conftest import assert_tags_agree
from tests.runners.conftest import lines
from tests.runners.conftest import stream_verdicts
from tests.runners.conftest import tag_verdicts
from transforms.dedup.streaming import StreamingNearDuplicates

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


def test_the_stream_path_of_the_detector_on_prism(on_prism, tmp_path):
    """The near-duplicate detector's stream path (keyed state and timers)
    on Prism, its watermark staying put until every record is in, then
    jumping past the horizon (a backlog), so every timer is due at once.
    Every record leaves once, at its time, with the verdicts of the
    DirectRunner and of the bounded path."""
    def verdicts(name, **how):
        return stream_verdicts(run_events(
            STREAM_EVENTS, StreamingNearDuplicates(StreamDedupConfig(
                horizon_secs=STREAM_HORIZON_SECS)), tmp_path / name,
            in_order=False, **how))

    assert verdicts("prism", flags=on_prism) == STREAM_VERDICTS
    assert verdicts("direct") == STREAM_VERDICTS
    assert verdicts("bounded", bounded=True) == STREAM_VERDICTS


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


def test_stream_tag_against_a_dedup_index_on_prism(
        tiny_preset, spam_head, corpus, tmp_path, on_prism):
    """Index entries and records meet in the same keyed state on Prism:
    the same verdicts as on the DirectRunner, and every record the index
    kept is found there (the corpus holds them again, same ids)."""
    archive = tmp_path / "archive.jsonl"
    archive.write_bytes(b"".join(
        corpus.read_bytes().splitlines(keepends=True)[:60]))
    dedup_corpus.main(["--input", str(archive), "--output",
                       str(tmp_path / "archive-out"), "--model", tiny_preset,
                       "--index", str(tmp_path / "index"),
                       "--run_id", "archive"])
    kept = {r["id"] for r in read_outputs(tmp_path / "archive-out",
                                          "unique")}

    def run(*flags):
        out = tmp_path / f"tagged{len(flags)}"
        stream_tag.main(["--input", str(corpus), "--output", str(out),
                         "--model", tiny_preset, "--heads",
                         f"spam={spam_head}", "--index",
                         str(tmp_path / "index"), *flags])
        return tag_verdicts(out), {
            r["id"]: (r.get("duplicate_of"), r.get("duplicate_of_run"))
            for r in read_outputs(out, "tagged")}

    (direct, direct_runs), (prism, prism_runs) = run(), run(*on_prism)
    assert (prism, prism_runs) == (direct, direct_runs)
    tagged, dead = prism
    assert len(tagged) + len(dead) == lines(corpus)
    assert kept and all(prism_runs[i] == (i, "archive") for i in kept)
