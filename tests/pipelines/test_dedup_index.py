"""--index: dedup_corpus and stream_tag against what earlier runs kept.

The tests a user relies on whatever the kind of index run over both a
directory and a PostgreSQL database (`index_at`); the database's are the
session's server (the `postgres` fixture), a schema a test.
"""

import collections
import json
import os
import pathlib
import signal
import subprocess
import sys
import time
import uuid

import apache_beam as beam
import numpy as np
import pytest

from embgemma_keras.config import DedupConfig
from embgemma_keras.index import database
from embgemma_keras.index.database import DatabaseIndex
from embgemma_keras.index.database import is_database_url
from embgemma_keras.index.format import CURRENT
from embgemma_keras.index.format import IndexSettings
from embgemma_keras.index.format import Manifest
from pipelines import copy_index
from pipelines import dedup_corpus
from pipelines import stream_tag
from tests.helpers import PG_PASSWORD
from tests.helpers import PG_ROLE
from tests.helpers import dedup_verdicts
from tests.helpers import read_outputs
from tests.helpers import role_url
from transforms.dedup.corpus import DeduplicateFiles
from transforms.index.read_commit import open_directory
from transforms.index.read_commit import open_index

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


@pytest.fixture(params=["directory", "database"])
def index_at(request, tmp_path) -> str:
    """Where a test's new index lives: a directory, or a schema of its own
    on the session's PostgreSQL server."""
    if request.param == "directory":
        return str(tmp_path / "index")
    return _schema_url(request.getfixturevalue("postgres"))


def _schema_url(postgres) -> str:
    return f"{postgres.url}&schema=t_{uuid.uuid4().hex[:12]}"


def _first_part_indexed(tmp_path, index=None):
    """The sample corpus's first third deduplicated into a new index (a
    directory by default); returns the second third and the index."""
    first, second, _ = _parts(
        tmp_path, CORPUS.read_bytes().splitlines(keepends=True))
    index = tmp_path / "index" if index is None else index
    _dedup(first, tmp_path / "out1", "--no_semantic", "--index", str(index))
    return second, index


def _manifest(index) -> Manifest:
    version = (index / CURRENT).read_text()
    path = index / "versions" / f"{version}.json"
    return Manifest.from_json(path.read_text(), str(path))


def _database(location: str) -> DatabaseIndex:
    """The database index at `location`, at its latest version."""
    index = DatabaseIndex(location, None)
    index.refresh()
    return index


def _runs(location: str) -> dict[str, int]:
    """The runs of the index's current version, in order, with the entries
    each kept."""
    if is_database_url(location):
        with _database(location) as index:
            return index.runs()
    return {run.run: run.kept
            for run in _manifest(pathlib.Path(location)).runs}


def _version(location: str) -> str | None:
    if is_database_url(location):
        with _database(location) as index:
            return index.version
    return (pathlib.Path(location) / CURRENT).read_text()


def _centroids(location: str):
    if is_database_url(location):
        with _database(location) as index:
            return index.centroids()
    return open_directory(location).centroids()


def test_three_parts_one_after_another_match_one_run_over_their_union(
        tmp_path, index_at):
    lines = CORPUS.read_bytes().splitlines(keepends=True)
    outs = [_dedup(part, tmp_path / f"out{i}", "--no_semantic",
                   "--index", index_at, "--run_id", f"run{i}")
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
    runs = _runs(index_at)
    assert list(runs) == ["run0", "run1", "run2"]
    assert runs == collections.Counter(kept_by.values())


def test_semantic_duplicates_of_the_index_use_its_kept_centroids(
        tmp_path, tiny_preset, tiny_model, index_at):
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
    _dedup(first, tmp_path / "out1", *flags, "--index", index_at,
           "--run_id", "first")
    centroids = _centroids(index_at)
    out = _dedup(second, tmp_path / "out2", *flags, "--index", index_at,
                 "--run_id", "second")

    dups = read_outputs(out, "duplicates")
    assert [(r["id"], r["kind"], r["duplicate_of"], r["duplicate_of_run"])
            for r in dups] == [("b", "semantic", "a", "first")]
    assert dups[0]["similarity"] == pytest.approx(close, abs=1e-4)
    # Kept, not re-fitted.
    assert (_centroids(index_at) == centroids).all()
    assert _runs(index_at) == {"first": 1, "second": 1}  # "a", then "c"
    union = tmp_path / "union.jsonl"
    union.write_text(first.read_text() + second.read_text())
    assert _groups(_dedup(union, tmp_path / "union", *flags)) == _groups(
        tmp_path / "out1", out)


def test_a_killed_run_leaves_the_index_at_its_last_version(tmp_path,
                                                          index_at):
    second, index = _first_part_indexed(tmp_path, index_at)
    before = _version(index)

    out = tmp_path / "out2"
    job = subprocess.Popen(
        [sys.executable, "-m", "pipelines.dedup_corpus", "--input",
         str(second), "--output", str(out), "--no_semantic",
         "--index", index], cwd=ROOT, start_new_session=True,
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
    assert _version(index) == before

    _dedup(second, tmp_path / "out2-again", "--no_semantic",
           "--index", index, "--run_id", "again")
    assert len(_runs(index)) == 2
    assert _version(index) == "v000002-again"


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


def test_read_only_dedups_without_adding(tmp_path, index_at):
    second, index = _first_part_indexed(tmp_path, index_at)
    before = _runs(index)
    out = _dedup(second, tmp_path / "out2", "--no_semantic", "--index",
                 index, "--index_read_only")
    assert any("duplicate_of_run" in r
               for r in read_outputs(out, "duplicates"))
    assert _runs(index) == before and len(before) == 1


@pytest.mark.parametrize("flags, reason", [
    (["--no_semantic", "--bands", "32", "--rows", "4"],
     "bands: the index has 16, this run 32"),
    (["--no_semantic", "--no_case_fold"],
     "case_fold: the index has True, this run False"),
    (["--model", "TINY"], "semantic: the index has False, this run True"),
])
def test_an_index_made_with_other_settings_is_refused(tmp_path, tiny_preset,
                                                      flags, reason,
                                                      index_at):
    second, index = _first_part_indexed(tmp_path, index_at)
    flags = [tiny_preset if flag == "TINY" else flag for flag in flags]
    with pytest.raises(SystemExit) as refused:
        _dedup(second, tmp_path / "out2", *flags, "--index", index)
    assert reason in str(refused.value)
    assert not (tmp_path / "out2").exists()  # refused before the job ran


def test_a_missing_index_is_refused_read_only(tmp_path, index_at):
    missing = ("no committed version" if is_database_url(index_at)
               else "no index at")
    with pytest.raises(SystemExit, match=missing):
        _dedup(CORPUS, tmp_path / "out", "--no_semantic",
               "--index", index_at, "--index_read_only")
    assert not (tmp_path / "out").exists()


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
        tmp_path, tiny_preset, index_at):
    """The index holds vectors (made with the same tiny model), so the
    stream matches both its lexical and semantic entries: a directory's
    loaded into the buckets, a database's looked up a record at a time."""
    first, second, _ = _parts(
        tmp_path, CORPUS.read_bytes().splitlines(keepends=True))
    index = index_at
    _dedup(first, tmp_path / "out1", "--model", tiny_preset,
           "--semantic_threshold", "0.9999", "--index", index,
           "--run_id", "run0")
    version = _version(index)
    kept = read_outputs(tmp_path / "out1", "unique")[:5]
    resent = [{"id": f"again-{r['id']}", "text": r["text"]} for r in kept]
    resent.append({"id": "shouted", "text": kept[0]["text"].upper()})
    stream = tmp_path / "stream.jsonl"
    stream.write_bytes(second.read_bytes() + b"{broken\n" + "".join(
        json.dumps(r) + "\n" for r in resent).encode())
    out = _stream_tag(stream, tmp_path / "tagged", tiny_preset,
                      "--index", index, "--horizon_secs", "1")

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
    assert _version(index) == version  # only read


@pytest.mark.parametrize("flags, reason", [
    (["--num_perm", "64", "--bands", "16", "--rows", "4"],
     "num_perm: the index has 128, this job 64"),
    (["--shingles", "word:3"], "shingles: the index has 'char:5'"),
])
def test_stream_tag_refuses_an_index_it_cannot_match(tmp_path, tiny_preset,
                                                    flags, reason, index_at):
    second, index = _first_part_indexed(tmp_path, index_at)
    with pytest.raises(SystemExit) as refused:
        _stream_tag(second, tmp_path / "tagged", tiny_preset,
                    "--index", str(index), *flags)
    assert reason in str(refused.value)
    assert not (tmp_path / "tagged").exists()


def test_stream_tag_refuses_a_missing_index(tmp_path, tiny_preset, index_at):
    with pytest.raises(SystemExit, match="make it with dedup_corpus"):
        _stream_tag(CORPUS, tmp_path / "tagged", tiny_preset,
                    "--index", index_at)
    assert not (tmp_path / "tagged").exists()


def test_a_stream_gives_the_same_verdicts_against_either_index(
        tmp_path, tiny_preset, postgres):
    """Looked up record by record in a database, or loaded whole from a
    directory, an index flags the same records as copies of the same
    entries."""
    first, second, _ = _parts(
        tmp_path, CORPUS.read_bytes().splitlines(keepends=True))
    copies = b"".join(json.dumps({"id": f"copy-{r['id']}", "text": r["text"]
                                  }).encode() + b"\n"
                      for r in map(json.loads, first.read_bytes().splitlines()))
    stream = tmp_path / "stream.jsonl"
    stream.write_bytes(second.read_bytes() + copies)
    flags = ["--model", tiny_preset, "--semantic_threshold", "0.9999"]
    verdicts = []
    for kind, index in (("directory", str(tmp_path / "index")),
                        ("database", _schema_url(postgres))):
        _dedup(first, tmp_path / f"{kind}-indexed", *flags,
               "--index", index, "--run_id", "run0")
        out = _stream_tag(stream, tmp_path / f"{kind}-tagged", tiny_preset,
                          "--index", index)
        verdicts.append({r["id"]: (r.get("duplicate_of"), r.get("kind"),
                                   r.get("duplicate_of_run"))
                         for r in read_outputs(out, "tagged")})
    directory, database = verdicts
    assert database == directory
    assert sum(run == "run0" for _, _, run in database.values()) >= len(
        first.read_bytes().splitlines()) // 2


def test_a_database_commit_that_fails_leaves_the_last_version(
        tmp_path, postgres, monkeypatch):
    second, index = _first_part_indexed(tmp_path, _schema_url(postgres))
    before = _runs(index)
    own, written = database._entry_row, []

    def dies_after_a_row(*args):
        if written:
            raise RuntimeError("killed mid-commit")
        written.append(args)
        return own(*args)

    with monkeypatch.context() as patched:
        patched.setattr(database, "_entry_row", dies_after_a_row)
        with pytest.raises(Exception, match="killed mid-commit"):
            _dedup(second, tmp_path / "out2", "--no_semantic",
                   "--index", index)
    # It died inside the commit, its outputs written: the transaction
    # left nothing.
    assert written and read_outputs(tmp_path / "out2", "unique")
    assert _runs(index) == before

    out = _dedup(second, tmp_path / "out3", "--no_semantic", "--index",
                 index, "--run_id", "again")
    assert _runs(index) == {**before,
                            "again": len(read_outputs(out, "unique"))}


def test_two_runs_from_one_database_version_both_land_and_a_retry_adds_nothing(
        tmp_path, postgres):
    """Two runs that opened the index at the same version commit one after
    the other, as two jobs running at once do: both land, nothing lost (a
    directory index refuses the second). The first again, same run id (a
    retried commit): nothing doubled, the same verdicts."""
    first, second, third = _parts(
        tmp_path, CORPUS.read_bytes().splitlines(keepends=True))
    index = _schema_url(postgres)
    _dedup(first, tmp_path / "out0", "--no_semantic", "--index", index,
           "--run_id", "run0")
    config = DedupConfig(semantic=False)
    opened = {run: open_index(index, IndexSettings.of(config))
              for run in ("runA", "runB")}

    def run(part, name, out):
        with beam.Pipeline() as pipeline:
            _ = pipeline | DeduplicateFiles(str(part), str(tmp_path / out),
                                            config, index=opened[name],
                                            run=name)
        return tmp_path / out

    a, b = run(second, "runA", "a"), run(third, "runB", "b")
    runs = _runs(index)
    assert list(runs) == ["run0", "runA", "runB"]
    assert (runs["runA"], runs["runB"]) == (
        len(read_outputs(a, "unique")), len(read_outputs(b, "unique")))
    # B saw the version it opened: run0's entries, not A's.
    assert {r["duplicate_of_run"] for r in read_outputs(b, "duplicates")
            if "duplicate_of_run" in r} == {"run0"}

    again = run(second, "runA", "a-again")
    assert _runs(index) == runs
    assert dedup_verdicts(again) == dedup_verdicts(a)
    versions = [json.loads((out / "report.json").read_text())["settings"][
        "index_version"] for out in (a, again)]
    assert versions[0] == versions[1] == "v000002-runA"


def test_the_password_is_in_no_output_message_or_pipeline_option(
        tmp_path, postgres, capfd, monkeypatch):
    index = f"{role_url(postgres)}&schema=t_{uuid.uuid4().hex[:12]}"
    secrets = {PG_PASSWORD, index.split(":")[2].split("@")[0]}
    options = []

    class Recorded(beam.Pipeline):
        def __init__(self, *args, **kwargs):
            options.append(str(kwargs["options"].get_all_options()))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(beam, "Pipeline", Recorded)
    second, _ = _first_part_indexed(tmp_path, index)
    out = _dedup(second, tmp_path / "out2", "--no_semantic", "--index",
                 index)
    wrong = "Wrong-Secret-42"
    with pytest.raises(SystemExit) as refused:
        _dedup(second, tmp_path / "out3", "--no_semantic", "--index",
               role_url(postgres, wrong))
    assert "password authentication failed" in str(refused.value)

    report = json.loads((out / "report.json").read_text())
    assert f"{PG_ROLE}:***@" in report["settings"]["index"]
    shown = [*options, str(refused.value), *capfd.readouterr()]
    shown += [path.read_text() for path in out.iterdir()]
    assert len(options) == 3 and all("***" in o for o in options)
    for secret in secrets | {wrong}:
        assert not any(secret in text for text in shown)


def test_copy_index_moves_a_directory_index_into_the_database(
        tmp_path, postgres, tiny_preset, capfd):
    flags = ["--model", tiny_preset, "--semantic_threshold", "0.9999"]
    first, second, third = _parts(
        tmp_path, CORPUS.read_bytes().splitlines(keepends=True))
    directory = str(tmp_path / "index")
    for i, part in enumerate((first, second)):
        _dedup(part, tmp_path / f"out{i}", *flags, "--index", directory,
               "--run_id", f"run{i}")
    target = f"{role_url(postgres)}&schema=copied"
    copy_index.main(["--source", directory, "--target", target])
    assert _runs(target) == _runs(directory) and len(_runs(target)) == 2
    np.testing.assert_array_equal(_centroids(target), _centroids(directory))
    shown = capfd.readouterr().out
    assert f"copied {sum(_runs(directory).values())} entries of 2 runs" in (
        shown)
    assert PG_PASSWORD not in shown
    copy_index.main(["--source", directory, "--target", target])  # again
    assert _runs(target) == _runs(directory)

    # The copy dedups as the directory does.
    from_directory = _dedup(third, tmp_path / "dir3", *flags, "--index",
                            directory, "--index_read_only")
    from_copy = _dedup(third, tmp_path / "db3", *flags, "--index", target,
                       "--run_id", "run2")
    assert dedup_verdicts(from_copy) == dedup_verdicts(from_directory)
    assert any("duplicate_of_run" in r
               for r in read_outputs(from_copy, "duplicates"))
    # Now the database holds a run the directory has not.
    with pytest.raises(SystemExit, match="holds runs that are not the first"):
        copy_index.main(["--source", directory, "--target", target])

    segment = next((tmp_path / "index" / "segments").rglob("*.parquet"))
    segment.write_bytes(segment.read_bytes()[::-1])
    with pytest.raises(SystemExit, match="does not match its checksum"):
        copy_index.main(["--source", directory,
                         "--target", _schema_url(postgres)])
