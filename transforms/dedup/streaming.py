"""Near-duplicate tagging in a stream, with a time horizon.

`StreamingNearDuplicates` flags a record that is a lexical (MinHash) or
semantic (random-hyperplane LSH on its embedding) near-duplicate of a
record seen within `horizon_secs` of event time, adding `duplicate_of`,
`kept_id`, `similarity` and `kind`; every record comes out once, flagged
or not, and without its embeddings (they are sketched on the way in).

How it works: each record is sketched (`embgemma_keras.dedup.sketches`)
into one bucket key per band of each sketcher; each bucket holds the
originals it saw (records that matched none before them) and judges each
newcomer, in order of event time, then id, against the latest
`max_originals` of them within `horizon_secs` before it
(`embgemma_keras.dedup.stream_buckets.BucketJudge`), so of two
near-duplicates exactly one is flagged, the same one whatever the order a
runner or Pub/Sub delivers them in. A stateful DoFn (keyed by record id
over a bounded input, by one of 4,096 hashes of it in a stream) joins the
verdicts of all bands and emits the record with its best match: lexical
before semantic, then the highest similarity.

Two paths, the same verdicts. Over a bounded input (files) a `GroupByKey`
hands each bucket its records at once, judged with no state or timers. In
a stream the buckets are keyed state and event-time timers, spread over
`bucket_shards` keys: a bundle's entries go to a shard as one message, a
shard's timer judges every record the watermark has passed with one read
of its state, and its originals are kept in slices of event time that are
forgotten whole (`_CompareInShard`); a record leaves once the watermark
has passed it. Buckets and the join hold named tuples (`BucketEntry`,
`ShardEntry`, `JoinEntry`, `Match`) with fixed, deterministic coders: no
pickling. The design, and what it costs: docs/streaming.md.

Against a dedup index (`against=`, `stream_tag --index`): the entries
`dedup_corpus` kept join the buckets' state for good, so a record is also
flagged as a near-duplicate of any of them (`duplicate_of_run` names the
run that kept it): over a bounded input in the bucket's group, in a
stream in its shard's state, told apart from records by their run. An
index in a database is looked up a record at a time instead
(`transforms.index.lookup.LookUpForStream`): the entries found come on
the record (`INDEX_MATCHES`) and join its buckets with its time, held for
its horizon, matching it and the records after it there.
A flagged record's `kept_id` is the record its group kept: what it
matched may have been flagged in another bucket, so flagged records go on
to one key that resolves the chain in the buckets' order once the
watermark has passed them (`_ResolveKept`; over a bounded input, at once).
Replays: a re-delivered record (same id) is never compared with itself and
gets the verdict it got the first time (while the horizon's state lasts), so
Pub/Sub redelivery does not make a record a duplicate of itself. Late
records (behind the watermark) are compared with whatever the buckets
still hold: matches whose entries already expired are missed, never
invented, and a record that arrives after a near-duplicate of it that is
later in event time has been compared is not flagged, nor is that one.
"""

from __future__ import annotations

import collections
import itertools
import json
import typing
from collections.abc import Callable
from collections.abc import Sequence

import apache_beam as beam
from apache_beam import coders
from apache_beam.coders import coder_impl
from apache_beam.coders.coders import FastCoder
from apache_beam.metrics import Metrics
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import BagStateSpec
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec
from apache_beam.transforms.userstate import TimerSpec
from apache_beam.transforms.userstate import on_timer
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import WindowedValue

from embgemma_keras.config import StreamDedupConfig
from embgemma_keras.dedup.sketches import Sketcher
from embgemma_keras.dedup.sketches import stream_sketchers
from embgemma_keras.dedup.stream_buckets import EMPTY
from embgemma_keras.dedup.stream_buckets import JOIN_KEYS
from embgemma_keras.dedup.stream_buckets import BucketEntry
from embgemma_keras.dedup.stream_buckets import BucketJudge
from embgemma_keras.dedup.stream_buckets import JoinEntry
from embgemma_keras.dedup.stream_buckets import Judgement
from embgemma_keras.dedup.stream_buckets import JudgingSteps
from embgemma_keras.dedup.stream_buckets import KeptClock
from embgemma_keras.dedup.stream_buckets import KeptLink
from embgemma_keras.dedup.stream_buckets import KeptWaiting
from embgemma_keras.dedup.stream_buckets import Match
from embgemma_keras.dedup.stream_buckets import ShardClock
from embgemma_keras.dedup.stream_buckets import ShardEntry
from embgemma_keras.dedup.stream_buckets import ShardSlices
from embgemma_keras.dedup.stream_buckets import better_match
from embgemma_keras.dedup.stream_buckets import match_rank
from embgemma_keras.dedup.stream_buckets import resolve_kept
from embgemma_keras.dedup.stream_buckets import shard_of
from embgemma_keras.dedup.stream_buckets import stream_join_key
from embgemma_keras.progress import DUPLICATES
from embgemma_keras.records.schema import DUPLICATE_OF
from embgemma_keras.records.schema import DUPLICATE_OF_RUN
from embgemma_keras.records.schema import ID
from embgemma_keras.records.schema import INDEX_MATCHES
from embgemma_keras.records.schema import KEPT_ID
from embgemma_keras.records.schema import KIND
from embgemma_keras.records.schema import SIMILARITY
from embgemma_keras.records.schema import to_json_line
from embgemma_keras.records.schema import without_working_fields
from transforms.counters import count
from transforms.state_cache import skip_module_scan


def _whole_millis(timestamp: Timestamp) -> int:
    """An element's event time in microseconds, down to whole milliseconds:
    Beam's timers fire at that precision, so a newcomer's timer fires at
    its time, not before it."""
    return timestamp.micros // 1000 * 1000


class _FieldsCoder(FastCoder):
    """Codes a named tuple `kind` as a `TupleCoder` of its `fields` would
    (the same bytes), decoding to the named tuple: deterministic, nothing
    pickled. Each subclass is registered for its `kind`, so a PCollection
    typed with it gets it."""

    kind: typing.ClassVar[type]
    fields: typing.ClassVar[tuple[coders.Coder, ...]]

    @classmethod
    def from_type_hint(cls, typehint, registry) -> _FieldsCoder:
        return cls()

    def _create_impl(self) -> coder_impl.StreamCoderImpl:
        return _FieldsImpl(self.kind, coders.TupleCoder(self.fields).get_impl())

    def is_deterministic(self) -> bool:
        return True

    def to_type_hint(self) -> type:
        return self.kind

    def __eq__(self, other) -> bool:
        return type(other) is type(self)

    def __hash__(self) -> int:
        return hash(type(self))


class _FieldsImpl(coder_impl.StreamCoderImpl):
    """A `TupleCoder`'s implementation, decoding to a named tuple."""

    def __init__(self, kind: type, fields: coder_impl.CoderImpl):
        self._kind, self._fields = kind, fields

    def encode_to_stream(self, value, stream, nested: bool) -> None:
        self._fields.encode_to_stream(value, stream, nested)

    def decode_from_stream(self, stream, nested: bool) -> tuple:
        return self._kind._make(self._fields.decode_from_stream(stream, nested))

    def estimate_size(self, value, nested: bool = False) -> int:
        return self._fields.estimate_size(value, nested)


class _MatchCoder(_FieldsCoder):
    kind = Match
    fields = (coders.StrUtf8Coder(), coders.StrUtf8Coder(),
              coders.FloatCoder(), coders.StrUtf8Coder())


class _BucketEntryCoder(_FieldsCoder):
    kind = BucketEntry
    fields = (coders.StrUtf8Coder(), coders.StrUtf8Coder(),
              coders.StrUtf8Coder(), coders.BytesCoder(), coders.VarIntCoder())


class _JoinEntryCoder(_FieldsCoder):
    kind = JoinEntry
    fields = (coders.StrUtf8Coder(), coders.BytesCoder(),
              coders.VarIntCoder(), _MatchCoder())


class _ShardEntryCoder(_FieldsCoder):
    kind = ShardEntry
    fields = (coders.BytesCoder(), _BucketEntryCoder())


class _ShardClockCoder(_FieldsCoder):
    kind = ShardClock
    fields = (coders.VarIntCoder(),
              coders.TupleSequenceCoder(coders.VarIntCoder()),
              coders.VarIntCoder(),
              coders.TupleSequenceCoder(coders.VarIntCoder()))


class _KeptLinkCoder(_FieldsCoder):
    kind = KeptLink
    fields = (coders.VarIntCoder(), coders.StrUtf8Coder(),
              coders.StrUtf8Coder(), coders.StrUtf8Coder())


class _KeptWaitingCoder(_FieldsCoder):
    kind = KeptWaiting
    fields = (_KeptLinkCoder(), coders.VarIntCoder(), coders.BytesCoder())


class _KeptClockCoder(_FieldsCoder):
    kind = KeptClock
    fields = (coders.VarIntCoder(),
              coders.TupleSequenceCoder(coders.VarIntCoder()),
              coders.VarIntCoder())


for _coder in (_MatchCoder, _BucketEntryCoder, _JoinEntryCoder,
               _ShardEntryCoder, _ShardClockCoder, _KeptLinkCoder,
               _KeptWaitingCoder, _KeptClockCoder):
    coders.registry.register_coder(_coder.kind, _coder)
JOIN_CODER = _JoinEntryCoder()
SHARD_CODER = _ShardEntryCoder()
CLOCK_CODER = _ShardClockCoder()


class _BucketVerdicts(beam.DoFn):
    """Judges records in their buckets (`BucketJudge`) and sends the verdict
    join one message per record and bundle (`JoinEntry.of_verdicts`: bands
    judged, best match), not one per band, keyed by `join_key`."""

    join_key: typing.ClassVar[Callable[[str], str | int]]

    def __init__(self, sketchers, horizon_secs, max_originals):
        self._judge = BucketJudge(sketchers, horizon_secs, max_originals)
        self._rank = match_rank(sketchers)
        self._crowded = Metrics.counter("StreamingNearDuplicates",
                                        "crowded_buckets")

    def start_bundle(self):
        # (record id, window, event time) -> (bands judged, best match)
        self._verdicts = {}

    def finish_bundle(self):
        for (record_id, window, micros), (judged, best) in (
                self._verdicts.items()):
            yield WindowedValue(
                (self.join_key(record_id),
                 JoinEntry.of_verdicts(record_id, judged, best)),
                Timestamp(micros=micros), [window])
        self._verdicts = {}

    def _judged(self, newcomers, held, indexed, window) -> Judgement:
        judged = self._judge(newcomers, held, indexed)
        for verdict in judged.verdicts:
            key = verdict.id, window, verdict.micros
            bands, best = self._verdicts.get(key, (0, None))
            self._verdicts[key] = (
                bands + 1, better_match(self._rank, best, verdict.match))
        if judged.crowded:
            self._crowded.inc(judged.crowded)
        return judged


DAY_SECS = 86400
HOLD_DAYS = 30


def _hold_fire_time() -> Timestamp:
    """When a `HOLD` timer (a watermark hold, never meant to fire) would
    fire: `HOLD_DAYS` of processing time from now, rounded up to a whole
    day. Holds are set over and over, and Prism queues each firing time it
    is given until that time comes; whole days keep that queue to a few
    entries instead of one a hold set."""
    days = Timestamp.now().micros // (DAY_SECS * 10**6) + HOLD_DAYS + 1
    return Timestamp(seconds=days * DAY_SECS)


class _ToShards(beam.DoFn):
    """A stream's way into its buckets: each record's (or index entry's)
    bucket entries, gathered per shard (`shard_of` its bucket) over a
    bundle and sent as one message a shard, so a shard takes one state
    append a bundle however many records and bands fall in it.

    Args:
        entries: what to send, as `(bucket key, BucketEntry)`s, of an
            element at `micros` (its event time in whole milliseconds).
        shards: how many keys the buckets are spread over.
    """

    def __init__(self, entries, shards: int):
        self._entries = entries
        self._shards = shards

    def start_bundle(self):
        self._batches = {}  # (shard, window) -> [ShardEntry]

    def process(self, element, timestamp=beam.DoFn.TimestampParam,
                window=beam.DoFn.WindowParam):
        for bucket, entry in self._entries(element, _whole_millis(timestamp)):
            self._batches.setdefault(
                (shard_of(bucket, self._shards), window), []).append(
                ShardEntry(bucket, entry))

    def finish_bundle(self):
        for (shard, window), entries in self._batches.items():
            # At the earliest entry's time: it holds the watermark there.
            earliest = min(item.entry.micros for item in entries)
            yield WindowedValue((shard, entries), Timestamp(micros=earliest),
                                [window])
        self._batches = {}


class _ShardView:
    """A shard's state as this bundle has read and changed it: Beam's
    harness re-reads a state cell over the Fn API each time it is read
    without a runner's cache token (Prism hands out none), and one bundle
    can bring a shard several messages and timers."""

    def __init__(self, clock: ShardClock):
        self.clock = clock
        self.pending: dict[int, list[ShardEntry]] = {}  # bag -> entries
        self.held: dict[int, list[ShardEntry]] = {}  # bag -> its entries
        self.indexed: list[ShardEntry] | None = None


class _CompareInShard(_BucketVerdicts):
    """A stream's buckets, in keyed state: a few keys (shards), each
    holding many buckets, so one state read serves every record judged
    when a timer fires, not one band of one record.

    A shard is woken at steps of event time, the multiples of
    `judge_every_secs`: a record waits in the `PENDING_*` bag of the step
    at or after its time (step mod `STEPS`), and each message sets an
    event-time timer at each of its steps, so a shard wakes at most once a
    step however finely the watermark moves, and reads only the steps due,
    with no entry written twice while it waits. A processing-time timer
    (`HOLD`), never meant to fire, holds the watermark at the earliest
    record waiting, so each verdict, emitted at its record's time, is
    never late downstream. When a timer fires, every newcomer the
    watermark has passed is judged, bucket by bucket (`BucketJudge`),
    against the originals in the bags of their slices of event time
    (`ShardSlices`); the new originals go to their slice's bag, and a bag
    whose slice nothing on time can meet any more is cleared whole. So the
    verdicts do not depend on how a runner groups or orders the timers due
    together.

    An index entry held for good (`against`) goes to `INDEXED`; one looked
    up for a record (`INDEX_MATCHES`) waits with it and is then held, like
    an original, for its horizon.
    """

    PENDING_0 = BagStateSpec("pending_0", SHARD_CODER)
    PENDING_1 = BagStateSpec("pending_1", SHARD_CODER)
    PENDING_2 = BagStateSpec("pending_2", SHARD_CODER)
    PENDING_3 = BagStateSpec("pending_3", SHARD_CODER)
    HELD_0 = BagStateSpec("held_0", SHARD_CODER)
    HELD_1 = BagStateSpec("held_1", SHARD_CODER)
    HELD_2 = BagStateSpec("held_2", SHARD_CODER)
    INDEXED = BagStateSpec("indexed", SHARD_CODER)
    CLOCK = ReadModifyWriteStateSpec("clock", CLOCK_CODER)
    WAKE = TimerSpec("wake", TimeDomain.WATERMARK)
    HOLD = TimerSpec("hold", TimeDomain.REAL_TIME)
    EXPIRY = "expiry"  # the tag of the timer that forgets a slice
    join_key = staticmethod(stream_join_key)

    def __init__(self, sketchers, config: StreamDedupConfig,
                 with_index: bool):
        super().__init__(sketchers, config.horizon_secs, config.max_originals)
        self._slices = ShardSlices(self._judge.horizon_micros)
        self._steps = JudgingSteps(config.judge_every_secs)
        self._with_index = with_index

    def setup(self):
        skip_module_scan()

    def start_bundle(self):
        super().start_bundle()
        self._views = {}  # (shard, window) -> _ShardView

    def finish_bundle(self):
        self._views = {}
        yield from super().finish_bundle()

    def process(self, element, window=beam.DoFn.WindowParam,
                pending_0=beam.DoFn.StateParam(PENDING_0),
                pending_1=beam.DoFn.StateParam(PENDING_1),
                pending_2=beam.DoFn.StateParam(PENDING_2),
                pending_3=beam.DoFn.StateParam(PENDING_3),
                indexed=beam.DoFn.StateParam(INDEXED),
                clock=beam.DoFn.StateParam(CLOCK),
                wake=beam.DoFn.TimerParam(WAKE),
                hold=beam.DoFn.TimerParam(HOLD)):
        shard, entries = element
        view = self._view(shard, window, clock)
        before = view.clock
        waiting = []
        for item in entries:
            if item.entry.indexed and not item.entry.micros:
                indexed.add(item)  # held for good
                if view.indexed is not None:
                    view.indexed.append(item)
            else:
                waiting.append(item)
        self._wait(view, waiting, (pending_0, pending_1, pending_2,
                                   pending_3), wake)
        if waiting:
            earliest = min(item.entry.micros for item in waiting)
            if view.clock.held_at == EMPTY or earliest < view.clock.held_at:
                # Held at this message's time, its earliest record's.
                hold.set(_hold_fire_time())
                view.clock = view.clock._replace(held_at=earliest)
        if view.clock != before:
            clock.write(view.clock)

    @on_timer(WAKE)
    def wake_up(self, fired=beam.DoFn.TimestampParam,
                key=beam.DoFn.KeyParam, window=beam.DoFn.WindowParam,
                pending_0=beam.DoFn.StateParam(PENDING_0),
                pending_1=beam.DoFn.StateParam(PENDING_1),
                pending_2=beam.DoFn.StateParam(PENDING_2),
                pending_3=beam.DoFn.StateParam(PENDING_3),
                held_0=beam.DoFn.StateParam(HELD_0),
                held_1=beam.DoFn.StateParam(HELD_1),
                held_2=beam.DoFn.StateParam(HELD_2),
                indexed=beam.DoFn.StateParam(INDEXED),
                clock=beam.DoFn.StateParam(CLOCK),
                wake=beam.DoFn.TimerParam(WAKE),
                hold=beam.DoFn.TimerParam(HOLD)):
        view = self._view(key, window, clock)
        before = view.clock
        view.clock = view.clock._replace(
            micros=max(view.clock.micros, fired.micros))
        bags = (held_0, held_1, held_2)
        ready = self._due(view, (pending_0, pending_1, pending_2, pending_3),
                          wake)
        if ready:
            self._judge_ready(view, ready, window, bags, indexed)
        _forget_dead_slices(self._slices, view, bags)
        expiry = self._slices.expiry(view.clock)
        if expiry is not None and expiry != self._slices.expiry(before):
            # The oldest slice left is forgotten then, if nothing wakes
            # the shard before.
            wake.set(Timestamp(micros=expiry), dynamic_timer_tag=self.EXPIRY)
        if any(step != EMPTY for step in view.clock.pending):
            if view.clock.held_at < fired.micros:
                # Held at this timer's time now: all still waiting is later.
                hold.set(_hold_fire_time())
                view.clock = view.clock._replace(held_at=fired.micros)
        elif view.clock.held_at != EMPTY:
            hold.clear()
            view.clock = view.clock._replace(held_at=EMPTY)
        if view.clock != before:
            clock.write(view.clock)

    @on_timer(HOLD)
    def hold_ran_out(self, key=beam.DoFn.KeyParam,
                     window=beam.DoFn.WindowParam,
                     clock=beam.DoFn.StateParam(CLOCK)):
        """The watermark stood still for `HOLD_DAYS` days: the hold is gone,
        and the next message sets one again."""
        view = self._view(key, window, clock)
        view.clock = view.clock._replace(held_at=EMPTY)
        clock.write(view.clock)

    def _view(self, key, window, clock) -> _ShardView:
        view = self._views.get((key, window))
        if view is None:
            view = self._views[key, window] = _ShardView(
                clock.read() or ShardClock.start())
        return view

    def _wait(self, view, items, pending, wake) -> None:
        """Adds newcomers (and looked-up index entries) to the bags of
        their steps, each step with a timer."""
        steps, woken = list(view.clock.pending), set()
        for item in items:
            step = self._steps.step_of(item.entry.micros)
            bag = self._steps.bag_of(step)
            pending[bag].add(item)
            if bag in view.pending:
                view.pending[bag].append(item)
            if steps[bag] == EMPTY or step < steps[bag]:
                steps[bag] = step
            woken.add(step)
        for step in woken:
            due = self._steps.time_of(step)
            wake.set(Timestamp(micros=due), dynamic_timer_tag=str(due))
        view.clock = view.clock._replace(pending=tuple(steps))

    def _due(self, view, pending, wake) -> list[ShardEntry]:
        """Takes the newcomers the watermark has passed out of the bags of
        the steps due; a bag that also holds a later step (one `STEPS`
        steps on) keeps it."""
        now = self._steps.step_of(view.clock.micros + 1) - 1
        steps = list(view.clock.pending)
        ready = []
        for bag, first in enumerate(steps):
            if first == EMPTY or first > now:
                continue
            if bag not in view.pending:
                view.pending[bag] = list(pending[bag].read())
            items = view.pending[bag]
            ready += [i for i in items if i.entry.micros <= view.clock.micros]
            later = [i for i in items if i.entry.micros > view.clock.micros]
            pending[bag].clear()
            for item in later:
                pending[bag].add(item)
            view.pending[bag] = later
            steps[bag] = min((self._steps.step_of(i.entry.micros)
                              for i in later), default=EMPTY)
            if later:
                due = self._steps.time_of(steps[bag])
                wake.set(Timestamp(micros=due), dynamic_timer_tag=str(due))
        view.clock = view.clock._replace(pending=tuple(steps))
        return ready

    def _judge_ready(self, view, ready, window, bags, indexed) -> None:
        """Judges the newcomers `ready` bucket by bucket; keeps the new
        originals and the index entries looked up for them."""
        earliest = min(item.entry.micros for item in ready)
        for bag in self._slices.bags_to_read(view.clock, earliest):
            if bag not in view.held:
                view.held[bag] = list(bags[bag].read())
        if self._with_index and view.indexed is None:
            view.indexed = list(indexed.read())
        newcomers = collections.defaultdict(list)
        for item in ready:
            if not item.entry.indexed:
                newcomers[item.bucket].append(item.entry)
        looked_up = [item for item in ready if item.entry.indexed]
        held = collections.defaultdict(list)
        index = collections.defaultdict(list)
        for item in itertools.chain(*view.held.values(), view.indexed or (),
                                    looked_up):
            if item.bucket in newcomers:
                (index if item.entry.indexed else held)[item.bucket].append(
                    item.entry)
        keep = looked_up  # held for their records' horizon
        for bucket, entries in newcomers.items():
            keep += [ShardEntry(bucket, added) for added in self._judged(
                entries, held[bucket], index[bucket], window).added]
        _keep_in_slices(self._slices, view, keep, bags,
                        lambda item: item.entry.micros)


def _forget_dead_slices(slices: ShardSlices, view, bags) -> None:
    """Clears the bags of slices nothing on time can meet (`view`: a
    `clock` with `slices`, and the bags' entries read so far, `held`)."""
    held = list(view.clock.slices)
    for bag in slices.dead_bags(view.clock):
        bags[bag].clear()
        view.held[bag], held[bag] = [], EMPTY
    view.clock = view.clock._replace(slices=tuple(held))


def _keep_in_slices(slices: ShardSlices, view, items, bags,
                    micros_of) -> None:
    """Adds items to the bags of their slices of event time (`micros_of`
    each), clearing first a bag that holds a forgotten slice; an item too
    old to meet anything still to come is not kept."""
    held = list(view.clock.slices)
    for item in items:
        micros = micros_of(item)
        bag = slices.bag_for(view.clock, micros)
        if bag is None:
            continue
        if held[bag] != slices.slice_of(micros):
            if held[bag] != EMPTY:
                bags[bag].clear()
            view.held[bag], held[bag] = [], slices.slice_of(micros)
        bags[bag].add(item)
        view.held[bag].append(item)
    view.clock = view.clock._replace(slices=tuple(held))


class _CompareGrouped(_BucketVerdicts):
    """A bounded input's buckets: all of a bucket's records and index
    entries come as one group, so the watermark has passed them all and
    they are judged at once, with no state or timers; the verdicts are
    those of `_CompareInShard`."""

    # A bounded input's join holds one record a key: a batch runner drops
    # each key's state when it is done with it.
    join_key = staticmethod(lambda record_id: record_id)

    def process(self, element, window=beam.DoFn.WindowParam):
        _, entries = element
        newcomers, indexed = [], []
        for entry in entries:
            (indexed if entry.indexed else newcomers).append(entry)
        self._judged(newcomers, [], indexed, window)
        return ()


FLAGGED = "flagged"  # the join's output of the records it flagged


class _JoinVerdicts(beam.DoFn):
    """Emits each delivery of a record once all its band verdicts are in.

    Verdicts come as `JoinEntry`s (bands judged, best match), one message
    per record from each bundle of the compare stage that judged it, and
    each delivery of the record as one holding its line. Every message
    goes into its key's bag, read once a bundle and then kept as written:
    the bag itself says whether the message's record can leave (one write
    per message, and a clear when it leaves, the bag's other records
    written back). A stream's keys are a bounded set of hashes of the
    record id (`stream_join_key`), so a key's bag may hold several
    records; a bounded input's are the record ids. A redelivered record
    (same id) can be in flight at the same time as its first delivery, so
    the bag may hold several lines of it; they leave one per `bands`
    verdicts received, and any delivery's verdicts fit the other (the
    original is always the earlier record).
    """

    INBOX = BagStateSpec("inbox", JOIN_CODER)
    # Keys whose bags a bundle keeps as it read and wrote them: a stream
    # has `JOIN_KEYS`; over files a bundle may bring millions of ids.
    KEPT_INBOXES = JOIN_KEYS

    def __init__(self, bands: int, rank: dict[str, int]):
        self._bands = bands
        self._rank = rank

    def setup(self):
        skip_module_scan()

    def start_bundle(self):
        # (key, window) -> the key's bag as this bundle read and wrote it:
        # without a runner's cache token (Prism) the harness reads the bag
        # over the Fn API at every read, and a paced stream brings a key
        # several messages a bundle.
        self._inboxes = {}

    def finish_bundle(self):
        self._inboxes = {}

    def process(self, element, window=beam.DoFn.WindowParam,
                inbox=beam.DoFn.StateParam(INBOX)):
        key, message = element
        entries = self._inbox(key, window, inbox)
        inbox.add(message)
        entries.append(message)
        others, lines, received, best = [], [], 0, None
        for entry in entries:
            if entry.id != message.id:
                others.append(entry)
                continue
            if entry.line:
                lines.append(entry.line)
            received += entry.judged
            best = better_match(self._rank, best, entry.match)
        leaving = min(len(lines), received // self._bands)
        if not leaving:
            return
        for line in lines[:leaving]:
            record = json.loads(line)
            if best is None or DUPLICATE_OF in record:
                yield record
            else:
                yield beam.pvalue.TaggedOutput(FLAGGED, _tagged(record, best))
        received -= leaving * self._bands
        waiting = lines[leaving:]
        if received or (best and waiting):
            # What is still in flight keeps the verdicts seen so far.
            others.append(JoinEntry.of_verdicts(message.id, received, best))
        others += [JoinEntry.of_line(message.id, line) for line in waiting]
        inbox.clear()
        for entry in others:
            inbox.add(entry)
        if others:
            entries[:] = others
        else:
            del self._inboxes[key, window]

    def _inbox(self, key, window, inbox) -> list[JoinEntry]:
        entries = self._inboxes.get((key, window))
        if entries is None:
            if len(self._inboxes) >= self.KEPT_INBOXES:
                del self._inboxes[next(iter(self._inboxes))]
            entries = self._inboxes[key, window] = list(inbox.read())
        return entries


def _tagged(record: dict, best: Match) -> dict:
    """The record with its best match's tags, but for `kept_id`: which
    record its group kept is found after (`_ResolveKept`)."""
    count(DUPLICATES)
    tags = {DUPLICATE_OF: best.original, SIMILARITY: best.similarity,
            KIND: best.kind}
    if best.indexed:
        tags[DUPLICATE_OF_RUN] = best.run
    return {**record, **tags}


def _kept_link(record: dict, timestamp: Timestamp) -> KeptLink:
    """A flagged record's link to what it matched; an index entry is kept
    for good."""
    original = record[DUPLICATE_OF]
    return KeptLink(_whole_millis(timestamp), record[ID], original,
                    original if DUPLICATE_OF_RUN in record else "")


class _ToResolver(beam.DoFn):
    """Gathers a bundle's flagged records (per window) into one message
    for the chain resolver's one key, at the earliest one's time."""

    def start_bundle(self):
        self._waiting = {}  # window -> [KeptWaiting]

    def process(self, record, timestamp=beam.DoFn.TimestampParam,
                window=beam.DoFn.WindowParam):
        self._waiting.setdefault(window, []).append(KeptWaiting(
            _kept_link(record, timestamp), timestamp.micros,
            to_json_line(record).encode("utf-8")))

    def finish_bundle(self):
        for window, items in self._waiting.items():
            earliest = min(item.micros for item in items)
            yield WindowedValue((0, items), Timestamp(micros=earliest),
                                [window])
        self._waiting = {}


class _KeptView:
    """The resolver's state as this bundle has read and changed it (see
    `_ShardView`)."""

    def __init__(self, clock: KeptClock):
        self.clock = clock
        self.pending: list[KeptWaiting] | None = None
        self.held: dict[int, list[KeptLink]] = {}  # bag -> resolved links


class _ResolveKept(beam.DoFn):
    """A stream's flagged records with `kept_id`, the record their group
    kept (`resolve_kept`).

    The record a newcomer matched was an original in that bucket, but
    another bucket may have flagged it at the same step; so every flagged
    record comes to this one key and waits (`PENDING`) until the
    watermark has passed it, then is resolved in the buckets' order
    against the links resolved before. Like a shard, the key wakes at
    steps of event time (`JudgingSteps`), not once a record, and a
    processing-time timer (`HOLD`) holds the watermark at the earliest
    record waiting, so each leaves at its own time, never late. Resolved
    links are kept a horizon (all a record can match), in bags by slice
    of event time forgotten whole (`ShardSlices`). Only flagged records
    come here, with their lines: a fraction of the buckets' traffic
    (docs/streaming.md).
    """

    PENDING = BagStateSpec("pending", _KeptWaitingCoder())
    KEPT_0 = BagStateSpec("kept_0", _KeptLinkCoder())
    KEPT_1 = BagStateSpec("kept_1", _KeptLinkCoder())
    KEPT_2 = BagStateSpec("kept_2", _KeptLinkCoder())
    CLOCK = ReadModifyWriteStateSpec("clock", _KeptClockCoder())
    WAKE = TimerSpec("wake", TimeDomain.WATERMARK)
    HOLD = TimerSpec("hold", TimeDomain.REAL_TIME)

    def __init__(self, config: StreamDedupConfig):
        self._slices = ShardSlices(int(config.horizon_secs * 1_000_000))
        self._steps = JudgingSteps(config.judge_every_secs)

    def setup(self):
        skip_module_scan()

    def start_bundle(self):
        self._views = {}  # window -> _KeptView

    def finish_bundle(self):
        self._views = {}

    def process(self, element, window=beam.DoFn.WindowParam,
                pending=beam.DoFn.StateParam(PENDING),
                clock=beam.DoFn.StateParam(CLOCK),
                wake=beam.DoFn.TimerParam(WAKE),
                hold=beam.DoFn.TimerParam(HOLD)):
        _, items = element
        view = self._view(window, clock)
        for item in items:
            pending.add(item)
        if view.pending is not None:
            view.pending += items
        for step in {self._steps.step_of(item.link.micros) for item in items}:
            due = self._steps.time_of(step)
            wake.set(Timestamp(micros=due), dynamic_timer_tag=str(due))
        earliest = min(item.micros for item in items)
        if view.clock.held_at == EMPTY or earliest < view.clock.held_at:
            # Held at this message's time, its earliest record's.
            hold.set(_hold_fire_time())
            view.clock = view.clock._replace(held_at=earliest)
            clock.write(view.clock)

    @on_timer(WAKE)
    def resolve(self, fired=beam.DoFn.TimestampParam,
                window=beam.DoFn.WindowParam,
                pending=beam.DoFn.StateParam(PENDING),
                kept_0=beam.DoFn.StateParam(KEPT_0),
                kept_1=beam.DoFn.StateParam(KEPT_1),
                kept_2=beam.DoFn.StateParam(KEPT_2),
                clock=beam.DoFn.StateParam(CLOCK),
                hold=beam.DoFn.TimerParam(HOLD)):
        view = self._view(window, clock)
        if view.pending is None:
            view.pending = list(pending.read())
        due = sorted((i for i in view.pending if i.link.micros <= fired.micros),
                     key=lambda item: item.link)
        if not due:
            return  # resolved at an earlier timer
        view.pending = [i for i in view.pending
                        if i.link.micros > fired.micros]
        pending.clear()
        for item in view.pending:
            pending.add(item)
        view.clock = view.clock._replace(
            micros=max(view.clock.micros, fired.micros))
        yield from self._resolved(view, due, window, (kept_0, kept_1, kept_2))
        if view.pending:
            if view.clock.held_at < fired.micros:
                # Held at this timer's time now: all still waiting is later.
                hold.set(_hold_fire_time())
                view.clock = view.clock._replace(held_at=fired.micros)
        elif view.clock.held_at != EMPTY:
            hold.clear()
            view.clock = view.clock._replace(held_at=EMPTY)
        clock.write(view.clock)

    @on_timer(HOLD)
    def hold_ran_out(self, window=beam.DoFn.WindowParam,
                     clock=beam.DoFn.StateParam(CLOCK)):
        """The watermark stood still for `HOLD_DAYS` days: the hold is gone,
        and the next message sets one again."""
        view = self._view(window, clock)
        view.clock = view.clock._replace(held_at=EMPTY)
        clock.write(view.clock)

    def _view(self, window, clock) -> _KeptView:
        view = self._views.get(window)
        if view is None:
            view = self._views[window] = _KeptView(
                clock.read() or KeptClock.start())
        return view

    def _resolved(self, view, due, window, bags):
        """The records `due` with their `kept_id`s, at their own times;
        their links kept in their slices' bags."""
        _forget_dead_slices(self._slices, view, bags)
        for bag in self._slices.bags_to_read(view.clock, due[0].link.micros):
            if bag not in view.held:
                view.held[bag] = list(bags[bag].read())
        known = {link.id: link.kept for held in view.held.values()
                 for link in held}
        resolved = resolve_kept([item.link for item in due], known)
        for item, (_, root) in zip(due, resolved, strict=True):
            yield WindowedValue({**json.loads(item.line), KEPT_ID: root},
                                Timestamp(micros=item.micros), [window])
        _keep_in_slices(self._slices, view, [
            link._replace(duplicate_of="", kept=root)
            for link, root in resolved], bags, lambda link: link.micros)


class StreamingNearDuplicates(beam.PTransform):
    """Tags records that near-duplicate one seen within a time horizon.

    Example:

    ```python
    tagged = embedded | StreamingNearDuplicates(StreamDedupConfig(), dim=768)
    ```

    Args:
        config: horizon, bucket size, MinHash and semantic LSH settings.
        dim: the size of the records' similarity embeddings; `None` for
            lexical duplicates only (records need no embeddings then).
        sketchers: instead of those `config` makes (for other similarities).
        against: a PCollection of `IndexEntry` (`ReadIndex`): records
            that near-duplicate one of them are flagged too, whatever its
            age, with `duplicate_of_run` naming the run that kept it.

    A flagged record gets `duplicate_of`, `kept_id` (the record its group
    kept: see the module docstring), `similarity` and `kind`. A record
    already carrying `duplicate_of` keeps it. Records leave without their
    embeddings.
    A record whose bucket held more than `max_originals` originals within
    its horizon is compared with the latest of them, and counted in the
    `StreamingNearDuplicates/crowded_buckets` metric.

    The index is not held whole by any worker: each entry goes, like an
    original, to its buckets (one per band of each sketcher), which the
    runner spreads over its workers by key (on a stream, by shard); a
    record meets the buckets it falls in, as it does for the horizon. See
    the module docstring for the two paths.
    """

    def __init__(self, config: StreamDedupConfig = StreamDedupConfig(),
                 dim: int | None = None,
                 sketchers: Sequence[Sketcher] | None = None,
                 against: beam.PCollection | None = None):
        super().__init__()
        self._config = config
        self._sketchers = list(sketchers or stream_sketchers(config, dim))
        self._against = against

    def expand(self, records):
        sketchers = self._sketchers
        bands = sum(s.bands for s in sketchers)

        def record_entries(record, micros):
            for sketcher in sketchers:
                sketch, keys = sketcher.sketch(record)
                for key in keys:
                    yield key, BucketEntry.newcomer(
                        sketcher.kind.value, record[ID], sketch, micros)
                # Each entry a lookup found goes to the buckets it shares
                # with its record, with the record's time.
                keys = set(keys)
                for entry in record.get(INDEX_MATCHES) or ():
                    sketched = sketcher.sketch_entry(entry)
                    for key in keys.intersection(sketched[1] if sketched
                                                 else ()):
                        yield key, BucketEntry.indexed_entry(
                            entry.run, entry.id, sketched[0], micros)

        def index_entries(entry, micros):
            for sketcher in sketchers:
                sketched = sketcher.sketch_entry(entry)
                for key in sketched[1] if sketched else ():
                    yield key, BucketEntry.indexed_entry(
                        entry.run, entry.id, sketched[0])

        if records.is_bounded:
            verdicts = self._grouped(records, record_entries, index_entries)
            join_key, key_type = _CompareGrouped.join_key, str
        else:
            verdicts = self._sharded(records, record_entries, index_entries)
            join_key, key_type = _CompareInShard.join_key, int
        lines = records | "KeyForJoin" >> beam.Map(lambda r: (
            join_key(r[ID]), JoinEntry.of_line(r[ID], to_json_line(
                without_working_fields(r)).encode("utf-8")))
        ).with_output_types(tuple[key_type, JoinEntry])
        joined = ((lines, verdicts) | "Merge" >> beam.Flatten()
                  | "Join" >> beam.ParDo(_JoinVerdicts(
                      bands, match_rank(sketchers))).with_outputs(
                      FLAGGED, main="unflagged"))
        if records.is_bounded:
            flagged = self._kept_at_once(joined[FLAGGED])
        else:
            flagged = (joined[FLAGGED]
                       | "ToResolver" >> beam.ParDo(_ToResolver()
                                                    ).with_output_types(
                           tuple[int, list[KeptWaiting]])
                       | "ResolveKept" >> beam.ParDo(_ResolveKept(
                           self._config)))
        return (joined.unflagged, flagged) | "All" >> beam.Flatten()

    @staticmethod
    def _kept_at_once(flagged):
        """A bounded input's `kept_id`s: all the flagged records' links in
        one list, resolved as the stream resolves them, and joined back to
        their records as a map (a side input)."""
        kept = (flagged
                | "Links" >> beam.Map(lambda record, t=beam.DoFn.TimestampParam:
                                      _kept_link(record, t))
                | "AllLinks" >> beam.CombineGlobally(
                    beam.combiners.ToListCombineFn()).without_defaults()
                | "ResolveKept" >> beam.FlatMap(lambda links: [
                    (link.id, root) for link, root in resolve_kept(links, {})]))
        return flagged | "WithKeptId" >> beam.Map(
            lambda record, kept: {**record, KEPT_ID: kept[record[ID]]},
            beam.pvalue.AsDict(kept))

    def _grouped(self, records, record_entries, index_entries):
        """A bounded input's verdicts: all the input is there before the
        watermark moves, so one group per bucket gives the stream's
        verdicts without its state and timers."""

        def keyed(entries):
            def each(element, timestamp=beam.DoFn.TimestampParam):
                return entries(element, _whole_millis(timestamp))
            return each

        # Typed: Beam then codes keys and entries with deterministic,
        # pickle-free coders.
        entries = [records | "Sketch" >> beam.FlatMap(keyed(
            record_entries)).with_output_types(tuple[bytes, BucketEntry])]
        if self._against is not None:
            entries.append(self._against | "SketchIndex" >> beam.FlatMap(
                keyed(index_entries)).with_output_types(
                tuple[bytes, BucketEntry]))
        config = self._config
        return (entries | "AllEntries" >> beam.Flatten()
                | "GroupBuckets" >> beam.GroupByKey()
                | "Compare" >> beam.ParDo(_CompareGrouped(
                    self._sketchers, config.horizon_secs,
                    config.max_originals)).with_output_types(
                    tuple[str, JoinEntry]))

    def _sharded(self, records, record_entries, index_entries):
        """A stream's verdicts: buckets in keyed state, spread over
        `bucket_shards` keys (`_CompareInShard`)."""
        config = self._config
        shards = [records | "ToShards" >> beam.ParDo(_ToShards(
            record_entries, config.bucket_shards)).with_output_types(
            tuple[int, list[ShardEntry]])]
        if self._against is not None:
            shards.append(self._against | "IndexToShards" >> beam.ParDo(
                _ToShards(index_entries, config.bucket_shards)
            ).with_output_types(tuple[int, list[ShardEntry]]))
        return (shards | "AllShards" >> beam.Flatten()
                | "Compare" >> beam.ParDo(_CompareInShard(
                    self._sketchers, config, self._against is not None)
                ).with_output_types(tuple[int, JoinEntry]))
