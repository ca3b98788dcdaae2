"""`python -m embgemma_keras embed`: JSONL in, JSONL with embeddings out.

    python -m embgemma_keras embed --model M --task classification --dim 256 \
        --input in.jsonl --output out.jsonl

Flags are spelled with underscores, as the jobs' are (`--max_length`); the
older hyphenated spellings (`--max-length`) are still accepted.

`python -m embgemma_keras save-preset --model M --dtype bfloat16 --output DIR`
converts any handle to a Keras preset (what a container image bakes in).

Each input line is a JSON object with `text` (and optionally `title`); the
output line is the same object plus `embedding`. A bad line (blank lines
included) is reported on stderr with its line number and reason and left
out of the output; the good lines are still written, and the exit status is
1 when any line failed.
"""

import argparse
import itertools
import json
import os
import sys

from tqdm import tqdm

from embgemma_keras.config import MAX_RECORD_BYTES
from embgemma_keras.config import SUPPORTED_DTYPES
from embgemma_keras.config import VERBOSE_ENV_VAR
from embgemma_keras.config import EmbedConfig
from embgemma_keras.config import add_flags
from embgemma_keras.presets import MODEL_ENV_VAR
from embgemma_keras.records.validation import BadRecord
from embgemma_keras.records.validation import parse_record
from embgemma_keras.tasks import Task

# Lines read, embedded and written together: large enough for length-aware
# batching to find similar lengths, small enough to bound memory.
_CHUNK_LINES = 2048


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    if args.verbose:
        os.environ[VERBOSE_ENV_VAR] = "1"
    # TensorFlow is imported here, after --verbose is known.
    from embgemma_keras.embedding_gemma import EmbeddingGemma

    if args.command == "save-preset":
        return _save_preset(EmbeddingGemma, args)
    model = EmbeddingGemma.from_preset(
        args.model, dtype=args.dtype, max_length=args.max_length
    )
    failed = 0
    with open(args.input, "rb") as source:
        total = sum(1 for _ in source)
    with open(args.input, "rb") as source, open(
        args.output, "w", encoding="utf-8"
    ) as sink, tqdm(total=total, unit=" lines", file=sys.stderr,
                    disable=args.quiet) as bar:
        lines = enumerate(source, start=1)
        while chunk := list(itertools.islice(lines, _CHUNK_LINES)):
            failed += _embed_chunk(model, chunk, args, sink)
            bar.update(len(chunk))
    if failed:
        print(f"{failed} line(s) failed; see the errors above.",
              file=sys.stderr)
    return 1 if failed else 0


def _save_preset(model_class, args):
    model = model_class.from_preset(args.model, dtype=args.dtype)
    model.save_preset(args.output)
    # Loading what was written proves the preset complete before it ships.
    check = model_class.from_preset(args.output, dtype=args.dtype)
    if check.identity.fingerprint != model.identity.fingerprint:
        sys.exit(f"{args.output}: the saved weights differ from {args.model}")
    print(f"saved {args.output} ({args.dtype}, weights "
          f"{model.identity.fingerprint[:12]})")
    return 0


def _embed_chunk(model, chunk, args, sink):
    """Embeds the valid records of `chunk`; returns how many lines failed."""
    records, failed = [], 0
    for number, raw in chunk:
        raw = raw.rstrip(b"\r\n")
        try:
            records.append(parse_record(raw, args.max_record_bytes))
        except BadRecord as e:
            tqdm.write(f"{args.input}:{number}: {e}", file=sys.stderr)
            failed += 1
    if records:
        titles = None
        if args.task == Task.DOCUMENT.value:
            titles = [record.get("title") for record in records]
        vectors = model.encode(
            [record["text"] for record in records],
            task=args.task,
            titles=titles,
            dim=args.dim,
            batch_size=args.batch_size,
        )
        for record, vector in zip(records, vectors, strict=True):
            record["embedding"] = vector.tolist()
            sink.write(json.dumps(record, ensure_ascii=False) + "\n")
    return failed


def _parser():
    parser = argparse.ArgumentParser(
        prog="python -m embgemma_keras",
        description="EmbeddingGemma on keras-hub.",
    )
    parser.add_argument("--verbose", action="store_true",
                        help="Show TensorFlow's start-up logs (CUDA "
                             "probing, oneDNN notices), hidden by default.")
    commands = parser.add_subparsers(dest="command", required=True)
    embed = commands.add_parser(
        "embed",
        help="Embed the `text` of each JSONL record.",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_flags(embed, EmbedConfig, skip=("model_copies",))
    embed.add_argument(
        "--task", default=Task.CLASSIFICATION.value,
        choices=[task.value for task in Task],
        help="Prompt to embed with (default: classification).")
    embed.add_argument("--batch_size", "--batch-size", type=int, default=32,
                       help="Most texts per forward pass.")
    embed.add_argument(
        "--max_record_bytes", "--max-record-bytes", type=int,
        default=MAX_RECORD_BYTES,
        help="Lines longer than this are refused before tokenization.")
    embed.add_argument("--input", required=True, help="JSONL file to read.")
    embed.add_argument("--output", required=True, help="JSONL file to write.")
    embed.add_argument("--quiet", action="store_true",
                       help="No progress bar.")
    save = commands.add_parser(
        "save-preset",
        help="Convert a model handle to a Keras preset directory.")
    save.add_argument("--model", default=None,
                      help=f"Handle to convert (default: ${MODEL_ENV_VAR}).")
    save.add_argument("--dtype", default=EmbedConfig.dtype,
                      choices=SUPPORTED_DTYPES,
                      help="Dtype the preset's weights are stored in.")
    save.add_argument("--output", required=True,
                      help="Directory to write the preset to.")
    return parser
