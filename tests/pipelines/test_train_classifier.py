import json

import pytest

from embgemma_keras import load_head
from pipelines import train_classifier
from tests.helpers import SPAM_ROWS
from tests.helpers import hostile_lines
from tests.helpers import read_outputs
from tests.helpers import write_jsonl
from tests.helpers import write_tsv


def _run(tiny_preset, tmp_path, *args):
    out = tmp_path / "out"
    train_classifier.main(["--model", tiny_preset, "--output", str(out),
                           "--folds", "2", *args])
    return out


@pytest.mark.slow
def test_trains_a_head_with_metrics_baseline_and_dead_letters(
        tiny_preset, tiny_model, tmp_path):
    bad = [b"\tno label", b"only-one-field", b"ham\t", b"spam\tbad \xff"]
    train = write_tsv(tmp_path / "train.tsv", SPAM_ROWS, bad)
    out = _run(tiny_preset, tmp_path, "--train", train, "--eval", train,
               "--baseline", "tfidf")
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("accuracy", "macro_f1", "per_label", "confusion_matrix",
                "cv"):
        assert key in metrics
    assert set(metrics["per_label"]) == {"ham", "spam"}
    assert metrics["train_examples"] == len(SPAM_ROWS)
    assert metrics["eval"]["examples"] == len(SPAM_ROWS)
    assert "tfidf" in metrics["baseline"]
    dead = read_outputs(out, "dead_letters")
    # Each bad row is reported once for --train and once for --eval.
    assert len(dead) == 2 * len(bad)
    assert {d["stage"] for d in dead} == {"parse", "label"}
    head = load_head(out, expect=tiny_model.identity, task="classification",
                     dim=768)
    assert head.labels == ["ham", "spam"]


@pytest.mark.slow
def test_zero_shot_heads_are_evaluated_on_the_labelled_file(
        tiny_preset, tmp_path):
    train = write_tsv(tmp_path / "train.tsv", SPAM_ROWS)
    out = _run(tiny_preset, tmp_path, "--train", train,
               "--zero_shot", "spam=prizes, offers and scams",
               "--zero_shot", "ham=a personal message")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["examples"] == len(SPAM_ROWS)
    assert load_head(out).kind == "zero_shot"


def test_unknown_columns_fail_before_the_job_starts(tiny_preset, tmp_path):
    train = write_tsv(tmp_path / "train.tsv", SPAM_ROWS)
    with pytest.raises(SystemExit, match=r"no column\(s\) \['category'\]"):
        _run(tiny_preset, tmp_path, "--train", train,
             "--label_column", "category")


def test_verbose_keeps_the_traceback_of_a_refused_job(tiny_preset, tmp_path):
    train = write_tsv(tmp_path / "train.tsv", SPAM_ROWS)
    with pytest.raises(ValueError, match=r"no column\(s\) \['category'\]"):
        _run(tiny_preset, tmp_path, "--train", train,
             "--label_column", "category", "--verbose")


def test_a_single_class_is_refused_before_anything_is_embedded(
        tiny_preset, tmp_path):
    train = write_tsv(tmp_path / "train.tsv",
                      [r for r in SPAM_ROWS if r[0] == "ham"])
    with pytest.raises(SystemExit, match="at least two distinct labels"):
        _run(tiny_preset, tmp_path, "--train", train)
    assert not (tmp_path / "out").exists()  # the pipeline never ran


@pytest.mark.slow
def test_every_hostile_line_is_trained_on_or_a_dead_letter(tiny_preset,
                                                           tmp_path):
    lines = hostile_lines(label=lambda i: ("spam", "ham")[i % 2])
    train = write_jsonl(tmp_path / "train.jsonl", lines)
    out = _run(tiny_preset, tmp_path, "--train", str(train))
    metrics = json.loads((out / "metrics.json").read_text())
    dead = read_outputs(out, "dead_letters")
    accepted = sum(ok for _, _, ok in lines)
    assert metrics["train_examples"] == accepted
    assert len(dead) == len(lines) - accepted
    assert all(d["error"] for d in dead)
