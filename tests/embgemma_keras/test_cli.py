import json
import os
import re
import subprocess
import sys

import pytest

from embgemma_keras.cli import main
from tests.helpers import hostile_lines
from tests.helpers import write_jsonl


def _write(path, lines):
    path.write_bytes(b"\n".join(lines) + b"\n")


def test_embed_writes_good_lines_and_reports_each_bad_one(tiny_preset,
                                                          tmp_path, capsys):
    source, sink = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    _write(source, [
        b'{"text": "hello world", "id": "a", "lang": "en"}',
        b"not json",
        b'{"text": ""}',
        b'{"text": "second good", "title": "T"}',
        b'{"text": "bad \xff byte"}',
        b'[1, 2]',
        b'{"text": "third good"}',
    ])
    status = main(["embed", "--model", tiny_preset, "--task", "document",
                   "--dim", "256", "--input", str(source), "--output",
                   str(sink), "--quiet"])
    assert status == 1
    written = [json.loads(line) for line in sink.read_text().splitlines()]
    assert [r["text"] for r in written] == [
        "hello world", "second good", "third good"
    ]
    assert written[0]["id"] == "a" and written[0]["lang"] == "en"
    assert all(len(r["embedding"]) == 256 for r in written)
    errors = capsys.readouterr().err
    for number, reason in [(2, "malformed JSON"),
                           (3, "field 'text' is empty"),
                           (5, "not valid UTF-8"),
                           (6, "expected a JSON object, got list")]:
        assert f"in.jsonl:{number}: {reason}" in errors
    assert "4 line(s) failed" in errors


def test_embed_exits_zero_when_every_line_is_good(tiny_preset, tmp_path):
    source, sink = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    _write(source, [b'{"text": "a"}', b'{"text": "b"}'])
    assert main(["embed", "--model", tiny_preset, "--input", str(source),
                 "--output", str(sink), "--quiet"]) == 0
    assert len(sink.read_text().splitlines()) == 2


@pytest.mark.slow
def test_save_preset_writes_a_preset_that_gives_the_same_vectors(
        tiny_preset, tiny_model, tmp_path, capsys):
    from embgemma_keras import EmbeddingGemma

    target = tmp_path / "baked"
    assert main(["save-preset", "--model", tiny_preset, "--output",
                 str(target)]) == 0
    assert tiny_model.identity.fingerprint[:12] in capsys.readouterr().out
    baked = EmbeddingGemma.from_preset(str(target))
    texts = ["a baked model", "gives the same vectors"]
    assert (baked.encode(texts) == tiny_model.encode(texts)).all()


@pytest.mark.slow
def test_every_hostile_line_is_embedded_or_reported(tiny_preset, tmp_path,
                                                    capsys):
    lines = hostile_lines()
    source = write_jsonl(tmp_path / "in.jsonl", lines)
    sink = tmp_path / "out.jsonl"
    assert main(["embed", "--model", tiny_preset, "--input", str(source),
                 "--output", str(sink), "--quiet"]) == 1
    written = sink.read_text(encoding="utf-8").splitlines()
    reported = [int(line.split(":")[1])
                for line in capsys.readouterr().err.splitlines()
                if line.startswith(f"{source}:")]
    assert len(written) == sum(ok for _, _, ok in lines)
    assert reported == [number for number, (_, _, ok)
                        in enumerate(lines, start=1) if not ok]


@pytest.mark.slow
def test_the_log_holds_no_tensorflow_start_up_noise(tiny_preset, tmp_path):
    """A fresh process: TensorFlow prints its CUDA probing and oneDNN
    notices when first imported; only --verbose shows them."""
    source = tmp_path / "in.jsonl"
    source.write_text('{"text": "hello"}\n')
    env = {k: v for k, v in os.environ.items()
           if k not in ("TF_CPP_MIN_LOG_LEVEL", "EMBGEMMA_VERBOSE")}
    result = subprocess.run(
        [sys.executable, "-m", "embgemma_keras", "embed", "--model",
         tiny_preset, "--input", str(source), "--output",
         str(tmp_path / "out.jsonl"), "--quiet"],
        env=env, capture_output=True, text=True, timeout=300, check=True)
    # absl's log lines start with a level letter and the date: I1128, E0000
    assert not re.search(r"^[IWEF]\d{4} ", result.stderr, re.MULTILINE), (
        result.stderr)
    # SentencePiece's own log format: normalizer.cc(51) LOG(INFO) ...
    assert "LOG(" not in result.stderr
    assert "cuInit" not in result.stderr and "oneDNN" not in result.stderr
