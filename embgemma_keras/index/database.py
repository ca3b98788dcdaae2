"""The dedup index in PostgreSQL with pgvector: looked up, never read whole.

Beam-free (psycopg 3). A run opens the index (`DatabaseIndex.open`), looks
up only the entries its records may match, a batch at a time (by exact
key, by LSH band key, by vector through an HNSW index), and commits the
entries it kept, with its version, in one transaction. The tables live in
a schema (`public` unless `?schema=NAME` in the URL or `schema=` says
otherwise), each named `dedup_...`:

    dedup_schema_version  the tables' layout version (upgraded or refused)
    dedup_settings        the `IndexSettings` (JSON, one row; its row lock
                          orders commits)
    dedup_runs            each committed run: id, entries kept, when
    dedup_versions        `v000001-<run>`, its parent, run and time
    dedup_entries         one row an entry (run, id, exact key, MinHash
                          signature, band hashes, bucket, and the vector as
                          pgvector `vector(dim)` with an HNSW index)
    dedup_band_keys       (band, hash) of each entry, B-tree indexed
    dedup_centroids       the first semantic run's k-means centroids (npz)

A handle sees the entries of the version it was opened at (or committed,
or `refresh`ed to), so every worker of a run looks up the same entries,
as with a directory index, whatever commits meanwhile.

The password (in the URL, `PGPASSWORD`, or libpq's password file) appears
in no message, repr or error this module makes or passes on: see `redact`.

>>> redact("postgresql://dedup:s3cret@db.example.com/corpus")
'postgresql://dedup:***@db.example.com/corpus'
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import os
import re
import struct
import urllib.parse
from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Sequence

import numpy as np
import psycopg
from psycopg import sql
from psycopg.adapt import Dumper
from psycopg.adapt import Loader
from psycopg.pq import Format
from psycopg.types import TypeInfo
from psycopg.types.json import Jsonb

from embgemma_keras.artifacts import ModelIdentity
from embgemma_keras.config import MinHashConfig
from embgemma_keras.index.format import IndexEntry
from embgemma_keras.index.format import IndexMismatchError
from embgemma_keras.index.format import IndexSettings
from embgemma_keras.index.format import centroids_bytes
from embgemma_keras.index.format import centroids_from
from embgemma_keras.index.format import stream_mismatches
from embgemma_keras.progress import say

# The layout the statements below make. A database at an older one is
# upgraded on open, in the opening transaction, by MIGRATIONS[n] (the
# statements taking layout n to n + 1, `{schema}` the quoted schema).
SCHEMA_VERSION = 1
MIGRATIONS: dict[int, tuple[str, ...]] = {}
DEFAULT_SCHEMA = "public"
# HNSW's first candidate list a query vector gets. A vector whose list
# comes back full of entries at the threshold (a text with many copies in
# the index) is asked again with one EF_SEARCH_GROWTH times longer, up to
# pgvector's longest, so none is cut off at it. The first list sets recall:
# the neighbours a short list misses belong to vectors that found none, so
# asking again where one was found recovers nothing (docs/benchmarks.md
# has the cost and recall of each length at a million entries).
DEFAULT_EF_SEARCH = 150
EF_SEARCH_GROWTH = 5
MAX_EF_SEARCH = 1000  # pgvector's bound on hnsw.ef_search
MASK = "***"
# What an index's location starts with when it is a database, not a
# directory.
URL_SCHEMES = ("postgresql://", "postgres://")

_TABLES = (
    "CREATE TABLE {schema}.dedup_schema_version (version int NOT NULL)",
    """CREATE TABLE {schema}.dedup_settings (
        one bool PRIMARY KEY DEFAULT true CHECK (one),
        settings jsonb NOT NULL)""",
    """CREATE TABLE {schema}.dedup_runs (
        run text PRIMARY KEY,
        kept bigint NOT NULL,
        created timestamptz NOT NULL DEFAULT now())""",
    """CREATE TABLE {schema}.dedup_versions (
        number int PRIMARY KEY,
        name text NOT NULL UNIQUE,
        parent text REFERENCES {schema}.dedup_versions (name),
        run text NOT NULL UNIQUE REFERENCES {schema}.dedup_runs,
        created timestamptz NOT NULL DEFAULT now())""",
    # `version` is the number of the version that committed the entry: a
    # handle sees those at or below its own.
    """CREATE TABLE {schema}.dedup_entries (
        run text NOT NULL REFERENCES {schema}.dedup_runs,
        id text NOT NULL,
        version int NOT NULL,
        exact_key bytea NOT NULL,
        signature bytea NOT NULL,
        bands bigint[] NOT NULL,
        bucket int NOT NULL,
        PRIMARY KEY (run, id))""",
    """CREATE INDEX dedup_entries_exact_key
        ON {schema}.dedup_entries (exact_key)""",
    """CREATE TABLE {schema}.dedup_band_keys (
        run text NOT NULL,
        id text NOT NULL,
        band smallint NOT NULL,
        hash bigint NOT NULL)""",
    """CREATE INDEX dedup_band_keys_band_hash
        ON {schema}.dedup_band_keys (band, hash) INCLUDE (run, id)""",
    """CREATE TABLE {schema}.dedup_centroids (
        run text PRIMARY KEY REFERENCES {schema}.dedup_runs,
        centroids bytea NOT NULL)""",
)
# A denser graph than pgvector's default (m 16, ef_construction 64): its
# searches reach the neighbours a short candidate list would miss, for
# about twice the build time (docs/benchmarks.md).
_HNSW_INDEX = """CREATE INDEX dedup_entries_vector ON {schema}.dedup_entries
    USING hnsw (vector vector_cosine_ops)
    WITH (m = 24, ef_construction = 128)"""
_VECTOR_TABLES = (
    "ALTER TABLE {schema}.dedup_entries ADD COLUMN vector vector({dim}) "
    "NOT NULL",
    # Vectors in the row, not TOAST (768 floats are over its 2 KB
    # threshold): a lookup reads each candidate's row once, not its TOAST
    # chunks too. A physical choice only: an index made before reads the
    # same, and `ALTER COLUMN vector SET STORAGE PLAIN` gives its new rows
    # the same.
    "ALTER TABLE {schema}.dedup_entries ALTER COLUMN vector "
    "SET STORAGE PLAIN",
    _HNSW_INDEX,
)
_ENTRY_TYPES = ["text", "text", "int4", "bytea", "bytea", "int8[]", "int4"]
_ENTRY_COLUMNS = ("run", "id", "version", "exact_key", "signature", "bands",
                  "bucket")
_KEYWORD_PASSWORD = re.compile(r"(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|\S*)")


def is_database_url(location: str) -> bool:
    """Whether `location` names an index in PostgreSQL (a `postgresql://`
    or `postgres://` URL) rather than a directory.

    >>> is_database_url("postgresql://db/corpus"), is_database_url("gs://b/i")
    (True, False)
    """
    return location.startswith(URL_SCHEMES)


def redact(url: str) -> str:
    """`url` with its password replaced by `***`: what messages show.

    Takes a URL (`postgresql://user:password@host/db?password=...`) or a
    libpq keyword string (`host=h password=p`).

    >>> redact("host=db password='a b' dbname=corpus")
    'host=db password=*** dbname=corpus'
    """
    if "://" not in url:
        return _KEYWORD_PASSWORD.sub(rf"\g<1>{MASK}", url)
    scheme, rest = url.split("://", 1)
    location, mark, tail = rest.partition("?")
    # The password ends at the last @ of the authority, whatever it holds.
    authority, slash, path = location.partition("/")
    userinfo, at, hosts = authority.rpartition("@")
    user, colon, password = userinfo.partition(":")
    if password:
        authority = f"{user}:{MASK}{at}{hosts}"
    query = "&".join(f"password={MASK}" if pair.startswith("password=")
                     else pair for pair in tail.split("&"))
    return f"{scheme}://{authority}{slash}{path}{mark}{query}"


def _passwords(url: str) -> set[str]:
    """Every form of the passwords `url` and PGPASSWORD hold, to scrub."""
    found = {os.environ.get("PGPASSWORD", "")}
    if "://" in url:
        rest = url.split("://", 1)[1]
        location, _, query = rest.partition("?")
        userinfo = location.partition("/")[0].rpartition("@")[0]
        found.add(userinfo.partition(":")[2])
        found.update(pair.partition("=")[2] for pair in query.split("&")
                     if pair.startswith("password="))
    else:
        found.update(match.group(2).strip("'")
                     for match in _KEYWORD_PASSWORD.finditer(url))
    found |= {urllib.parse.unquote(secret) for secret in found}
    found.discard("")
    return found


def scrub(text: str, url: str) -> str:
    """`text` with every password of `url` (and PGPASSWORD) masked."""
    for secret in sorted(_passwords(url), key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


def _split_schema(url: str) -> tuple[str, str | None]:
    """`url` without its `schema=` query parameter (libpq refuses it), and
    that schema."""
    if "://" not in url or "?" not in url:
        return url, None
    base, query = url.split("?", 1)
    pairs = query.split("&")
    schemas = [pair.partition("=")[2] for pair in pairs
               if pair.startswith("schema=")]
    rest = "&".join(pair for pair in pairs if not pair.startswith("schema="))
    return (f"{base}?{rest}" if rest else base,
            urllib.parse.unquote(schemas[-1]) if schemas else None)


class _VectorDumper(Dumper):
    """A NumPy vector -> pgvector's binary `vector`: dim, 0, float4s (BE)."""

    format = Format.BINARY

    def dump(self, obj: np.ndarray) -> bytes:
        vector = np.asarray(obj, ">f4")
        return struct.pack(">HH", vector.shape[0], 0) + vector.tobytes()


class _VectorLoader(Loader):
    """pgvector's binary `vector` -> a float32 NumPy vector."""

    format = Format.BINARY

    def load(self, data: bytes) -> np.ndarray:
        dim = struct.unpack_from(">H", data)[0]
        return np.frombuffer(data, ">f4", dim, 4).astype(np.float32)


class DatabaseIndex:
    """A dedup index in PostgreSQL with pgvector, as one run sees it.

    Make one with `open` (a batch run) or `open_for_stream`. It pickles
    without its connection (a worker connects on first use), so a DoFn can
    hold it and make one batched lookup a bundle.

    Attributes:
        settings: the settings this run writes with (the index's, for a
            stream).
        schema: the PostgreSQL schema of the tables.
        version: the version this handle sees (None: no run committed).
        ef_search: HNSW's first candidate list a query vector gets
            (`by_vectors` asks again with a longer one where it is full).

    Example:

    ```python
    index = DatabaseIndex.open("postgresql://dedup@db/corpus", settings)
    earlier = index.by_exact_keys([entry.exact_key for entry in batch])
    index.commit(run, kept_entries, centroids)
    ```
    """

    def __init__(self, url: str, settings: IndexSettings | None,
                 schema: str | None = None,
                 ef_search: int = DEFAULT_EF_SEARCH):
        self._url = url
        self._conninfo, url_schema = _split_schema(url)
        self.schema = schema or url_schema or DEFAULT_SCHEMA
        self.settings = settings
        self.ef_search = ef_search
        self.version: str | None = None
        self._seen = 0  # the number of `version`
        self._connected: psycopg.Connection | None = None
        # The hnsw.ef_search the open connection's session has.
        self._session_ef_search: int | None = None

    @classmethod
    def open(cls, url: str, settings: IndexSettings, must_exist: bool = False,
             schema: str | None = None,
             ef_search: int = DEFAULT_EF_SEARCH) -> DatabaseIndex:
        """The index at `url` for a run with `settings`, its tables made on
        first use.

        Args:
            url: a libpq URL or keyword string; its password, if any, may
                also come from PGPASSWORD or a password file.
            settings: this run's; an index made with others is refused.
            must_exist: refuse an index no run has committed to.
            schema: the tables' schema (default: the URL's `schema=`, or
                `public`).
            ef_search: see the class.

        Raises:
            IndexMismatchError: other settings (each difference named), a
                missing index with `must_exist`, or a layout this code
                cannot use.
        """
        index = cls(url, settings, schema, ef_search)
        stored = index._prepare(None if must_exist else settings)
        if must_exist and index.version is None:
            index._refuse("no committed version; run once without "
                          "--index_read_only to create it")
        index._refuse_settings(settings.mismatches(stored))
        return index

    @classmethod
    def open_for_stream(cls, url: str, lexical: MinHashConfig,
                        identity: ModelIdentity | None, dim: int | None,
                        schema: str | None = None,
                        ef_search: int = DEFAULT_EF_SEARCH
                        ) -> DatabaseIndex:
        """The index a stream looks its records up in (read only).

        Refuses a missing index, or one whose entries the stream's
        sketches cannot match (`stream_mismatches`), with the reasons.
        Args as `open`; `lexical`, `identity` and `dim` are the stream's.
        """
        index = cls(url, None, schema, ef_search)
        stored = index._prepare(None)
        if index.version is None:
            index._refuse("no committed version; make it with "
                          "dedup_corpus --index")
        index._refuse_settings(stream_mismatches(stored, lexical, identity,
                                                 dim))
        return index

    @property
    def url(self) -> str:
        """The URL with its password masked: safe to show."""
        return redact(self._url)

    @property
    def where(self) -> str:
        """The URL (masked) and schema, as messages name the index."""
        return f"{self.url} (schema {self.schema})"

    def __repr__(self) -> str:
        return (f"DatabaseIndex({self.url!r}, schema={self.schema!r}, "
                f"version={self.version!r})")

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_connected": None}

    def __enter__(self) -> DatabaseIndex:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        """Closes the connection (a later call opens another)."""
        if self._connected is not None:
            self._connected.close()
            self._connected = None

    def current_version(self) -> str | None:
        """The latest committed version in the database (None: none)."""
        with self._errors():
            return self._latest(self._connection())[1]

    def entry_count(self) -> int:
        """The entries of every committed run."""
        with self._errors():
            return self._connection().execute(self._sql(
                "SELECT coalesce(sum(kept), 0) FROM {schema}.dedup_runs")
            ).fetchone()[0]

    def runs(self) -> dict[str, int]:
        """The runs this handle sees, in commit order, with the entries
        each kept."""
        with self._errors():
            return dict(self._connection().execute(self._sql(
                "SELECT r.run, r.kept FROM {schema}.dedup_runs r "
                "JOIN {schema}.dedup_versions v USING (run) "
                "WHERE v.number <= %s ORDER BY v.number"),
                [self._seen]).fetchall())

    def refresh(self) -> str | None:
        """Sees the latest committed version from now on; returns it."""
        with self._errors():
            self._seen, self.version = self._latest(self._connection())
        return self.version

    def centroids(self) -> np.ndarray | None:
        """The stored k-means centroids this handle sees, or None."""
        with self._errors():
            row = self._connection().execute(self._sql(
                "SELECT c.centroids FROM {schema}.dedup_centroids c "
                "JOIN {schema}.dedup_versions v USING (run) "
                "WHERE v.number <= %s"), [self._seen]).fetchone()
        return centroids_from(row[0]) if row else None

    def by_exact_keys(self, keys: Sequence[bytes]) -> list[IndexEntry]:
        """The entries whose exact key is one of `keys`, by (run, id)."""
        if not keys:
            return []
        return self._entries(
            "e.exact_key = ANY(%s)", [[bytes(key) for key in keys]])

    def by_band_keys(self, bands: np.ndarray) -> list[IndexEntry]:
        """The entries sharing a (band, hash) with any row of `bands`.

        Args:
            bands: uint64 band hashes, one row a record, `settings.bands`
                columns (`MinHasher.band_hashes` with the index's bands
                and rows), as `IndexEntry.bands`.
        """
        if len(bands) == 0:
            return []
        bands = np.asarray(bands, np.uint64).reshape(len(bands), -1)
        if bands.shape[1] != self.settings.bands:
            raise ValueError(f"{bands.shape[1]} band hashes a record; the "
                             f"index has {self.settings.bands} bands")
        numbers = np.tile(np.arange(bands.shape[1]), len(bands))
        return self._entries(
            "(e.run, e.id) IN (SELECT k.run, k.id "
            "FROM unnest(%s::int2[], %s::int8[]) AS q(band, hash) "
            "JOIN {schema}.dedup_band_keys k "
            "ON k.band = q.band AND k.hash = q.hash)",
            [numbers.tolist(), bands.ravel().view(np.int64).tolist()])

    def by_vectors(self, vectors: np.ndarray, threshold: float
                   ) -> list[IndexEntry]:
        """The entries at cosine >= `threshold` from any of `vectors`.

        Each vector's `ef_search` nearest neighbours through the HNSW index
        (approximate: a few may be missed), kept at the threshold, one
        query for the batch; the vectors whose every neighbour found was
        at the threshold are asked again with a longer candidate list, up
        to `MAX_EF_SEARCH`.

        Args:
            vectors: float32, one row a query, `settings.dim` columns.
            threshold: the cosine similarity an entry must reach.
        """
        if len(vectors) == 0:
            return []
        vectors = np.asarray(vectors, np.float32)
        if not self.settings.semantic or vectors.shape[1:] != (
                self.settings.dim,):
            raise ValueError(f"query vectors of shape {vectors.shape}; the "
                             f"index keeps vectors of dim "
                             f"{self.settings.dim}")
        found: dict[tuple[str, str], IndexEntry] = {}
        asking, ef_search = np.arange(len(vectors)), self.ef_search
        while True:
            near = self._nearest(vectors[asking], ef_search, 1.0 - threshold)
            per_vector = collections.Counter()
            for queries, version, entry in near:
                per_vector.update(queries)
                if version <= self._seen:
                    found[entry.node] = entry
            full = [i for i, n in per_vector.items() if n >= ef_search]
            if not full or ef_search >= MAX_EF_SEARCH:
                break
            asking = asking[np.array(full) - 1]  # ordinals count from 1
            ef_search = min(ef_search * EF_SEARCH_GROWTH, MAX_EF_SEARCH)
        return [found[node] for node in sorted(found)]

    def _nearest(self, vectors: np.ndarray, ef_search: int,
                 distance: float) -> list[tuple[list[int], int, IndexEntry]]:
        """Each entry within cosine `distance` of the `ef_search` nearest
        of any of `vectors`, once: (the ordinals of the vectors it is near,
        counting from 1; the version that committed it; the entry)."""
        connection = self._connection()
        # Each entry once, with the vectors it is near: the rows come whole
        # from the HNSW scan, with no second read of the table.
        query = self._sql(
            "SELECT DISTINCT ON (n.run, n.id) array_agg(q.i) OVER "
            f"(PARTITION BY n.run, n.id), n.version, {self._columns('n')} "
            "FROM unnest(%b::vector[]) WITH ORDINALITY AS q(v, i) "
            "CROSS JOIN LATERAL (SELECT e.*, e.vector <=> q.v AS distance "
            "FROM {schema}.dedup_entries e ORDER BY e.vector <=> q.v "
            "LIMIT %s) n WHERE n.distance <= %s ORDER BY n.run, n.id")
        with self._errors():
            # Set for the session, and only when it changes: a stream's
            # single-record bundles pay one round trip, not four.
            if self._session_ef_search != ef_search:
                connection.execute("SELECT set_config('hnsw.ef_search', %s, "
                                   "false)", [str(ef_search)])
                self._session_ef_search = ef_search
            rows = connection.execute(query, [list(vectors), ef_search,
                                              distance], binary=True
                                      ).fetchall()
        return [(queries, version, _entry(row))
                for queries, version, *row in rows]

    def commit(self, run: str, entries: Iterable[IndexEntry],
               centroids: np.ndarray | None = None) -> str:
        """Adds a run's entries as a new version, in one transaction.

        Commits are taken one at a time (the settings row's lock), so two
        runs committing at once both land, one after the other. A run
        whose commit fails or is killed leaves nothing. Committing a run
        again (a retried step) changes nothing and returns its version.
        The handle then sees the new version.

        Args:
            run: this run's id (`new_run_id()`).
            entries: the entries it kept, streamed into the table (COPY).
            centroids: the centroids it bucketed with; stored when the
                index has none.

        Returns the new version's name, `v000001-<run>` and so on.
        """
        connection = self._connection()
        with self._errors(), connection.transaction():
            connection.execute(self._sql(
                "SELECT 1 FROM {schema}.dedup_settings FOR UPDATE"))
            done = connection.execute(self._sql(
                "SELECT number, name FROM {schema}.dedup_versions "
                "WHERE run = %s"), [run]).fetchone()
            if done:
                self._seen, self.version = done
                return self.version
            number, parent = self._latest(connection)
            number, name = number + 1, f"v{number + 1:06d}-{run}"
            kept = self._write_run(connection, run, number, entries,
                                   centroids)
            connection.execute(self._sql(
                "INSERT INTO {schema}.dedup_versions (number, name, parent, "
                "run) VALUES (%s, %s, %s, %s)"), [number, name, parent, run])
        self._seen, self.version = number, name
        # Fresh planner statistics: until autovacuum gets to a large new
        # run, the planner would read the band keys without their index.
        with self._errors():
            connection.execute(self._sql(
                "ANALYZE {schema}.dedup_entries, {schema}.dedup_band_keys"))
        say(f"index {self.where}: version {name}, {kept} entries")
        return name

    def _write_run(self, connection: psycopg.Connection, run: str,
                   number: int, entries: Iterable[IndexEntry],
                   centroids: np.ndarray | None) -> int:
        """Writes the run, its entries, band keys and centroids; returns
        how many entries."""
        connection.execute(self._sql(
            "INSERT INTO {schema}.dedup_runs (run, kept) VALUES (%s, 0)"),
            [run])
        # Into an empty table, building the HNSW index after the rows is
        # several times faster than adding them to it one by one.
        rebuild = self.settings.semantic and number == 1
        if rebuild:
            connection.execute(self._sql(
                "DROP INDEX {schema}.dedup_entries_vector"))
        kept = self._copy_entries(connection, run, number, entries)
        if rebuild:
            connection.execute(self._sql(_HNSW_INDEX))
        connection.execute(self._sql(
            "INSERT INTO {schema}.dedup_band_keys (run, id, band, hash) "
            "SELECT e.run, e.id, b.band - 1, b.hash "
            "FROM {schema}.dedup_entries e, "
            "unnest(e.bands) WITH ORDINALITY AS b(hash, band) "
            "WHERE e.run = %s"), [run])
        if centroids is not None:
            connection.execute(self._sql(
                "INSERT INTO {schema}.dedup_centroids (run, centroids) "
                "SELECT %s, %s WHERE NOT EXISTS "
                "(SELECT 1 FROM {schema}.dedup_centroids)"),
                [run, centroids_bytes(centroids)])
        connection.execute(self._sql(
            "UPDATE {schema}.dedup_runs SET kept = %s WHERE run = %s"),
            [kept, run])
        return kept

    def _copy_entries(self, connection: psycopg.Connection, run: str,
                      number: int, entries: Iterable[IndexEntry]) -> int:
        settings = self.settings
        semantic = settings.semantic
        columns = _ENTRY_COLUMNS + (("vector",) if semantic else ())
        statement = sql.SQL(
            "COPY {schema}.dedup_entries ({columns}) FROM STDIN "
            "(FORMAT BINARY)").format(
                schema=sql.Identifier(self.schema),
                columns=sql.SQL(", ").join(map(sql.Identifier, columns)))
        kept = 0
        with connection.cursor().copy(statement) as copy:
            copy.set_types(_ENTRY_TYPES + (["vector"] if semantic else []))
            for entry in entries:
                copy.write_row(_entry_row(entry, run, number, settings))
                kept += 1
        return kept

    def _entries(self, condition: str, params: list) -> list[IndexEntry]:
        """The entries this handle sees that meet `condition`."""
        query = self._sql(f"SELECT {self._columns('e')} "
                          "FROM {schema}.dedup_entries e "
                          f"WHERE e.version <= %s AND {condition} "
                          "ORDER BY e.run, e.id")
        return self._fetch(query, [self._seen, *params])

    def _columns(self, table: str) -> str:
        """An `IndexEntry`'s columns of `table`, in `_entry`'s order."""
        names = ["run", "id", "exact_key", "signature", "bands", "bucket"]
        if self.settings.semantic:
            names.append("vector")
        return ", ".join(f"{table}.{name}" for name in names)

    def _fetch(self, query: sql.Composed, params: list) -> list[IndexEntry]:
        with self._errors():
            rows = self._connection().execute(query, params,
                                              binary=True).fetchall()
        return [_entry(row) for row in rows]

    def _prepare(self, create: IndexSettings | None) -> IndexSettings | None:
        """Makes the tables (from `create`) or upgrades them, and reads the
        settings and the version to see; None when there are no tables
        and nothing to make them from."""
        connection = self._connection()
        with self._errors(), connection.transaction():
            # Two runs opening a new index at once make it once.
            connection.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                [f"embgemma dedup index {self.schema}"])
            found = self._layout(connection)
            if found is None and create is None:
                return None
            if found is None:
                self._create(connection, create)
            else:
                self._upgrade(connection, found)
            stored = self._stored_settings(connection)
            self._seen, self.version = self._latest(connection)
        if self.settings is None:
            self.settings = stored
            if stored.semantic:
                _register_vector(connection)
        return stored

    def _layout(self, connection: psycopg.Connection) -> int | None:
        """The tables' layout version, or None when there are none."""
        exists = connection.execute(
            "SELECT to_regclass(format('%%I.dedup_schema_version', %s::text))",
            [self.schema]).fetchone()[0]
        if exists is None:
            return None
        return connection.execute(self._sql(
            "SELECT version FROM {schema}.dedup_schema_version")).fetchone()[0]

    def _create(self, connection: psycopg.Connection,
                settings: IndexSettings) -> None:
        connection.execute(self._sql("CREATE SCHEMA IF NOT EXISTS {schema}"))
        for statement in _TABLES + (_VECTOR_TABLES if settings.semantic
                                    else ()):
            connection.execute(self._sql(statement, dim=settings.dim))
        connection.execute(self._sql(
            "INSERT INTO {schema}.dedup_schema_version VALUES (%s)"),
            [SCHEMA_VERSION])
        connection.execute(self._sql(
            "INSERT INTO {schema}.dedup_settings (settings) VALUES (%s)"),
            [Jsonb(dataclasses.asdict(settings))])

    def _upgrade(self, connection: psycopg.Connection, found: int) -> None:
        """Takes the tables from layout `found` to SCHEMA_VERSION, or
        refuses."""
        if found > SCHEMA_VERSION:
            raise IndexMismatchError(
                f"the index at {self.where} has table layout {found}, newer "
                f"than this code's {SCHEMA_VERSION}: upgrade embgemma-beam "
                "to use it")
        missing = [n for n in range(found, SCHEMA_VERSION)
                   if n not in MIGRATIONS]
        if missing:
            raise IndexMismatchError(
                f"the index at {self.where} has table layout {found}, and "
                f"this code ({SCHEMA_VERSION}) cannot upgrade layout "
                f"{missing[0]}: make a new index (another schema) with this "
                "code, or use the embgemma-beam release that made it")
        for layout in range(found, SCHEMA_VERSION):
            for statement in MIGRATIONS[layout]:
                connection.execute(self._sql(statement))
        if found < SCHEMA_VERSION:
            connection.execute(self._sql(
                "UPDATE {schema}.dedup_schema_version SET version = %s"),
                [SCHEMA_VERSION])
            say(f"index {self.where}: tables upgraded from layout {found} "
                f"to {SCHEMA_VERSION}")

    def _stored_settings(self, connection: psycopg.Connection
                         ) -> IndexSettings:
        stored = connection.execute(self._sql(
            "SELECT settings FROM {schema}.dedup_settings")).fetchone()
        try:
            return IndexSettings(**stored[0])
        except TypeError as e:
            raise IndexMismatchError(
                f"the index at {self.where} has unreadable settings: {e}"
            ) from None

    def _latest(self, connection: psycopg.Connection
                ) -> tuple[int, str | None]:
        row = connection.execute(self._sql(
            "SELECT number, name FROM {schema}.dedup_versions "
            "ORDER BY number DESC LIMIT 1")).fetchone()
        return row or (0, None)

    def _refuse_settings(self, reasons: list[str]) -> None:
        if reasons:
            self._refuse(
                "it was made with other settings, so its entries cannot be "
                "compared with this job's records: " + "; ".join(reasons)
                + ". Use another --index, or the index's settings.")

    def _refuse(self, why: str) -> None:
        self.close()
        raise IndexMismatchError(f"the index at {self.where}: {why}")

    def _sql(self, statement: str, dim: int | None = None) -> sql.Composed:
        return sql.SQL(statement).format(schema=sql.Identifier(self.schema),
                                         dim=sql.Literal(dim))

    def _connection(self) -> psycopg.Connection:
        """The open connection, or a new one (pgvector's type known for a
        semantic index)."""
        if self._connected is not None and not self._connected.closed:
            return self._connected
        with self._errors():
            connection = psycopg.connect(self._conninfo, autocommit=True)
            self._session_ef_search = None
            if self.settings is not None and self.settings.semantic:
                _create_vector_extension(connection)
                _register_vector(connection)
        self._connected = connection
        return connection

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """Re-raises a psycopg error naming the index, passwords masked."""
        try:
            yield
        except psycopg.Error as e:
            raise type(e)(f"{self.where}: {scrub(str(e), self._url)}"
                          ) from None


def _create_vector_extension(connection: psycopg.Connection) -> None:
    """pgvector's extension, made once (it needs the privilege to create
    extensions: on Cloud SQL and AlloyDB, the database's owner has it)."""
    if TypeInfo.fetch(connection, "vector") is not None:
        return
    with connection.transaction():
        connection.execute("SELECT pg_advisory_xact_lock(hashtextextended("
                           "'embgemma dedup index: vector', 0))")
        connection.execute("CREATE EXTENSION IF NOT EXISTS vector")


def _register_vector(connection: psycopg.Connection) -> None:
    info = TypeInfo.fetch(connection, "vector")
    info.register(connection)
    connection.adapters.register_dumper(
        np.ndarray, type("VectorDumper", (_VectorDumper,), {"oid": info.oid}))
    connection.adapters.register_loader(info.oid, _VectorLoader)


def _entry_row(entry: IndexEntry, run: str, number: int,
               settings: IndexSettings) -> tuple:
    """`entry` as a row of dedup_entries; refuses one made otherwise."""
    signature = np.asarray(entry.signature, "<u4")
    bands = np.asarray(entry.bands, np.uint64)
    if (entry.run != run or signature.shape != (settings.num_perm,)
            or bands.shape != (settings.bands,)):
        raise ValueError(f"entry {entry.id!r} of run {entry.run!r} does not "
                         f"fit run {run!r} with these settings: "
                         f"{signature.size} MinHash values, {bands.size} "
                         "band hashes")
    row = (run, entry.id, number, entry.exact_key, signature.tobytes(),
           bands.view(np.int64).tolist(), entry.bucket)
    if settings.semantic:
        row += (np.asarray(entry.vector, np.float32),)
    return row


def _entry(row: tuple) -> IndexEntry:
    run, id_, exact_key, signature, bands, bucket, *vector = row
    return IndexEntry(id_, run, bytes(exact_key),
                      bands=np.array(bands, np.int64).view(np.uint64),
                      signature=np.frombuffer(signature, "<u4"),
                      bucket=bucket, vector=vector[0] if vector else None)
