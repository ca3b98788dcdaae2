"""The dedup index in PostgreSQL with pgvector, against a real server.

One server (`local_runners.postgres`, the pgserver wheel; the `postgres`
fixture of tests/conftest.py) for the session; each test has its own
schema. Without the server the tests are skipped, but fail under CI
(CI=true), where it must start.
"""

import pathlib
import pickle
import signal
import subprocess
import sys
import threading
import traceback
import uuid

import numpy as np
import psycopg
import pytest

from embgemma_keras.artifacts import ModelIdentity
from embgemma_keras.config import DedupConfig
from embgemma_keras.config import MinHashConfig
from embgemma_keras.dedup.minhash import MinHasher
from embgemma_keras.dedup.minhash import signed
from embgemma_keras.index import database
from embgemma_keras.index.database import DatabaseIndex
from embgemma_keras.index.database import redact
from embgemma_keras.index.database import scrub
from embgemma_keras.index.format import IndexEntry
from embgemma_keras.index.format import IndexMismatchError
from embgemma_keras.index.format import IndexSettings
from embgemma_keras.index.format import index_entries
from tests.helpers import PG_PASSWORD as PASSWORD
from tests.helpers import PG_ROLE as ROLE
from tests.helpers import postgres_unavailable
from tests.helpers import role_url

pytestmark = pytest.mark.slow

ROOT = pathlib.Path(__file__).resolve().parents[2]
DIM = 32
TEXTS = ["The cat sat on the mat.", "A dog barked at the moon all night.",
         "Prices rose sharply in the third quarter.",
         "She sells sea shells by the sea shore.",
         "An unrelated line about distant planets."]


@pytest.fixture
def url(postgres):
    """The superuser's URL, with a schema of this test's own."""
    return f"{postgres.url}&schema=t_{uuid.uuid4().hex[:12]}"


def lexical(**changes) -> IndexSettings:
    return IndexSettings.of(DedupConfig(semantic=False, **changes))


def semantic(dim: int = DIM) -> IndexSettings:
    return IndexSettings.of(DedupConfig(), ModelIdentity("m", "weights-1"),
                            dim)


def text_entries(texts: list[str], run: str) -> list[IndexEntry]:
    """The entries of `texts` under the default settings (`lexical()`)."""
    config = DedupConfig()
    hasher = MinHasher(config.lexical)
    records = signed([{"id": f"{run}-{i}", "text": text}
                      for i, text in enumerate(texts)], hasher)
    return index_entries(records, run, hasher, config.case_fold, None)


def vector_entries(vectors: np.ndarray, run: str,
                   first: int = 0) -> list[IndexEntry]:
    """Entries with the given vectors (random sketches, bucket 0)."""
    rng = np.random.default_rng(first)
    return [IndexEntry(f"{run}-{first + i}", run, rng.bytes(32),
                       rng.integers(0, 2**63, 16, dtype=np.uint64),
                       rng.integers(0, 2**32, 128, dtype=np.uint32), 0,
                       vector)
            for i, vector in enumerate(vectors)]


def nodes(entries) -> set[tuple[str, str]]:
    return {entry.node for entry in entries}


def _table_columns(url: str, schema: str, table: str) -> set[str]:
    conninfo = url.rpartition("&schema=")[0]
    with psycopg.connect(conninfo) as connection:
        return {row[0] for row in connection.execute(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = %s AND table_name = %s", [schema, table])}


def test_a_new_index_is_made_on_first_use_and_found_again(url):
    with DatabaseIndex.open(url, lexical()) as index:
        assert index.version is None and index.current_version() is None
        assert index.entry_count() == 0
        assert index.schema == url.rpartition("&schema=")[2]
        index.commit("r1", text_entries(TEXTS, "r1"))
    with DatabaseIndex.open(url, lexical(), must_exist=True) as again:
        assert again.version == again.current_version() == "v000001-r1"
        assert again.entry_count() == len(TEXTS)


def test_a_missing_index_is_refused_when_it_must_exist(url):
    with pytest.raises(IndexMismatchError,
                       match="index at .*schema t_.*no committed version"):
        DatabaseIndex.open(url, lexical(), must_exist=True)
    DatabaseIndex.open(url, lexical()).close()  # tables, but no version
    with pytest.raises(IndexMismatchError, match="no committed version"):
        DatabaseIndex.open_for_stream(url, MinHashConfig(), None, None)


def test_other_settings_are_refused_naming_each_difference(url):
    with DatabaseIndex.open(url, lexical()) as index:
        index.commit("r1", text_entries(TEXTS, "r1"))
    other = lexical(case_fold=False, lexical=MinHashConfig(
        num_perm=64, bands=8, rows=8))
    with pytest.raises(IndexMismatchError) as refused:
        DatabaseIndex.open(url, other)
    reasons = other.mismatches(lexical())
    assert len(reasons) == 3  # case_fold, num_perm, bands
    for reason in reasons:
        assert reason in str(refused.value)


def test_a_stream_needs_the_same_signatures_and_model_not_banding(url):
    with DatabaseIndex.open(url, semantic()) as index:
        index.commit("r1", vector_entries(np.eye(2, DIM, dtype=np.float32),
                                          "r1"))
    rebanded = MinHashConfig(bands=32, rows=4)
    with DatabaseIndex.open_for_stream(
            url, rebanded, ModelIdentity("m", "weights-1"), DIM) as stream:
        assert stream.settings == semantic()
    with pytest.raises(IndexMismatchError) as refused:
        DatabaseIndex.open_for_stream(url, MinHashConfig(seed=2),
                                      ModelIdentity("m", "weights-2"), DIM)
    assert "minhash_seed: the index has 1, this job 2" in str(refused.value)
    assert "model: the index has 'weights-1', this job 'weights-2'" in str(
        refused.value)


def _set_layout(url: str, version: int) -> None:
    conninfo, schema = url.rsplit("&schema=", 1)
    with psycopg.connect(conninfo) as connection:
        connection.execute(f"UPDATE {schema}.dedup_schema_version "
                           "SET version = %s", [version])


def _layout(url: str) -> int:
    conninfo, schema = url.rsplit("&schema=", 1)
    with psycopg.connect(conninfo) as connection:
        return connection.execute(
            f"SELECT version FROM {schema}.dedup_schema_version").fetchone()[0]


def test_a_newer_layout_is_refused(url):
    DatabaseIndex.open(url, lexical()).close()
    _set_layout(url, database.SCHEMA_VERSION + 1)
    with pytest.raises(IndexMismatchError,
                       match="newer than this code's .*upgrade embgemma"):
        DatabaseIndex.open(url, lexical())


def test_an_older_layout_is_upgraded_in_the_opening_transaction(
        url, monkeypatch):
    DatabaseIndex.open(url, lexical()).close()
    schema = url.rpartition("&schema=")[2]
    monkeypatch.setattr(database, "SCHEMA_VERSION", 2)
    add_note = "ALTER TABLE {schema}.dedup_runs ADD COLUMN note text"
    monkeypatch.setattr(database, "MIGRATIONS",
                        {1: (add_note, "SELECT 1 / 0")})
    with pytest.raises(psycopg.errors.DivisionByZero):
        DatabaseIndex.open(url, lexical())
    assert _layout(url) == 1  # the failed upgrade left nothing
    assert "note" not in _table_columns(url, schema, "dedup_runs")

    monkeypatch.setattr(database, "MIGRATIONS", {1: (add_note,)})
    DatabaseIndex.open(url, lexical()).close()
    assert _layout(url) == 2
    assert "note" in _table_columns(url, schema, "dedup_runs")


def test_a_layout_with_no_way_up_is_refused_with_instructions(
        url, monkeypatch):
    DatabaseIndex.open(url, lexical()).close()
    monkeypatch.setattr(database, "SCHEMA_VERSION", 3)
    monkeypatch.setattr(database, "MIGRATIONS", {1: ("SELECT 1",)})
    with pytest.raises(IndexMismatchError,
                       match="cannot upgrade layout 2: make a new index"):
        DatabaseIndex.open(url, lexical())
    assert _layout(url) == 1


def test_a_commit_leaves_the_planner_statistics_of_its_rows(url):
    """A large first run is looked up through its indexes at once, not
    after autovacuum has come by."""
    schema = url.rpartition("&schema=")[2]
    with DatabaseIndex.open(url, lexical()) as index:
        index.commit("r1", text_entries(TEXTS, "r1"))
        analyzed = dict(index._connection().execute(
            "SELECT relname, last_analyze IS NOT NULL "
            "FROM pg_stat_user_tables WHERE schemaname = %s",
            [schema]).fetchall())
    assert analyzed["dedup_entries"] and analyzed["dedup_band_keys"]


def test_lookups_by_exact_and_band_keys_find_exactly_the_matches(url):
    kept = text_entries(TEXTS, "r1")
    with DatabaseIndex.open(url, lexical()) as index:
        index.commit("r1", kept)
        queries = text_entries(
            ["the  CAT sat on the mat.", "Nothing like any of them here!",
             "She sells sea shells by the sea shore today."], "r2")
        exact = index.by_exact_keys([q.exact_key for q in queries])
        by_bands = index.by_band_keys(np.stack([q.bands for q in queries]))
    assert nodes(exact) == {("r1", "r1-0")}
    shared = {entry.node for entry in kept for query in queries
              if np.any(entry.bands == query.bands)}
    assert ("r1", "r1-3") in shared  # a near-duplicate shares a band
    assert nodes(by_bands) == shared
    stored = {entry.node: entry for entry in kept}
    for found in exact + by_bands:
        entry = stored[found.node]
        assert found.exact_key == entry.exact_key
        assert found.bucket == -1 and found.vector is None
        np.testing.assert_array_equal(found.signature, entry.signature)
        np.testing.assert_array_equal(found.bands, entry.bands)


def _clusters(rng, centres: int, size: int) -> np.ndarray:
    """Unit vectors near `centres` random directions, `size` each, at
    cosines spread around 0.9 from their centre."""
    directions = rng.normal(size=(centres, DIM))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    noise = rng.normal(size=(centres, size, DIM))
    scale = rng.uniform(0.2, 0.7, size=(centres, size, 1)) / np.sqrt(DIM)
    vectors = directions[:, None, :] + noise * scale
    vectors /= np.linalg.norm(vectors, axis=2, keepdims=True)
    return directions.astype(np.float32), vectors.reshape(
        -1, DIM).astype(np.float32)


def test_vector_lookups_find_what_brute_force_cosine_finds(url):
    rng = np.random.default_rng(7)
    directions, vectors = _clusters(rng, centres=600, size=5)
    kept = (vector_entries(vectors[:1500], "r1")
            + vector_entries(vectors[1500:], "r2", first=1500))
    queries = directions[:300]
    threshold = 0.9
    with DatabaseIndex.open(url, semantic()) as index:
        # The first run's rows are indexed in bulk, a later run's one by one.
        index.commit("r1", kept[:1500], centroids=directions[:4])
        index.commit("r2", kept[1500:], centroids=directions[4:8])
        found = index.by_vectors(queries, threshold)
        np.testing.assert_array_equal(index.centroids(), directions[:4])
    cosines = queries @ vectors.T
    expected = {kept[i].node for i in np.flatnonzero(
        (cosines >= threshold).any(axis=0))}
    assert len(expected) > 500  # the threshold cuts through the clusters
    recall = len(nodes(found) & expected) / len(expected)
    assert recall >= 0.99
    best = {entry.node: float((queries @ entry.vector).max())
            for entry in found}
    assert min(best.values()) >= threshold - 1e-5
    stored = {entry.node: entry for entry in kept}
    for entry in found:
        np.testing.assert_array_equal(entry.vector, stored[entry.node].vector)


def test_a_vector_with_more_neighbours_than_ef_search_is_asked_again(
        url, monkeypatch):
    """A first list full of entries at the threshold is not the end: the
    vector is asked again with a longer one, up to MAX_EF_SEARCH."""
    rng = np.random.default_rng(3)
    direction = rng.normal(size=(1, DIM)).astype(np.float32)
    vectors = direction + rng.normal(size=(150, DIM)).astype(np.float32) / 20
    lone = rng.normal(size=(1, DIM)).astype(np.float32)
    with DatabaseIndex.open(url, semantic(), ef_search=20) as index:
        index.commit("r1", vector_entries(vectors, "r1"))
        assert len(index.by_vectors(np.concatenate([lone, direction]),
                                    0.9)) == 150
        monkeypatch.setattr(database, "MAX_EF_SEARCH", 100)
        assert len(index.by_vectors(direction, 0.9)) == 100


def test_a_new_connection_gets_the_candidate_list_again(url):
    """The handle sets hnsw.ef_search once per session: a connection that
    replaces a lost one (a database restart) gets it again too."""
    vectors = np.random.default_rng(5).normal(size=(4, DIM)).astype(
        np.float32)
    with DatabaseIndex.open(url, semantic(), ef_search=20) as index:
        index.commit("r1", vector_entries(vectors, "r1"))
        for _ in range(2):
            index.by_vectors(vectors[:1], 0.9)
            connection = index._connection()
            assert connection.execute("SHOW hnsw.ef_search").fetchone() == (
                "20",)
            connection.close()  # as a server restart leaves it


def _scans(connection: psycopg.Connection) -> dict[str, int]:
    """This transaction's scans so far, by table (`seq:`) and index."""
    tables = connection.execute(
        "SELECT 'seq:' || relname, seq_scan FROM pg_stat_xact_user_tables")
    indexes = connection.execute(
        "SELECT indexrelname, pg_stat_get_xact_numscans(indexrelid) "
        "FROM pg_stat_user_indexes")
    return dict(tables.fetchall() + indexes.fetchall())


@pytest.mark.parametrize("lookup, used", [
    (lambda index, vectors: index.by_exact_keys([b"x" * 32]),
     "dedup_entries_exact_key"),
    (lambda index, vectors: index.by_band_keys(np.zeros((2, 16))),
     "dedup_band_keys_band_hash"),
    (lambda index, vectors: index.by_vectors(vectors[:2], 0.9),
     "dedup_entries_vector")])
def test_lookups_can_read_through_the_indexes_alone(url, lookup, used):
    _, vectors = _clusters(np.random.default_rng(1), 100, 5)
    with DatabaseIndex.open(url, semantic()) as index:
        index.commit("r1", vector_entries(vectors, "r1"))
        connection = index._connection()
        with connection.transaction():
            # A table this small is cheaper to read whole; what matters is
            # that no lookup has to, as on a table of millions.
            connection.execute("SET LOCAL enable_seqscan = off")
            before = _scans(connection)
            lookup(index, vectors)
            scans = _scans(connection)
    assert scans[used] > before[used]
    for table in ("seq:dedup_entries", "seq:dedup_band_keys"):
        assert scans[table] == before[table]


def test_a_failed_commit_leaves_nothing(url):
    def failing_midway():
        yield from text_entries(TEXTS[:3], "r2")
        raise RuntimeError("killed mid-commit")

    with DatabaseIndex.open(url, lexical()) as index:
        index.commit("r1", text_entries(TEXTS[:2], "r1"))
        twice = text_entries(TEXTS[2:4], "r2")
        with pytest.raises(psycopg.errors.UniqueViolation):
            index.commit("r2", twice + twice)  # ids are unique in a run
        with pytest.raises(RuntimeError, match="killed mid-commit"):
            index.commit("r2", failing_midway())
        with pytest.raises(ValueError, match="does not fit run 'r2'"):
            index.commit("r2", text_entries(TEXTS[2:], "r3"))
        assert index.current_version() == index.version == "v000001-r1"
        assert index.entry_count() == 2
        with DatabaseIndex.open(url, lexical()) as fresh:
            assert nodes(fresh.by_exact_keys(
                [e.exact_key for e in text_entries(TEXTS, "x")])) == {
                ("r1", "r1-0"), ("r1", "r1-1")}
        # The run's id is free: nothing of it was kept.
        assert index.commit("r2", twice) == "v000002-r2"


def test_a_commit_whose_session_is_killed_leaves_nothing(url):
    conninfo = url.rpartition("&schema=")[0]
    kept = text_entries(TEXTS[2:], "r2")
    with DatabaseIndex.open(url, lexical()) as index:
        index.commit("r1", text_entries(TEXTS[:2], "r1"))
        backend = index._connection().info.backend_pid

        def killed_midway():
            yield from kept[:2]
            with psycopg.connect(conninfo, autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", [backend])
            yield from kept[2:]

        with pytest.raises(psycopg.OperationalError):
            index.commit("r2", killed_midway())
        assert index.current_version() == "v000001-r1"  # a new session
        assert index.entry_count() == 2
        assert index.commit("r2", kept) == "v000002-r2"


def test_an_empty_batch_finds_nothing(url):
    with DatabaseIndex.open(url, semantic()) as index:
        index.commit("r1", vector_entries(np.eye(2, DIM, dtype=np.float32),
                                          "r1"))
        assert index.by_exact_keys([]) == []
        assert index.by_band_keys(np.zeros((0, 16), np.uint64)) == []
        assert index.by_vectors(np.zeros((0, DIM), np.float32), 0.9) == []


def test_two_runs_committing_at_once_both_land(url):
    DatabaseIndex.open(url, lexical()).close()
    handles = [DatabaseIndex.open(url, lexical()) for _ in range(2)]
    start = threading.Barrier(2)
    versions, errors = {}, []
    texts = [f"line number {i} of a corpus" for i in range(400)]

    def commit(run, handle):
        try:
            start.wait()
            versions[run] = handle.commit(run, text_entries(texts, run))
        except Exception as e:  # noqa: BLE001 (reported below)
            errors.append(e)

    threads = [threading.Thread(target=commit, args=(f"run{i}", handle))
               for i, handle in enumerate(handles)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(name[:7] for name in versions.values()) == [
        "v000001", "v000002"]
    with DatabaseIndex.open(url, lexical()) as index:
        assert index.entry_count() == 800
        assert index.current_version() == max(versions.values())
        found = index.by_exact_keys(
            [e.exact_key for e in text_entries(texts, "q")])
    assert len(found) == 800
    for handle in handles:
        handle.close()


def test_a_retried_commit_changes_nothing(url):
    with DatabaseIndex.open(url, lexical()) as index:
        first = index.commit("r1", text_entries(TEXTS, "r1"))
        assert index.commit("r1", text_entries(TEXTS, "r1")) == first
        assert index.entry_count() == len(TEXTS)
        assert index.current_version() == first


def test_a_handle_sees_the_version_it_was_opened_at(url):
    keys = [e.exact_key for e in text_entries(TEXTS, "q")]
    with DatabaseIndex.open(url, lexical()) as writer:
        writer.commit("r1", text_entries(TEXTS[:2], "r1"))
        reader = pickle.loads(pickle.dumps(
            DatabaseIndex.open(url, lexical())))  # as a DoFn gets it
        writer.commit("r2", text_entries(TEXTS[2:], "r2"))
    assert reader.version == "v000001-r1"
    assert len(reader.by_exact_keys(keys)) == 2
    assert reader.refresh() == "v000002-r2"
    assert len(reader.by_exact_keys(keys)) == len(TEXTS)
    reader.close()


def test_the_schema_may_come_from_the_url_or_a_parameter(postgres):
    with DatabaseIndex.open(f"{postgres.url}&schema=from_url",
                            lexical()) as index:
        assert index.schema == "from_url"
        index.commit("r1", text_entries(TEXTS, "r1"))
    with DatabaseIndex.open(postgres.url, lexical(),
                            schema="from_url") as same:
        assert same.current_version() == "v000001-r1"


def _everything_shown(error: BaseException) -> str:
    return "".join(traceback.format_exception(error)) + repr(error)


def test_the_password_never_shows(postgres, monkeypatch):
    good = role_url(postgres, PASSWORD)
    with DatabaseIndex.open(f"{good}&schema=role_own", lexical()) as index:
        assert PASSWORD not in repr(index) and "%26" not in repr(index)
        assert f"{ROLE}:***@" in repr(index)
    wrong = "not-the-Password-42"
    with pytest.raises(psycopg.OperationalError) as refused:
        DatabaseIndex.open(role_url(postgres, wrong), lexical())
    shown = _everything_shown(refused.value)
    assert "password authentication failed" in shown
    assert wrong not in shown and f"{ROLE}:***@" in shown
    monkeypatch.setenv("PGPASSWORD", wrong)
    unreachable = f"postgresql://{ROLE}@127.0.0.1:1/postgres?connect_timeout=5"
    with pytest.raises(psycopg.OperationalError) as refused:
        DatabaseIndex.open(unreachable, lexical())
    assert wrong not in _everything_shown(refused.value)


def test_the_password_may_come_from_pgpassword_or_a_password_file(
        postgres, monkeypatch, tmp_path):
    bare = postgres.url.replace("postgres:@", f"{ROLE}@", 1)
    with pytest.raises(psycopg.OperationalError):
        DatabaseIndex.open(bare, lexical())  # no password anywhere
    monkeypatch.setenv("PGPASSWORD", PASSWORD)
    DatabaseIndex.open(f"{bare}&schema=role_env", lexical()).close()
    monkeypatch.delenv("PGPASSWORD")
    passfile = tmp_path / "pgpass"
    passfile.write_text(f"*:*:*:{ROLE}:{PASSWORD}\n")
    passfile.chmod(0o600)
    monkeypatch.setenv("PGPASSFILE", str(passfile))
    DatabaseIndex.open(f"{bare}&schema=role_file", lexical()).close()


@pytest.mark.parametrize("url, shown", [
    ("postgresql://u:p%40ss@h:5432/db?sslmode=require",
     "postgresql://u:***@h:5432/db?sslmode=require"),
    ("postgres://u:a@b@h/db", "postgres://u:***@h/db"),
    ("postgresql://u@h/db?password=pw&application_name=x",
     "postgresql://u@h/db?password=***&application_name=x"),
    ("postgresql://postgres:@/postgres?host=/tmp/pg",
     "postgresql://postgres:@/postgres?host=/tmp/pg"),
    ("host=h password=pw user=u", "host=h password=*** user=u"),
])
def test_redact_masks_the_password_of_any_url(url, shown):
    assert redact(url) == shown


def test_scrub_masks_the_password_in_any_form(monkeypatch):
    monkeypatch.setenv("PGPASSWORD", "from-env")
    url = "postgresql://u:p%40ss@h/db"
    text = "p%40ss and p@ss and from-env"
    assert scrub(text, url) == "*** and *** and ***"


def _running(pid: int) -> bool:
    import psutil  # pgserver's dependency

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_serve_prints_the_url_and_stops_the_server_on_sigterm(tmp_path):
    import psutil

    data = tmp_path / "data"
    code = f"from local_runners.postgres import serve; serve({str(data)!r})"
    process = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT,
                               stdout=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline().strip()
        if not line.startswith("POSTGRES_URL="):
            postgres_unavailable(f"serve printed {line!r}")
        with psycopg.connect(line.removeprefix("POSTGRES_URL=")) as c:
            assert c.execute("SELECT extname FROM pg_extension WHERE "
                             "extname = 'vector'").fetchone() == ("vector",)
        postmaster = int((data / "postmaster.pid").read_text().split()[0])
        server = [postmaster] + [child.pid for child in
                                 psutil.Process(postmaster).children()]
        assert len(server) > 1  # its background processes
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    finally:
        process.kill()
        process.stdout.close()
    assert not (data / "postmaster.pid").exists()
    assert not any(_running(pid) for pid in server)
