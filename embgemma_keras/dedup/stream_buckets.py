"""What one LSH bucket of the streaming detector decides, Beam-free.

A bucket holds the originals it has seen (records that matched none held
before them) and judges newcomers in event-time order, then id: each gets
the closest held original or index entry at or above its sketcher's
threshold, or None, and is held in turn if it matched nothing. Where the
newcomers and the held entries come from (Beam state and timers in a
stream, one group per bucket over a bounded input) is
`transforms.dedup.streaming`'s business; the verdicts are the same.

Newcomers, originals and index entries are all `BucketEntry`s, one field
order for all; a verdict names its original with a `Match`; the
detector's verdict join holds `JoinEntry`s (a record's line, or the
verdicts of some of its bands).

>>> from embgemma_keras.dedup.sketches import LexicalSketch
>>> lexical = LexicalSketch()
>>> judge = BucketJudge([lexical], horizon_secs=60, max_originals=200)
>>> a, _ = lexical.sketch({"text": "see you at the station at nine"})
>>> b, _ = lexical.sketch({"text": "See you at the station at nine!"})
>>> judged = judge([BucketEntry.newcomer("lexical", "b", b, 5_000_000),
...                 BucketEntry.newcomer("lexical", "a", a, 0)], held=[])
>>> [(v.id, v.match and v.match.original) for v in judged.verdicts]
[('a', None), ('b', 'a')]
>>> [entry.id for entry in judged.held]
['a']
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Iterable
from collections.abc import Sequence

import numpy as np

from embgemma_keras.dedup.grouping import THIS_RUN
from embgemma_keras.dedup.sketches import Sketcher

# The `kind` of an entry a bucket holds: an original, or an index entry.
HELD = ""


class BucketEntry(typing.NamedTuple):
    """A record or index entry in one LSH bucket.

    A newcomer (a record still to judge) has its sketcher's `kind`; an
    original the bucket holds, or an entry of a dedup index, is `HELD`.
    """

    kind: str
    run: str  # THIS_RUN, or the run that kept an index entry
    id: str
    sketch: bytes
    micros: int  # event time in microseconds; 0 for an index entry

    @classmethod
    def newcomer(cls, kind: str, record_id: str, sketch: bytes,
                 micros: int) -> BucketEntry:
        """A record of this run, to be judged by the sketcher `kind`."""
        return cls(kind, THIS_RUN, record_id, sketch, micros)

    @classmethod
    def indexed_entry(cls, run: str, record_id: str, sketch: bytes,
                      micros: int = 0) -> BucketEntry:
        """A record the run `run` kept in a dedup index: held for good
        (`micros` 0: a directory index's, loaded at start), or, looked up
        for a record at `micros`, as long as that record's originals."""
        return cls(HELD, run, record_id, sketch, micros)

    @property
    def indexed(self) -> bool:
        """Whether it is an entry of a dedup index, not a record of this
        run."""
        return self.run != THIS_RUN

    @property
    def is_newcomer(self) -> bool:
        """Whether it is still to be judged (not held)."""
        return self.kind != HELD


class Match(typing.NamedTuple):
    """The original a newcomer near-duplicates."""

    kind: str  # the sketcher that matched: a DuplicateKind
    original: str  # its id
    similarity: float
    run: str  # the run that kept it (an index entry), or THIS_RUN

    @property
    def indexed(self) -> bool:
        """Whether the original is an entry of a dedup index."""
        return self.run != THIS_RUN


# "No match" where None cannot be held (Beam state): a match of no kind.
NO_MATCH = Match("", "", 0.0, "")


class JoinEntry(typing.NamedTuple):
    """A message to the verdict join, as its inbox holds it: a delivery of
    a record (its line, no verdict), or verdicts of some of its bands."""

    line: bytes  # the vector-free record as a JSON line; b"" for verdicts
    judged: int  # bands judged
    best: Match  # the best match of those bands, or NO_MATCH

    @classmethod
    def of_line(cls, line: bytes) -> JoinEntry:
        """A delivery of a record, as its JSON line."""
        return cls(line, 0, NO_MATCH)

    @classmethod
    def of_verdicts(cls, judged: int, best: Match | None) -> JoinEntry:
        """The verdicts of `judged` bands, `best` the best match of them."""
        return cls(b"", judged, best or NO_MATCH)

    @property
    def match(self) -> Match | None:
        """The best match, or None."""
        return self.best if self.best.kind else None


class Verdict(typing.NamedTuple):
    """A bucket's verdict on one newcomer: its best match, or None."""

    id: str
    micros: int
    match: Match | None


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
    return min(one, other, key=lambda m: (rank[m.kind], -m.similarity))


@dataclasses.dataclass
class Judgement:
    """A bucket's verdicts on some newcomers, and what it holds after:
    the entries it held before, less those forgotten (the bucket was full,
    or past the horizon), and the newcomers `added` as originals."""

    verdicts: list[Verdict]
    held: list[BucketEntry]
    added: list[BucketEntry]
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

    def __call__(self, newcomers: Iterable[BucketEntry],
                 held: Sequence[BucketEntry],
                 indexed: Sequence[BucketEntry] = ()) -> Judgement:
        """Judges `newcomers` against the originals `held` and the index
        entries `indexed`; returns the verdicts and what is held after."""
        judged = Judgement([], list(held), [], 0)
        newest = _newest(judged.held)
        for newcomer in sorted(newcomers, key=lambda n: (n.micros, n.id)):
            if self._outlived(newest, newcomer.micros):
                judged.held, newest = [], None
            match = self._closest(newcomer, judged.held, indexed)
            judged.verdicts.append(
                Verdict(newcomer.id, newcomer.micros, match))
            # Only originals are held: a copy matches its original anyway,
            # so a burst of copies (a spam wave) leaves one entry and
            # `duplicate_of` names the original, not another copy. A
            # redelivered record (its id held) is not held twice.
            if match is None and all(e.id != newcomer.id
                                     for e in judged.held):
                if self._make_room(judged):
                    newest = _newest(judged.held)  # a late one may be gone
                judged.held.append(newcomer._replace(kind=HELD))
                judged.added.append(judged.held[-1])
                newest = (newcomer.micros if newest is None
                          else max(newest, newcomer.micros))
        return judged

    def current_index(self, indexed: Sequence[BucketEntry], micros: int
                      ) -> list[BucketEntry]:
        """The index entries a bucket still needs at `micros`, once its
        newcomers up to then are judged: those held for good (time 0);
        of an entry looked up by records at or before `micros`, the
        latest lookup (it outlives the others), unless past the horizon;
        and every lookup after `micros` (its newcomer is still to come)."""
        latest: dict[tuple[str, str], BucketEntry] = {}
        later = []
        for entry in indexed:
            if entry.micros > micros:
                later.append(entry)
                continue
            node = entry.run, entry.id
            if node not in latest or latest[node].micros < entry.micros:
                latest[node] = entry
        return [entry for entry in latest.values() if not entry.micros
                or not self._outlived(entry.micros, micros)] + later

    def horizon_end(self, held: Sequence[BucketEntry]) -> int | None:
        """The last event time at which a newcomer still meets the newest
        original of `held` (None if it holds none)."""
        newest = _newest(held)
        return None if newest is None else newest + self.horizon_micros

    def outlived(self, held: Sequence[BucketEntry], micros: int) -> bool:
        """Whether a bucket holding `held` forgets them all by `micros`:
        its newest original is more than the horizon earlier."""
        return self._outlived(_newest(held), micros)

    def _outlived(self, newest: int | None, micros: int) -> bool:
        return newest is not None and micros - newest > self.horizon_micros

    def _closest(self, newcomer: BucketEntry, held: Sequence[BucketEntry],
                 indexed: Sequence[BucketEntry]) -> Match | None:
        """The closest original or index entry, or None.

        Only a record seen before, at the same or an earlier event time
        within the horizon, can be the original, so a replayed record gets
        the verdict it got first: the entries held since were compared with
        it and are not its near-duplicates. Any index entry can be, even
        one with the record's id (the same record sent again): one kept
        for good, or one looked up for a record at or before it, within
        the horizon (a database index's entries come with the records
        that looked them up).
        """
        earlier = [entry for entry in held if entry.id != newcomer.id
                   and self._within(newcomer, entry)]
        earlier += [entry for entry in indexed
                    if not entry.micros or self._within(newcomer, entry)]
        if not earlier:
            return None
        sketcher = self._sketchers[newcomer.kind]
        scores = sketcher.similarities(newcomer.sketch,
                                       [entry.sketch for entry in earlier])
        best = int(np.argmax(scores))
        if scores[best] < sketcher.threshold:
            return None
        return Match(newcomer.kind, earlier[best].id, float(scores[best]),
                     earlier[best].run)

    def _within(self, newcomer: BucketEntry, entry: BucketEntry) -> bool:
        """Whether `entry` came at or before `newcomer`, in its horizon."""
        return 0 <= newcomer.micros - entry.micros <= self.horizon_micros

    def _make_room(self, judged: Judgement) -> int:
        """Forgets the oldest originals of a full bucket; how many."""
        if len(judged.held) < self._max_originals:
            return 0
        judged.held.sort(key=lambda entry: entry.micros)
        drop = len(judged.held) - self._max_originals + 1
        del judged.held[:drop]
        judged.evicted += drop
        return drop


def _newest(held: Sequence[BucketEntry]) -> int | None:
    return max((entry.micros for entry in held), default=None)
