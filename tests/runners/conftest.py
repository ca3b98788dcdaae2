"""Real Beam runners for the runner tests: Prism, Flink, a Pub/Sub server.

Each is built once and cached by `local_runners` (`.ci/run` builds them
first; `$PRISM_BINARY`, `$FLINK_JOB_SERVER_JAR` and `$PUBSUB_SERVER_BINARY`
name ones built elsewhere). A runner that cannot be set up fails the test
under CI=true, with the reason; elsewhere it skips with the reason
(`set_up_runner`, in tests/conftest.py). Every test here is `slow` too
(tests/conftest.py marks them): `pytest -m "not slow"` leaves them out.

Every job here runs on the sample corpus plus three bad lines, and its
outputs are compared with the DirectRunner's on the same input, which runs
once per session.
"""

import collections
import datetime
import json
import pathlib
import random

import pytest

from embgemma_keras.labels.heads import ZeroShotHead
from local_runners.flink import FlinkCluster
from local_runners.flink import flink_flags
from local_runners.flink import job_server_jar
from local_runners.prism import prism_binary
from local_runners.prism import prism_flags
from local_runners.pubsub import PubSubServer
from local_runners.sdk_harness import harness_flags
from pipelines import dedup_corpus
from pipelines import stream_tag
from tests.helpers import EVENT_TIME
from tests.helpers import dedup_verdicts
from tests.helpers import read_outputs

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples"
BAD_LINES = [b"{not json", b'{"text": ""}', b'{"id": "x", "text": 7}']
FLINK_PARALLELISM = 2


@pytest.fixture(scope="session")
def on_prism(set_up_runner):
    """Flags that run a job on Prism, SDK harness in this process.

    Each job starts its own Prism: Beam keeps one shared Prism per process
    otherwise, and from then on the DirectRunner runs every batch job of
    the later tests on it (without `prism_disable_sdf_split`).
    """
    return [*prism_flags(set_up_runner(prism_binary)),
            "--experiments", "disable_prism_server_singleton"]


@pytest.fixture(scope="session")
def on_flink_local(set_up_runner):
    """Flags that run a job on a Flink cluster inside the job server."""
    return flink_flags("[local]", set_up_runner(job_server_jar))


@pytest.fixture(scope="session")
def flink_cluster(set_up_runner):
    """A standalone Flink cluster: a JobManager and two TaskManagers."""
    cluster = FlinkCluster(task_managers=FLINK_PARALLELISM)
    set_up_runner(cluster.start)
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def on_flink_cluster(flink_cluster):
    """Flags that run a job on `flink_cluster` with parallelism 2, one SDK
    harness process per TaskManager."""
    return [*flink_flags(flink_cluster.master, environment=harness_flags()),
            "--parallelism", str(FLINK_PARALLELISM)]


@pytest.fixture
def pubsub_server(set_up_runner):
    """The Pub/Sub server, PUBSUB_EMULATOR_HOST pointing at it."""
    server = PubSubServer()
    set_up_runner(server.__enter__)
    yield server
    server.__exit__(None, None, None)


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    """The sample corpus (210 records) with three bad lines."""
    path = tmp_path_factory.mktemp("corpus") / "corpus.jsonl"
    records = (EXAMPLES / "corpus.jsonl").read_bytes().rstrip(b"\n")
    path.write_bytes(records + b"\n" + b"\n".join(BAD_LINES) + b"\n")
    return path


# Five records whose event times carry microseconds (as a Pub/Sub timestamp
# attribute can), where Beam's timers keep milliseconds, in an order a
# stream may deliver them; "c" is more than STREAM_HORIZON_SECS after "a".
_TEXT = ("the quarterly report shows that revenue grew by twelve percent "
         "while costs stayed flat across all regions")
STREAM_EVENTS = [(61.0004, {"id": "c", "text": _TEXT + "?"}),
                 (0.0007, {"id": "b", "text": _TEXT + "!"}),
                 (30.2501, {"id": "e", "text": "a different note entirely"}),
                 (0.0004, {"id": "a", "text": _TEXT}),
                 (61.5009, {"id": "d", "text": _TEXT + "?!"})]
STREAM_HORIZON_SECS = 60
# c is an original again, d its copy: {id: (duplicate_of, kept_id)}.
STREAM_VERDICTS = {"a": (None, None), "b": ("a", "a"), "c": (None, None),
                   "d": ("c", "c"), "e": (None, None)}


def stream_verdicts(out) -> dict:
    """{id: (duplicate_of, kept_id)} of the detector's output on
    STREAM_EVENTS, which must hold every record once, at its time."""
    assert sorted(r["id"] for r in out) == sorted(
        r["id"] for _, r in STREAM_EVENTS)
    times = {r["id"]: t for t, r in STREAM_EVENTS}
    assert all(abs(r[EVENT_TIME] - times[r["id"]]) < 1e-3 for r in out)
    return {r["id"]: (r.get("duplicate_of"), r.get("kept_id")) for r in out}


def lines(path) -> int:
    return len(pathlib.Path(path).read_bytes().splitlines())


def tag_verdicts(out):
    """What `stream_tag` decided: (id, duplicate_of, kept_id, spam label)
    per record, and the dead letters' errors."""
    return (sorted((r["id"], r.get("duplicate_of"), r.get("kept_id"),
                    r["labels"]["spam"]["label"])
                   for r in read_outputs(out, "tagged")),
            sorted(d["error"] for d in read_outputs(out, "dead_letters")))


def assert_tags_agree(verdicts, direct, corpus) -> None:
    """`stream_tag`'s verdicts on a runner are the DirectRunner's.

    Every record of a file has the same event time and runners deliver them
    in different orders; of two near-duplicates at one time the larger id
    is flagged, on every runner.
    """
    (tagged, dead), (direct_tagged, direct_dead) = verdicts, direct
    assert dead == direct_dead
    assert len(tagged) + len(dead) == lines(corpus)
    assert tagged == direct_tagged
    flagged = {i: duplicate_of for i, duplicate_of, _, _ in tagged
               if duplicate_of}
    # A group's kept record is one no stage flagged.
    assert all(kept and kept not in flagged
               for i, _, kept, _ in tagged if i in flagged)
    copies = [i for i, _, _, _ in tagged if i.endswith(("-copy", "-case"))]
    assert copies
    for copy in copies:
        assert flagged.get(copy) == copy.rsplit("-", 1)[0], copy


@pytest.fixture(scope="session")
def run_dedup(tiny_preset, corpus, tmp_path_factory):
    """Runs dedup_corpus on `corpus` with extra flags; its verdicts."""
    def run(*flags):
        out = tmp_path_factory.mktemp("dedup")
        dedup_corpus.main(["--input", str(corpus), "--output", str(out),
                           "--model", tiny_preset, *flags])
        return dedup_verdicts(out)
    return run


@pytest.fixture(scope="session")
def spam_head(tiny_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("head") / "spam"
    ZeroShotHead.from_descriptions(
        tiny_model, {"spam": "a prize or an offer", "ham": "a note"},
        model_identity=tiny_model.identity, min_score=-1.0).save(path)
    return path


@pytest.fixture(scope="session")
def run_tag(tiny_preset, corpus, spam_head, tmp_path_factory):
    """Runs stream_tag over `corpus` with extra flags; its verdicts."""
    def run(*flags):
        out = tmp_path_factory.mktemp("tag")
        stream_tag.main(["--input", str(corpus), "--output", str(out),
                         "--model", tiny_preset,
                         "--heads", f"spam={spam_head}", *flags])
        return tag_verdicts(out)
    return run


@pytest.fixture(scope="session")
def direct_dedup(run_dedup):
    return run_dedup()


@pytest.fixture(scope="session")
def direct_tags(run_tag):
    return run_tag()


# `stream_tag --as_stream`: the sample corpus in id order, so that the
# order its lines are read in (their event times by default) is the order
# the bounded job gives records at one time (by id), and the same records
# shuffled, each carrying its time in id order in a field, in four forms.
AS_STREAM_START = 1714564800  # 2024-05-01T12:00:00Z
BAD_TIME = b'{"id": "bad-time", "text": "a note", "time": "noon"}'
BAD_TIME_ERROR = ("event time field 'time': 'noon' is neither an RFC 3339 "
                  "time (2024-05-01T12:00:00Z) nor epoch seconds")


def _time_forms(seconds: int) -> list:
    """`seconds` after AS_STREAM_START, as RFC 3339 (Z and an offset) and
    epoch seconds (int and float)."""
    at = AS_STREAM_START + seconds
    utc = datetime.datetime.fromtimestamp(at, datetime.timezone.utc)
    plus_two = utc.astimezone(datetime.timezone(datetime.timedelta(hours=2)))
    return [utc.strftime("%Y-%m-%dT%H:%M:%SZ"), plus_two.isoformat(), at,
            at + 0.0]


@pytest.fixture(scope="session")
def ordered_corpus(tmp_path_factory):
    """The sample corpus sorted by id, then the three bad lines."""
    records = sorted((EXAMPLES / "corpus.jsonl").read_bytes().splitlines(),
                     key=lambda line: json.loads(line)["id"])
    path = tmp_path_factory.mktemp("ordered") / "corpus.jsonl"
    path.write_bytes(b"\n".join([*records, *BAD_LINES]) + b"\n")
    return path


@pytest.fixture(scope="session")
def timed_corpus(ordered_corpus, tmp_path_factory):
    """`ordered_corpus`'s lines shuffled, each record with its place in it
    as a `time` field (a second a line), plus a line whose time is no
    time: delivered out of order, but for the bad lines each at its time."""
    lines = ordered_corpus.read_bytes().splitlines()
    timed = []
    for place, line in enumerate(lines):
        if line in BAD_LINES:
            timed.append(line)
            continue
        record = json.loads(line)
        record["time"] = _time_forms(place)[place % 4]
        timed.append(json.dumps(record).encode())
    random.Random(24).shuffle(timed)
    path = tmp_path_factory.mktemp("timed") / "corpus.jsonl"
    path.write_bytes(b"\n".join([*timed, BAD_TIME]) + b"\n")
    return path


def as_stream_verdicts(out) -> tuple[dict, list, list]:
    """What `stream_tag` decided in `out`: {id: (duplicate_of, kept_id,
    kind)},
    the dead letters' errors, and the tagged files' names; each id must be
    out once."""
    tagged = read_outputs(out, "tagged")
    ids = collections.Counter(r["id"] for r in tagged)
    assert not [i for i, n in ids.items() if n > 1]
    verdicts = {r["id"]: (r.get("duplicate_of"), r.get("kept_id"),
                          r.get("kind")) for r in tagged}
    return (verdicts,
            sorted(d["error"] for d in read_outputs(out, "dead_letters")),
            sorted(p.name for p in pathlib.Path(out).glob("tagged*")))


@pytest.fixture(scope="session")
def run_as_stream(tiny_preset, tmp_path_factory):
    """Runs stream_tag over a file with extra flags (--as_stream among
    them, or not); `as_stream_verdicts`."""
    def run(path, *flags):
        out = tmp_path_factory.mktemp("as-stream")
        stream_tag.main(["--input", str(path), "--output", str(out),
                         "--model", tiny_preset, *flags])
        return as_stream_verdicts(out)
    return run


@pytest.fixture(scope="session")
def bounded_verdicts(run_as_stream, ordered_corpus):
    """The bounded job's verdicts over `ordered_corpus` (DirectRunner)."""
    verdicts, dead, _ = run_as_stream(ordered_corpus)
    assert len(verdicts) + len(dead) == lines(ordered_corpus)
    assert sum(bool(v[0]) for v in verdicts.values()) > 0
    # Each duplicate names the record its group kept, one not flagged.
    assert all(kept and not verdicts[kept][0]
               for duplicate_of, kept, _ in verdicts.values() if duplicate_of)
    return verdicts, dead


def assert_as_stream_agrees(verdicts, bounded, extra_dead=()) -> None:
    """`stream_tag --as_stream`'s verdicts are the bounded job's, each
    record out once, and none late: every tagged file is a window's
    on-time pane."""
    (tagged, dead, files), (bounded_tagged, bounded_dead) = verdicts, bounded
    assert tagged == bounded_tagged
    assert dead == sorted([*bounded_dead, *extra_dead])
    assert files and all(name.endswith("-pane0.jsonl") for name in files)
