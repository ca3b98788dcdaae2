"""Trained artifacts (heads, centroids) as plain data that loads safely.

An artifact is a directory with `artifact.json` (what it is, which model,
prompt and dim it was made with, a SHA-256 of its arrays) and `arrays.npz`
read with `allow_pickle=False`: loading one never runs code from the file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os

import numpy as np

from embgemma_keras.tasks import Task

PathLike = str | os.PathLike

FORMAT_VERSION = 1
META_FILE = "artifact.json"
ARRAYS_FILE = "arrays.npz"


class ArtifactMismatchError(ValueError):
    """An artifact that is corrupt, or made for another model/prompt/dim."""


@dataclasses.dataclass(frozen=True)
class ModelIdentity:
    """Which weights made an embedding: where from, and their fingerprint."""

    handle: str
    fingerprint: str


def save_artifact(directory: PathLike, kind: str, meta: dict,
                  arrays: dict[str, np.ndarray]) -> PathLike:
    """Writes `arrays` and `meta` (+ format, kind, checksum) to `directory`."""
    os.makedirs(directory, exist_ok=True)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    raw = buffer.getvalue()
    with open(os.path.join(directory, ARRAYS_FILE), "wb") as f:
        f.write(raw)
    meta = {"format_version": FORMAT_VERSION, "kind": kind, **meta,
            "arrays_sha256": hashlib.sha256(raw).hexdigest()}
    with open(os.path.join(directory, META_FILE), "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=2, ensure_ascii=False)
    return directory


def describe_model(identity: ModelIdentity, task: Task | str,
                   dim: int) -> dict:
    """The `meta` fields that tie an artifact to its embeddings."""
    task = Task.parse(task)
    return {"model": dataclasses.asdict(identity), "task": task.value,
            "prompt": task.prefix, "dim": int(dim)}


def read_artifact(directory: PathLike, *,
                  expect: ModelIdentity | None = None,
                  task: Task | str | None = None, dim: int | None = None
                  ) -> tuple[dict, dict[str, np.ndarray], ModelIdentity]:
    """Reads and checks an artifact; returns `(meta, arrays, identity)`.

    Args:
        expect: a `ModelIdentity` whose weights the artifact must match.
        task, dim: the prompt and size the caller embeds with.
    """
    try:
        with open(os.path.join(directory, META_FILE), encoding="utf-8") as f:
            meta = json.load(f)
        with open(os.path.join(directory, ARRAYS_FILE), "rb") as f:
            raw = f.read()
    except (OSError, ValueError) as e:
        raise ArtifactMismatchError(
            f"cannot read artifact {os.fspath(directory)!r}: {e}") from e
    where = os.fspath(directory)
    if meta.get("format_version") != FORMAT_VERSION:
        raise ArtifactMismatchError(
            f"{where!r} has format version {meta.get('format_version')!r}, "
            f"expected {FORMAT_VERSION}")
    if hashlib.sha256(raw).hexdigest() != meta.get("arrays_sha256"):
        raise ArtifactMismatchError(
            f"{where!r}: {ARRAYS_FILE} does not match the checksum in "
            f"{META_FILE}; the artifact was modified or corrupted")
    identity = ModelIdentity(**meta["model"])
    if expect is not None and identity.fingerprint != expect.fingerprint:
        raise ArtifactMismatchError(
            f"{where!r} was made with model {identity.handle!r} (weights "
            f"{identity.fingerprint}), not {expect.handle!r} (weights "
            f"{expect.fingerprint}); retrain it for this model")
    if task is not None and meta["task"] != Task.parse(task).value:
        raise ArtifactMismatchError(
            f"{where!r} expects {meta['task']!r} embeddings, not "
            f"{Task.parse(task).value!r}")
    if dim is not None and meta["dim"] != dim:
        raise ArtifactMismatchError(
            f"{where!r} expects dim {meta['dim']}, not {dim}")
    with np.load(io.BytesIO(raw), allow_pickle=False) as arrays:
        return meta, dict(arrays), identity
