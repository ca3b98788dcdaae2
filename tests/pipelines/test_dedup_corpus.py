import json
import time

import pytest
from apache_beam.metrics.metric import MetricsFilter

from embgemma_keras.int8 import CACHE_ENV_VAR
from pipelines import dedup_corpus
from pipelines.options import start
from tests.helpers import hostile_lines
from tests.helpers import read_outputs

pytestmark = pytest.mark.slow

BASE = ("the quarterly report shows that revenue grew by twelve percent while "
        "costs stayed flat across all regions")


def _run(tmp_path, tiny_preset, lines, *args, name="corpus.jsonl"):
    source = tmp_path / name
    source.write_bytes(b"\n".join(lines) + b"\n")
    out = tmp_path / "out"
    dedup_corpus.main(["--input", str(source), "--output", str(out),
                       "--model", tiny_preset, *args])
    return out


def test_every_record_lands_once_with_its_kind(tmp_path, tiny_preset):
    lines = [json.dumps({"id": f"copy{i}", "text": BASE}).encode()
             for i in range(3)]
    lines += [
        json.dumps({"id": "upper", "text": BASE.upper() + "  "}).encode(),
        json.dumps({"id": "typo", "text": BASE.replace("twelve", "twelv")})
        .encode(),
        json.dumps({"id": "other", "text": "an unrelated note on planets"})
        .encode(),
        b"not json", b'{"text": ""}', b'{"text": "bad \xff"}',
    ]
    out = _run(tmp_path, tiny_preset, lines, "--semantic_threshold", "0.9999")
    unique, dups = read_outputs(out, "unique"), read_outputs(out, "duplicates")
    dead = read_outputs(out, "dead_letters")
    assert len(unique) + len(dups) + len(dead) == len(lines)
    assert {r["id"] for r in unique} == {"upper", "other"}
    kinds = {r["id"]: (r["kind"], r["duplicate_of"]) for r in dups}
    assert kinds == {"copy0": ("exact", "upper"), "copy1": ("exact", "upper"),
                     "copy2": ("exact", "upper"), "typo": ("lexical", "upper")}
    assert all("embeddings" not in r for r in unique + dups)
    report = json.loads((out / "report.json").read_text())
    assert report["counts"]["input"] == len(lines)
    assert report["counts"]["embeddings_avoided"] == 4
    assert report["counts"]["embedded"] == 2
    # Counts against a dedup index only appear when there is one.
    assert not {"duplicates_of_index", "duplicates_within_run"} & set(
        report["counts"])
    assert report["group_sizes"] == {"5": 1}
    page = (out / "report.html").read_text()
    assert "<svg" in page and "threshold" in page


@pytest.mark.parametrize("dtype,tolerance", [("float32", 1e-4),
                                             ("int8", 2e-3)])
def test_semantic_stage_groups_close_vectors(tmp_path, tiny_preset,
                                             tiny_model, monkeypatch, dtype,
                                             tolerance):
    monkeypatch.setenv(CACHE_ENV_VAR, str(tmp_path / "programs"))
    texts = {"a": "hello world", "b": "hello world!",
             "c": "a very different text here"}
    encoded = tiny_model.encode(list(texts.values()),
                                task="sentence_similarity")
    vectors = dict(zip(texts, encoded, strict=True))
    close = float(vectors["a"] @ vectors["b"])
    assert close > max(vectors["a"] @ vectors["c"],
                       vectors["b"] @ vectors["c"]) + 0.01
    lines = [json.dumps({"id": i, "text": t}).encode()
             for i, t in texts.items()]
    # The lexical stage is switched off: no two of the texts are equal
    # once normalised, so none has a Jaccard of 1.
    out = _run(tmp_path, tiny_preset, lines, "--semantic_threshold",
               str(close - 0.005), "--lexical_threshold", "1",
               "--clusters", "1", "--dtype", dtype)
    dups = read_outputs(out, "duplicates")
    assert [(r["id"], r["kind"], r["duplicate_of"]) for r in dups] == [
        ("a", "semantic", "b")]
    assert dups[0]["similarity"] == pytest.approx(close, abs=tolerance)
    report = json.loads((out / "report.json").read_text())
    assert report["run"]["dtype"] == dtype


def test_plain_text_lines_without_the_model(tmp_path):
    lines = [b"first line of text", b"First  line of TEXT", b"second line"]
    source = tmp_path / "corpus.txt"
    source.write_bytes(b"\n".join(lines))
    out = tmp_path / "out"
    dedup_corpus.main(["--input", str(source), "--output", str(out),
                       "--no_semantic"])
    assert len(read_outputs(out, "unique")) == 2
    assert [r["kind"] for r in read_outputs(out, "duplicates")] == ["exact"]


@pytest.mark.parametrize("texts,unique", [
    ([BASE] * 6, 1),                                    # all duplicates
    ([f"note number {i} about topic {i * 7}" for i in range(6)], 6),  # none
])
def test_degenerate_corpora(tmp_path, texts, unique):
    source = tmp_path / "corpus.txt"
    source.write_text("\n".join(texts))
    out = tmp_path / "out"
    dedup_corpus.main(["--input", str(source), "--output", str(out),
                       "--no_semantic"])
    assert len(read_outputs(out, "unique")) == unique
    assert len(read_outputs(out, "duplicates")) == len(texts) - unique


def test_a_one_megabyte_text_is_deduplicated_not_dropped(tmp_path,
                                                          tiny_preset):
    huge = "a long line of words about nothing much " * 25_000  # ~1 MB
    lines = [json.dumps({"id": "huge", "text": huge}).encode(),
             json.dumps({"id": "huge-copy", "text": huge.upper()}).encode(),
             json.dumps({"id": "too-big", "text": huge * 2}).encode(),
             json.dumps({"id": "small", "text": "a small note"}).encode()]
    out = _run(tmp_path, tiny_preset, lines, "--semantic_threshold", "1")
    # Equal lengths: the smaller id is kept.
    assert {r["id"] for r in read_outputs(out, "unique")} == {"huge", "small"}
    assert [(r["id"], r["kind"]) for r in read_outputs(out, "duplicates")] == [
        ("huge-copy", "exact")]
    (dead,) = read_outputs(out, "dead_letters")
    assert "over the 1048576-byte limit" in dead["error"]


def test_every_hostile_line_is_kept_flagged_or_a_dead_letter(tmp_path,
                                                             tiny_preset):
    lines = hostile_lines()
    out = _run(tmp_path, tiny_preset, [line for _, line, _ in lines])
    unique, dups = read_outputs(out, "unique"), read_outputs(out, "duplicates")
    dead = read_outputs(out, "dead_letters")
    # Duplicates are reported by id, so of two records sharing an id for
    # different texts, one is kept and the other is a dead letter.
    accepted = sum(ok for _, _, ok in lines) - 1
    assert len(unique) + len(dups) == accepted
    assert len(dead) == len(lines) - accepted
    assert [d["stage"] for d in dead].count("ids") == 1
    assert all(d["error"] for d in dead)
    assert sum(r.get("id") == "shared" for r in unique + dups) == 1
    report = json.loads((out / "report.json").read_text())
    assert report["counts"]["input"] == len(lines)


def test_progress_is_counted_in_beam_metrics(tmp_path, tiny_preset):
    """The figures a local run prints are Beam counters too (Dataflow)."""
    lines = [json.dumps({"id": f"r{i}", "text": f"note {i} about lunch"})
             for i in range(6)]
    lines += [lines[0].replace('"r0"', '"r0-copy"'), "{not json"]
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("\n".join(lines) + "\n")
    job = start(["--input", str(corpus), "--output", str(tmp_path / "out"),
                 "--model", tiny_preset], dedup_corpus.REQUIRED,
                dedup_corpus.build)
    job.wait_until_finish()
    counters = {c.key.metric.name: c.committed for c in job.metrics().query(
        MetricsFilter().with_namespace("progress"))["counters"]}
    duplicates = read_outputs(tmp_path / "out", "duplicates")
    assert counters["lines_read"] == 8
    assert counters["bytes_read"] == corpus.stat().st_size
    assert counters["dead_letters"] == 1
    assert counters["duplicates"] == len(duplicates) >= 1
    # The exact copy is never embedded.
    assert counters["records_embedded"] == counters[
        "queued_for_embedding"] <= 6


def _chain_ends(duplicates):
    """Each duplicate's id -> the record its `duplicate_of` chain ends at."""
    original = {r["id"]: r["duplicate_of"] for r in duplicates}

    def end(record_id):
        while record_id in original:
            record_id = original[record_id]
        return record_id

    return {record_id: end(record_id) for record_id in original}


def test_every_duplicate_names_the_record_its_group_kept(tmp_path,
                                                         tiny_preset,
                                                         tiny_model):
    """An exact copy of a lexical copy of a paraphrase of the kept record:
    three stages, a chain of three `duplicate_of`s, one `kept_id`."""
    kept = ("the quarterly report shows that revenue grew by twelve percent "
            "while costs stayed flat across all regions of the company")
    paraphrase = ("revenue rose twelve percent this quarter and costs did "
                  "not change anywhere")
    typo = paraphrase[:-1]  # shorter: the paraphrase is kept over it
    vectors = tiny_model.encode([kept, paraphrase], task="sentence_similarity")
    close = float(vectors[0] @ vectors[1])
    assert close > 0.5
    records = [{"id": "a-kept", "text": kept},
               {"id": "b-paraphrase", "text": paraphrase},
               {"id": "c-typo", "text": typo},
               {"id": "d-copy", "text": typo.upper()}]
    lines = [json.dumps(r).encode() for r in records]
    out = _run(tmp_path, tiny_preset, lines, "--semantic_threshold",
               str(close - 0.005), "--clusters", "1")
    unique, dups = read_outputs(out, "unique"), read_outputs(out, "duplicates")
    assert [r["id"] for r in unique] == ["a-kept"]
    assert sorted((r["id"], r["kind"], r["duplicate_of"]) for r in dups) == [
        ("b-paraphrase", "semantic", "a-kept"),
        ("c-typo", "lexical", "b-paraphrase"),
        ("d-copy", "exact", "c-typo")]
    ends = _chain_ends(dups)
    for record in dups:
        assert record["kept_id"] == ends[record["id"]] == "a-kept"
    assert all("_minhash" not in r for r in unique + dups)
    report = json.loads((out / "report.json").read_text())
    assert report["group_sizes"] == {"4": 1}  # the whole group, not links


def test_the_report_says_what_the_run_was(tmp_path, tiny_preset):
    first, second = tmp_path / "part-0.jsonl", tmp_path / "part-1.jsonl"
    first.write_text(json.dumps({"id": "a", "text": BASE}) + "\n")
    second.write_text(json.dumps({"id": "b", "text": BASE.upper()}) + "\n"
                      + json.dumps({"id": "c", "text": "a note"}) + "\n")
    pattern = str(tmp_path / "part-*.jsonl")
    runs = {}
    for name, flags in (("model", ["--model", tiny_preset,
                                   "--dtype", "bfloat16"]),
                        ("none", ["--no_semantic"])):
        out = tmp_path / name
        before = time.time()
        dedup_corpus.main(["--input", pattern, "--output", str(out), *flags])
        elapsed = time.time() - before
        report = json.loads((out / "report.json").read_text())
        run = report["run"]
        assert run["input_pattern"] == pattern
        assert run["input_files"] == [str(first), str(second)]
        assert 0 < run["wall_secs"] <= elapsed
        assert run["records_per_sec"] == pytest.approx(
            report["counts"]["input"] / run["wall_secs"], rel=1e-2)
        assert run["output_files"] >= 3  # unique, duplicates, dead letters
        page = (out / "report.html").read_text()
        assert str(second) in page and "records / s" in page
        runs[name] = run
    assert (runs["model"]["model"], runs["model"]["dtype"]) == (
        tiny_preset, "bfloat16")
    assert (runs["none"]["model"], runs["none"]["dtype"]) == (
        "no model", None)
