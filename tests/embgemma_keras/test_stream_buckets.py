import numpy as np

from embgemma_keras.dedup.stream_buckets import BucketEntry
from embgemma_keras.dedup.stream_buckets import BucketJudge
from embgemma_keras.dedup.stream_buckets import Match
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
    assert [entry.id for entry in judged.held] == ["a"]
    assert judged.added == judged.held


def test_a_redelivered_record_gets_its_first_verdict_and_is_held_once():
    judge = BucketJudge([_EqualTexts()], horizon_secs=60, max_originals=10)
    first = judge([_newcomer("a", "x", 0)], held=[])
    again = judge([_newcomer("a", "x", 0)], held=first.held)
    assert _matches(again) == {"a": None}
    assert again.added == [] and again.held == first.held


def test_a_bucket_past_the_horizon_forgets_its_originals():
    judge = BucketJudge([_EqualTexts()], horizon_secs=60, max_originals=10)
    held = judge([_newcomer("a", "x", 0)], held=[]).held
    within = judge([_newcomer("b", "x", 60)], held=held)
    past = judge([_newcomer("c", "x", 61)], held=held)
    assert _matches(within) == {"b": "a"} and within.held == held
    assert _matches(past) == {"c": None}
    assert [entry.id for entry in past.held] == ["c"]
    assert judge.horizon_end(held) == 60 * SECOND
    assert judge.horizon_end([]) is None
    assert not judge.outlived(held, 60 * SECOND)
    assert judge.outlived(held, 61 * SECOND)


def test_a_full_bucket_forgets_its_oldest_original():
    judge = BucketJudge([_EqualTexts()], horizon_secs=60, max_originals=2)
    judged = judge([_newcomer(f"r{t}", f"text {t}", t) for t in range(3)]
                   + [_newcomer("copy", "text 0", 4)], held=[])
    assert _matches(judged)["copy"] is None  # r0 was forgotten
    # r0 made room for r2, r1 for the copy (an original now).
    assert judged.evicted == 2
    assert [entry.id for entry in judged.held] == ["r2", "copy"]


def test_index_entries_match_whatever_their_age_and_id():
    judge = BucketJudge([_EqualTexts()], horizon_secs=60, max_originals=10)
    judged = judge([_newcomer("kept", "x", 10_000)], held=[],
                   indexed=[BucketEntry.indexed_entry("run1", "kept", b"x")])
    assert judged.verdicts[0].match == Match("exact", "kept", 1.0, "run1")
    assert judged.held == []  # a duplicate is not an original


def test_a_late_original_that_fills_a_bucket_keeps_the_horizon_its_own():
    """Room made for a late original can drop the newest one; the
    horizon then runs from the late one."""
    judge = BucketJudge([_EqualTexts()], horizon_secs=60, max_originals=1)
    held = judge([_newcomer("new", "y", 100)], held=[]).held
    judged = judge([_newcomer("late", "x", 50), _newcomer("next", "z", 111)],
                   held=held)
    # "next" is 61 s after "late", the newest left: the horizon forgets
    # it, so only "new" was evicted (the bucket_evictions metric).
    assert [entry.id for entry in judged.held] == ["next"]
    assert judged.evicted == 1
