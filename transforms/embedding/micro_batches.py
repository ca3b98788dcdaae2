"""A stream's micro-batches that hold the watermark at their earliest record.

Beam 2.77's `BatchElements(max_batch_duration_secs=...)` (what RunInference
batches a stream with) keeps a batch in keyed state until it is full or a
processing-time timer fires, the timer set by the batch's first element.
A timer holds the watermark at the timestamp of the element that set it,
so a later element of the batch with an earlier event time (Pub/Sub
delivers out of order) is not held: the watermark can pass it while it
waits, and it reaches the near-duplicate detector late, where verdicts can
differ from the bounded job's: with Beam's batcher, the out-of-order replay
of `test_stream_tag_as_stream_on_prism_gives_the_bounded_verdicts`
(`tests/runners/test_prism.py`) gave two or three verdicts other than the
bounded job's in each of three runs here, and none with this one. Here
each element earlier than every one before it in its batch sets the timer
again, for the same deadline, so the batch holds the watermark at its
earliest timestamp, and leaves at that timestamp: it may then cross a
shuffle (`EmbedRecords` sends a stream's batches to the encoder through a
`Reshuffle`) and is never late after it. `install()` puts this batcher
in place of Beam's `_pardo_stateful_batch_elements` (in
`apache_beam.transforms.util`), which `BatchElements` looks up when it
expands; the rest is Beam's.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from apache_beam import coders
from apache_beam.transforms import util as beam_util
from apache_beam.transforms.combiners import CountCombineFn
from apache_beam.transforms.core import DoFn
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import BagStateSpec
from apache_beam.transforms.userstate import CombiningValueStateSpec
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec
from apache_beam.transforms.userstate import TimerSpec
from apache_beam.transforms.userstate import on_timer
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp


def install() -> None:
    """Makes `BatchElements` batch a stream with `held_micro_batches`."""
    beam_util._pardo_stateful_batch_elements = held_micro_batches


def held_micro_batches(input_coder: coders.Coder,
                       batch_size_estimator: object,
                       max_buffering_duration_secs: float,
                       clock: Callable[[], float] = time.time) -> DoFn:
    """Beam's stateful batching DoFn, its batches holding the watermark at
    their earliest element (same arguments as Beam's)."""
    elements = BagStateSpec("values", input_coder)
    count_spec = CombiningValueStateSpec("count", input_coder,
                                         CountCombineFn())
    batch_size_spec = ReadModifyWriteStateSpec("batch_size", input_coder)
    estimator_spec = ReadModifyWriteStateSpec("batch_estimator",
                                              coders.PickleCoder())
    # (deadline in seconds, earliest timestamp in micros) of the batch.
    held_spec = ReadModifyWriteStateSpec("held", coders.TupleCoder(
        (coders.FloatCoder(), coders.VarIntCoder())))
    window_timer_spec = TimerSpec("window_end", TimeDomain.WATERMARK)
    deadline_spec = TimerSpec("buffering_end", TimeDomain.REAL_TIME)

    class _HeldBatchesDoFn(DoFn):
        def process(self, element, window=DoFn.WindowParam,
                    timestamp=DoFn.TimestampParam,
                    element_state=DoFn.StateParam(elements),
                    count_state=DoFn.StateParam(count_spec),
                    batch_size_state=DoFn.StateParam(batch_size_spec),
                    estimator_state=DoFn.StateParam(estimator_spec),
                    held_state=DoFn.StateParam(held_spec),
                    window_timer=DoFn.TimerParam(window_timer_spec),
                    deadline=DoFn.TimerParam(deadline_spec)):
            window_timer.set(window.end)
            element_state.add(element[1])
            count_state.add(1)
            target_size = batch_size_state.read()
            if target_size is None:
                target_size = batch_size_estimator.next_batch_size()
                batch_size_state.write(target_size)
                estimator_state.write(batch_size_estimator)
            if max_buffering_duration_secs > 0:
                held = held_state.read()
                if held is None or timestamp.micros < held[1]:
                    # The timer holds the watermark at the timestamp of the
                    # element that sets it: this one, the batch's earliest.
                    due = clock() + max_buffering_duration_secs if (
                        held is None) else held[0]
                    deadline.set(due)
                    held_state.write((due, timestamp.micros))
            if count_state.read() >= target_size:
                return self.flush(element_state, count_state,
                                  batch_size_state, estimator_state,
                                  held_state, deadline)

        @on_timer(window_timer_spec)
        def on_window_end(self, element_state=DoFn.StateParam(elements),
                          count_state=DoFn.StateParam(count_spec),
                          batch_size_state=DoFn.StateParam(batch_size_spec),
                          estimator_state=DoFn.StateParam(estimator_spec),
                          held_state=DoFn.StateParam(held_spec),
                          deadline=DoFn.TimerParam(deadline_spec)):
            return self.flush(element_state, count_state, batch_size_state,
                              estimator_state, held_state, deadline)

        @on_timer(deadline_spec)
        def on_deadline(self, element_state=DoFn.StateParam(elements),
                        count_state=DoFn.StateParam(count_spec),
                        batch_size_state=DoFn.StateParam(batch_size_spec),
                        estimator_state=DoFn.StateParam(estimator_spec),
                        held_state=DoFn.StateParam(held_spec),
                        deadline=DoFn.TimerParam(deadline_spec)):
            return self.flush(element_state, count_state, batch_size_state,
                              estimator_state, held_state, deadline)

        def flush(self, element_state, count_state, batch_size_state,
                  estimator_state, held_state, deadline):
            batch = list(element_state.read())
            if not batch:
                return
            held = held_state.read()
            element_state.clear()
            count_state.clear()
            held_state.clear()
            estimator = estimator_state.read()
            with estimator.record_time(len(batch)):
                # At its earliest element's time, which the watermark has
                # not passed: the batch may go on to another stage.
                yield batch if held is None else TimestampedValue(
                    batch, Timestamp(micros=held[1]))
            batch_size_state.write(estimator.next_batch_size())
            estimator_state.write(estimator)
            deadline.clear()

    return _HeldBatchesDoFn()
