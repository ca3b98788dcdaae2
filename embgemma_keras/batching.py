"""Length-aware batching: group texts of similar token length.

A transformer's cost grows with the padded batch shape, not with the real
tokens in it. Sorting texts by length and padding each batch only to its own
longest text removes nearly all padding from a mixed corpus, which is what
makes `EmbeddingGemma.encode` faster than fixed-length padding.

>>> plan_batches([3, 10, 4, 9], max_texts=2, max_tokens=100)
[[1, 3], [2, 0]]
>>> pad_batch([[2, 7, 1], [2, 1]])[1].tolist()
[[1, 1, 1], [1, 1, 0]]
"""

from __future__ import annotations

import numpy as np


def plan_batches(lengths: list[int], max_texts: int,
                 max_tokens: int) -> list[list[int]]:
    """Splits text indices into batches of similar length.

    Texts are taken longest first (so an out-of-memory batch shows up at
    once, not at the end of a long job) and a batch closes when it holds
    `max_texts` texts or when one more text would make its padded size
    (texts x longest length) exceed `max_tokens`. A text longer than
    `max_tokens` gets a batch of its own.

    Returns:
        A list of lists of indices into `lengths`.
    """
    if max_texts < 1 or max_tokens < 1:
        raise ValueError("max_texts and max_tokens must be positive.")
    order = np.argsort(-np.asarray(lengths), kind="stable")
    batches, batch, width = [], [], 0
    for index in order.tolist():
        if batch and (
            len(batch) == max_texts or (len(batch) + 1) * width > max_tokens
        ):
            batches.append(batch)
            batch = []
        if not batch:
            width = lengths[index]
        batch.append(index)
    if batch:
        batches.append(batch)
    return batches


def pad_batch(token_lists: list[list[int]],
              pad_id: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Pads token id lists to the longest one.

    Returns:
        `(token_ids, padding_mask)`, both int32 arrays of shape
        `(len(token_lists), longest)`.
    """
    width = max(len(tokens) for tokens in token_lists)
    token_ids = np.full((len(token_lists), width), pad_id, dtype=np.int32)
    padding_mask = np.zeros((len(token_lists), width), dtype=np.int32)
    for row, tokens in enumerate(token_lists):
        token_ids[row, : len(tokens)] = tokens
        padding_mask[row, : len(tokens)] = 1
    return token_ids, padding_mask
