"""Near-duplicate tagging in a stream, with a time horizon.

`StreamingNearDuplicates` flags a record that is a lexical (MinHash) or
semantic (random-hyperplane LSH on its embedding) near-duplicate of a
record seen within `horizon_secs` of event time, adding `duplicate_of`,
`kept_id`, `similarity` and `kind`; every record comes out once, flagged
or not, and without its embeddings (they are sketched on the way in).

How it works: each record is sketched (`embgemma_keras.dedup.sketches`)
into one bucket key per band of each sketcher; each bucket holds the
originals it saw (records that matched none before them, at most
`max_originals`, forgotten once the newest is `horizon_secs` old) and
judges each newcomer against them in order of event time, then id
(`embgemma_keras.dedup.stream_buckets.BucketJudge`), so of two
near-duplicates exactly one is flagged, the same one whatever the order a
runner or Pub/Sub delivers them in. A stateful DoFn keyed by record id
joins the verdicts of all bands and emits the record with its best match:
lexical before semantic, then the highest similarity. In a stream the
buckets are keyed state and event-time timers, and a record leaves once
the watermark has passed it; over a bounded input (files) a
`CoGroupByKey` hands each bucket its records at once, judged with no
state or timers: the same verdicts for less. Buckets and the join hold
named tuples (`BucketEntry`, `JoinEntry`, `Match`) with fixed,
deterministic coders: no pickling. The design, and what it costs:
docs/streaming.md.

Against a dedup index (`against=`, `stream_tag --index`): the entries
`dedup_corpus` kept join the buckets' state for good, so a record is also
flagged as a near-duplicate of any of them (`duplicate_of_run` names the
run that kept it). Over a bounded input they join a bucket's records
through a tagged `CoGroupByKey`; a stream's keyed state has one input, so
there they come in with the records and their run tells them apart. An
index in a database is looked up a record at a time instead
(`transforms.index.lookup.LookUpForStream`): the entries found come on
the record (`INDEX_MATCHES`) and join its buckets with its time, held for
its horizon, matching it and the records after it there.
A flagged record's `kept_id` is its `duplicate_of`: a stream keeps every
record, and whether the original it matched was itself flagged is decided
in other buckets at the same time, so the chain is not resolved here.
Replays: a re-delivered record (same id) is never compared with itself and
gets the verdict it got the first time (while the horizon's state lasts), so
Pub/Sub redelivery does not make a record a duplicate of itself. Late
records (behind the watermark) are compared with whatever the buckets
still hold: matches whose entries already expired are missed, never
invented, and a record that arrives after a near-duplicate of it that is
later in event time has been compared is not flagged, nor is that one.
"""

from __future__ import annotations

import json
import typing
from collections.abc import Sequence

import apache_beam as beam
from apache_beam import coders
from apache_beam.coders import coder_impl
from apache_beam.coders.coders import FastCoder
from apache_beam.metrics import Metrics
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import BagStateSpec
from apache_beam.transforms.userstate import TimerSpec
from apache_beam.transforms.userstate import on_timer
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import WindowedValue

from embgemma_keras.config import StreamDedupConfig
from embgemma_keras.dedup.sketches import Sketcher
from embgemma_keras.dedup.sketches import stream_sketchers
from embgemma_keras.dedup.stream_buckets import HELD as HELD  # benchmarks
from embgemma_keras.dedup.stream_buckets import BucketEntry
from embgemma_keras.dedup.stream_buckets import BucketJudge
from embgemma_keras.dedup.stream_buckets import JoinEntry
from embgemma_keras.dedup.stream_buckets import Judgement
from embgemma_keras.dedup.stream_buckets import Match
from embgemma_keras.dedup.stream_buckets import better_match
from embgemma_keras.dedup.stream_buckets import match_rank
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

# The tags of a bounded input's co-group per bucket.
_RECORDS, _INDEX = "records", "index"


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
    fields = (coders.BytesCoder(), coders.VarIntCoder(), _MatchCoder())


for _coder in (_MatchCoder, _BucketEntryCoder, _JoinEntryCoder):
    coders.registry.register_coder(_coder.kind, _coder)
BUCKET_CODER = _BucketEntryCoder()
JOIN_CODER = _JoinEntryCoder()


class _BucketVerdicts(beam.DoFn):
    """Judges records in their buckets (`BucketJudge`) and sends the verdict
    join one message per record and bundle (`JoinEntry.of_verdicts`: bands
    judged, best match), not one per band."""

    def __init__(self, sketchers, horizon_secs, max_originals):
        self._judge = BucketJudge(sketchers, horizon_secs, max_originals)
        self._rank = match_rank(sketchers)
        self._evicted = Metrics.counter("StreamingNearDuplicates",
                                        "bucket_evictions")

    def start_bundle(self):
        # (record id, window, event time) -> (bands judged, best match)
        self._verdicts = {}

    def finish_bundle(self):
        for (record_id, window, micros), (judged, best) in (
                self._verdicts.items()):
            yield WindowedValue(
                (record_id, JoinEntry.of_verdicts(judged, best)),
                Timestamp(micros=micros), [window])
        self._verdicts = {}

    def _judged(self, newcomers, held, indexed, window) -> Judgement:
        judged = self._judge(newcomers, held, indexed)
        for verdict in judged.verdicts:
            key = verdict.id, window, verdict.micros
            bands, best = self._verdicts.get(key, (0, None))
            self._verdicts[key] = (
                bands + 1, better_match(self._rank, best, verdict.match))
        if judged.evicted:
            self._evicted.inc(judged.evicted)
        return judged


class _CompareInBucket(_BucketVerdicts):
    """A stream's buckets: each in keyed state, woken by an event-time timer
    at each newcomer's time (tagged with it), so a newcomer is judged once
    the watermark has passed it: a copy delivered before its original
    (Pub/Sub keeps no order) is still the one flagged, and every bucket
    orders two records the same way (event time, then id).

    Whatever woke it, a bucket judges every newcomer waiting up to that
    time, then forgets its originals if they are past the horizon (an
    `EXPIRY` timer wakes it then). So the verdicts do not depend on the
    order in which a runner fires timers due together, as when the
    watermark jumps over a backlog.
    """

    BUCKET = BagStateSpec("bucket", BUCKET_CODER)
    WAKE = TimerSpec("wake", TimeDomain.WATERMARK)
    EXPIRY = "expiry"  # the tag of the timer that forgets the originals

    def setup(self):
        skip_module_scan()

    def process(self, element, bucket=beam.DoFn.StateParam(BUCKET),
                wake=beam.DoFn.TimerParam(WAKE)):
        _, entry = element
        bucket.add(entry)
        # An index entry is held for good: its timestamp is the earliest,
        # so it is in before any newcomer's timer can fire.
        if not entry.indexed:
            wake.set(Timestamp(micros=entry.micros),
                     dynamic_timer_tag=str(entry.micros))

    @on_timer(WAKE)
    def wake_up(self, fired=beam.DoFn.TimestampParam,
                window=beam.DoFn.WindowParam,
                bucket=beam.DoFn.StateParam(BUCKET),
                wake=beam.DoFn.TimerParam(WAKE)):
        now = fired.micros
        ready, waiting, held, indexed = [], [], [], []
        for entry in bucket.read():
            if entry.indexed:
                indexed.append(entry)
            elif entry.is_newcomer:
                (ready if entry.micros <= now else waiting).append(entry)
            else:
                held.append(entry)
        kept = held
        if ready:
            judged = self._judged(ready, held, indexed, window)
            kept = judged.held
            looked_up = [entry for entry in indexed if entry.micros]
            if judged.added or looked_up:
                # A millisecond (a timer's precision) past the horizon: a
                # newcomer right at it still meets the newest original.
                expiry = self._judge.horizon_end([*kept, *looked_up]) + 1000
                wake.set(Timestamp(micros=expiry),
                         dynamic_timer_tag=self.EXPIRY)
        if self._judge.outlived(kept, now):
            kept = []
        index = self._judge.current_index(indexed, now)
        if not ready and len(kept) == len(held) and len(index) == len(
                indexed):
            return  # nothing judged, nothing forgotten
        bucket.clear()
        for entry in (*index, *kept, *waiting):
            bucket.add(entry)


class _CompareGrouped(_BucketVerdicts):
    """A bounded input's buckets: all of a bucket's records and index
    entries come as one co-group (`_RECORDS`, `_INDEX`), so the watermark
    has passed them all and they are judged at once, with no state or
    timers; the verdicts are those of `_CompareInBucket`."""

    def process(self, element, window=beam.DoFn.WindowParam):
        _, grouped = element
        self._judged(grouped[_RECORDS], [], grouped.get(_INDEX, ()), window)
        return ()


class _JoinVerdicts(beam.DoFn):
    """Emits each delivery of a record once all its band verdicts are in.

    Verdicts come as `JoinEntry`s (bands judged, best match), one message
    per record from each bundle of the compare stage that judged it, and
    each delivery of the record as one holding its line. Every message
    goes into one bag per record id, which is then read back: the bag
    itself says whether a record can leave (one state read and one write
    per message, and a clear when all have left). A redelivered record
    (same id) can be in flight at the same time as its first delivery, so
    the bag may hold several lines; they leave one per `bands` verdicts
    received, and any delivery's verdicts fit the other (the original is
    always the earlier record).
    """

    INBOX = BagStateSpec("inbox", JOIN_CODER)

    def __init__(self, bands: int, rank: dict[str, int]):
        self._bands = bands
        self._rank = rank

    def setup(self):
        skip_module_scan()

    def process(self, element, inbox=beam.DoFn.StateParam(INBOX)):
        _, message = element
        inbox.add(message)
        lines, received, best = [], 0, None
        for entry in inbox.read():
            if entry.line:
                lines.append(entry.line)
            received += entry.judged
            best = better_match(self._rank, best, entry.match)
        leaving = min(len(lines), received // self._bands)
        if not leaving:
            return
        for line in lines[:leaving]:
            yield _tagged(json.loads(line), best)
        inbox.clear()
        received -= leaving * self._bands
        waiting = lines[leaving:]
        if received or (best and waiting):
            # What is still in flight keeps the verdicts seen so far.
            inbox.add(JoinEntry.of_verdicts(received, best))
        for line in waiting:
            inbox.add(JoinEntry.of_line(line))


def _tagged(record: dict, best: Match | None) -> dict:
    """The record with its best match's tags; as it is if it matched
    nothing, or already carries `duplicate_of`."""
    if best is None or DUPLICATE_OF in record:
        return record
    count(DUPLICATES)
    tags = {DUPLICATE_OF: best.original, KEPT_ID: best.original,
            SIMILARITY: best.similarity, KIND: best.kind}
    if best.indexed:
        tags[DUPLICATE_OF_RUN] = best.run
    return {**record, **tags}


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

    A flagged record gets `duplicate_of`, `kept_id` (the same id: see the
    module docstring), `similarity` and `kind`. A record already carrying
    `duplicate_of` keeps it. Records leave without their embeddings.
    Evictions from full buckets are counted in the
    `StreamingNearDuplicates/bucket_evictions` metric.

    The index is not held whole by any worker: each entry goes, like an
    original, to its buckets (one per band of each sketcher), which the
    runner spreads over its workers by key; a record reads the buckets it
    falls in, as it does for the horizon. On a stream the buckets are
    keyed state ordered by timers; on a bounded input, one `CoGroupByKey`
    of records and index entries (see the module docstring).
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

        def sketch(record, timestamp=beam.DoFn.TimestampParam):
            # Whole milliseconds: Beam's timers fire at that precision, so
            # a newcomer's timer fires at its time, not before it.
            micros = timestamp.micros // 1000 * 1000
            for sketcher in sketchers:
                sketch, keys = sketcher.sketch(record)
                for key in keys:
                    yield key, BucketEntry.newcomer(
                        sketcher.kind.value, record[ID], sketch, micros)

        def sketch_entry(entry):
            for sketcher in sketchers:
                sketched = sketcher.sketch_entry(entry)
                for key in sketched[1] if sketched else ():
                    yield key, BucketEntry.indexed_entry(
                        entry.run, entry.id, sketched[0])

        def sketch_looked_up(record, timestamp=beam.DoFn.TimestampParam):
            # Each entry a lookup found goes to the buckets it shares with
            # its record, with the record's time.
            entries = record.get(INDEX_MATCHES)
            if not entries:
                return
            micros = timestamp.micros // 1000 * 1000
            for sketcher in sketchers:
                keys = set(sketcher.sketch(record)[1])
                for entry in entries:
                    sketched = sketcher.sketch_entry(entry)
                    for key in keys.intersection(sketched[1] if sketched
                                                 else ()):
                        yield key, BucketEntry.indexed_entry(
                            entry.run, entry.id, sketched[0], micros)

        # Typed: Beam then codes keys and entries with deterministic,
        # pickle-free coders.
        sketched = records | "Sketch" >> beam.FlatMap(
            sketch).with_output_types(tuple[bytes, BucketEntry])
        index = [records | "SketchLookedUp" >> beam.FlatMap(
            sketch_looked_up).with_output_types(tuple[bytes, BucketEntry])]
        if self._against is not None:
            index.append(self._against | "SketchIndex" >> beam.FlatMap(
                sketch_entry).with_output_types(tuple[bytes, BucketEntry]))
        index = index | "AllIndexed" >> beam.Flatten()
        config = self._config
        if sketched.is_bounded:
            # All the input is there before the watermark moves: one
            # group per bucket gives the stream's verdicts without its
            # state and timers.
            compare = _CompareGrouped(sketchers, config.horizon_secs,
                                      config.max_originals)
            sketched = ({_RECORDS: sketched, _INDEX: index}
                        | "GroupBuckets" >> beam.CoGroupByKey())
        else:
            # Keyed state has one input: index entries come in with the
            # records, told apart by their run.
            compare = _CompareInBucket(sketchers, config.horizon_secs,
                                       config.max_originals)
            sketched = (sketched, index) | "WithIndex" >> beam.Flatten()
        verdicts = sketched | "Compare" >> beam.ParDo(
            compare).with_output_types(tuple[str, JoinEntry])
        lines = records | "KeyById" >> beam.Map(lambda r: (
            r[ID], JoinEntry.of_line(to_json_line(
                without_working_fields(r)).encode("utf-8")))
        ).with_output_types(tuple[str, JoinEntry])
        return ((lines, verdicts) | "Merge" >> beam.Flatten()
                | "Join" >> beam.ParDo(_JoinVerdicts(
                    bands, match_rank(sketchers))))
