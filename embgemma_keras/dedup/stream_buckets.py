"""What one LSH bucket of the streaming detector decides, Beam-free.

A bucket holds the originals it has seen (records that matched none held
before them) and judges newcomers in event-time order, then id: each gets
the closest held original or index entry at or above its sketcher's
threshold, or None, and is held in turn if it matched nothing. Where the
newcomers and the held entries come from (Beam state and timers in a
stream, one group per bucket over a bounded input) is
`transforms.dedup.streaming`'s business; the verdicts are the same.

>>> from embgemma_keras.dedup.sketches import LexicalSketch
>>> lexical = LexicalSketch()
>>> judge = BucketJudge([lexical], horizon_secs=60, max_originals=200)
>>> a, _ = lexical.sketch({"text": "see you at the station at nine"})
>>> b, _ = lexical.sketch({"text": "See you at the station at nine!"})
>>> judged = judge([("lexical", "b", b, 5_000_000),
...                 ("lexical", "a", a, 0)], held=[])
>>> [(record_id, match and match[1])
...  for record_id, _, match in judged.verdicts]
[('a', None), ('b', 'a')]
>>> [entry[0] for entry in judged.held]
['a']
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from collections.abc import Sequence

import numpy as np

from embgemma_keras.dedup.grouping import THIS_RUN
from embgemma_keras.dedup.sketches import Sketcher

# (record id, sketch, event time in microseconds): an original held.
Entry = tuple[str, bytes, int]
# (kind, record id, sketch, event time in microseconds): a record to judge.
Newcomer = tuple[str, str, bytes, int]
# (run that kept it, record id, sketch): an entry of a dedup index.
Indexed = tuple[str, str, bytes]
# (kind, id of the original, similarity, the run that kept it or THIS_RUN)
Match = tuple[str, str, float, str]


def match_rank(sketchers: Sequence[Sketcher]) -> dict[str, int]:
    """Which kind of match names the original first: the sketchers' order
    (lexical before semantic)."""
    return {sketcher.kind.value: rank
            for rank, sketcher in enumerate(sketchers)}


def better_match(rank: dict[str, int], one: Match | None,
                 other: Match | None) -> Match | None:
    """The better of two matches: the kind ranked first, then the higher
    similarity."""
    if one is None or other is None:
        return other if one is None else one
    return min(one, other, key=lambda m: (rank[m[0]], -m[2]))


@dataclasses.dataclass
class Judgement:
    """A bucket's verdicts on some newcomers, and what it holds after:
    the entries it held before, less those forgotten (the bucket was full,
    or past the horizon), and the newcomers `added` as originals."""

    verdicts: list[tuple[str, int, Match | None]]  # (id, micros, match)
    held: list[Entry]
    added: list[Entry]
    evicted: int  # originals forgotten because the bucket was full


class BucketJudge:
    """Judges a bucket's newcomers against what it holds, in order.

    Args:
        sketchers: the detector's sketchers, by kind.
        horizon_secs: only a record at most this much earlier in event
            time can be an original; a bucket whose newest original is
            older than that before a newcomer forgets them all first.
        max_originals: originals held; the oldest are forgotten past it, so
            a hot bucket costs bounded time and memory.
    """

    def __init__(self, sketchers: Sequence[Sketcher], horizon_secs: float,
                 max_originals: int):
        self._sketchers = {s.kind.value: s for s in sketchers}
        self.horizon_micros = int(horizon_secs * 1_000_000)  # event time
        self._max_originals = max_originals

    def __call__(self, newcomers: Iterable[Newcomer], held: Sequence[Entry],
                 indexed: Sequence[Indexed] = ()) -> Judgement:
        judged = Judgement([], list(held), [], 0)
        newest = _newest(judged.held)
        for kind, record_id, sketch, micros in sorted(
                newcomers, key=lambda n: (n[3], n[1])):
            if self._outlived(newest, micros):
                judged.held, newest = [], None
            match = self._closest(kind, record_id, sketch, micros,
                                  judged.held, indexed)
            judged.verdicts.append((record_id, micros, match))
            # Only originals are held: a copy matches its original anyway,
            # so a burst of copies (a spam wave) leaves one entry and
            # `duplicate_of` names the original, not another copy. A
            # redelivered record (its id held) is not held twice.
            if match is None and all(e[0] != record_id for e in judged.held):
                if self._make_room(judged):
                    newest = _newest(judged.held)  # a late one may be gone
                judged.held.append((record_id, sketch, micros))
                judged.added.append(judged.held[-1])
                newest = micros if newest is None else max(newest, micros)
        return judged

    def horizon_end(self, held: Sequence[Entry]) -> int | None:
        """The last event time at which a newcomer still meets the newest
        original of `held` (None if it holds none)."""
        newest = _newest(held)
        return None if newest is None else newest + self.horizon_micros

    def outlived(self, held: Sequence[Entry], micros: int) -> bool:
        """Whether a bucket holding `held` forgets them all by `micros`:
        its newest original is more than the horizon earlier."""
        return self._outlived(_newest(held), micros)

    def _outlived(self, newest: int | None, micros: int) -> bool:
        return newest is not None and micros - newest > self.horizon_micros

    def _closest(self, kind, record_id, sketch, micros, held, indexed
                 ) -> Match | None:
        """The closest original or index entry, or None.

        Only a record seen before, at the same or an earlier event time
        within the horizon, can be the original, so a replayed record gets
        the verdict it got first: the entries held since were compared with
        it and are not its near-duplicates. Any index entry can be, even
        one with the record's id (the same record sent again).
        """
        earlier = [(THIS_RUN, other_id, other_sketch)
                   for other_id, other_sketch, other_micros in held
                   if other_id != record_id
                   and 0 <= micros - other_micros <= self.horizon_micros]
        earlier += indexed
        if not earlier:
            return None
        sketcher = self._sketchers[kind]
        scores = sketcher.similarities(sketch, [s for _, _, s in earlier])
        best = int(np.argmax(scores))
        if scores[best] < sketcher.threshold:
            return None
        run, original, _ = earlier[best]
        return kind, original, float(scores[best]), run

    def _make_room(self, judged: Judgement) -> int:
        """Forgets the oldest originals of a full bucket; how many."""
        if len(judged.held) < self._max_originals:
            return 0
        judged.held.sort(key=lambda entry: entry[2])
        drop = len(judged.held) - self._max_originals + 1
        del judged.held[:drop]
        judged.evicted += drop
        return drop


def _newest(held: Sequence[Entry]) -> int | None:
    return max((entry[2] for entry in held), default=None)
