"""Near-duplicate tagging in a stream, with a time horizon.

`StreamingNearDuplicates` flags a record that is a lexical (MinHash) or
semantic (random-hyperplane LSH on its embedding) near-duplicate of a
record seen within `horizon_secs` of event time, adding `duplicate_of`,
`similarity` and `kind`; every record comes out once, flagged or not, and
without its embeddings (they are sketched on the way in).

How it works: each record is sketched (`embgemma_keras.dedup.sketches`) into one
bucket key per band of each sketcher; each bucket holds the originals it
saw (id, sketch, event time of records that matched none before them) and
judges each newcomer against them once the watermark has passed the
newcomer's event time, in order of event time, then id
(`embgemma_keras.dedup.stream_buckets.BucketJudge`). A bucket keeps at most
`max_originals` originals and forgets them all once its newest is
`horizon_secs` old, so state and time per record stay bounded however hot
a bucket runs (a spam wave of copies keeps one entry: its original). A
stateful DoFn keyed by record id counts the verdicts of all bands (one
message per record and bundle of the compare stage: how many bands judged
it, and the best match) and emits the record with its best match: lexical
before semantic, then the highest similarity.

In a stream the buckets are keyed state: a newcomer waits in its bucket
for an event-time timer at its time (in whole milliseconds, the precision
of Beam's timers), and a timer at the horizon past the newest original
clears it. A bounded input (files) has all its records before the
watermark moves, so a `GroupByKey` hands each bucket its records (of a
window) at once and they are judged together, with no state or timers: the
same verdicts for less (`benchmarks/stream_throughput.py` measures both).

State holds only plain values with fixed coders: a bucket entry is
`(kind, run, id, sketch bytes, micros)`, the join holds the vector-free
record as a JSON line and its verdicts (bands judged, best match): no
pickling, and a handful of objects for Beam's state cache to weigh
(`tests/transforms/test_streaming_dedup.py` checks every value written;
`transforms.state_cache` makes each weighing cheap).

The original is the earlier record in event time, or of two at the same
time (every record of a file) the one with the smaller id, whichever order
a runner or Pub/Sub delivers them in, and every bucket agrees on that
order, so of two near-duplicates exactly one is flagged, the same one on
every runner. The price is latency: a record leaves once the watermark
has passed it (on Dataflow, Pub/Sub's watermark trails the oldest unacked
message by seconds).
Against a dedup index (`against=`, `stream_tag --index`): the entries
`dedup_corpus` kept join the buckets' state for good, so a record is also
flagged as a near-duplicate of any of them (`duplicate_of_run` names the
run that kept it).
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
from collections.abc import Sequence
from typing import Any

import apache_beam as beam
from apache_beam import coders
from apache_beam.metrics import Metrics
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import BagStateSpec
from apache_beam.transforms.userstate import TimerSpec
from apache_beam.transforms.userstate import on_timer
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import WindowedValue

from embgemma_keras.config import StreamDedupConfig
from embgemma_keras.dedup.grouping import THIS_RUN
from embgemma_keras.dedup.sketches import Sketcher
from embgemma_keras.dedup.sketches import stream_sketchers
from embgemma_keras.dedup.stream_buckets import BucketJudge
from embgemma_keras.dedup.stream_buckets import Judgement
from embgemma_keras.dedup.stream_buckets import better_match
from embgemma_keras.dedup.stream_buckets import match_rank
from embgemma_keras.progress import DUPLICATES
from embgemma_keras.records.schema import DUPLICATE_OF
from embgemma_keras.records.schema import DUPLICATE_OF_RUN
from embgemma_keras.records.schema import ID
from embgemma_keras.records.schema import KIND
from embgemma_keras.records.schema import SIMILARITY
from embgemma_keras.records.schema import to_json_line
from embgemma_keras.records.schema import without_embeddings
from transforms.counters import count
from transforms.state_cache import skip_module_scan

# A bucket's entry: (kind, run, record id, sketch, event time in
# microseconds). `kind` names the sketcher still to judge a newcomer, and is
# HELD once it is an original; `run` is THIS_RUN but for a dedup index's
# entry, held for good.
BUCKET_CODER = coders.TupleCoder([
    coders.StrUtf8Coder(), coders.StrUtf8Coder(), coders.StrUtf8Coder(),
    coders.BytesCoder(), coders.VarIntCoder()])
HELD = ""
# What the verdict join holds for a record id, one entry per message:
# (record line or b"", bands judged, match kind or "", id of the original,
# similarity, the run that kept it or THIS_RUN).
JOIN_CODER = coders.TupleCoder([
    coders.BytesCoder(), coders.VarIntCoder(), coders.StrUtf8Coder(),
    coders.StrUtf8Coder(), coders.FloatCoder(), coders.StrUtf8Coder()])
NO_MATCH = ("", "", 0.0, "")


class _BucketVerdicts(beam.DoFn):
    """Judges records in their buckets (`BucketJudge`) and sends the verdict
    join one message per record and bundle: (bands judged, best match),
    not one per band."""

    def __init__(self, sketchers, horizon_secs, max_originals):
        self._judge = BucketJudge(sketchers, horizon_secs, max_originals)
        self._rank = match_rank(sketchers)
        self._evicted = Metrics.counter("StreamingNearDuplicates",
                                        "bucket_evictions")

    def start_bundle(self):
        # (record id, window, event time) -> (bands judged, best match)
        self._verdicts = {}

    def finish_bundle(self):
        for (record_id, window, micros), verdict in self._verdicts.items():
            yield WindowedValue((record_id, (None, verdict)),
                                Timestamp(micros=micros), [window])
        self._verdicts = {}

    def _judged(self, newcomers, held, indexed, window) -> Judgement:
        judged = self._judge(newcomers, held, indexed)
        for record_id, micros, match in judged.verdicts:
            judged_bands, best = self._verdicts.get(
                (record_id, window, micros), (0, None))
            self._verdicts[record_id, window, micros] = (
                judged_bands + 1, better_match(self._rank, best, match))
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
        _, (kind, record_id, sketch, run, micros) = element
        if run != THIS_RUN:
            # An index entry: its timestamp is the earliest, so it is in
            # before any newcomer's timer can fire.
            bucket.add((HELD, run, record_id, sketch, micros))
            return
        bucket.add((kind, run, record_id, sketch, micros))
        wake.set(Timestamp(micros=micros), dynamic_timer_tag=str(micros))

    @on_timer(WAKE)
    def wake_up(self, fired=beam.DoFn.TimestampParam,
                window=beam.DoFn.WindowParam,
                bucket=beam.DoFn.StateParam(BUCKET),
                wake=beam.DoFn.TimerParam(WAKE)):
        now = fired.micros
        ready, waiting, held, indexed = [], [], [], []
        for kind, run, record_id, sketch, micros in bucket.read():
            if run != THIS_RUN:
                indexed.append((run, record_id, sketch))
            elif kind == HELD:
                held.append((record_id, sketch, micros))
            else:
                (ready if micros <= now else waiting).append(
                    (kind, record_id, sketch, micros))
        kept = held
        if ready:
            judged = self._judged(ready, held, indexed, window)
            kept = judged.held
            if judged.added:
                # A millisecond (a timer's precision) past the horizon: a
                # newcomer right at it still meets the newest original.
                expiry = self._judge.horizon_end(kept) + 1000
                wake.set(Timestamp(micros=expiry),
                         dynamic_timer_tag=self.EXPIRY)
        if self._judge.outlived(kept, now):
            kept = []
        if not ready and len(kept) == len(held):
            return  # nothing judged, nothing forgotten
        bucket.clear()
        for run, record_id, sketch in indexed:
            bucket.add((HELD, run, record_id, sketch, 0))
        for record_id, sketch, micros in kept:
            bucket.add((HELD, THIS_RUN, record_id, sketch, micros))
        for kind, record_id, sketch, micros in waiting:
            bucket.add((kind, THIS_RUN, record_id, sketch, micros))


class _CompareGrouped(_BucketVerdicts):
    """A bounded input's buckets: all of a bucket's records (and index
    entries) come as one group, so the watermark has passed them all and
    they are judged at once, with no state or timers; the verdicts are
    those of `_CompareInBucket`."""

    def process(self, element, window=beam.DoFn.WindowParam):
        _, values = element
        newcomers, indexed = [], []
        for kind, record_id, sketch, run, micros in values:
            if run == THIS_RUN:
                newcomers.append((kind, record_id, sketch, micros))
            else:
                indexed.append((run, record_id, sketch))
        self._judged(newcomers, [], indexed, window)
        return ()


class _JoinVerdicts(beam.DoFn):
    """Emits each delivery of a record once all its band verdicts are in.

    Verdicts come as `(bands judged, best match)`, one message per record
    from each bundle of the compare stage that judged it. Every message
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
        _, (line, verdict) = element
        if line is not None:
            inbox.add((line, 0, *NO_MATCH))
        else:
            judged, match = verdict
            inbox.add((b"", judged, *(match or NO_MATCH)))
        lines, received, best = [], 0, None
        for held_line, judged, *match in inbox.read():
            if held_line:
                lines.append(held_line)
            received += judged
            if match[0]:
                best = better_match(self._rank, best, tuple(match))
        leaving = min(len(lines), received // self._bands)
        if not leaving:
            return
        for line in lines[:leaving]:
            yield self._tagged(json.loads(line), best)
        inbox.clear()
        received -= leaving * self._bands
        waiting = lines[leaving:]
        if received or (best and waiting):
            # What is still in flight keeps the verdicts seen so far.
            inbox.add((b"", received, *(best or NO_MATCH)))
        for line in waiting:
            inbox.add((line, 0, *NO_MATCH))

    @staticmethod
    def _tagged(record, best):
        if best is None or DUPLICATE_OF in record:
            return record
        count(DUPLICATES)
        kind, original, score, run = best
        tags = {DUPLICATE_OF: original, SIMILARITY: score, KIND: kind}
        if run != THIS_RUN:
            tags[DUPLICATE_OF_RUN] = run
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

    A record already carrying `duplicate_of` keeps it. Records leave
    without their embeddings. Evictions from full buckets are counted in
    the `StreamingNearDuplicates/bucket_evictions` metric.

    The index is not held whole by any worker: each entry goes, like an
    original, to its buckets (one per band of each sketcher), which the
    runner spreads over its workers by key; a record reads the buckets it
    falls in, as it does for the horizon. On a stream the buckets are
    keyed state ordered by timers; on a bounded input, one `GroupByKey`
    (see the module docstring).
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
                    yield key, (sketcher.kind.value, record[ID], sketch,
                                THIS_RUN, micros)

        def sketch_entry(entry):
            for sketcher in sketchers:
                sketched = sketcher.sketch_entry(entry)
                for key in sketched[1] if sketched else ():
                    yield key, (sketcher.kind.value, entry.id, sketched[0],
                                entry.run, 0)

        # Typed keys: Beam then knows their coder is deterministic.
        sketched = records | "Sketch" >> beam.FlatMap(
            sketch).with_output_types(tuple[bytes, Any])
        if self._against is not None:
            sketched = (sketched, self._against | "SketchIndex" >> (
                beam.FlatMap(sketch_entry).with_output_types(
                    tuple[bytes, Any]))) | "WithIndex" >> beam.Flatten()
        config = self._config
        if sketched.is_bounded:
            # All the input is there before the watermark moves: one
            # group per bucket gives the stream's verdicts without its
            # state and timers.
            compare = _CompareGrouped(sketchers, config.horizon_secs,
                                      config.max_originals)
            sketched = sketched | "GroupBuckets" >> beam.GroupByKey()
        else:
            compare = _CompareInBucket(sketchers, config.horizon_secs,
                                       config.max_originals)
        verdicts = sketched | "Compare" >> beam.ParDo(
            compare).with_output_types(tuple[str, Any])
        lines = records | "KeyById" >> beam.Map(lambda r: (r[ID], (
            to_json_line(without_embeddings(r)).encode("utf-8"), None))
        ).with_output_types(tuple[str, Any])
        return ((lines, verdicts) | "Merge" >> beam.Flatten()
                | "Join" >> beam.ParDo(_JoinVerdicts(
                    bands, match_rank(sketchers))))
