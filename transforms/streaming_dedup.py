"""Near-duplicate tagging in a stream, with a time horizon.

`StreamingNearDuplicates` flags a record that is a lexical (MinHash) or
semantic (random-hyperplane LSH on its embedding) near-duplicate of a
record seen within `horizon_secs` of event time, adding `duplicate_of`,
`similarity` and `kind` to it; every record comes out once, flagged or not.

How it works: each record is sketched into one key per LSH band; a
stateful DoFn per band bucket remembers the originals it saw (id, sketch,
event time of the records that matched none before them) and compares each
newcomer with them; an event-time timer drops entries once the watermark is
`horizon_secs` past them, and a bucket keeps at most `max_bucket` entries,
so state and time per record stay bounded however hot a bucket runs (a
spam wave of copies keeps one entry: its original). A second stateful DoFn keyed
by record id waits for the verdicts of all bands and emits the record with
its best match.

The original is always the earlier record in event time (ties: smaller
id), so a record is only ever flagged as a duplicate of one before it.
Replays: a re-delivered record (same id) is never compared with itself and
gets the verdict it got the first time (while the horizon's state lasts), so
Pub/Sub redelivery does not make a record a duplicate of itself. Late
records are compared with whatever the buckets still hold: matches whose
entries already expired are missed, never invented; a record that arrives
before its (event-time) original is not flagged.
"""

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.coders import PickleCoder
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import BagStateSpec
from apache_beam.transforms.userstate import CombiningValueStateSpec
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec
from apache_beam.transforms.userstate import TimerSpec
from apache_beam.transforms.userstate import on_timer
from apache_beam.utils.timestamp import Timestamp

from transforms.embed import EMBEDDINGS
from transforms.minhash import MinHasher
from transforms.minhash import estimated_jaccard
from transforms.minhash import normalize


class LexicalSketch:
    """MinHash signature of the normalised text; Jaccard estimate."""

    kind = "lexical"

    def __init__(self, hasher=None):
        self.hasher = hasher or MinHasher()
        self.bands = self.hasher.bands

    def sketch(self, record):
        signature = self.hasher.signature(normalize(record["text"]))
        return signature, self.hasher.band_keys(signature)

    @staticmethod
    def similarity(a, b):
        return estimated_jaccard(a, b)


class SemanticSketch:
    """Random-hyperplane LSH on an embedding; cosine similarity.

    Each band is `bits` signs of projections on random hyperplanes; vectors
    at angle theta share a band with probability (1 - theta / pi) ** bits.
    """

    kind = "semantic"

    def __init__(self, dim, stage="similarity", bands=16, bits=12, seed=0):
        self.stage, self.bands, self.bits = stage, bands, bits
        self.planes = np.random.default_rng(seed).normal(
            size=(dim, bands * bits)).astype(np.float32)

    def sketch(self, record):
        vector = np.asarray(record[EMBEDDINGS][self.stage], np.float32)
        signs = (vector @ self.planes > 0).reshape(self.bands, self.bits)
        return vector, [(band, np.packbits(row).tobytes())
                        for band, row in enumerate(signs)]

    @staticmethod
    def similarity(a, b):
        return float(np.dot(a, b))


class _CompareInBucket(beam.DoFn):
    SEEN = BagStateSpec("seen", PickleCoder())
    EXPIRY = TimerSpec("expiry", TimeDomain.WATERMARK)

    def __init__(self, sketcher, threshold, horizon_secs, max_bucket):
        self._sketcher = sketcher
        self._threshold = threshold
        self._horizon = int(horizon_secs * 1_000_000)  # microseconds
        self._max_bucket = max_bucket
        self._evicted = Metrics.counter("StreamingNearDuplicates",
                                        "bucket_evictions")

    def process(self, element, timestamp=beam.DoFn.TimestampParam,
                seen=beam.DoFn.StateParam(SEEN),
                expiry=beam.DoFn.TimerParam(EXPIRY)):
        _, (record_id, sketch) = element
        order = (timestamp.micros, record_id)
        best, known = None, False
        entries = list(seen.read())
        for other_id, other_sketch, other_micros in entries:
            if other_id == record_id:
                known = True
                continue
            # Only an earlier record (event time, then id) can be the
            # original, so a replayed record gets the verdict it got first.
            if (other_micros, other_id) >= order or (
                    timestamp.micros - other_micros > self._horizon):
                continue
            score = self._sketcher.similarity(sketch, other_sketch)
            if score >= self._threshold and (best is None or score > best[1]):
                best = (other_id, score)
        # Only originals are remembered: a copy matches its original anyway,
        # so a burst of copies (a spam wave) leaves the bucket at one entry
        # and `duplicate_of` names the original, not another copy.
        if not known and best is None:
            entry = (record_id, sketch, timestamp.micros)
            if len(entries) >= self._max_bucket:
                # A bucket of distinct records sharing a band: forget the
                # oldest, so a hot bucket costs bounded time and memory.
                entries.sort(key=lambda e: e[2])
                seen.clear()
                for kept in entries[len(entries) - self._max_bucket + 1:]:
                    seen.add(kept)
                self._evicted.inc(len(entries) - self._max_bucket + 1)
            seen.add(entry)
            expiry.set(Timestamp(micros=timestamp.micros + self._horizon))
        yield record_id, ("verdict", best)

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
    verdicts received.
    """

    RECORDS = BagStateSpec("records", PickleCoder())
    BEST = ReadModifyWriteStateSpec("best", PickleCoder())
    VERDICTS = CombiningValueStateSpec("verdicts", sum)

    def __init__(self, bands, kind):
        self._bands = bands
        self._kind = kind

    def process(self, element, records_state=beam.DoFn.StateParam(RECORDS),
                best_state=beam.DoFn.StateParam(BEST),
                verdicts=beam.DoFn.StateParam(VERDICTS)):
        _, (what, value) = element
        if what == "record":
            records_state.add(value)
        else:
            verdicts.add(1)
            best = best_state.read()
            if value is not None and (best is None or value[1] > best[1]):
                best_state.write(value)
        waiting, received = list(records_state.read()), verdicts.read()
        if not waiting or received < self._bands:
            return
        best = best_state.read()
        while waiting and received >= self._bands:
            record, waiting = waiting[0], waiting[1:]
            received -= self._bands
            if best is not None and "duplicate_of" not in record:
                record = {**record, "duplicate_of": best[0],
                          "similarity": best[1], "kind": self._kind}
            yield record
        records_state.clear()
        for record in waiting:
            records_state.add(record)
        verdicts.clear()
        if received:
            verdicts.add(received)
        elif not waiting:
            best_state.clear()


class StreamingNearDuplicates(beam.PTransform):
    """Tags records that near-duplicate one seen within a time horizon.

    Args:
        sketcher: `LexicalSketch()` (default) or `SemanticSketch(dim)`.
        threshold: similarity (Jaccard estimate or cosine) for a duplicate.
        horizon_secs: how far apart in event time two records may be.
        max_bucket: originals remembered per LSH bucket; past it the oldest
            are forgotten (counted in the `bucket_evictions` metric).

    Apply it twice, lexical then semantic, to tag both kinds; a record
    already tagged keeps its first tag.
    """

    def __init__(self, sketcher=None, threshold=0.7, horizon_secs=3600,
                 max_bucket=200):
        super().__init__()
        self._sketcher = sketcher or LexicalSketch()
        self._threshold = threshold
        self._horizon = horizon_secs
        self._max_bucket = max_bucket

    def expand(self, records):
        sketcher = self._sketcher
        verdicts = (
            records
            | "Sketch" >> beam.FlatMap(lambda r: [
                (key, (r["id"], sketch))
                for sketch, keys in [sketcher.sketch(r)] for key in keys])
            | "Compare" >> beam.ParDo(_CompareInBucket(
                sketcher, self._threshold, self._horizon, self._max_bucket)))
        keyed = records | "KeyById" >> beam.Map(
            lambda r: (r["id"], ("record", r)))
        return ((keyed, verdicts) | "Merge" >> beam.Flatten()
                | "Join" >> beam.ParDo(_JoinVerdicts(sketcher.bands,
                                                     sketcher.kind)))
