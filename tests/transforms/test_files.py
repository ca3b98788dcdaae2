import re

import pytest
from apache_beam.io.localfilesystem import LocalFileSystem

from embgemma_keras import ZeroShotHead
from embgemma_keras import load_head
from embgemma_keras.artifacts import META_FILE
from transforms.records.files import local_artifact

PREFIX = "remotefs://"


class RemoteFileSystem(LocalFileSystem):
    """A filesystem with a scheme, as gs:// has, backed by local files.

    Beam finds FileSystem subclasses by their scheme once defined.
    """

    @classmethod
    def scheme(cls):
        return "remotefs"

    def join(self, basepath, *paths):
        return "/".join([basepath.rstrip("/"), *paths])

    def open(self, path, *args, **kwargs):
        return super().open(path[len(PREFIX):], *args, **kwargs)


def test_a_remote_artifact_is_copied_and_loaded(tiny_model, tmp_path):
    head = ZeroShotHead.from_descriptions(
        tiny_model, {"a": "about apples", "b": "about boats"},
        model_identity=tiny_model.identity)
    head.save(tmp_path / "head")
    local = local_artifact(f"{PREFIX}{tmp_path / 'head'}")
    assert local != str(tmp_path / "head")
    loaded = load_head(local, expect=tiny_model.identity,
                       task="classification", dim=768)
    assert loaded.labels == ["a", "b"]


def test_a_local_artifact_is_used_in_place(tmp_path):
    assert local_artifact(str(tmp_path)) == str(tmp_path)


def test_a_missing_remote_artifact_fails_before_the_job(tmp_path):
    # Copying it fails on its first file, the metadata, before load_head
    # could see a partial copy; the error names the file that is missing.
    missing = tmp_path / "none" / META_FILE
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        load_head(local_artifact(f"{PREFIX}{tmp_path / 'none'}"))
