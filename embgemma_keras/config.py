"""Every setting of the project, as frozen dataclasses: one default each.

Transforms take these objects; the jobs' flags and the CLI's are generated
from them (`add_flags`, `from_flags`), so a default, its type and its help
text are written once, here.

>>> MinHashConfig().bands, MinHashConfig(shingles="word:3").shingle_kind
(16, 'word')
>>> MinHashConfig(bands=10)
Traceback (most recent call last):
...
ValueError: bands x rows (10 x 8) must equal num_perm (128)
"""

from __future__ import annotations

import argparse
import dataclasses
import typing

MATRYOSHKA_DIMS = (768, 512, 256, 128)
MAX_CONTEXT = 2048
SUPPORTED_DTYPES = ("float32", "bfloat16")
MAX_RECORD_BYTES = 1 << 20
PROMPT_MODES = ("all", "shared")
# Set (to 1) to see TensorFlow's start-up logs; `--verbose` sets it.
VERBOSE_ENV_VAR = "EMBGEMMA_VERBOSE"


def setting(default, help, *, flag=None, aliases=(), choices=None):
    """A dataclass field that is also a command-line flag.

    Args:
        default: the one default of the setting.
        help: what the flag's `--help` says.
        flag: the flag's name when it differs from the field's (a field
            `threshold` of `MinHashConfig` is `--lexical_threshold`).
        aliases: older spellings still accepted.
        choices: the values allowed.
    """
    return dataclasses.field(default=default, metadata={
        "help": help, "flag": flag, "aliases": tuple(aliases),
        "choices": choices})


@dataclasses.dataclass(frozen=True)
class EmbedConfig:
    """Which model embeds, and how."""

    model: str | None = setting(
        None, "Model directory, Keras preset, hf:// or kaggle:// handle "
              "(default: $EMBGEMMA_MODEL).")
    dtype: str = setting("float32", "Model dtype (float16 is not supported).",
                         choices=SUPPORTED_DTYPES)
    dim: int = setting(768, "Embedding size (Matryoshka).",
                       choices=MATRYOSHKA_DIMS)
    max_length: int = setting(
        MAX_CONTEXT, "Tokens per text; longer texts are truncated.",
        aliases=("--max-length",))
    model_copies: int | None = setting(
        None, "Models per worker VM, shared by all its SDK processes "
              "(Beam's large_model). Default: one per process.")


@dataclasses.dataclass(frozen=True)
class MinHashConfig:
    """Lexical near-duplicates: MinHash over shingles, LSH banding.

    Two texts become candidates when they share one of `bands` band keys,
    with probability 1 - (1 - J ** rows) ** bands for Jaccard J; candidates
    are kept at estimated Jaccard >= `threshold`.
    """

    shingles: str = setting("char:5", "Lexical: shingles, 'char:N' or "
                                      "'word:N'.")
    num_perm: int = setting(128, "Lexical: MinHash permutations.")
    bands: int = setting(16, "Lexical: LSH bands (bands x rows = num_perm).")
    rows: int = setting(8, "Lexical: rows per LSH band.")
    threshold: float = setting(
        0.7, "Estimated Jaccard for a lexical duplicate.",
        flag="lexical_threshold", aliases=("--lexical_dup_threshold",))
    seed: int = setting(1, "Lexical: MinHash permutation seed.",
                        flag="minhash_seed")

    def __post_init__(self):
        if self.bands * self.rows != self.num_perm:
            raise ValueError(f"bands x rows ({self.bands} x {self.rows}) "
                             f"must equal num_perm ({self.num_perm})")
        kind, _, size = self.shingles.partition(":")
        if kind not in ("char", "word") or not size.isdigit() or int(
                size) < 1:
            raise ValueError(f"shingles must be 'char:N' or 'word:N', got "
                             f"{self.shingles!r}")

    @property
    def shingle_kind(self) -> str:
        return self.shingles.partition(":")[0]

    @property
    def shingle_size(self) -> int:
        return int(self.shingles.partition(":")[2])


@dataclasses.dataclass(frozen=True)
class SemanticDedupConfig:
    """Same-meaning duplicates on sentence-similarity vectors (SemDeDup).

    0.9 flags MRPC paraphrase pairs with precision 0.91 and recall 0.55
    (0.85: 0.85 / 0.78; 0.95: 0.97 / 0.25; `benchmarks/dedup_quality.py`).
    """

    threshold: float = setting(
        0.9, "Cosine for a semantic duplicate.", flag="semantic_threshold",
        aliases=("--semantic_dup_threshold",))
    clusters: int = setting(100, "Batch dedup: k-means buckets for the "
                                 "semantic stage.")
    sample_size: int = setting(50_000, "Batch dedup: vectors the k-means "
                                       "buckets are fitted on.")


@dataclasses.dataclass(frozen=True)
class DedupConfig:
    """`dedup_corpus`: exact, then lexical, then (optionally) semantic."""

    case_fold: bool = setting(True, "Exact stage: fold case.")
    semantic: bool = setting(True, "Semantic stage (needs the model).")
    lexical: MinHashConfig = dataclasses.field(default_factory=MinHashConfig)
    similar: SemanticDedupConfig = dataclasses.field(
        default_factory=SemanticDedupConfig)


@dataclasses.dataclass(frozen=True)
class IndexConfig:
    """A dedup index of what earlier `dedup_corpus` runs kept (`stream_tag`
    takes `index` alone: it reads the index and never adds to it)."""

    index: str | None = setting(
        None, "Dedup index directory (local or gs://): flag duplicates of "
              "what earlier dedup_corpus runs kept; dedup_corpus then adds "
              "what it keeps as a new version (created on first use).")
    index_read_only: bool = setting(
        False, "Dedup against --index without adding to it.")
    run_id: str | None = setting(
        None, "This run's name in the index (default: its start time and "
              "a random suffix).")


@dataclasses.dataclass(frozen=True)
class StreamDedupConfig:
    """Near-duplicates in a stream, within a horizon of event time.

    Semantic candidates come from random-hyperplane LSH: vectors at angle
    theta share a band of `semantic_bits` signs with probability
    (1 - theta / pi) ** semantic_bits.
    """

    horizon_secs: float = setting(
        3600, "Near-duplicates are looked for this far back in event time.")
    max_originals: int = setting(
        200, "Originals remembered per LSH bucket; the oldest are "
             "forgotten past it.")
    semantic_bands: int = setting(16, "Stream semantic LSH: bands.")
    semantic_bits: int = setting(12, "Stream semantic LSH: sign bits per "
                                     "band.")
    lexical: MinHashConfig = dataclasses.field(default_factory=MinHashConfig)
    semantic_threshold: float = SemanticDedupConfig.threshold


@dataclasses.dataclass(frozen=True)
class StreamConfig:
    """`stream_tag`: prompts, micro-batches and windowed file output."""

    prompts: str = setting(
        "all", "'all': a classification, a clustering and a sentence-"
               "similarity vector per record (three forward passes); "
               "'shared': one sentence-similarity vector for every stage "
               "(heads and centroids must be made with that prompt).",
        choices=PROMPT_MODES)
    max_batch_duration_secs: float = setting(
        2, "Streaming: longest a record waits for its micro-batch.")
    output_window_secs: int = setting(
        60, "Streaming with --output: one file per window of this many "
            "seconds of event time (and per pane).")
    allowed_lateness_secs: int = setting(
        86400, "Streaming with --output: records this late still reach the "
               "files (in a late pane); later ones only Pub/Sub/BigQuery.")


@dataclasses.dataclass(frozen=True)
class HeadConfig:
    """`train_classifier`: the prompt, the folds, the baseline, zero-shot.

    Heads for `stream_tag --prompts shared` are trained with
    `task="sentence_similarity"`.
    """

    task: str = setting("classification", "Prompt to embed with "
                                          "(sentence_similarity for heads "
                                          "used with --prompts shared).")
    folds: int = setting(5, "Cross-validation folds.")
    baseline: str = setting("none", "Also cross-validate TF-IDF + logistic "
                                    "regression on the same folds.",
                            choices=("none", "tfidf"))
    min_score: float = setting(0.0, "Zero-shot: below this cosine, "
                                    "'unknown'.")
    zero_shot: tuple[str, ...] = ()  # "LABEL=DESCRIPTION", one per label


@dataclasses.dataclass(frozen=True)
class ClusterConfig:
    """`fit_clusters`: k-means on embeddings of a corpus."""

    k: int | None = setting(None, "Number of clusters (required).")
    cluster_task: str = setting(
        "clustering", "Prompt to embed with (sentence_similarity for "
                      "centroids used with --prompts shared).")
    silhouette_sample: int = 5000


def flag_name(field: dataclasses.Field) -> str:
    return field.metadata.get("flag") or field.name


def flag_fields(config_class) -> list[dataclasses.Field]:
    """The fields of `config_class` that are flags (nested configs aren't)."""
    return [f for f in dataclasses.fields(config_class) if "help" in
            f.metadata]


def add_flags(parser, config_class, skip=()) -> None:
    """Declares one flag per setting of `config_class` on `parser`.

    Underscores are the one flag style (Beam's); a boolean that defaults to
    true is turned off with `--no_NAME`, one that defaults to false on with
    `--NAME`; both also take `=true|false` (Flex Templates pass every
    parameter as `--name=value`).
    """
    hints = typing.get_type_hints(config_class)
    for field in flag_fields(config_class):
        if field.name in skip:
            continue
        name, meta = flag_name(field), field.metadata
        kind = _scalar_type(hints[field.name])
        if kind is bool:
            switch = name if not field.default else f"no_{name}"
            parser.add_argument(f"--{switch}", nargs="?", const=True,
                                default=False, type=parse_bool,
                                dest=switch, help=meta["help"])
            continue
        parser.add_argument(f"--{name}", *meta["aliases"], dest=name,
                            type=kind, default=field.default,
                            choices=meta["choices"], help=meta["help"])


def from_flags(config_class, flags, **nested):
    """Builds `config_class` from parsed flags (an object with attributes)."""
    values = {}
    for field in flag_fields(config_class):
        name = flag_name(field)
        if isinstance(field.default, bool):
            switch = name if not field.default else f"no_{name}"
            values[field.name] = getattr(flags, switch) != field.default
        else:
            values[field.name] = getattr(flags, name)
    return config_class(**values, **nested)


def parse_bool(value: str) -> bool:
    """'true'/'false' (and 1/0, yes/no) as a bool, else an argparse error."""
    if value.lower() in ("true", "1", "yes"):
        return True
    if value.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


def _scalar_type(hint):
    """`int | None` -> int; `str` -> str."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint
