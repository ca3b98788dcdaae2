"""Every setting of the project, as frozen dataclasses: one default each.

Transforms take these objects; the jobs' flags and the CLI's are generated
from them (`add_flags`, `from_flags`), so a default, its type, its help
text and the values it may take (`Bounds`, choices) are written once, here.
A config refuses a value out of its bounds however it is made, from flags
or in Python, with the bounds in the message.

>>> MinHashConfig().bands, MinHashConfig(shingles="word:3").shingle_kind
(16, 'word')
>>> MinHashConfig(bands=10)
Traceback (most recent call last):
...
ValueError: bands x rows (10 x 8) must equal num_perm (128)
>>> ClusterConfig(k=0)
Traceback (most recent call last):
...
ValueError: --k must be > 0, got 0 (ClusterConfig.k)
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import typing

from embgemma_keras.tasks import Task

MATRYOSHKA_DIMS = (768, 512, 256, 128)
MAX_CONTEXT = 2048
SUPPORTED_DTYPES = ("float32", "bfloat16", "int8")
# The Keras dtype a model dtype loads in: int8 keeps the bfloat16 weights'
# embedding table and heads (embgemma_keras.int8).
KERAS_DTYPE = {"float32": "float32", "bfloat16": "bfloat16",
               "int8": "bfloat16"}
MAX_RECORD_BYTES = 1 << 20
PROMPT_MODES = ("all", "shared")
# Set (to 1) to see TensorFlow's start-up logs; `--verbose` sets it.
VERBOSE_ENV_VAR = "EMBGEMMA_VERBOSE"
TASKS = tuple(task.value for task in Task)
# A run's name is a path component of the index (segments/RUN/...).
RUN_ID = re.compile(r"[A-Za-z0-9._-]+")
_Config = typing.TypeVar("_Config")


@dataclasses.dataclass(frozen=True)
class Bounds:
    """The numbers a setting may take: from `low` to `high` (None: no
    bound on that side), each bound included unless marked open.

    >>> str(Bounds(0, 1, low_open=True)), 0 in Bounds(0, 1, low_open=True)
    ('in (0, 1]', False)
    >>> str(Bounds(2)), 2 in Bounds(2)
    ('>= 2', True)
    """

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value: float) -> bool:
        above = self.low is None or value > self.low or (
            value == self.low and not self.low_open)
        below = self.high is None or value < self.high or (
            value == self.high and not self.high_open)
        return above and below

    def __str__(self) -> str:
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {self.low}"
        if self.low is None:
            return f"{'<' if self.high_open else '<='} {self.high}"
        return (f"in {'(' if self.low_open else '['}{self.low}, "
                f"{self.high}{')' if self.high_open else ']'}")


POSITIVE = Bounds(0, low_open=True)  # counts, sizes, durations
NON_NEGATIVE = Bounds(0)
FRACTION = Bounds(0, 1, low_open=True)  # similarity thresholds


def setting(default: object, help: str, *, flag: str | None = None,
            aliases: tuple[str, ...] = (),
            choices: typing.Sequence[object] | None = None,
            bounds: Bounds | None = None) -> dataclasses.Field:
    """A dataclass field that is also a command-line flag.

    Args:
        default: the one default of the setting.
        help: what the flag's `--help` says.
        flag: the flag's name when it differs from the field's (a field
            `threshold` of `MinHashConfig` is `--lexical_threshold`).
        aliases: older spellings still accepted.
        choices: the values allowed.
        bounds: the `Bounds` of a number (None, the default of an
            optional setting, is always allowed).
    """
    return dataclasses.field(default=default, metadata={
        "help": help, "flag": flag, "aliases": tuple(aliases),
        "choices": choices, "bounds": bounds})


def bounded(default: object, bounds: Bounds) -> dataclasses.Field:
    """A dataclass field that is no flag but has `bounds` all the same."""
    return dataclasses.field(default=default, metadata={"bounds": bounds})


class Settings:
    """What every config dataclass shares: it refuses, when made, a value
    outside its setting's `Bounds` or choices, naming the flag, the range
    and the field, so the flags and the Python API refuse alike."""

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value is None and field.default is None:
                continue
            bounds = field.metadata.get("bounds")
            choices = field.metadata.get("choices")
            if bounds is not None and value not in bounds:
                raise ValueError(f"{self._name(field)} must be {bounds}, "
                                 f"got {value!r}{self._where(field)}")
            if choices is not None and value not in choices:
                raise ValueError(
                    f"{self._name(field)} must be one of "
                    f"{', '.join(map(str, choices))}, got {value!r}"
                    f"{self._where(field)}")

    def _name(self, field: dataclasses.Field) -> str:
        if "help" in field.metadata:
            return f"--{flag_name(field)}"
        return f"{type(self).__name__}.{field.name}"

    def _where(self, field: dataclasses.Field) -> str:
        if "help" in field.metadata:
            return f" ({type(self).__name__}.{field.name})"
        return ""


@dataclasses.dataclass(frozen=True)
class EmbedConfig(Settings):
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
        aliases=("--max-length",), bounds=Bounds(1, MAX_CONTEXT))
    model_copies: int | None = setting(
        None, "Models per worker VM, shared by all its SDK processes "
              "(Beam's large_model). Default: one per process.",
        bounds=POSITIVE)


@dataclasses.dataclass(frozen=True)
class MinHashConfig(Settings):
    """Lexical near-duplicates: MinHash over shingles, LSH banding.

    Two texts become candidates when they share one of `bands` band keys,
    with probability 1 - (1 - J ** rows) ** bands for Jaccard J; candidates
    are kept at estimated Jaccard >= `threshold`.
    """

    shingles: str = setting("char:5", "Lexical: shingles, 'char:N' or "
                                      "'word:N'.")
    num_perm: int = setting(128, "Lexical: MinHash permutations.",
                            bounds=POSITIVE)
    bands: int = setting(16, "Lexical: LSH bands (bands x rows = num_perm).",
                         bounds=POSITIVE)
    rows: int = setting(8, "Lexical: rows per LSH band.", bounds=POSITIVE)
    threshold: float = setting(
        0.7, "Estimated Jaccard for a lexical duplicate.",
        flag="lexical_threshold", aliases=("--lexical_dup_threshold",),
        bounds=FRACTION)
    # datasketch seeds NumPy's RandomState with it: 32 bits.
    seed: int = setting(1, "Lexical: MinHash permutation seed.",
                        flag="minhash_seed", bounds=Bounds(0, 2**32 - 1))

    def __post_init__(self) -> None:
        super().__post_init__()
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


def _semantic_threshold() -> dataclasses.Field:
    """`--semantic_threshold`, a setting of both the batch and the stream
    dedup (one flag: a job takes it from `SemanticDedupConfig`)."""
    return setting(0.9, "Cosine for a semantic duplicate.",
                   flag="semantic_threshold",
                   aliases=("--semantic_dup_threshold",), bounds=FRACTION)


@dataclasses.dataclass(frozen=True)
class SemanticDedupConfig(Settings):
    """Same-meaning duplicates on sentence-similarity vectors (SemDeDup).

    0.9 flags MRPC paraphrase pairs with precision 0.91 and recall 0.55
    (0.85: 0.85 / 0.78; 0.95: 0.97 / 0.25; `benchmarks/dedup_quality.py`).
    """

    threshold: float = _semantic_threshold()
    clusters: int = setting(100, "Batch dedup: k-means buckets for the "
                                 "semantic stage.", bounds=POSITIVE)
    sample_size: int = setting(50_000, "Batch dedup: vectors the k-means "
                                       "buckets are fitted on.",
                               bounds=POSITIVE)


@dataclasses.dataclass(frozen=True)
class DedupConfig(Settings):
    """`dedup_corpus`: exact, then lexical, then (optionally) semantic."""

    case_fold: bool = setting(True, "Exact stage: fold case.")
    semantic: bool = setting(True, "Semantic stage (needs the model).")
    lexical: MinHashConfig = dataclasses.field(default_factory=MinHashConfig)
    similar: SemanticDedupConfig = dataclasses.field(
        default_factory=SemanticDedupConfig)


@dataclasses.dataclass(frozen=True)
class IndexConfig(Settings):
    """A dedup index of what earlier `dedup_corpus` runs kept (`stream_tag`
    takes `index` alone: it reads the index and never adds to it)."""

    index: str | None = setting(
        None, "Dedup index: a directory (local or gs://) or, for "
              "dedup_corpus, a postgresql:// URL: flag duplicates of what "
              "earlier dedup_corpus runs kept; dedup_corpus then adds what "
              "it keeps as a new version (created on first use).")
    index_read_only: bool = setting(
        False, "Dedup against --index without adding to it.")
    run_id: str | None = setting(
        None, "This run's name in the index (default: its start time and "
              "a random suffix).")

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("index_read_only", "run_id"):
            if getattr(self, name) and not self.index:
                raise ValueError(f"--{name} needs --index")
        if self.run_id is not None and not RUN_ID.fullmatch(self.run_id):
            raise ValueError(f"--run_id takes letters, digits, '.', '_' and "
                             f"'-', got {self.run_id!r}")


@dataclasses.dataclass(frozen=True)
class CopyIndexConfig(Settings):
    """`copy_index`: a dedup index directory copied into PostgreSQL."""

    source: str | None = setting(
        None, "The dedup index directory to copy (local or gs://).")
    target: str | None = setting(
        None, "The postgresql:// URL to copy it into (?schema=NAME picks "
              "the schema; the password may come from PGPASSWORD or a "
              "password file instead).")


@dataclasses.dataclass(frozen=True)
class StreamDedupConfig(Settings):
    """Near-duplicates in a stream, within a horizon of event time.

    Semantic candidates come from random-hyperplane LSH: vectors at angle
    theta share a band of `semantic_bits` signs with probability
    (1 - theta / pi) ** semantic_bits.
    """

    horizon_secs: float = setting(
        3600, "Near-duplicates are looked for this far back in event time.",
        bounds=POSITIVE)
    max_originals: int = setting(
        200, "Originals a record is compared with per LSH bucket: the "
             "latest within the horizon.", bounds=POSITIVE)
    bucket_shards: int = setting(
        64, "Streaming: keys the LSH buckets' state is spread over; a "
            "key's timer judges all its records the watermark has passed "
            "with one read.", bounds=POSITIVE)
    judge_every_secs: float = setting(
        1.0, "Streaming: a key's buckets judge the records the watermark "
             "has passed at most once a step of this much event time; a "
             "record waits up to this long more for its verdict.",
        bounds=POSITIVE)
    semantic_bands: int = setting(16, "Stream semantic LSH: bands.",
                                  bounds=POSITIVE)
    semantic_bits: int = setting(12, "Stream semantic LSH: sign bits per "
                                     "band.", bounds=POSITIVE)
    lexical: MinHashConfig = dataclasses.field(default_factory=MinHashConfig)
    semantic_threshold: float = _semantic_threshold()


@dataclasses.dataclass(frozen=True)
class StreamConfig(Settings):
    """`stream_tag`: prompts, micro-batches and windowed file output."""

    prompts: str = setting(
        "all", "'all': a classification, a clustering and a sentence-"
               "similarity vector per record (three forward passes); "
               "'shared': one sentence-similarity vector for every stage "
               "(heads and centroids must be made with that prompt).",
        choices=PROMPT_MODES)
    max_batch_duration_secs: float = setting(
        2, "Streaming: longest a record waits for its micro-batch.",
        bounds=POSITIVE)
    output_window_secs: int = setting(
        60, "Streaming with --output: one file per window of this many "
            "seconds of event time (and per pane).", bounds=POSITIVE)
    allowed_lateness_secs: int = setting(
        86400, "Streaming with --output: records this late still reach the "
               "files (in a late pane); later ones only Pub/Sub/BigQuery.",
        bounds=NON_NEGATIVE)


@dataclasses.dataclass(frozen=True)
class ReplayConfig(Settings):
    """`stream_tag --as_stream`: files read as a stream, as a load test
    replays them, on the path a Pub/Sub stream takes."""

    as_stream: bool = setting(
        False, "Read --input as an unbounded stream (the path a Pub/Sub "
               "job takes: keyed state, timers, watermark); the job ends "
               "once every line is out.")
    timestamp_field: str | None = setting(
        None, "With --as_stream: the record field (or TSV/CSV column) "
              "holding each record's event time, RFC 3339 or epoch "
              "seconds. Default: a line's order, a millisecond a line "
              "from the Unix epoch.")
    replay_rate: float | None = setting(
        None, "With --as_stream: records a second to replay at (0 or "
              "unset: as fast as the job reads).", bounds=NON_NEGATIVE)

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("timestamp_field", "replay_rate"):
            if getattr(self, name) is not None and not self.as_stream:
                raise ValueError(f"--{name} needs --as_stream")


@dataclasses.dataclass(frozen=True)
class HeadConfig(Settings):
    """`train_classifier`: the prompt, the folds, the baseline, zero-shot.

    Heads for `stream_tag --prompts shared` are trained with
    `task="sentence_similarity"`.
    """

    task: str = setting("classification", "Prompt to embed with "
                                          "(sentence_similarity for heads "
                                          "used with --prompts shared).",
                        choices=TASKS)
    folds: int = setting(5, "Cross-validation folds.", bounds=Bounds(2))
    baseline: str = setting("none", "Also cross-validate TF-IDF + logistic "
                                    "regression on the same folds.",
                            choices=("none", "tfidf"))
    min_score: float = setting(0.0, "Zero-shot: below this cosine, "
                                    "'unknown'.", bounds=Bounds(-1, 1))
    zero_shot: tuple[str, ...] = ()  # "LABEL=DESCRIPTION", one per label


@dataclasses.dataclass(frozen=True)
class ClusterConfig(Settings):
    """`fit_clusters`: k-means on embeddings of a corpus."""

    k: int | None = setting(None, "Number of clusters (required).",
                            bounds=POSITIVE)
    cluster_task: str = setting(
        "clustering", "Prompt to embed with (sentence_similarity for "
                      "centroids used with --prompts shared).",
        choices=TASKS)
    silhouette_sample: int = bounded(5000, POSITIVE)


def flag_name(field: dataclasses.Field) -> str:
    """The flag of a setting, without its dashes."""
    return field.metadata.get("flag") or field.name


def flag_fields(config_class: type) -> list[dataclasses.Field]:
    """The fields of `config_class` that are flags (nested configs aren't)."""
    return [f for f in dataclasses.fields(config_class) if "help" in
            f.metadata]


class Switch(argparse.Action):
    """A boolean flag: `--NAME` alone turns it on, and it also takes
    `--NAME=true|false` (Flex Templates pass every parameter as
    `--name=value`); `--help` shows it as a switch, `--NAME`."""

    def __init__(self, option_strings: list[str], dest: str,
                 help: str | None = None):
        super().__init__(option_strings, dest, nargs="?", const=True,
                         default=False, type=parse_bool, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)


def add_flags(parser: argparse.ArgumentParser | argparse._ArgumentGroup,
              config_class: type, skip: typing.Iterable[str] = ()) -> None:
    """Declares one flag per setting of `config_class` on `parser`.

    Underscores are the one flag style (Beam's); a boolean that defaults to
    true is turned off with `--no_NAME`, one that defaults to false on with
    `--NAME` (a `Switch`).
    """
    hints = typing.get_type_hints(config_class)
    for field in flag_fields(config_class):
        if field.name in skip:
            continue
        name, meta = flag_name(field), field.metadata
        kind = _scalar_type(hints[field.name])
        if kind is bool:
            switch = name if not field.default else f"no_{name}"
            parser.add_argument(f"--{switch}", action=Switch, dest=switch,
                                help=meta["help"])
            continue
        parser.add_argument(f"--{name}", *meta["aliases"], dest=name,
                            type=kind, default=field.default,
                            choices=meta["choices"], help=meta["help"])


def from_flags(config_class: type[_Config], flags: object,
               **nested: object) -> _Config:
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
