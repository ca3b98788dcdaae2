"""Near-duplicate tagging in a stream, with a time horizon.

`StreamingNearDuplicates` flags a record that is a lexical (MinHash) or
semantic (random-hyperplane LSH on its embedding) near-duplicate of a
record seen within `horizon_secs` of event time, adding `duplicate_of`,
`similarity` and `kind`; every record comes out once, flagged or not, and
without its embeddings (they are sketched on the way in).

How it works: each record is sketched (`embgemma_keras.sketches`) into one
bucket key per band of each sketcher; one stateful DoFn per bucket keeps
the originals it saw (id, sketch, event time of records that matched none
before them) and compares each newcomer with them once the watermark has
passed the newcomer's event time, in order of event time, then id; an
event-time timer drops entries once the watermark is `horizon_secs` past
them, and a bucket keeps at most `max_bucket` entries, so state and time
per record stay bounded however hot a bucket runs (a spam wave of copies
keeps one entry: its original). A second stateful DoFn, keyed by record
id, counts the verdicts of all bands (the compare stage sends it one
message per record and bundle: how many bands judged it, and the best
match) and emits the record with its best match: lexical before semantic,
then the highest similarity.

State holds only plain values with fixed coders: bucket entries are
`(id, sketch bytes, micros)` (and the kind while they wait), the join holds
the vector-free record as a JSON line, a verdict count and the few matches
found: no pickling, and a handful of objects for Beam's state cache to
weigh (`tests/transforms/test_streaming_dedup.py` checks every value
written; `transforms.state_cache` makes each weighing cheap).

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

import functools
import json
from collections.abc import Sequence
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam import coders
from apache_beam.metrics import Metrics
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import BagStateSpec
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec
from apache_beam.transforms.userstate import TimerSpec
from apache_beam.transforms.userstate import on_timer
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import WindowedValue

from embgemma_keras.config import StreamDedupConfig
from embgemma_keras.progress import DUPLICATES
from embgemma_keras.grouping import THIS_RUN
from embgemma_keras.schema import DUPLICATE_OF
from embgemma_keras.schema import DUPLICATE_OF_RUN
from embgemma_keras.schema import ID
from embgemma_keras.schema import KIND
from embgemma_keras.schema import SIMILARITY
from embgemma_keras.schema import to_json_line
from embgemma_keras.schema import without_embeddings
from embgemma_keras.sketches import Sketcher
from embgemma_keras.sketches import stream_sketchers
from transforms.progress import count
from transforms.state_cache import skip_module_scan

# (record id, sketch, event time in microseconds)
ENTRY_CODER = coders.TupleCoder(
    [coders.StrUtf8Coder(), coders.BytesCoder(), coders.VarIntCoder()])
# (kind, record id, sketch, event time in microseconds)
PENDING_CODER = coders.TupleCoder([coders.StrUtf8Coder(), coders.StrUtf8Coder(),
                                   coders.BytesCoder(), coders.VarIntCoder()])
# (records waiting, verdicts received) in the verdict join
COUNTS_CODER = coders.TupleCoder([coders.VarIntCoder(), coders.VarIntCoder()])
# (run that kept it, record id, sketch): an entry of a dedup index
INDEXED_CODER = coders.TupleCoder(
    [coders.StrUtf8Coder(), coders.StrUtf8Coder(), coders.BytesCoder()])
# (kind, id of the original, similarity, the run that kept it or THIS_RUN)
MATCH_CODER = coders.TupleCoder([coders.StrUtf8Coder(), coders.StrUtf8Coder(),
                                 coders.FloatCoder(), coders.StrUtf8Coder()])


def _rank(sketchers: Sequence[Sketcher]) -> dict[str, int]:
    """Which kind of match names the original first: the sketchers' order
    (lexical before semantic)."""
    return {sketcher.kind.value: rank
            for rank, sketcher in enumerate(sketchers)}


def _best(rank: dict[str, int], one, other):
    """The better of two matches (`(kind, id, similarity, run)` or None):
    the kind ranked first, then the higher similarity."""
    if one is None or other is None:
        return other if one is None else one
    return min(one, other, key=lambda m: (rank[m[0]], -m[2]))


class _CompareInBucket(beam.DoFn):
    """Compares each record with the originals its bucket holds, in event
    time order: a newcomer waits (`PENDING`) until the watermark passes its
    event time, so a copy delivered before its original (Pub/Sub keeps no
    order) is still the one flagged, and every bucket orders two records
    the same way (event time, then id)."""

    SEEN = BagStateSpec("seen", ENTRY_CODER)
    INDEXED = BagStateSpec("indexed", INDEXED_CODER)
    PENDING = BagStateSpec("pending", PENDING_CODER)
    DUE = ReadModifyWriteStateSpec("due", coders.VarIntCoder())
    IN_ORDER = TimerSpec("in_order", TimeDomain.WATERMARK)
    EXPIRY = TimerSpec("expiry", TimeDomain.WATERMARK)

    def __init__(self, sketchers, horizon_secs, max_bucket, with_index):
        self._sketchers = {s.kind.value: s for s in sketchers}
        self._rank = _rank(sketchers)
        self._with_index = with_index  # else INDEXED is empty: not read
        self._horizon = int(horizon_secs * 1_000_000)  # microseconds
        self._max_bucket = max_bucket
        self._evicted = Metrics.counter("StreamingNearDuplicates",
                                        "bucket_evictions")

    def setup(self):
        skip_module_scan()

    def start_bundle(self):
        # (record id, window, event time) -> (bands judged, best match): the
        # bundle's verdicts go to the join as one message per record, not
        # one per band.
        self._verdicts = {}

    def finish_bundle(self):
        for (record_id, window, micros), verdict in self._verdicts.items():
            yield WindowedValue((record_id, (None, verdict)),
                                Timestamp(micros=micros), [window])
        self._verdicts = {}

    def process(self, element, timestamp=beam.DoFn.TimestampParam,
                pending=beam.DoFn.StateParam(PENDING),
                due=beam.DoFn.StateParam(DUE),
                indexed=beam.DoFn.StateParam(INDEXED),
                in_order=beam.DoFn.TimerParam(IN_ORDER)):
        _, (kind, record_id, sketch, run) = element
        if run != THIS_RUN:
            # An index entry: kept for good, never compared itself. Its
            # timestamp is the earliest, so it is in before any newcomer's
            # timer can fire.
            indexed.add((run, record_id, sketch))
            return
        pending.add((kind, record_id, sketch, timestamp.micros))
        # One timer per key: it stays at the earliest record waiting.
        next_due = due.read()
        if next_due is None or timestamp.micros < next_due:
            in_order.set(timestamp)
            due.write(timestamp.micros)

    @on_timer(IN_ORDER)
    def compare_in_order(self, fired=beam.DoFn.TimestampParam,
                         window=beam.DoFn.WindowParam,
                         pending=beam.DoFn.StateParam(PENDING),
                         due=beam.DoFn.StateParam(DUE),
                         seen=beam.DoFn.StateParam(SEEN),
                         indexed=beam.DoFn.StateParam(INDEXED),
                         in_order=beam.DoFn.TimerParam(IN_ORDER),
                         expiry=beam.DoFn.TimerParam(EXPIRY)):
        """Verdicts for the records at the timer's time, by id; those after
        it wait for the timer's next firing (the timer is always at the
        earliest waiting, so each verdict keeps its record's event time)."""
        waiting = list(pending.read())
        ready = sorted((entry for entry in waiting if entry[3] <= fired.micros),
                       key=lambda entry: (entry[3], entry[1]))
        later = [entry for entry in waiting if entry[3] > fired.micros]
        pending.clear()
        for entry in later:
            pending.add(entry)
        if later:
            next_due = min(entry[3] for entry in later)
            in_order.set(Timestamp(micros=next_due))
            due.write(next_due)
        else:
            due.clear()
        entries = list(seen.read())
        kept = list(indexed.read()) if self._with_index else []
        for kind, record_id, sketch, micros in ready:
            match = self._verdict(kind, record_id, sketch, micros, entries,
                                  kept, seen, expiry)
            judged, best = self._verdicts.get((record_id, window, micros),
                                              (0, None))
            self._verdicts[record_id, window, micros] = (
                judged + 1, _best(self._rank, best, match))

    def _verdict(self, kind, record_id, sketch, micros, entries, kept, seen,
                 expiry):
        known = any(other_id == record_id for other_id, _, _ in entries)
        best = self._best_match(kind, record_id, sketch, micros, entries,
                                kept)
        # Only originals are remembered: a copy matches its original anyway,
        # so a burst of copies (a spam wave) leaves the bucket at one entry
        # and `duplicate_of` names the original, not another copy.
        if not known and best is None:
            if len(entries) >= self._max_bucket:
                self._forget_oldest(entries, seen)
            entries.append((record_id, sketch, micros))
            seen.add(entries[-1])
            expiry.set(Timestamp(micros=micros + self._horizon))
        return best

    def _best_match(self, kind, record_id, sketch, micros, entries, kept):
        """`(kind, id, similarity, run)` of the closest original, or None.

        Only a record seen before, at the same or an earlier event time
        within the horizon, can be the original, so a replayed record gets
        the verdict it got first: the entries kept since were compared with
        it and are not its near-duplicates. Any index entry can be, even
        one with the record's id (the same record sent again).
        """
        earlier = [(THIS_RUN, other_id, other_sketch)
                   for other_id, other_sketch, other_micros in entries
                   if other_id != record_id
                   and 0 <= micros - other_micros <= self._horizon] + kept
        if not earlier:
            return None
        sketcher = self._sketchers[kind]
        scores = sketcher.similarities(sketch, [s for _, _, s in earlier])
        best = int(np.argmax(scores))
        if scores[best] < sketcher.threshold:
            return None
        run, original, _ = earlier[best]
        return kind, original, float(scores[best]), run

    def _forget_oldest(self, entries, seen):
        """A bucket of distinct records sharing a band: forget the oldest,
        so a hot bucket costs bounded time and memory."""
        entries.sort(key=lambda entry: entry[2])
        drop = len(entries) - self._max_bucket + 1
        del entries[:drop]
        seen.clear()
        for kept in entries:
            seen.add(kept)
        self._evicted.inc(drop)

    @on_timer(EXPIRY)
    def expire(self, fired=beam.DoFn.TimestampParam,
               seen=beam.DoFn.StateParam(SEEN),
               expiry=beam.DoFn.TimerParam(EXPIRY)):
        keep = [entry for entry in seen.read()
                if entry[2] + self._horizon > fired.micros]
        seen.clear()
        for entry in keep:
            seen.add(entry)
        if keep:
            expiry.set(Timestamp(
                micros=min(entry[2] for entry in keep) + self._horizon))


class _JoinVerdicts(beam.DoFn):
    """Emits each delivery of a record once all its band verdicts are in.

    Verdicts come as `(bands judged, best match)`, one message per record
    from each bundle of the compare stage that judged it. A redelivered
    record (same id) can be in flight at the same time as its first
    delivery, so records wait in a bag and leave one per `bands` verdicts
    received; any delivery's verdicts fit the other (the original is always
    the earlier record).
    """

    RECORDS = BagStateSpec("records", coders.BytesCoder())
    MATCHES = BagStateSpec("matches", MATCH_CODER)
    # (deliveries waiting in RECORDS, verdicts received): one read and one
    # write per message; the bags are read only when a record can leave.
    COUNTS = ReadModifyWriteStateSpec("counts", COUNTS_CODER)

    def __init__(self, bands: int, rank: dict[str, int]):
        self._bands = bands
        self._rank = rank

    def setup(self):
        skip_module_scan()

    def process(self, element, records=beam.DoFn.StateParam(RECORDS),
                matches=beam.DoFn.StateParam(MATCHES),
                counts=beam.DoFn.StateParam(COUNTS)):
        _, (line, verdict) = element
        waiting, received = counts.read() or (0, 0)
        if line is not None:
            records.add(line)
            waiting += 1
        else:
            judged, match = verdict
            received += judged
            if match is not None:
                matches.add(match)
        leaving = min(waiting, received // self._bands)
        if leaving:
            best = functools.reduce(functools.partial(_best, self._rank),
                                    matches.read(), None)
            lines = list(records.read())
            for line in lines[:leaving]:
                yield self._tagged(json.loads(line), best)
            records.clear()
            for line in lines[leaving:]:
                records.add(line)
            waiting -= leaving
            received -= leaving * self._bands
        if waiting or received:
            counts.write((waiting, received))
        else:
            counts.clear()
            matches.clear()

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
    original, into the state of its buckets (one per band of each
    sketcher), which the runner spreads over its workers by key; a record
    reads the buckets it falls in, as it does for the horizon.
    """

    def __init__(self, config: StreamDedupConfig = StreamDedupConfig(),
                 dim: int | None = None,
                 sketchers: Sequence[Sketcher] | None = None,
                 against=None):
        super().__init__()
        self._config = config
        self._sketchers = list(sketchers or stream_sketchers(config, dim))
        self._against = against

    def expand(self, records):
        sketchers = self._sketchers
        bands = sum(s.bands for s in sketchers)

        def sketch(record):
            for sketcher in sketchers:
                sketch, keys = sketcher.sketch(record)
                for key in keys:
                    yield key, (sketcher.kind.value, record[ID], sketch,
                                THIS_RUN)

        def sketch_entry(entry):
            for sketcher in sketchers:
                sketched = sketcher.sketch_entry(entry)
                for key in sketched[1] if sketched else ():
                    yield key, (sketcher.kind.value, entry.id, sketched[0],
                                entry.run)

        # Typed keys: Beam then knows their coder is deterministic.
        sketched = records | "Sketch" >> beam.FlatMap(
            sketch).with_output_types(tuple[bytes, Any])
        if self._against is not None:
            sketched = (sketched, self._against | "SketchIndex" >> (
                beam.FlatMap(sketch_entry).with_output_types(
                    tuple[bytes, Any]))) | "WithIndex" >> beam.Flatten()
        verdicts = (
            sketched
            | "Compare" >> beam.ParDo(_CompareInBucket(
                sketchers, self._config.horizon_secs,
                self._config.max_bucket, self._against is not None)
            ).with_output_types(tuple[str, Any]))
        lines = records | "KeyById" >> beam.Map(lambda r: (r[ID], (
            to_json_line(without_embeddings(r)).encode("utf-8"), None))
        ).with_output_types(tuple[str, Any])
        return ((lines, verdicts) | "Merge" >> beam.Flatten()
                | "Join" >> beam.ParDo(_JoinVerdicts(bands, _rank(sketchers))))
