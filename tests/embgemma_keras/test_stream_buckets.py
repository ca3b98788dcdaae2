import numpy as np

from embgemma_keras.dedup.stream_buckets import EMPTY
from embgemma_keras.dedup.stream_buckets import JOIN_KEYS
from embgemma_keras.dedup.stream_buckets import STEPS
from embgemma_keras.dedup.stream_buckets import BucketEntry
from embgemma_keras.dedup.stream_buckets import BucketJudge
from embgemma_keras.dedup.stream_buckets import JudgingSteps
from embgemma_keras.dedup.stream_buckets import Match
from embgemma_keras.dedup.stream_buckets import ShardClock
from embgemma_keras.dedup.stream_buckets import ShardSlices
from embgemma_keras.dedup.stream_buckets import shard_of
from embgemma_keras.dedup.stream_buckets import stream_join_key
from embgemma_keras.records.schema import DuplicateKind

SECOND = 1_000_000  # microseconds


class _EqualTexts:
    """Sketches are the texts; equal texts are duplicates."""

    kind, bands, threshold = DuplicateKind.EXACT, 1, 1.0

    @staticmethod
    def similarities(sketch, others):
        return np.array([float(sketch == other) for other in others])


def _newcomer(record_id, text, secs):
    return BucketEntry.newcomer("exact", record_id, text.encode(),
                                secs * SECOND)


def _matches(judged):
    return {verdict.id: verdict.match and verdict.match.original
            for verdict in judged.verdicts}


def test_newcomers_are_judged_in_event_time_then_id_order():
    judge = BucketJudge([_EqualTexts()], horizon_secs=60, max_originals=10)
    judged = judge([_newcomer("b", "x", 0), _newcomer("c", "x", 1),
                    _newcomer("a", "x", 0)], held=[])
    assert _matches(judged) == {"a": None, "b": "a", "c": "a"}
    assert [entry.id for entry in judged.added] == ["a"]


def test_a_redelivered_record_gets_its_first_verdict_and_is_held_once():
    judge = BucketJudge([_EqualTexts()], horizon_secs=60, max_originals=10)
    first = judge([_newcomer("a", "x", 0)], held=[])
    again = judge([_newcomer("a", "x", 0)], held=first.added)
    assert _matches(again) == {"a": None}
    assert again.added == []


def test_an_original_past_the_horizon_matches_nothing():
    judge = BucketJudge([_EqualTexts()], horizon_secs=60, max_originals=10)
    held = judge([_newcomer("a", "x", 0)], held=[]).added
    within = judge([_newcomer("b", "x", 60)], held=held)
    past = judge([_newcomer("c", "x", 61)], held=held)
    assert _matches(within) == {"b": "a"} and within.added == []
    assert _matches(past) == {"c": None}
    assert [entry.id for entry in past.added] == ["c"]


def test_a_crowded_bucket_compares_the_latest_originals():
    judge = BucketJudge([_EqualTexts()], horizon_secs=60, max_originals=2)
    judged = judge([_newcomer(f"r{t}", f"text {t}", t) for t in range(3)]
                   + [_newcomer("copy0", "text 0", 4),
                      _newcomer("copy2", "text 2", 5)], held=[])
    # r0 is one of three originals before copy0, not of the latest two;
    # copy0 is an original then, so r1 is left out for copy2.
    assert _matches(judged)["copy0"] is None
    assert _matches(judged)["copy2"] == "r2"
    assert judged.crowded == 2


def test_judged_in_steps_a_bucket_gives_the_verdicts_of_once():
    """A stream judges a bucket's newcomers a timer at a time, with the
    originals of the steps before; the verdicts are those of one step."""
    rng = np.random.default_rng(7)
    times = sorted(rng.integers(0, 200, size=60).tolist())
    newcomers = [_newcomer(f"r{i}", f"text {rng.integers(0, 12)}", t)
                 for i, t in enumerate(times)]
    judge = BucketJudge([_EqualTexts()], horizon_secs=30, max_originals=3)
    at_once = judge(newcomers, held=[])
    held, verdicts = [], []
    for step in range(0, len(newcomers), 7):
        judged = judge(newcomers[step:step + 7], held=held)
        held += judged.added
        verdicts += judged.verdicts
    assert verdicts == at_once.verdicts
    assert held == at_once.added
    assert at_once.crowded  # the cap was met


def test_index_entries_match_whatever_their_age_and_id():
    judge = BucketJudge([_EqualTexts()], horizon_secs=60, max_originals=10)
    judged = judge([_newcomer("kept", "x", 10_000)], held=[],
                   indexed=[BucketEntry.indexed_entry("run1", "kept", b"x")])
    assert judged.verdicts[0].match == Match("exact", "kept", 1.0, "run1")
    assert judged.added == []  # a duplicate is not an original


def test_a_shard_forgets_a_slice_nothing_on_time_can_meet():
    slices = ShardSlices(horizon_micros=60 * SECOND)
    clock = ShardClock.start()._replace(micros=130 * SECOND)  # slice 2
    # An original of slice 1 goes to bag 1, one of slice 0 is too old.
    assert slices.bag_for(clock, 70 * SECOND) == 1
    assert slices.bag_for(clock, 59 * SECOND) is None
    held = clock._replace(slices=(EMPTY, 1, 2))
    assert slices.dead_bags(held) == []
    assert slices.bags_to_read(held, earliest=125 * SECOND) == [1, 2]
    # Slice 1 is forgotten once the clock is in slice 3, at 180 s.
    assert slices.expiry(held) == 180 * SECOND
    later = held._replace(micros=180 * SECOND)
    assert slices.dead_bags(later) == [1]
    assert slices.bags_to_read(later, earliest=185 * SECOND) == [2]


def test_a_bucket_keeps_its_shard_everywhere():
    assert shard_of(b"bucket", 64) == shard_of(b"bucket", 64) < 64
    assert len({shard_of(bytes([i]), 8) for i in range(256)}) == 8


def test_a_streams_join_keys_are_a_bounded_set_the_same_everywhere():
    """A stream's verdict join is keyed by a hash of the id: a bounded set
    of keys (a runner may keep every key it has seen), fixed across
    processes and releases (not Python's salted `hash`), so a restored or
    updated job finds its records' state."""
    keys = {stream_join_key(f"record-{i}") for i in range(100_000)}
    assert len(keys) == JOIN_KEYS and keys <= set(range(JOIN_KEYS))
    assert (stream_join_key("record-1"), stream_join_key("sms-00042")) == (
        1680, 1354)


def test_a_newcomer_waits_for_the_step_at_or_after_its_time():
    steps = JudgingSteps(every_secs=0.5)
    assert [steps.step_of(t) for t in (0, 1, 500_000, 500_001)] == [
        0, 1, 1, 2]
    assert steps.time_of(steps.step_of(700_000)) == SECOND
    # Four bags: a step and the one STEPS steps on share a bag.
    assert steps.bag_of(5) == steps.bag_of(5 + STEPS) != steps.bag_of(6)
    assert JudgingSteps(every_secs=0.0001).every_micros == 1000  # a timer's
