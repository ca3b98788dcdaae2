"""--index: dedup_corpus and stream_tag against what earlier runs kept."""

import collections
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

from embgemma_keras.index.format import CURRENT
from embgemma_keras.index.format import Manifest
from pipelines import dedup_corpus
from pipelines import stream_tag
from tests.helpers import read_outputs

pytestmark = pytest.mark.slow

ROOT = pathlib.Path(__file__).resolve().parents[2]
CORPUS = ROOT / "examples" / "corpus.jsonl"


def _parts(tmp_path, lines, n=3):
    """`lines` cut into `n` consecutive files."""
    size = -(-len(lines) // n)
    paths = []
    for i in range(n):
        path = tmp_path / f"part{i}.jsonl"
        path.write_bytes(b"".join(lines[i * size:(i + 1) * size]))
        paths.append(path)
    return paths


def _dedup(source, out, *flags):
    dedup_corpus.main(["--input", str(source), "--output", str(out), *flags])
    return out


def _groups(*outs):
    """Records grouped by the record their `duplicate_of` chain ends at,
    and the number of duplicates of each kind. Each duplicate's `kept_id`
    must be that record: kept by its run or an earlier one."""
    original, ids, kept_ids, unique = {}, set(), {}, set()
    for out in outs:
        unique |= {r["id"] for r in read_outputs(out, "unique")}
        for r in read_outputs(out, "duplicates"):
            ids.add(r["id"])
            original[r["id"]] = (r["duplicate_of"], r["kind"])
            kept_ids[r["id"]] = r["kept_id"]
    ids |= unique

    def root(record_id):
        while record_id in original:
            record_id = original[record_id][0]
        return record_id

    for record_id, kept_id in kept_ids.items():
        assert kept_id == root(record_id) and kept_id in unique

    groups = collections.defaultdict(set)
    for record_id in ids:
        groups[root(record_id)].add(record_id)
    kinds = collections.Counter(kind for _, kind in original.values())
    return {frozenset(group) for group in groups.values()}, kinds


def _first_part_indexed(tmp_path):
    """The sample corpus's first third deduplicated into a new index;
    returns the second third and the index."""
    first, second, _ = _parts(
        tmp_path, CORPUS.read_bytes().splitlines(keepends=True))
    index = tmp_path / "index"
    _dedup(first, tmp_path / "out1", "--no_semantic", "--index", str(index))
    return second, index


def _manifest(index) -> Manifest:
    version = (index / CURRENT).read_text()
    path = index / "versions" / f"{version}.json"
    return Manifest.from_json(path.read_text(), str(path))


def test_three_parts_one_after_another_match_one_run_over_their_union(
        tmp_path):
    lines = CORPUS.read_bytes().splitlines(keepends=True)
    index = tmp_path / "index"
    outs = [_dedup(part, tmp_path / f"out{i}", "--no_semantic",
                   "--index", str(index), "--run_id", f"run{i}")
            for i, part in enumerate(_parts(tmp_path, lines))]
    union = _dedup(CORPUS, tmp_path / "union", "--no_semantic")

    groups, kinds = _groups(*outs)
    assert (groups, kinds) == _groups(union)
    assert kinds["exact"] and kinds["lexical"]
    # Every record lands once; duplicates of earlier parts name their run.
    assert sum(len(read_outputs(out, kind)) for out in outs
               for kind in ("unique", "duplicates")) == len(lines)
    earlier = [r for r in read_outputs(outs[2], "duplicates")
               if "duplicate_of_run" in r]
    assert earlier
    kept_by = {r["id"]: f"run{i}" for i, out in enumerate(outs)
               for r in read_outputs(out, "unique")}
    for record in earlier:
        assert kept_by[record["duplicate_of"]] == record["duplicate_of_run"]
    report = json.loads((outs[2] / "report.json").read_text())["counts"]
    assert report["duplicates_of_index"] == len(earlier)
    assert (report["duplicates_within_run"]
            == report["duplicates"] - len(earlier))
    assert (f"{len(earlier)} duplicates of records earlier runs kept"
            in (outs[2] / "report.html").read_text())
    # The index holds exactly the records kept, each from its run.
    manifest = _manifest(index)
    assert manifest.entries == len(kept_by)
    assert [run.run for run in manifest.runs] == ["run0", "run1", "run2"]


def test_semantic_duplicates_of_the_index_use_its_kept_centroids(
        tmp_path, tiny_preset, tiny_model):
    texts = {"a": "hello world", "b": "hello world!",
             "c": "a very different text here"}
    encoded = tiny_model.encode(list(texts.values()),
                                task="sentence_similarity")
    vectors = dict(zip(texts, encoded, strict=True))
    close = float(vectors["a"] @ vectors["b"])
    flags = ["--model", tiny_preset, "--semantic_threshold",
             str(close - 0.005), "--lexical_threshold", "1",
             "--clusters", "1"]
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    first.write_text(json.dumps({"id": "a", "text": texts["a"]}) + "\n")
    second.write_text("".join(json.dumps({"id": i, "text": texts[i]}) + "\n"
                              for i in ("b", "c")))
    index = tmp_path / "index"
    _dedup(first, tmp_path / "out1", *flags, "--index", str(index),
           "--run_id", "first")
    centroids = _manifest(index).centroids
    out = _dedup(second, tmp_path / "out2", *flags, "--index", str(index),
                 "--run_id", "second")

    dups = read_outputs(out, "duplicates")
    assert [(r["id"], r["kind"], r["duplicate_of"], r["duplicate_of_run"])
            for r in dups] == [("b", "semantic", "a", "first")]
    assert dups[0]["similarity"] == pytest.approx(close, abs=1e-4)
    assert _manifest(index).centroids == centroids  # kept, not re-fitted
    assert _manifest(index).entries == 2  # "a" and "c"
    union = tmp_path / "union.jsonl"
    union.write_text(first.read_text() + second.read_text())
    assert _groups(_dedup(union, tmp_path / "union", *flags)) == _groups(
        tmp_path / "out1", out)


def test_a_killed_run_leaves_the_index_at_its_last_version(tmp_path):
    second, index = _first_part_indexed(tmp_path)
    before = (index / CURRENT).read_text()

    out = tmp_path / "out2"
    job = subprocess.Popen(
        [sys.executable, "-m", "pipelines.dedup_corpus", "--input",
         str(second), "--output", str(out), "--no_semantic",
         "--index", str(index)], cwd=ROOT, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # Killed while its outputs are being written: the index version is
    # committed only after them.
    deadline = time.monotonic() + 120
    while not any(out.glob("*")) and job.poll() is None:
        assert time.monotonic() < deadline, "the run never wrote"
        time.sleep(0.01)
    os.killpg(job.pid, signal.SIGKILL)
    job.wait()
    assert job.returncode == -signal.SIGKILL
    assert (index / CURRENT).read_text() == before

    _dedup(second, tmp_path / "out2-again", "--no_semantic",
           "--index", str(index))
    manifest = _manifest(index)
    assert manifest.parent == before and len(manifest.runs) == 2


def test_a_run_failing_after_its_segments_leaves_them_unread(
        tmp_path, monkeypatch):
    second, index = _first_part_indexed(tmp_path)
    before = _manifest(index)

    import transforms.index.read_commit

    def die(*args, **kwargs):
        raise RuntimeError("killed before the manifest")

    with monkeypatch.context() as patched:
        patched.setattr(transforms.index.read_commit, "next_manifest", die)
        with pytest.raises(Exception, match="killed before the manifest"):
            _dedup(second, tmp_path / "out2", "--no_semantic",
                   "--index", str(index))
    written = sum(1 for _ in (index / "segments").rglob("*.parquet"))
    assert written > len(before.segments)  # the failed run's, orphaned
    assert _manifest(index) == before

    out = _dedup(second, tmp_path / "out3", "--no_semantic", "--index",
                 str(index))
    after = _manifest(index)
    assert after.parent == before.version
    assert after.entries == before.entries + len(read_outputs(out, "unique"))


def test_read_only_dedups_without_adding(tmp_path):
    second, index = _first_part_indexed(tmp_path)
    before = (index / CURRENT).read_text()
    out = _dedup(second, tmp_path / "out2", "--no_semantic", "--index",
                 str(index), "--index_read_only")
    assert any("duplicate_of_run" in r
               for r in read_outputs(out, "duplicates"))
    assert (index / CURRENT).read_text() == before
    assert len(list((index / "versions").iterdir())) == 1


@pytest.mark.parametrize("flags, reason", [
    (["--no_semantic", "--bands", "32", "--rows", "4"],
     "bands: the index has 16, this run 32"),
    (["--no_semantic", "--no_case_fold"],
     "case_fold: the index has True, this run False"),
    (["--model", "TINY"], "semantic: the index has False, this run True"),
])
def test_an_index_made_with_other_settings_is_refused(tmp_path, tiny_preset,
                                                      flags, reason):
    second, index = _first_part_indexed(tmp_path)
    flags = [tiny_preset if flag == "TINY" else flag for flag in flags]
    with pytest.raises(SystemExit) as refused:
        _dedup(second, tmp_path / "out2", *flags, "--index", str(index))
    assert reason in str(refused.value)
    assert not (tmp_path / "out2").exists()  # refused before the job ran


def test_a_missing_index_is_refused_read_only(tmp_path):
    with pytest.raises(SystemExit, match="no index at"):
        _dedup(CORPUS, tmp_path / "out", "--no_semantic",
               "--index", str(tmp_path / "nowhere"), "--index_read_only")


def test_a_corrupted_segment_fails_the_run_with_the_reason(tmp_path):
    second, index = _first_part_indexed(tmp_path)
    segment = next((index / "segments").rglob("*.parquet"))
    data = bytearray(segment.read_bytes())
    data[len(data) // 2] ^= 0xFF
    segment.write_bytes(bytes(data))
    with pytest.raises(SystemExit, match="does not match its checksum"):
        _dedup(second, tmp_path / "out2", "--no_semantic",
               "--index", str(index))


def _stream_tag(source, out, model, *flags):
    # Semantic matches only of identical vectors: the tiny model's vectors
    # are noise.
    stream_tag.main(["--input", str(source), "--output", str(out),
                     "--model", model, "--semantic_threshold", "1",
                     *flags])
    return out


def test_stream_tag_flags_what_the_index_kept_beyond_its_horizon(
        tmp_path, tiny_preset):
    """The index holds vectors (made with the same tiny model), so the
    stream loads both its lexical and semantic entries."""
    first, second, _ = _parts(
        tmp_path, CORPUS.read_bytes().splitlines(keepends=True))
    index = tmp_path / "index"
    _dedup(first, tmp_path / "out1", "--model", tiny_preset,
           "--semantic_threshold", "0.9999", "--index", str(index),
           "--run_id", "run0")
    kept = read_outputs(tmp_path / "out1", "unique")[:5]
    resent = [{"id": f"again-{r['id']}", "text": r["text"]} for r in kept]
    resent.append({"id": "shouted", "text": kept[0]["text"].upper()})
    stream = tmp_path / "stream.jsonl"
    stream.write_bytes(second.read_bytes() + b"{broken\n" + "".join(
        json.dumps(r) + "\n" for r in resent).encode())
    out = _stream_tag(stream, tmp_path / "tagged", tiny_preset,
                      "--index", str(index), "--horizon_secs", "1")

    tagged = {r["id"]: r for r in read_outputs(out, "tagged")}
    dead = read_outputs(out, "dead_letters")
    assert len(tagged) + len(dead) == len(
        stream.read_bytes().splitlines())  # every record leaves once
    for record in kept:
        copy = tagged[f"again-{record['id']}"]
        assert (copy["duplicate_of"], copy["duplicate_of_run"],
                copy["kind"], copy["similarity"]) == (
            record["id"], "run0", "lexical", 1.0)
    assert tagged["shouted"]["duplicate_of"] == kept[0]["id"]
    # The index only names what its runs kept.
    kept_ids = {r["id"] for r in read_outputs(tmp_path / "out1", "unique")}
    assert {r["duplicate_of"] for r in tagged.values()
            if r.get("duplicate_of_run")} <= kept_ids
    assert _manifest(index).version.startswith("v000001")  # only read


@pytest.mark.parametrize("flags, reason", [
    (["--num_perm", "64", "--bands", "16", "--rows", "4"],
     "num_perm: the index has 128, this job 64"),
    (["--shingles", "word:3"], "shingles: the index has 'char:5'"),
])
def test_stream_tag_refuses_an_index_it_cannot_match(tmp_path, tiny_preset,
                                                    flags, reason):
    second, index = _first_part_indexed(tmp_path)
    with pytest.raises(SystemExit) as refused:
        _stream_tag(second, tmp_path / "tagged", tiny_preset,
                    "--index", str(index), *flags)
    assert reason in str(refused.value)
    assert not (tmp_path / "tagged").exists()


def test_stream_tag_refuses_a_missing_index(tmp_path, tiny_preset):
    with pytest.raises(SystemExit, match="make it with dedup_corpus"):
        _stream_tag(CORPUS, tmp_path / "tagged", tiny_preset,
                    "--index", str(tmp_path / "nowhere"))
