import argparse
import dataclasses

import pytest

from embgemma_keras.config import ClusterConfig
from embgemma_keras.config import DedupConfig
from embgemma_keras.config import EmbedConfig
from embgemma_keras.config import HeadConfig
from embgemma_keras.config import IndexConfig
from embgemma_keras.config import MinHashConfig
from embgemma_keras.config import ReplayConfig
from embgemma_keras.config import SemanticDedupConfig
from embgemma_keras.config import StreamConfig
from embgemma_keras.config import StreamDedupConfig
from embgemma_keras.config import add_flags
from embgemma_keras.config import flag_fields
from embgemma_keras.config import flag_name
from embgemma_keras.config import from_flags

# One instance of each config class whose every flag differs from its
# default, so a flag that did not round-trip would show.
CHANGED = [
    EmbedConfig(model="/models/m", dtype="bfloat16", dim=256,
                max_length=512, model_copies=2),
    MinHashConfig(shingles="word:3", num_perm=64, bands=32, rows=2,
                  threshold=0.5, seed=7),
    SemanticDedupConfig(threshold=0.8, clusters=10, sample_size=1000),
    DedupConfig(case_fold=False, semantic=False),
    IndexConfig(index="/tmp/index", index_read_only=True, run_id="run-1"),
    StreamDedupConfig(horizon_secs=60.0, max_originals=5, bucket_shards=8,
                      judge_every_secs=0.25, semantic_bands=8,
                      semantic_bits=6, semantic_threshold=0.8),
    StreamConfig(prompts="shared", max_batch_duration_secs=0.5,
                 output_window_secs=30, allowed_lateness_secs=0),
    ReplayConfig(as_stream=True, timestamp_field="time", replay_rate=50.0),
    HeadConfig(task="sentence_similarity", folds=3, baseline="tfidf",
               min_score=-0.5),
    ClusterConfig(k=7, cluster_task="sentence_similarity"),
]
CONFIGS = [type(config) for config in CHANGED]


def _parse(config_class, argv, **nested):
    parser = argparse.ArgumentParser()
    add_flags(parser, config_class)
    return from_flags(config_class, parser.parse_args(argv), **nested)


def _nested(config):
    """The fields of `config` that are configs themselves, not flags."""
    flags = {f.name for f in flag_fields(type(config))}
    return {f.name: getattr(config, f.name)
            for f in dataclasses.fields(config)
            if f.name not in flags and dataclasses.is_dataclass(
                getattr(config, f.name))}


def _argv(config, bool_style):
    """The flags that make `config`: a boolean as a bare switch, or as
    `--switch=true|false` (how Flex Templates pass it)."""
    argv = []
    for field in flag_fields(type(config)):
        name, value = flag_name(field), getattr(config, field.name)
        if isinstance(field.default, bool):
            switch = name if not field.default else f"no_{name}"
            on = value != field.default
            if bool_style == "switch":
                argv += [f"--{switch}"] if on else []
            else:
                argv.append(f"--{switch}={str(on).lower()}")
        elif value is not None:
            argv.append(f"--{name}={value}")
    return argv


@pytest.mark.parametrize("config_class", CONFIGS,
                         ids=lambda c: c.__name__)
def test_no_flags_give_the_defaults(config_class):
    nested = {f.name: f.default_factory() for f in
              dataclasses.fields(config_class)
              if f.default_factory is not dataclasses.MISSING}
    assert _parse(config_class, [], **nested) == config_class()


@pytest.mark.parametrize("bool_style", ["switch", "explicit"])
@pytest.mark.parametrize("config", CHANGED, ids=lambda c: type(c).__name__)
def test_every_setting_round_trips_through_its_flag(config, bool_style):
    default = type(config)()
    for field in flag_fields(type(config)):
        assert getattr(config, field.name) != getattr(default, field.name), (
            f"{field.name} is at its default: the test would not see it")
    assert _parse(type(config), _argv(config, bool_style),
                  **_nested(config)) == config


def test_flags_are_typed_and_renamed_and_keep_their_old_spelling():
    assert _parse(MinHashConfig, ["--lexical_threshold", "0.8",
                                  "--bands", "32", "--rows", "4"]) == (
        MinHashConfig(threshold=0.8, bands=32, rows=4))
    assert _parse(MinHashConfig, ["--lexical_dup_threshold", "0.6"]
                  ).threshold == 0.6
    assert _parse(EmbedConfig, ["--max-length", "512"]).max_length == 512
    assert _parse(EmbedConfig, ["--max_length", "512", "--dim", "256"]) == (
        EmbedConfig(max_length=512, dim=256))
    assert _parse(StreamDedupConfig, ["--semantic_dup_threshold", "0.5"]
                  ).semantic_threshold == 0.5


def test_a_setting_that_defaults_to_true_is_turned_off_with_no():
    assert _parse(DedupConfig, ["--no_semantic"]).semantic is False
    assert _parse(DedupConfig, ["--no_case_fold=true"]).case_fold is False
    assert _parse(DedupConfig, ["--no_semantic=false"]).semantic is True
    with pytest.raises(SystemExit):
        _parse(DedupConfig, ["--no_semantic=maybe"])


def test_choices_are_enforced_by_the_flags():
    with pytest.raises(SystemExit):
        _parse(EmbedConfig, ["--dtype", "float16"])
    with pytest.raises(SystemExit):
        _parse(EmbedConfig, ["--dim", "300"])
    with pytest.raises(SystemExit):
        _parse(HeadConfig, ["--task", "summarise"])


@pytest.mark.parametrize("config_class", CONFIGS,
                         ids=lambda c: c.__name__)
def test_every_setting_has_help(config_class):
    assert all(f.metadata["help"] for f in flag_fields(config_class))


# (config class, a value out of its bounds, the refusal's message)
OUT_OF_RANGE = [
    (EmbedConfig, {"max_length": 0},
     "--max_length must be in [1, 2048], got 0 (EmbedConfig.max_length)"),
    (EmbedConfig, {"max_length": 4096},
     "--max_length must be in [1, 2048], got 4096 (EmbedConfig.max_length)"),
    (EmbedConfig, {"model_copies": 0},
     "--model_copies must be > 0, got 0 (EmbedConfig.model_copies)"),
    (EmbedConfig, {"dim": 300},
     "--dim must be one of 768, 512, 256, 128, got 300 (EmbedConfig.dim)"),
    (EmbedConfig, {"dtype": "float16"},
     "--dtype must be one of float32, bfloat16, int8, got 'float16' "
     "(EmbedConfig.dtype)"),
    (MinHashConfig, {"threshold": 7},
     "--lexical_threshold must be in (0, 1], got 7 "
     "(MinHashConfig.threshold)"),
    (MinHashConfig, {"threshold": 0},
     "--lexical_threshold must be in (0, 1], got 0 "
     "(MinHashConfig.threshold)"),
    (MinHashConfig, {"num_perm": 0},
     "--num_perm must be > 0, got 0 (MinHashConfig.num_perm)"),
    (MinHashConfig, {"bands": -16, "rows": -8},
     "--bands must be > 0, got -16 (MinHashConfig.bands)"),
    (MinHashConfig, {"seed": -1},
     "--minhash_seed must be in [0, 4294967295], got -1 "
     "(MinHashConfig.seed)"),
    (SemanticDedupConfig, {"threshold": 1.01},
     "--semantic_threshold must be in (0, 1], got 1.01 "
     "(SemanticDedupConfig.threshold)"),
    (SemanticDedupConfig, {"clusters": 0},
     "--clusters must be > 0, got 0 (SemanticDedupConfig.clusters)"),
    (SemanticDedupConfig, {"sample_size": 0},
     "--sample_size must be > 0, got 0 (SemanticDedupConfig.sample_size)"),
    (IndexConfig, {"index": "/i", "run_id": "../escape"},
     "--run_id takes letters, digits, '.', '_' and '-', got '../escape'"),
    (IndexConfig, {"index_read_only": True},
     "--index_read_only needs --index"),
    (IndexConfig, {"run_id": "run-1"}, "--run_id needs --index"),
    (StreamDedupConfig, {"horizon_secs": 0},
     "--horizon_secs must be > 0, got 0 (StreamDedupConfig.horizon_secs)"),
    (StreamDedupConfig, {"max_originals": 0},
     "--max_originals must be > 0, got 0 (StreamDedupConfig.max_originals)"),
    (StreamDedupConfig, {"semantic_bands": 0},
     "--semantic_bands must be > 0, got 0 "
     "(StreamDedupConfig.semantic_bands)"),
    (StreamDedupConfig, {"semantic_bits": 0},
     "--semantic_bits must be > 0, got 0 (StreamDedupConfig.semantic_bits)"),
    (StreamDedupConfig, {"semantic_threshold": 1.5},
     "--semantic_threshold must be in (0, 1], got 1.5 "
     "(StreamDedupConfig.semantic_threshold)"),
    (StreamConfig, {"prompts": "each"},
     "--prompts must be one of all, shared, got 'each' (StreamConfig.prompts)"),
    (StreamConfig, {"max_batch_duration_secs": 0},
     "--max_batch_duration_secs must be > 0, got 0 "
     "(StreamConfig.max_batch_duration_secs)"),
    (StreamConfig, {"output_window_secs": 0},
     "--output_window_secs must be > 0, got 0 "
     "(StreamConfig.output_window_secs)"),
    (StreamConfig, {"allowed_lateness_secs": -1},
     "--allowed_lateness_secs must be >= 0, got -1 "
     "(StreamConfig.allowed_lateness_secs)"),
    (ReplayConfig, {"as_stream": True, "replay_rate": -1},
     "--replay_rate must be >= 0, got -1 (ReplayConfig.replay_rate)"),
    (ReplayConfig, {"replay_rate": 10},
     "--replay_rate needs --as_stream"),
    (ReplayConfig, {"timestamp_field": "time"},
     "--timestamp_field needs --as_stream"),
    (HeadConfig, {"folds": 1},
     "--folds must be >= 2, got 1 (HeadConfig.folds)"),
    (HeadConfig, {"min_score": 1.5},
     "--min_score must be in [-1, 1], got 1.5 (HeadConfig.min_score)"),
    (HeadConfig, {"baseline": "svm"},
     "--baseline must be one of none, tfidf, got 'svm' (HeadConfig.baseline)"),
    (HeadConfig, {"task": "summarise"},
     "--task must be one of query, document, question_answering, "
     "fact_checking, classification, clustering, sentence_similarity, "
     "code_retrieval, none, got 'summarise' (HeadConfig.task)"),
    (ClusterConfig, {"k": 0}, "--k must be > 0, got 0 (ClusterConfig.k)"),
    (ClusterConfig, {"cluster_task": "topics"},
     "--cluster_task must be one of query, document, question_answering, "
     "fact_checking, classification, clustering, sentence_similarity, "
     "code_retrieval, none, got 'topics' (ClusterConfig.cluster_task)"),
    (ClusterConfig, {"silhouette_sample": 0},
     "ClusterConfig.silhouette_sample must be > 0, got 0"),
]


def _ids(cases):
    return [f"{case[0].__name__}-" + "-".join(
        f"{name}={value}" for name, value in case[1].items())
        for case in cases]


@pytest.mark.parametrize("config_class,values,message", OUT_OF_RANGE,
                         ids=_ids(OUT_OF_RANGE))
def test_a_value_out_of_range_is_refused_with_the_range(config_class, values,
                                                        message):
    with pytest.raises(ValueError) as refused:
        config_class(**values)
    assert str(refused.value) == message


def test_a_nested_config_refuses_its_own_settings():
    with pytest.raises(ValueError, match="--lexical_threshold must be"):
        DedupConfig(lexical=MinHashConfig(threshold=2))


@pytest.mark.parametrize("argv,message", [
    (["--lexical_threshold", "7"], "--lexical_threshold must be in (0, 1]"),
    (["--lexical_threshold", "-0.5"], "--lexical_threshold must be in (0, 1]"),
    (["--num_perm", "0"], "--num_perm must be > 0"),
])
def test_the_flags_refuse_what_the_config_refuses(argv, message):
    with pytest.raises(ValueError) as refused:
        _parse(MinHashConfig, argv)
    assert str(refused.value).startswith(message)


ON_A_CLOSED_BOUND = [
    (MinHashConfig, {"threshold": 1, "seed": 0}),
    (SemanticDedupConfig, {"threshold": 1}),
    (EmbedConfig, {"max_length": 2048}),
    (EmbedConfig, {"max_length": 1}),
    (StreamConfig, {"allowed_lateness_secs": 0}),
    (HeadConfig, {"folds": 2, "min_score": -1}),
    (HeadConfig, {"min_score": 1}),
]


@pytest.mark.parametrize("config_class,values", ON_A_CLOSED_BOUND,
                         ids=_ids(ON_A_CLOSED_BOUND))
def test_a_closed_bound_is_itself_allowed(config_class, values):
    config = config_class(**values)
    assert {name: getattr(config, name) for name in values} == values


def test_bad_minhash_settings_are_refused():
    with pytest.raises(ValueError, match="shingles must be"):
        MinHashConfig(shingles="char5")
    with pytest.raises(ValueError, match="must equal num_perm"):
        MinHashConfig(num_perm=100)
