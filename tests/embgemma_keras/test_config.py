import argparse
import dataclasses

import pytest

from embgemma_keras.config import DedupConfig
from embgemma_keras.config import EmbedConfig
from embgemma_keras.config import MinHashConfig
from embgemma_keras.config import SemanticDedupConfig
from embgemma_keras.config import StreamDedupConfig
from embgemma_keras.config import add_flags
from embgemma_keras.config import flag_fields
from embgemma_keras.config import from_flags


def _parse(config_class, argv):
    parser = argparse.ArgumentParser()
    add_flags(parser, config_class)
    return from_flags(config_class, parser.parse_args(argv))


@pytest.mark.parametrize("config_class", [EmbedConfig, MinHashConfig,
                                          SemanticDedupConfig, DedupConfig,
                                          StreamDedupConfig])
def test_no_flags_give_the_defaults(config_class):
    nested = {f.name: f.default_factory() for f in
              dataclasses.fields(config_class)
              if f.default_factory is not dataclasses.MISSING}
    parser = argparse.ArgumentParser()
    add_flags(parser, config_class)
    assert from_flags(config_class, parser.parse_args([]),
                      **nested) == config_class()


def test_flags_are_typed_and_renamed_and_keep_their_old_spelling():
    assert _parse(MinHashConfig, ["--lexical_threshold", "0.8",
                                  "--bands", "32", "--rows", "4"]) == (
        MinHashConfig(threshold=0.8, bands=32, rows=4))
    assert _parse(MinHashConfig, ["--lexical_dup_threshold", "0.6"]
                  ).threshold == 0.6
    assert _parse(EmbedConfig, ["--max-length", "512"]).max_length == 512
    assert _parse(EmbedConfig, ["--max_length", "512", "--dim", "256"]) == (
        EmbedConfig(max_length=512, dim=256))


def test_a_setting_that_defaults_to_true_is_turned_off_with_no():
    assert _parse(DedupConfig, ["--no_semantic"]).semantic is False
    assert _parse(DedupConfig, ["--no_case_fold=true"]).case_fold is False
    assert _parse(DedupConfig, ["--no_semantic=false"]).semantic is True
    with pytest.raises(SystemExit):
        _parse(DedupConfig, ["--no_semantic=maybe"])


def test_choices_are_enforced():
    with pytest.raises(SystemExit):
        _parse(EmbedConfig, ["--dtype", "float16"])
    with pytest.raises(SystemExit):
        _parse(EmbedConfig, ["--dim", "300"])


def test_every_setting_has_help():
    for config_class in (EmbedConfig, MinHashConfig, SemanticDedupConfig,
                         DedupConfig, StreamDedupConfig):
        assert all(f.metadata["help"] for f in flag_fields(config_class))


def test_bad_minhash_settings_are_refused():
    with pytest.raises(ValueError, match="shingles must be"):
        MinHashConfig(shingles="char5")
    with pytest.raises(ValueError, match="must equal num_perm"):
        MinHashConfig(num_perm=100)
