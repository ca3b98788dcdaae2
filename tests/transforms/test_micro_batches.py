from apache_beam import coders
from apache_beam.transforms.util import _BatchSizeEstimator
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import Timestamp

from transforms.embedding.micro_batches import held_micro_batches


class _Cell:
    """A state cell that counts its reads, as a harness without a cache
    token sends each one over the Fn API."""

    def __init__(self, value=None):
        self.value, self.reads = value, 0

    def read(self):
        self.reads += 1
        return self.value

    def write(self, value):
        self.value = value

    def clear(self):
        self.value = None


class _Bag(_Cell):
    def __init__(self):
        super().__init__([])

    def add(self, item):
        self.value.append(item)

    def clear(self):
        self.value = []


class _Count(_Cell):
    def __init__(self):
        super().__init__(0)

    def add(self, n):
        self.value += n

    def clear(self):
        self.value = 0


class _Timer:
    def __init__(self):
        self.at = None

    def set(self, at):
        self.at = at

    def clear(self):
        self.at = None


def test_a_bundle_reads_its_batchs_size_and_hold_once_and_holds_the_earliest():
    """Ten elements of the shared key in one bundle, batches of four: the
    batches are Beam's, each at its earliest element's time, and the
    target size and hold are read once, not once an element."""
    fn = held_micro_batches(coders.VarIntCoder(), _BatchSizeEstimator(4, 4),
                            max_buffering_duration_secs=1, clock=lambda: 100)
    cells = {"element_state": _Bag(), "count_state": _Count(),
             "batch_size_state": _Cell(), "estimator_state": _Cell(),
             "held_state": _Cell(), "window_timer": _Timer(),
             "deadline": _Timer()}
    fn.start_bundle()
    times = [5, 3, 4, 9, 8, 2, 7, 6, 1, 0]
    out = []
    for i, t in enumerate(times):
        out += list(fn.process(("key", i), key="key", window=GlobalWindow(),
                               timestamp=Timestamp(t), **cells) or ())
    assert [(batch.value, batch.timestamp) for batch in out] == [
        ([0, 1, 2, 3], Timestamp(3)), ([4, 5, 6, 7], Timestamp(2))]
    assert cells["batch_size_state"].reads == 1
    assert cells["held_state"].reads == 1
    # The last two wait, held at the earlier, until the deadline.
    assert cells["held_state"].value == (101, Timestamp(0).micros)
    rest = list(fn.on_deadline(key="key", window=GlobalWindow(), **{
        name: cell for name, cell in cells.items() if name != "window_timer"}))
    assert [(batch.value, batch.timestamp) for batch in rest] == [
        ([8, 9], Timestamp(0))]
    assert cells["held_state"].value is None and cells["deadline"].at is None
