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
>>> [entry.id for entry in judged.added]
['a']
"""

from __future__ import annotations

import bisect
import dataclasses
import typing
import zlib
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
    record `id` (its line, no verdict), or verdicts of some of its bands.
    A stream's join holds several records a key (`stream_join_key`), told
    apart by `id`."""

    id: str
    line: bytes  # the vector-free record as a JSON line; b"" for verdicts
    judged: int  # bands judged
    best: Match  # the best match of those bands, or NO_MATCH

    @classmethod
    def of_line(cls, record_id: str, line: bytes) -> JoinEntry:
        """A delivery of a record, as its JSON line."""
        return cls(record_id, line, 0, NO_MATCH)

    @classmethod
    def of_verdicts(cls, record_id: str, judged: int,
                    best: Match | None) -> JoinEntry:
        """The verdicts of `judged` bands, `best` the best match of them."""
        return cls(record_id, b"", judged, best or NO_MATCH)

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
    """A bucket's verdicts on some newcomers, the newcomers `added` as
    originals, and how many verdicts left originals out (`crowded`: more
    than `max_originals` of them within the horizon)."""

    verdicts: list[Verdict]
    added: list[BucketEntry]
    crowded: int


class BucketJudge:
    """Judges a bucket's newcomers against what it holds, in order.

    A newcomer is compared with the latest `max_originals` originals at or
    before it in event time, within the horizon, and with the index
    entries. That rule depends on the originals alone, not on when they
    came, so a bucket judged in several steps (a stream's timers) gives
    the verdicts of one judged at once (a bounded input).

    Args:
        sketchers: the detector's sketchers, by kind.
        horizon_secs: only a record at most this much earlier in event
            time can be an original.
        max_originals: originals a newcomer is compared with, the latest;
            so a hot bucket costs bounded time.
    """

    def __init__(self, sketchers: Sequence[Sketcher], horizon_secs: float,
                 max_originals: int):
        self._sketchers = {s.kind.value: s for s in sketchers}
        self.horizon_micros = int(horizon_secs * 1_000_000)  # event time
        self._max_originals = max_originals

    def __call__(self, newcomers: Iterable[BucketEntry],
                 held: Iterable[BucketEntry],
                 indexed: Sequence[BucketEntry] = ()) -> Judgement:
        """Judges `newcomers` against the originals `held` and the index
        entries `indexed`; returns the verdicts and the new originals."""
        judged = Judgement([], [], 0)
        held = sorted(held, key=_order)
        held_ids = {entry.id for entry in held}
        for newcomer in sorted(newcomers, key=_order):
            match = self._closest(newcomer, self._originals(
                newcomer, held, judged), indexed)
            judged.verdicts.append(
                Verdict(newcomer.id, newcomer.micros, match))
            # Only originals are held: a copy matches its original anyway,
            # so a burst of copies (a spam wave) leaves one entry and
            # `duplicate_of` names the original, not another copy. A
            # redelivered record (its id held) is not held twice.
            if match is None and newcomer.id not in held_ids:
                original = newcomer._replace(kind=HELD)
                bisect.insort(held, original, key=_order)
                held_ids.add(original.id)
                judged.added.append(original)
        return judged

    def _originals(self, newcomer: BucketEntry, held: list[BucketEntry],
                   judged: Judgement) -> list[BucketEntry]:
        """The originals `newcomer` is compared with: of those at or before
        it within the horizon (`held` is in event-time order), the latest
        `max_originals`, less any with its own id (a record seen again is
        never its own original)."""
        start = bisect.bisect_left(held, newcomer.micros - self.horizon_micros,
                                   key=_micros)
        end = bisect.bisect_right(held, newcomer.micros, key=_micros)
        originals = [entry for entry in held[start:end]
                     if entry.id != newcomer.id]
        if len(originals) > self._max_originals:
            judged.crowded += 1
            del originals[:-self._max_originals]
        return originals

    def _closest(self, newcomer: BucketEntry,
                 originals: Sequence[BucketEntry],
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
        earlier = [*originals, *(
            entry for entry in indexed if not entry.micros or
            0 <= newcomer.micros - entry.micros <= self.horizon_micros)]
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


def _order(entry: BucketEntry) -> tuple[int, str]:
    """The order a bucket judges in: event time, then id."""
    return entry.micros, entry.id


def _micros(entry: BucketEntry) -> int:
    return entry.micros


# A stream's buckets, spread over a few keys ("shards") --------------------

SLICES = 3  # bags a shard holds its originals in, one slice of time each
EMPTY = -1 << 62  # a bag holding no slice


class ShardEntry(typing.NamedTuple):
    """A bucket entry as a shard holds it: its bucket's key, and it."""

    bucket: bytes
    entry: BucketEntry


def shard_of(bucket: bytes, shards: int) -> int:
    """The shard (of `shards`) that holds the bucket keyed `bucket`: the
    same on every worker."""
    return zlib.crc32(bucket) % shards


JOIN_KEYS = 4096


def stream_join_key(record_id: str) -> int:
    """The stream's verdict-join key for a record: one of `JOIN_KEYS`, the
    same on every worker.

    A bounded set of keys, not the id: a runner may keep something for
    every key it has seen, and Prism keeps a cleared key's state until its
    window ends, which in a stream's global window is never. With 4,096
    keys, records in flight share a key's state only by the thousand (a
    backlog), and a runner still has keys enough to spread over workers.
    """
    return zlib.crc32(record_id.encode("utf-8")) % JOIN_KEYS


STEPS = 4  # bags a shard's newcomers wait in, one step of time each


class ShardClock(typing.NamedTuple):
    """What a shard knows between its timers: the latest time one fired
    at (the watermark has passed it), the slice of event time each of its
    `SLICES` bags of originals holds (`EMPTY` for none), where it holds
    the watermark (`EMPTY`: nowhere), and the earliest step of time each
    of its `STEPS` bags of newcomers holds (`EMPTY` for none)."""

    micros: int
    slices: tuple[int, ...]
    held_at: int
    pending: tuple[int, ...]

    @classmethod
    def start(cls) -> ShardClock:
        return cls(EMPTY, (EMPTY,) * SLICES, EMPTY, (EMPTY,) * STEPS)


class JudgingSteps:
    """When a shard judges: at the multiples of `every_secs` of event time
    (steps, whole milliseconds as Beam's timers keep). A newcomer waits
    for the step at or after its time, in the bag `step mod STEPS`, so a
    bag holds one step unless records come `STEPS` steps ahead."""

    def __init__(self, every_secs: float):
        self.every_micros = max(1000, round(every_secs * 1000) * 1000)

    def step_of(self, micros: int) -> int:
        return -(-micros // self.every_micros)

    def time_of(self, step: int) -> int:
        return step * self.every_micros

    @staticmethod
    def bag_of(step: int) -> int:
        return step % STEPS


class ShardSlices:
    """Where a shard keeps its originals: by slice of event time, one
    horizon long, in `SLICES` bags (slice mod `SLICES`).

    A newcomer meets originals from its own slice and the one before; once
    the clock is in slice `s`, everything still to judge on time is later,
    so a bag holding a slice before `s - 1` is forgotten whole (one clear,
    no entry read), and an original that old is not kept.
    """

    def __init__(self, horizon_micros: int):
        self._length = max(1, horizon_micros)

    def slice_of(self, micros: int) -> int:
        return micros // self._length

    def bags_to_read(self, clock: ShardClock | KeptClock,
                     earliest: int) -> list[int]:
        """The bags holding originals a newcomer at `earliest` or later (up
        to the clock) can meet."""
        first = self.slice_of(earliest) - 1
        return [bag for bag, held in enumerate(clock.slices)
                if held != EMPTY and held >= first]

    def bag_for(self, clock: ShardClock | KeptClock, micros: int) -> int | None:
        """The bag an original at `micros` goes in; None if it is already
        too old to meet anything still to judge on time."""
        held = self.slice_of(micros)
        return None if held < self._oldest_live(clock) else held % SLICES

    def dead_bags(self, clock: ShardClock | KeptClock) -> list[int]:
        """The bags holding only slices nothing on time can meet."""
        oldest = self._oldest_live(clock)
        return [bag for bag, held in enumerate(clock.slices)
                if held != EMPTY and held < oldest]

    def expiry(self, clock: ShardClock | KeptClock) -> int | None:
        """When the oldest slice held is forgotten (None: none held)."""
        held = [s for s in clock.slices if s != EMPTY]
        return (min(held) + 2) * self._length if held else None

    def _oldest_live(self, clock: ShardClock | KeptClock) -> int:
        return self.slice_of(clock.micros) - 1


# The record each flagged record's group kept ------------------------------

class KeptLink(typing.NamedTuple):
    """A record the stream flagged, as its group's kept record is found:
    its time (whole milliseconds, as its buckets ordered it), its id, the
    record it matched, and the id that group kept where already known (an
    index entry is kept for good), else ''."""

    micros: int
    id: str
    duplicate_of: str
    kept: str


def resolve_kept(links: Iterable[KeptLink], kept: dict[str, str]
                 ) -> list[tuple[KeptLink, str]]:
    """Each link with the id its group kept in the end.

    A record's `duplicate_of` was an original in a bucket, but other
    buckets may have flagged it: then its group kept what it was flagged
    against. Links are resolved in the buckets' order (time, then id), in
    which a record comes after whatever it matched, so one pass does it;
    `kept` maps the ids flagged before (a horizon's worth is all a record
    can match) to the id their group kept, and gains these links.

    >>> kept = {}
    >>> [(link.id, root) for link, root in resolve_kept(
    ...     [KeptLink(2, "c", "b", ""), KeptLink(1, "b", "a", ""),
    ...      KeptLink(3, "d", "x", "x")], kept)]
    [('b', 'a'), ('c', 'a'), ('d', 'x')]
    """
    resolved = []
    for link in sorted(links):
        root = link.kept or kept.get(link.duplicate_of, link.duplicate_of)
        kept[link.id] = root
        resolved.append((link, root))
    return resolved


class KeptWaiting(typing.NamedTuple):
    """A flagged record waiting for the watermark to pass its time before
    its group's kept record is found: its link, its exact event time
    (microseconds) and its line."""

    link: KeptLink
    micros: int
    line: bytes


class KeptClock(typing.NamedTuple):
    """What the chain resolver knows between its timers: the latest time
    one fired at, the slice of event time each of its `SLICES` bags of
    resolved links holds (`EMPTY` for none), and where it holds the
    watermark (`EMPTY`: nowhere)."""

    micros: int
    slices: tuple[int, ...]
    held_at: int

    @classmethod
    def start(cls) -> KeptClock:
        return cls(EMPTY, (EMPTY,) * SLICES, EMPTY)
