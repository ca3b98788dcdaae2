import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from embgemma_keras.batching import pad_batch
from embgemma_keras.batching import plan_batches


@given(
    lengths=st.lists(st.integers(1, 300), max_size=200),
    max_texts=st.integers(1, 64),
    max_tokens=st.integers(1, 2048),
)
def test_every_text_lands_in_exactly_one_batch_within_limits(
    lengths, max_texts, max_tokens
):
    batches = plan_batches(lengths, max_texts, max_tokens)
    assert sorted(i for batch in batches for i in batch) == list(
        range(len(lengths))
    )
    for batch in batches:
        assert 1 <= len(batch) <= max_texts
        width = max(lengths[i] for i in batch)
        # Only a single over-long text may exceed the token budget.
        assert len(batch) * width <= max_tokens or len(batch) == 1


def test_batches_group_similar_lengths():
    lengths = [5, 100, 6, 101, 7, 99]
    batches = plan_batches(lengths, max_texts=3, max_tokens=10_000)
    assert [sorted(lengths[i] for i in b) for b in batches] == [
        [99, 100, 101],
        [5, 6, 7],
    ]


def test_invalid_limits_are_refused():
    with pytest.raises(ValueError):
        plan_batches([1], max_texts=0, max_tokens=10)


def test_pad_batch_pads_to_the_longest_and_masks_padding():
    token_ids, mask = pad_batch([[2, 9, 1], [2, 1]], pad_id=0)
    np.testing.assert_array_equal(token_ids, [[2, 9, 1], [2, 1, 0]])
    np.testing.assert_array_equal(mask, [[1, 1, 1], [1, 1, 0]])
    assert token_ids.dtype == np.int32 and mask.dtype == np.int32
