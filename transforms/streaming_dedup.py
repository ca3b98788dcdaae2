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
id, counts the verdicts of all bands and emits the record with its best
match: lexical before semantic, then the highest similarity.

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
import numpy as np
from apache_beam import coders
from apache_beam.metrics import Metrics
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import BagStateSpec
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec
from apache_beam.transforms.userstate import TimerSpec
from apache_beam.transforms.userstate import on_timer
from apache_beam.utils.timestamp import Timestamp

from embgemma_keras.config import StreamDedupConfig
from embgemma_keras.progress import DUPLICATES
from embgemma_keras.schema import DUPLICATE_OF
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
# (kind, id of the original, similarity)
MATCH_CODER = coders.TupleCoder(
    [coders.StrUtf8Coder(), coders.StrUtf8Coder(), coders.FloatCoder()])


class _CompareInBucket(beam.DoFn):
    """Compares each record with the originals its bucket holds, in event
    time order: a newcomer waits (`PENDING`) until the watermark passes its
    event time, so a copy delivered before its original (Pub/Sub keeps no
    order) is still the one flagged, and every bucket orders two records
    the same way (event time, then id)."""

    SEEN = BagStateSpec("seen", ENTRY_CODER)
    PENDING = BagStateSpec("pending", PENDING_CODER)
    DUE = ReadModifyWriteStateSpec("due", coders.VarIntCoder())
    IN_ORDER = TimerSpec("in_order", TimeDomain.WATERMARK)
    EXPIRY = TimerSpec("expiry", TimeDomain.WATERMARK)

    def __init__(self, sketchers, horizon_secs, max_bucket):
        self._sketchers = {s.kind.value: s for s in sketchers}
        self._horizon = int(horizon_secs * 1_000_000)  # microseconds
        self._max_bucket = max_bucket
        self._evicted = Metrics.counter("StreamingNearDuplicates",
                                        "bucket_evictions")

    def setup(self):
        skip_module_scan()

    def process(self, element, timestamp=beam.DoFn.TimestampParam,
                pending=beam.DoFn.StateParam(PENDING),
                due=beam.DoFn.StateParam(DUE),
                in_order=beam.DoFn.TimerParam(IN_ORDER)):
        _, (kind, record_id, sketch) = element
        pending.add((kind, record_id, sketch, timestamp.micros))
        # One timer per key: it stays at the earliest record waiting.
        next_due = due.read()
        if next_due is None or timestamp.micros < next_due:
            in_order.set(timestamp)
            due.write(timestamp.micros)

    @on_timer(IN_ORDER)
    def compare_in_order(self, fired=beam.DoFn.TimestampParam,
                         pending=beam.DoFn.StateParam(PENDING),
                         due=beam.DoFn.StateParam(DUE),
                         seen=beam.DoFn.StateParam(SEEN),
                         in_order=beam.DoFn.TimerParam(IN_ORDER),
                         expiry=beam.DoFn.TimerParam(EXPIRY)):
        """Verdicts for the records at the timer's time, by id; those after
        it wait for the timer's next firing (its output timestamp is theirs,
        so each verdict keeps its record's event time)."""
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
        for kind, record_id, sketch, micros in ready:
            yield record_id, self._verdict(kind, record_id, sketch, micros,
                                           entries, seen, expiry)

    def _verdict(self, kind, record_id, sketch, micros, entries, seen,
                 expiry):
        known = any(other_id == record_id for other_id, _, _ in entries)
        best = self._best_match(kind, record_id, sketch, micros, entries)
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

    def _best_match(self, kind, record_id, sketch, micros, entries):
        """`(kind, id, similarity)` of the closest original, or None.

        Only a record seen before, at the same or an earlier event time
        within the horizon, can be the original, so a replayed record gets
        the verdict it got first: the entries kept since were compared with
        it and are not its near-duplicates.
        """
        earlier = [(other_id, other_sketch) for other_id, other_sketch,
                   other_micros in entries
                   if other_id != record_id
                   and 0 <= micros - other_micros <= self._horizon]
        if not earlier:
            return None
        sketcher = self._sketchers[kind]
        scores = sketcher.similarities(sketch, [s for _, s in earlier])
        best = int(np.argmax(scores))
        if scores[best] < sketcher.threshold:
            return None
        return kind, earlier[best][0], float(scores[best])

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

    A redelivered record (same id) can be in flight at the same time as its
    first delivery, so records wait in a bag and leave one per `bands`
    verdicts received; any delivery's verdicts fit the other (the original
    is always the earlier record).
    """

    RECORDS = BagStateSpec("records", coders.BytesCoder())
    MATCHES = BagStateSpec("matches", MATCH_CODER)
    VERDICTS = ReadModifyWriteStateSpec("verdicts", coders.VarIntCoder())

    def __init__(self, bands: int, kinds: Sequence[str]):
        self._bands = bands
        self._rank = {kind: rank for rank, kind in enumerate(kinds)}

    def setup(self):
        skip_module_scan()

    def process(self, element, records=beam.DoFn.StateParam(RECORDS),
                matches=beam.DoFn.StateParam(MATCHES),
                verdicts=beam.DoFn.StateParam(VERDICTS)):
        _, (line, match) = element
        received = verdicts.read() or 0
        if line is not None:
            records.add(line)
        else:
            received += 1
            verdicts.write(received)
            if match is not None:
                matches.add(match)
        waiting = list(records.read())
        if not waiting or received < self._bands:
            return
        best = min(matches.read(), default=None,
                   key=lambda m: (self._rank[m[0]], -m[2]))
        while waiting and received >= self._bands:
            line, waiting = waiting[0], waiting[1:]
            received -= self._bands
            yield self._tagged(json.loads(line), best)
        records.clear()
        for line in waiting:
            records.add(line)
        if received:
            verdicts.write(received)
        else:
            verdicts.clear()
            if not waiting:
                matches.clear()

    @staticmethod
    def _tagged(record, best):
        if best is None or DUPLICATE_OF in record:
            return record
        count(DUPLICATES)
        kind, original, score = best
        return {**record, DUPLICATE_OF: original, SIMILARITY: score,
                KIND: kind}


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

    A record already carrying `duplicate_of` keeps it. Records leave
    without their embeddings. Evictions from full buckets are counted in
    the `StreamingNearDuplicates/bucket_evictions` metric.
    """

    def __init__(self, config: StreamDedupConfig = StreamDedupConfig(),
                 dim: int | None = None,
                 sketchers: Sequence[Sketcher] | None = None):
        super().__init__()
        self._config = config
        self._sketchers = list(sketchers or stream_sketchers(config, dim))

    def expand(self, records):
        sketchers = self._sketchers
        bands = sum(s.bands for s in sketchers)

        def sketch(record):
            for sketcher in sketchers:
                sketch, keys = sketcher.sketch(record)
                for key in keys:
                    yield key, (sketcher.kind.value, record[ID], sketch)

        verdicts = (
            records
            # Typed keys: Beam then knows their coder is deterministic.
            | "Sketch" >> beam.FlatMap(sketch).with_output_types(
                tuple[bytes, Any])
            | "Compare" >> beam.ParDo(_CompareInBucket(
                sketchers, self._config.horizon_secs,
                self._config.max_bucket))
            | "AsVerdict" >> beam.MapTuple(
                lambda record_id, match: (record_id, (None, match))
            ).with_output_types(tuple[str, Any]))
        lines = records | "KeyById" >> beam.Map(lambda r: (r[ID], (
            to_json_line(without_embeddings(r)).encode("utf-8"), None))
        ).with_output_types(tuple[str, Any])
        return ((lines, verdicts) | "Merge" >> beam.Flatten()
                | "Join" >> beam.ParDo(_JoinVerdicts(
                    bands, [s.kind.value for s in sketchers])))
