"""The runner builds' cache: an edited source is built anew."""

from local_runners import source_key
from local_runners.flink import POM
from local_runners.flink import build_dir


def test_an_edited_source_gets_a_new_cache_key(tmp_path):
    source = tmp_path / "pom.xml"
    source.write_text("<project>one</project>")
    before = source_key(source)
    assert source_key(source) == before  # the same bytes, the same build
    source.write_text("<project>two</project>")
    assert source_key(source) != before


def test_the_flink_build_is_keyed_by_its_pom(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert build_dir().parent == tmp_path / "embgemma-beam"
    assert build_dir().name.endswith(source_key(POM))
