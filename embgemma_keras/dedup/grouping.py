"""Turning duplicate pairs into groups, and choosing the record kept.

Beam-free: the batch dedup transforms call these on each worker, and tests
call them directly.

>>> sorted(connected_components([("b", "c"), ("a", "b"), ("x", "y")]))
[('a', 'a'), ('b', 'a'), ('c', 'a'), ('x', 'x'), ('y', 'x')]
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Mapping

import numpy as np

from embgemma_keras.dedup.minhash import normalize
from embgemma_keras.records.schema import DUPLICATE_OF
from embgemma_keras.records.schema import DUPLICATE_OF_RUN
from embgemma_keras.records.schema import ID
from embgemma_keras.records.schema import KEPT_ID
from embgemma_keras.records.schema import TEXT

# Vectors compared at once within a bucket: 2,048 x 2,048 cosines (16 MB).
_BLOCK = 2048
# The run of a node of the duplicate graph, `(run, id)`, for this run's
# records; a dedup index's entries carry the run that kept them, so an id
# need only be unique within its run.
THIS_RUN = ""


def node(record: dict) -> tuple[str, str]:
    """A record of this run as a node of the duplicate graph."""
    return THIS_RUN, record[ID]


def representative_order(record: dict) -> tuple:
    """Sort key: the first record of a group is the one kept.

    The longest text (the most complete version), ties broken by the
    smallest id, so the choice depends neither on input order nor on the
    number of workers.
    """
    return (-len(record[TEXT]), record[ID])


def exact_key(text: str, **normalisation: bool) -> bytes:
    """Equal for texts that are identical after `normalize`."""
    return hashlib.sha256(
        normalize(text, **normalisation).encode("utf-8")).digest()


def connected_components(
        edges: Iterable[tuple[str, str]]) -> Iterator[tuple[str, str]]:
    """Yields `(id, group)` for every id on an edge; group = smallest id."""
    parent = {}

    def find(node):
        parent.setdefault(node, node)
        while parent[node] != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    for a, b in edges:
        root_a, root_b = find(a), find(b)
        if root_a != root_b:
            parent[max(root_a, root_b)] = min(root_a, root_b)
    for node in parent:
        yield node, find(node)


def with_kept_id(duplicate: dict, kept_later: Mapping[str, str]) -> dict:
    """The duplicate with `kept_id`: the record its group kept in the end.

    A stage's duplicate names (`duplicate_of`) the record the stage kept,
    which a later stage may flag in turn: `kept_later` maps the id of each
    record a later stage flagged to its own `kept_id`. An index entry
    (`duplicate_of_run`) is kept for good.

    >>> kept_later = {"typo": "paraphrased"}
    >>> with_kept_id({"id": "copy", "duplicate_of": "typo"},
    ...              kept_later)["kept_id"]
    'paraphrased'
    >>> with_kept_id({"id": "c", "duplicate_of": "typo",
    ...               "duplicate_of_run": "run1"}, kept_later)["kept_id"]
    'typo'
    """
    original = duplicate[DUPLICATE_OF]
    if DUPLICATE_OF_RUN not in duplicate:
        original = kept_later.get(original, original)
    return {**duplicate, KEPT_ID: original}


def within_bucket_edges(members: list[tuple[str, np.ndarray]],
                        threshold: float
                        ) -> Iterator[tuple[str, str, float]]:
    """Yields `(id_a, id_b, cosine)` for pairs at or above `threshold`."""
    ids = [record_id for record_id, _ in members]
    vectors = np.stack([vector for _, vector in members]).astype(np.float32)
    for start in range(0, len(ids), _BLOCK):
        block = vectors[start:start + _BLOCK] @ vectors.T
        rows, cols = np.nonzero(block >= threshold)
        for row, col in zip(rows.tolist(), cols.tolist(), strict=True):
            i = start + row
            if i < col:
                yield ids[i], ids[col], float(block[row, col])


def edges_between(new: list[tuple[str, np.ndarray]],
                  old: list[tuple[str, np.ndarray]], threshold: float
                  ) -> Iterator[tuple[str, str, float]]:
    """Yields `(new_id, old_id, cosine)` for pairs at or above `threshold`
    (records of this run against an index's: never old against old)."""
    if not new or not old:
        return
    old_ids = [record_id for record_id, _ in old]
    old_vectors = np.stack([v for _, v in old]).astype(np.float32)
    for start in range(0, len(new), _BLOCK):
        chunk = new[start:start + _BLOCK]
        block = np.stack([v for _, v in chunk]).astype(np.float32) @ (
            old_vectors.T)
        rows, cols = np.nonzero(block >= threshold)
        for row, col in zip(rows.tolist(), cols.tolist(), strict=True):
            yield chunk[row][0], old_ids[col], float(block[row, col])
