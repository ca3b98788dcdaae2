"""JSON lines out of a pipeline: numpy vectors become plain lists."""

import json

import numpy as np


def to_json_line(record):
    """Serialises a record (embeddings included) as one JSON line."""
    return json.dumps(record, ensure_ascii=False, default=_plain)


def _plain(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
