import json

import apache_beam as beam
import numpy as np
import pytest

from embgemma_keras.config import MinHashConfig
from embgemma_keras.config import StreamDedupConfig
from embgemma_keras.dedup.grouping import THIS_RUN
from embgemma_keras.dedup.minhash import MinHasher
from embgemma_keras.dedup.minhash import normalize
from embgemma_keras.dedup.sketches import SemanticSketch
from embgemma_keras.dedup.stream_buckets import JoinEntry
from embgemma_keras.dedup.stream_buckets import Match
from embgemma_keras.index.format import IndexEntry
from embgemma_keras.records.schema import INDEX_MATCHES
from embgemma_keras.records.schema import DuplicateKind
from tests.helpers import EVENT_TIME
from tests.helpers import run_events
from transforms.dedup.streaming import StreamingNearDuplicates

TEXT = ("the quarterly report shows that revenue grew by twelve percent while "
        "costs stayed flat across all regions")


# The verdicts are the same over a stream (state and timers) and over a
# bounded input (one group per bucket).
both_inputs = pytest.mark.parametrize("bounded", [False, True],
                                      ids=["stream", "bounded"])


@both_inputs
def test_duplicates_within_the_horizon_only(tmp_path, bounded):
    events = [
        (0, {"id": "first", "text": TEXT}),
        (60, {"id": "typo", "text": TEXT.replace("twelve", "twelv")}),
        (0, {"id": "first", "text": TEXT}),        # Pub/Sub redelivery
        (90, {"id": "other", "text": "see you at lunch tomorrow"}),
        (5000, {"id": "far_copy", "text": TEXT}),  # past the 1 h horizon
    ]
    out = run_events(events, StreamingNearDuplicates(
        StreamDedupConfig(horizon_secs=3600)), tmp_path, bounded=bounded)
    assert len(out) == len(events)  # every delivery comes out, once each
    tags = sorted((r["id"], r.get("duplicate_of"), r.get("kind"))
                  for r in out)
    # The redelivered "first" is not a duplicate of itself, nor of "typo"
    # (which came after it in event time).
    assert tags == [("far_copy", None, None), ("first", None, None),
                    ("first", None, None), ("other", None, None),
                    ("typo", "first", "lexical")]
    typo = next(r for r in out if r["id"] == "typo")
    assert 0.7 <= typo["similarity"] < 1


@both_inputs
def test_semantic_sketch_flags_close_vectors(tmp_path, bounded):
    rng = np.random.default_rng(0)
    base = rng.normal(size=64).astype(np.float32)
    base /= np.linalg.norm(base)
    near = base + 0.02 * rng.normal(size=64).astype(np.float32)
    near /= np.linalg.norm(near)
    far = rng.normal(size=64).astype(np.float32)
    far /= np.linalg.norm(far)

    def record(record_id, vector):
        return {"id": record_id, "text": record_id,
                "embeddings": {"similarity": vector}}

    events = [(0, record("a", base)), (5, record("b", near)),
              (9, record("c", far))]
    out = run_events(events, StreamingNearDuplicates(
        StreamDedupConfig(horizon_secs=60),
        sketchers=[SemanticSketch(64, threshold=0.95)]), tmp_path,
        bounded=bounded)
    tags = {r["id"]: r.get("duplicate_of") for r in out}
    assert tags == {"a": None, "b": "a", "c": None}
    assert next(r for r in out if r["id"] == "b")["kind"] == "semantic"


@both_inputs
@pytest.mark.slow
def test_a_wave_of_copies_points_at_the_original(tmp_path, bounded):
    # Only originals are remembered, so each copy (and a near copy of a
    # copy) names the first record, and the buckets hold one entry.
    events = [(t, {"id": f"copy{t}", "text": TEXT}) for t in range(1, 30)]
    events[5] = (6, {"id": "typo", "text": TEXT.replace("twelve", "twelv")})
    out = run_events([(0, {"id": "original", "text": TEXT})] + events,
                     StreamingNearDuplicates(), tmp_path, bounded=bounded)
    assert len(out) == 30
    assert {r.get("duplicate_of") for r in out if r["id"] != "original"} == {
        "original"}


class _OneBucket:
    """Every record in one bucket; equal texts are duplicates."""

    kind, bands, threshold = DuplicateKind.EXACT, 1, 1.0

    def sketch(self, record):
        return record["text"].encode(), [b"all"]

    @staticmethod
    def similarities(sketch, others):
        return np.array([float(sketch == other) for other in others])


@both_inputs
def test_a_full_bucket_forgets_its_oldest_original(tmp_path, bounded):
    events = [(t, {"id": f"r{t}", "text": f"text {t}"}) for t in range(4)]
    events += [(10, {"id": "copy_of_r0", "text": "text 0"}),
               (11, {"id": "copy_of_r3", "text": "text 3"})]
    out = run_events(events, StreamingNearDuplicates(
        StreamDedupConfig(max_originals=2), sketchers=[_OneBucket()]), tmp_path,
        bounded=bounded)
    tags = {r["id"]: r.get("duplicate_of") for r in out}
    assert len(out) == len(events)
    assert tags["copy_of_r3"] == "r3"
    assert tags["copy_of_r0"] is None  # r0 was forgotten: missed, not wrong


_STATE_VALUES = []  # (state name, value) of every value written to state


class _PlainOnly(beam.coders.Coder):
    """Wraps a state coder; refuses any value that is not plain data."""

    def __init__(self, name, inner):
        self._name, self._inner = name, inner

    def encode(self, value):
        _check_plain(value, self._name)
        _STATE_VALUES.append((self._name, value))
        return self._inner.encode(value)

    def decode(self, encoded):
        return self._inner.decode(encoded)

    def is_deterministic(self):
        return self._inner.is_deterministic()


def _check_plain(value, name):
    if isinstance(value, tuple):
        for item in value:
            _check_plain(item, name)
        return
    if type(value) not in (str, bytes, int, float):
        raise AssertionError(f"state {name!r} got a {type(value).__name__}")
    if isinstance(value, bytes) and b'"embeddings"' in value:
        raise AssertionError(f"state {name!r} got a record with embeddings")


def test_streaming_state_holds_plain_values_only(tmp_path, monkeypatch):
    from transforms.dedup.streaming import _CompareInShard
    from transforms.dedup.streaming import _JoinVerdicts

    shard_specs = ["PENDING_0", "PENDING_1", "PENDING_2", "PENDING_3",
                   "HELD_0", "HELD_1", "HELD_2", "INDEXED", "CLOCK"]
    for fn, spec_names in ((_CompareInShard, shard_specs),
                           (_JoinVerdicts, ["INBOX"])):
        for spec_name in spec_names:
            spec = getattr(fn, spec_name)
            monkeypatch.setattr(spec, "coder", _PlainOnly(spec.name,
                                                          spec.coder))
    _STATE_VALUES.clear()
    rng = np.random.default_rng(1)
    vector = rng.normal(size=64).astype(np.float32)
    vector /= np.linalg.norm(vector)

    def record(record_id, text):
        return {"id": record_id, "text": text, "lang": "en",
                "embeddings": {"similarity": vector,
                               "classification": vector}}

    events = [(0, record("a", TEXT)), (5, record("b", TEXT + "!")),
              (9, record("a", TEXT)), (9, record("c", "an indexed text"))]
    out = run_events(events, lambda against: StreamingNearDuplicates(
        StreamDedupConfig(horizon_secs=60), dim=64, against=against),
        tmp_path, index=[_entry("kept", "run1", "an indexed text", -vector)])
    assert {r["id"]: r.get("duplicate_of") for r in out} == {
        "a": None, "b": "a", "c": "kept"}
    assert len(out) == 4 and all("embeddings" not in r for r in out)
    written = {name for name, _ in _STATE_VALUES}
    # (events at 0, 5 and 9 s: steps 0, 5 and 9 of 1 s: bags 0, 1 and 1)
    assert written == {"pending_0", "pending_1", "held_0", "indexed",
                       "clock", "inbox"}
    # An entry is its bucket's key, and a kind, a run, an id, a sketch (a
    # MinHash signature, or a float16 vector) and a time: never a record.
    sketches = [value.entry.sketch for name, value in _STATE_VALUES
                if name.startswith(("pending", "held", "indexed"))]
    assert sorted({len(sketch) for sketch in sketches}) == [64 * 2, 128 * 4]


@both_inputs
def test_of_two_copies_at_one_time_the_larger_id_is_flagged(tmp_path, bounded):
    """Every record of a file has the same event time; runners deliver
    them in any order. Whichever order, the same one copy is flagged."""
    for first, second in (("a", "b"), ("b", "a")):
        out = run_events([(0, {"id": first, "text": TEXT}),
                    (0, {"id": second, "text": TEXT})],
                   StreamingNearDuplicates(StreamDedupConfig()),
                   tmp_path / first, in_order=False, bounded=bounded)
        tags = sorted((r["id"], r.get("duplicate_of")) for r in out)
        assert tags == [("a", None), ("b", "a")]


def test_timers_due_at_once_give_the_verdicts_of_a_steady_stream(tmp_path):
    """A watermark that jumps over a backlog makes a bucket's expiry and its
    newcomers' timers due at once; whatever order the runner fires them
    in, a newcomer is compared with what the bucket held at its time."""
    times = (0, 1, 2, 3, 4, 70, 100)  # the last two past the horizon
    events = [(t, {"id": f"r{t}", "text": TEXT}) for t in times]
    expected = {"r0": None, "r1": "r0", "r2": "r0", "r3": "r0", "r4": "r0",
                "r70": None, "r100": "r70"}
    for backlog in (False, True):
        out = run_events(events, StreamingNearDuplicates(
            StreamDedupConfig(horizon_secs=60)), tmp_path / str(backlog),
            backlog=backlog)
        assert {r["id"]: r.get("duplicate_of") for r in out} == expected


@both_inputs
def test_a_copy_delivered_before_its_original_is_flagged(tmp_path, bounded):
    """Pub/Sub delivers in any order: the copy, published later, can come
    first. Records wait for the watermark and are compared in event time
    order, so the copy is still the one flagged."""
    out = run_events([(5, {"id": "copy", "text": TEXT}),
                (3, {"id": "noise", "text": "see you at lunch tomorrow"}),
                (0, {"id": "original", "text": TEXT})],
               StreamingNearDuplicates(StreamDedupConfig(horizon_secs=60)),
               tmp_path, in_order=False, bounded=bounded)
    assert sorted((r["id"], r.get("duplicate_of")) for r in out) == [
        ("copy", "original"), ("noise", None), ("original", None)]
    # Each record keeps its event time (windowed sinks use it).
    assert {r["id"]: r[EVENT_TIME] for r in out} == {
        "copy": 5, "noise": 3, "original": 0}


def test_a_late_original_is_not_flagged_as_a_copy_of_its_copy(tmp_path):
    """An original arriving after the watermark passed its copy's time is
    late: neither is flagged (missed, never inverted)."""
    out = run_events([(5, {"id": "copy", "text": TEXT}),
                (0, {"id": "original", "text": TEXT})],
               StreamingNearDuplicates(StreamDedupConfig(horizon_secs=60)),
               tmp_path)
    assert sorted((r["id"], r.get("duplicate_of")) for r in out) == [
        ("copy", None), ("original", None)]


def _entry(record_id, run, text, vector=None):
    """An `IndexEntry` as `dedup_corpus` keeps it (default MinHash)."""
    signature = MinHasher(MinHashConfig()).signature(normalize(text))
    return IndexEntry(record_id, run, b"", np.zeros(16, np.uint64),
                      signature, 0 if vector is not None else -1, vector)


@both_inputs
@pytest.mark.slow
def test_records_that_copy_an_indexed_record_name_it_and_itsrun_events(
        tmp_path, bounded):
    """An index entry is matched however old; it is never flagged or
    emitted itself; a record sent again with an indexed record's id is its
    duplicate (an earlier run kept it), unlike a redelivery in the
    stream."""
    index = [_entry("kept", "run1", TEXT),
             _entry("other", "run2", "see you at lunch tomorrow")]
    events = [(0, {"id": "noise", "text": "the train leaves at nine"}),
              (5000, {"id": "typo", "text": TEXT.replace("twelve", "twelv")}),
              (5001, {"id": "kept", "text": TEXT}),
              (5002, {"id": "noise-copy", "text": "the train leaves at nine"}),
              ]
    for in_order in (True, False):
        out = run_events(events, lambda against: StreamingNearDuplicates(
            StreamDedupConfig(horizon_secs=60), against=against),
            tmp_path / str(in_order), in_order, index=index, bounded=bounded)
        tags = sorted((r["id"], r.get("duplicate_of"),
                       r.get("duplicate_of_run")) for r in out)
        # noise-copy is past the 60 s horizon of noise, which no index has.
        assert tags == [("kept", "kept", "run1"), ("noise", None, None),
                        ("noise-copy", None, None),
                        ("typo", "kept", "run1")]


@both_inputs
def test_entries_a_record_looked_up_serve_its_horizon_only(tmp_path,
                                                          bounded):
    """Entries a database lookup found come on their record
    (`INDEX_MATCHES`): they match it, and records in its buckets after it
    within the horizon; not a record before it, nor one past the horizon,
    whatever order the records arrive in. Each record is near the entry
    (cosine 0.990) but not near enough another (0.980)."""
    rng = np.random.default_rng(0)
    kept, *noise = np.linalg.qr(rng.normal(size=(64, 5)))[0].T
    near = [(kept + 0.142 * n).astype(np.float32) for n in noise]
    near = [v / np.linalg.norm(v) for v in near]
    entry = _entry("kept", "run1", "z", kept.astype(np.float32))
    events = [(5, "earlier", near[0], ()), (10, "looked-up", near[1], (entry,)),
              (20, "after", near[2], ()), (200, "past-horizon", near[3], ())]
    events = [(time, {"id": record_id, "text": record_id, INDEX_MATCHES: found,
                      "embeddings": {"similarity": vector}})
              for time, record_id, vector, found in events]
    for in_order in (True, False):
        out = run_events(events, StreamingNearDuplicates(
            StreamDedupConfig(horizon_secs=60),
            sketchers=[SemanticSketch(64, threshold=0.985)]),
            tmp_path / str(in_order), in_order, bounded=bounded)
        tags = {r["id"]: (r.get("duplicate_of"), r.get("duplicate_of_run"))
                for r in out}
        assert tags == {"earlier": (None, None),
                        "looked-up": ("kept", "run1"),
                        "after": ("kept", "run1"),
                        "past-horizon": (None, None)}
        assert not any(INDEX_MATCHES in r for r in out)


@both_inputs
def test_a_semantic_match_in_the_index_is_flagged(tmp_path, bounded):
    rng = np.random.default_rng(0)
    base, far = rng.normal(size=(2, 64)).astype(np.float32)
    near = base + 0.02 * rng.normal(size=64).astype(np.float32)
    unit = [v / np.linalg.norm(v) for v in (base, near, far)]
    events = [(0, {"id": "near", "text": "a",
                   "embeddings": {"similarity": unit[1]}}),
              (1, {"id": "far", "text": "b",
                   "embeddings": {"similarity": unit[2]}})]
    out = run_events(events, lambda against: StreamingNearDuplicates(
        sketchers=[SemanticSketch(64, threshold=0.95)], against=against),
        tmp_path, index=[_entry("base", "run1", "z", unit[0])],
        bounded=bounded)
    tags = {r["id"]: (r.get("duplicate_of"), r.get("duplicate_of_run"),
                      r.get("kind")) for r in out}
    assert tags == {"near": ("base", "run1", "semantic"),
                    "far": (None, None, None)}


def test_the_join_lets_each_delivery_leave_with_the_best_verdict(tmp_path):
    """The verdict join's messages in an order a runner may deliver them:
    a verdict before its record's line, a redelivery in flight with the
    first delivery, and another record's messages on the same key (a
    stream's join keys are hashes of the id). Each line leaves once
    `bands` verdicts of its record are in, with the best match any
    delivery of it got (lexical before semantic), and nothing of the other
    record's."""
    from transforms.dedup.streaming import FLAGGED
    from transforms.dedup.streaming import _JoinVerdicts

    def line(record_id):
        return json.dumps({"id": record_id, "text": TEXT}).encode("utf-8")

    semantic = Match("semantic", "a", 0.93, THIS_RUN)
    lexical = Match("lexical", "b", 0.8, THIS_RUN)
    other = Match("lexical", "c", 0.99, THIS_RUN)
    # (record id, bands judged, best match) from a bundle of the compare
    # stage, or (record id,) for a delivery of the record's line
    messages = [("x", 1, semantic), ("y",), ("x",), ("y", 1, other), ("x",),
                ("x", 1, lexical), ("x", 2, None), ("y", 1, None)]

    def message(fields):
        if len(fields) == 1:
            return JoinEntry.of_line(fields[0], line(fields[0]))
        return JoinEntry.of_verdicts(*fields)

    @beam.ptransform_fn
    def flagged(events):
        # Only the flagged output: a record the join flags must go there,
        # to have its kept record found.
        return (events | beam.Map(lambda m: (7, message(m["message"])))
                | beam.ParDo(_JoinVerdicts(
                    bands=2, rank={"lexical": 0, "semantic": 1})
                ).with_outputs(FLAGGED, main="unflagged"))[FLAGGED]

    out = run_events([(t, {"message": m}) for t, m in enumerate(messages)],
                     flagged(), tmp_path)
    assert sorted((r["id"], r["duplicate_of"], r["kind"]) for r in out) == [
        ("x", "b", "lexical"), ("x", "b", "lexical"), ("y", "c", "lexical")]


@both_inputs
def test_a_flagged_record_names_the_record_kept(tmp_path, bounded):
    """Every record a stream flags carries `kept_id`, the original it
    matched (this run's record, or an index entry); others carry none."""
    events = [(0, {"id": "first", "text": TEXT}),
              (5, {"id": "copy", "text": TEXT}),
              (9, {"id": "resent", "text": "see you at lunch tomorrow"})]
    out = run_events(events, lambda against: StreamingNearDuplicates(
        StreamDedupConfig(horizon_secs=60), against=against), tmp_path,
        index=[_entry("lunch", "run1", "see you at lunch tomorrow")],
        bounded=bounded)
    tags = {r["id"]: (r.get("duplicate_of"), r.get("kept_id")) for r in out}
    assert tags == {"first": (None, None), "copy": ("first", "first"),
                    "resent": ("lunch", "lunch")}


def _chain(length: int, seed: int = 0) -> list[np.ndarray]:
    """Unit vectors each at cosine 0.95 to the one before it along one
    great circle, so 0.81 to the one before that: with seed 0, each pair
    of neighbours shares an LSH band of `SemanticSketch(64)` that the one
    before them does not."""
    rng = np.random.default_rng(seed)

    def unit(v):
        return (v / np.linalg.norm(v)).astype(np.float32)

    chain = [unit(rng.normal(size=64))]
    turn = unit(rng.normal(size=64))
    for _ in range(length - 1):
        away = unit(turn - (turn @ chain[-1]) * chain[-1])
        chain.append(unit(0.95 * chain[-1] + np.sqrt(1 - 0.95**2) * away))
    return chain


@pytest.mark.parametrize("apart_secs", [5, 0.1], ids=["apart", "one_step"])
@pytest.mark.parametrize(("bounded", "in_order"), [
    (False, True), (False, False), (True, True)],
    ids=["stream", "stream_any_order", "bounded"])
def test_kept_id_follows_a_chain_to_the_record_kept(tmp_path, bounded,
                                                    in_order, apart_secs):
    """a, b, c, d, each a near-duplicate of the one before only: b is
    flagged against a, c against b (an original in a bucket a is not in),
    d against c. Each names the record before it in `duplicate_of`, and
    all name `a`, the one their group kept, in `kept_id`: whether they
    were judged at separate steps or at one, in any order of arrival."""
    ids = ["a", "b", "c", "d"]
    events = [(apart_secs * i, {"id": record_id, "text": record_id,
                                "embeddings": {"similarity": vector}})
              for i, (record_id, vector) in enumerate(zip(ids, _chain(4),
                                                          strict=True))]
    events.append((apart_secs, {"id": "apart", "text": "apart",
                                "embeddings": {"similarity": _chain(
                                    1, seed=1)[0]}}))
    out = run_events(events if in_order else events[::-1],
                     StreamingNearDuplicates(
                         StreamDedupConfig(horizon_secs=60),
                         sketchers=[SemanticSketch(64, threshold=0.9)]),
                     tmp_path, bounded=bounded, in_order=in_order)
    assert len(out) == len(events)
    tags = {r["id"]: (r.get("duplicate_of"), r.get("kept_id")) for r in out}
    assert tags == {"a": (None, None), "b": ("a", "a"), "c": ("b", "a"),
                    "d": ("c", "a"), "apart": (None, None)}


def test_the_detectors_elements_have_fixed_deterministic_coders():
    """Bucket entries and join messages are coded field by field (no
    pickling), deterministically, and come back as the named tuples."""
    from apache_beam.typehints import native_type_compatibility

    from embgemma_keras.dedup.stream_buckets import BucketEntry

    entry = BucketEntry.newcomer("lexical", "r1", b"\x01\x02", 5_000)
    message = JoinEntry.of_verdicts("r1", 2,
                                    Match("lexical", "r0", 0.75, "run1"))
    line = JoinEntry.of_line("r1", b"{}")
    for element_type, value in ((BucketEntry, entry), (JoinEntry, message),
                                (JoinEntry, line)):
        coder = beam.coders.registry.get_coder(
            native_type_compatibility.convert_to_beam_type(
                tuple[str, element_type]))
        assert coder.is_deterministic()
        back = coder.decode(coder.encode(("key", value)))
        assert back == ("key", value) and type(back[1]) is element_type
    assert message.match.indexed and line.match is None


def test_a_stream_over_many_horizons_gives_the_bounded_verdicts(tmp_path):
    """A steady stream over ten horizons, on two shards woken every 5 s:
    slices are forgotten as the watermark moves on, crowded buckets
    compare their latest originals, and every record gets the verdict the
    bounded path gives it."""
    rng = np.random.default_rng(3)
    times = np.sort(rng.choice(300, size=80, replace=False))
    events = [(int(t), {"id": f"r{i:02d}",
                          "text": f"{TEXT} {rng.integers(0, 10)}"})
              for i, t in enumerate(times)]
    config = StreamDedupConfig(horizon_secs=30, max_originals=3,
                               bucket_shards=2, judge_every_secs=5)

    def verdicts(bounded):
        out = run_events(events, StreamingNearDuplicates(
            config, sketchers=[_OneBucket()]), tmp_path / str(bounded),
            bounded=bounded)
        assert sorted(r["id"] for r in out) == [r["id"] for _, r in events]
        return {r["id"]: r.get("duplicate_of") for r in out}

    stream = verdicts(bounded=False)
    assert stream == verdicts(bounded=True)
    assert 10 < sum(v is not None for v in stream.values()) < 70


def test_the_watermark_holds_fire_at_whole_days_not_one_time_a_set():
    """The detector sets its watermark holds (processing-time timers never
    meant to fire) over and over, and Prism queues each firing time it is
    given until that time comes: the holds share whole days, at least
    `HOLD_DAYS` ahead."""
    from apache_beam.utils.timestamp import Timestamp

    from transforms.dedup.streaming import DAY_SECS
    from transforms.dedup.streaming import HOLD_DAYS
    from transforms.dedup.streaming import _hold_fire_time

    day = DAY_SECS * 10**6
    now = Timestamp.now().micros
    times = {_hold_fire_time().micros for _ in range(1000)}
    assert len(times) <= 2 and all(t % day == 0 for t in times)
    assert all(HOLD_DAYS * day < t - now <= (HOLD_DAYS + 1) * day
               for t in times)


class _CountedBag:
    """A bag that counts its reads, as a harness without a cache token
    sends each one over the Fn API."""

    def __init__(self):
        self.entries, self.reads = [], 0

    def read(self):
        self.reads += 1
        return list(self.entries)

    def add(self, entry):
        self.entries.append(entry)

    def clear(self):
        self.entries = []


def test_the_join_reads_a_keys_bag_once_a_bundle_and_lets_each_record_out():
    """Two records on one join key, their lines and band verdicts in one
    bundle: the bag is read once, each record leaves once with its best
    match, and what the bag keeps for the next bundle is what is still in
    flight."""
    from transforms.dedup.streaming import _JoinVerdicts

    join = _JoinVerdicts(bands=2, rank={"lexical": 0, "semantic": 1})
    bag = _CountedBag()
    close = Match("lexical", "r0", 0.9, "")
    messages = [JoinEntry.of_line("a", b'{"id": "a"}'),
                JoinEntry.of_line("b", b'{"id": "b"}'),
                JoinEntry.of_verdicts("a", 1, None),
                JoinEntry.of_verdicts("b", 1, close),
                JoinEntry.of_verdicts("a", 1, None),
                JoinEntry.of_verdicts("b", 1, None)]
    join.start_bundle()
    out = [item for message in messages[:5] for item in join.process(
        (7, message), window="w", inbox=bag) or ()]
    assert out == [{"id": "a"}] and bag.reads == 1
    assert [(e.id, e.judged, e.line) for e in bag.entries] == [
        ("b", 0, b'{"id": "b"}'), ("b", 1, b"")]
    join.finish_bundle()
    join.start_bundle()
    out = list(join.process((7, messages[5]), window="w", inbox=bag))
    assert bag.reads == 2 and bag.entries == []
    assert [(o.tag, o.value["id"], o.value["duplicate_of"]) for o in out] == [
        ("flagged", "b", "r0")]
