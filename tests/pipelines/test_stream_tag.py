import json
import os

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.transforms.window import TimestampedValue

from embgemma_keras import Centroids
from embgemma_keras import ZeroShotHead
from embgemma_keras.config import StreamDedupConfig
from pipelines import stream_tag
from tests.helpers import SPAM_ROWS
from tests.helpers import hostile_lines
from tests.helpers import read_outputs
from tests.helpers import write_jsonl
from tests.helpers import write_tsv
from transforms import EmbeddingGemmaModelHandler
from transforms import ParseRecords
from transforms.tagging import TaggedSinks
from transforms.tagging import TagRecords
from transforms.tagging import write_tagged

pytestmark = pytest.mark.slow

# Semantic duplicates off: the tiny model's vectors are noise.
NO_SEMANTIC = StreamDedupConfig(horizon_secs=3600, semantic_threshold=1)

TEXT = ("the quarterly report shows that revenue grew by twelve percent while "
        "costs stayed flat across all regions")


def _line(record_id, text):
    return json.dumps({"id": record_id, "text": text}).encode()


@pytest.mark.parametrize("prompts", ["all", "shared"])
def test_full_graph_on_a_stream(tiny_preset, tiny_model, tmp_path, prompts):
    identity = tiny_model.identity
    task = {"all": "classification", "shared": "sentence_similarity"}[prompts]
    heads = {"topic": ZeroShotHead.from_descriptions(
        tiny_model, {"finance": "revenue and costs", "chat": "see you later"},
        task=task, model_identity=identity, min_score=-1.0)}
    centroids = Centroids.fit(
        tiny_model.encode([TEXT, "see you at lunch", "planets and stars"],
                          task="clustering"), 2,
        task="clustering", model_identity=identity)
    out_dir = tmp_path / "out"
    sinks = TaggedSinks(output=str(out_dir), streaming=True, window_secs=60,
                        allowed_lateness_secs=3600)
    # Batches within bundles: Beam's cross-bundle batcher waits on wall-clock
    # timers that TestStream does not drive (tested in test_embed_records).
    handler = EmbeddingGemmaModelHandler(tiny_preset)
    events = [
        (0, _line("first", TEXT)),
        (60, _line("typo", TEXT.replace("twelve", "twelv"))),
        (0, _line("first", TEXT)),           # redelivered, and late
        (90, _line("other", "see you at lunch tomorrow")),
        (100, b"{not json"),
        (5000, _line("far", TEXT)),                     # past the horizon
    ]
    stream, watermark = TestStream().advance_watermark_to(0), 0
    for time, line in events:  # one bundle each, time moving on
        stream = stream.add_elements([TimestampedValue(line, time)])
        stream = stream.advance_processing_time(5)
        if time > watermark:
            stream, watermark = stream.advance_watermark_to(time), time
    stream = stream.advance_watermark_to_infinity()
    with TestPipeline(options=PipelineOptions(streaming=True)) as p:
        parsed = p | stream | ParseRecords()
        tagged = parsed.output | TagRecords(handler, heads, centroids,
                                            NO_SEMANTIC, prompts)
        dead = (parsed.dead_letters, tagged.dead_letters) | beam.Flatten()
        write_tagged(sinks, tagged.output, dead)
    files = {path.name: [json.loads(line)
                         for line in path.read_text().splitlines()]
             for path in out_dir.glob("*.jsonl")}
    out = [r for name, rs in files.items() if name.startswith("tagged")
           for r in rs]
    dead_letters = [r for name, rs in files.items()
                    if name.startswith("dead_letters") for r in rs]
    assert len(out) + len(dead_letters) == len(events)
    # One file per window and pane: the late copy of "first" arrived after
    # the watermark passed its window, so it is in a later pane's file.
    first_window = sorted(name for name, rs in files.items()
                          if name.startswith("tagged")
                          and any(r["id"] == "first" for r in rs))
    assert [name.rsplit("-", 1)[1] for name in first_window] == [
        "pane0.jsonl", "pane1.jsonl"], sorted(files)
    assert len(dead_letters) == 1
    for record in out:
        assert record["labels"]["topic"]["label"] in ("finance", "chat")
        assert record["cluster"]["id"] in (0, 1)
        assert "embeddings" not in record
    flags = sorted((r["id"], r.get("duplicate_of")) for r in out)
    assert flags == [("far", None), ("first", None), ("first", None),
                     ("other", None), ("typo", "first")]


def test_local_form_tags_a_corpus_with_saved_heads(tiny_preset, tiny_model,
                                                    tmp_path):
    identity = tiny_model.identity
    ZeroShotHead.from_descriptions(
        tiny_model, {"finance": "revenue and costs", "chat": "see you later"},
        model_identity=identity, min_score=-1.0).save(tmp_path / "head")
    Centroids.fit(tiny_model.encode([TEXT, "see you", "stars"],
                                    task="clustering"), 2, task="clustering",
                  model_identity=identity).save(tmp_path / "centroids")
    corpus = tmp_path / "in.jsonl"
    corpus.write_bytes(b"\n".join([_line("a", TEXT), _line("b", TEXT + "!"),
                                   _line("c", "see you at lunch"),
                                   b'{"text": ""}']))
    out = tmp_path / "out"
    stream_tag.main(["--input", str(corpus), "--output", str(out),
                     "--model", tiny_preset,
                     "--heads", f"topic={tmp_path / 'head'}",
                     "--centroids", str(tmp_path / "centroids"),
                     "--semantic_threshold", "1"])
    tagged = read_outputs(out, "tagged")
    dead = read_outputs(out, "dead_letters")
    assert sorted(r["id"] for r in tagged) == ["a", "b", "c"]
    assert [d["stage"] for d in dead] == ["parse"]
    assert all("topic" in r["labels"] and "id" in r["cluster"]
               for r in tagged)
    assert {r["id"]: r.get("duplicate_of") for r in tagged} == {
        "a": None, "b": "a", "c": None}


def test_a_head_for_another_dim_is_refused_before_the_job(
        tiny_preset, tiny_model, tmp_path):
    import pytest

    ZeroShotHead.from_descriptions(
        tiny_model, {"x": "x", "y": "y"}, dim=256,
        model_identity=tiny_model.identity).save(tmp_path / "head")
    (tmp_path / "none.jsonl").touch()
    with pytest.raises(SystemExit, match="expects dim 256"):
        stream_tag.main(["--input", str(tmp_path / "none.jsonl"),
                         "--output", str(tmp_path / "out"),
                         "--model", tiny_preset,
                         "--heads", f"topic={tmp_path / 'head'}"])


def test_every_hostile_line_is_tagged_or_a_dead_letter(tiny_preset,
                                                       tiny_model, tmp_path):
    ZeroShotHead.from_descriptions(
        tiny_model, {"finance": "revenue and costs", "chat": "see you later"},
        model_identity=tiny_model.identity, min_score=-1.0).save(
            tmp_path / "head")
    lines = hostile_lines()
    corpus = write_jsonl(tmp_path / "in.jsonl", lines)
    out = tmp_path / "out"
    stream_tag.main(["--input", str(corpus), "--output", str(out),
                     "--model", tiny_preset,
                     "--heads", f"topic={tmp_path / 'head'}"])
    tagged = read_outputs(out, "tagged")
    dead = read_outputs(out, "dead_letters")
    accepted = sum(ok for _, _, ok in lines)
    assert len(tagged) == accepted
    assert len(dead) == len(lines) - accepted
    assert all(d["error"] for d in dead)
    assert all(r["labels"]["topic"]["label"] in ("finance", "chat")
               for r in tagged)
    assert sum(r["id"] == "shared" for r in tagged) == 2


class _FailOncePerBundle(beam.DoFn):
    """Fails each bundle's first attempt after it has emitted a record.

    The runner must then drop what that attempt emitted and retry it.
    `marks` records the bundles that failed (named by their first record).
    """

    def __init__(self, marks):
        self._marks = marks

    def start_bundle(self):
        self._first = None

    def process(self, record):
        if self._first is None:
            self._first = record["id"]
        else:
            mark = os.path.join(self._marks, self._first)
            if not os.path.exists(mark):
                open(mark, "w").close()
                raise RuntimeError(f"injected fault in bundle {self._first}")
        yield record


def test_retried_bundles_give_each_record_exactly_once(tiny_preset, tmp_path):
    # The runner that retries a failed bundle, as Dataflow does; Beam's
    # multi-process runner fails the pipeline instead of retrying.
    texts = [f"{TEXT} ({i})" if i % 4 else f"message number {i} about "
             f"something else entirely, item {i}" for i in range(40)]
    stream = TestStream().advance_watermark_to(0)
    for start in range(0, 40, 8):  # five bundles of eight records
        stream = stream.add_elements([
            TimestampedValue(_line(f"r{i:02d}", texts[i]), start)
            for i in range(start, start + 8)]).advance_watermark_to(start + 1)
    stream = stream.advance_watermark_to_infinity()
    before, after = tmp_path / "before", tmp_path / "after"
    before.mkdir(), after.mkdir()
    out_dir = tmp_path / "out"
    sinks = TaggedSinks(output=str(out_dir), streaming=True,
                        window_secs=3600, allowed_lateness_secs=0)
    with beam.Pipeline(runner="BundleBasedDirectRunner",
                       options=PipelineOptions(streaming=True)) as p:
        parsed = (p | stream | ParseRecords()).output | "FaultBeforeModel" >> (
            beam.ParDo(_FailOncePerBundle(str(before))))
        tagged = parsed | TagRecords(EmbeddingGemmaModelHandler(tiny_preset),
                                     dedup=NO_SEMANTIC)
        records = tagged.output | "FaultAfterState" >> beam.ParDo(
            _FailOncePerBundle(str(after)))
        write_tagged(sinks, records, tagged.dead_letters)
    faults = len(list(before.iterdir())) + len(list(after.iterdir()))
    ids = sorted(json.loads(line)["id"] for path in out_dir.glob("tagged*")
                 for line in path.read_text().splitlines())
    assert faults >= 5
    assert ids == [f"r{i:02d}" for i in range(40)]
    assert not list(out_dir.glob("dead_letters*"))


def _train_head(tiny_preset, tmp_path, task):
    from pipelines import train_classifier

    train = write_tsv(tmp_path / f"train-{task}.tsv", SPAM_ROWS)
    head = tmp_path / f"head-{task}"
    train_classifier.main(["--train", train, "--output", str(head),
                           "--model", tiny_preset, "--folds", "2",
                           "--task", task])
    return head


def test_shared_prompts_end_to_end_with_heads_trained_for_them(
        tiny_preset, tmp_path):
    head = _train_head(tiny_preset, tmp_path, "sentence_similarity")
    corpus = tmp_path / "in.jsonl"
    corpus.write_bytes(b"\n".join([_line("a", TEXT), _line("b", TEXT + "!"),
                                   _line("c", "win a prize now"),
                                   b"{broken"]))
    out = tmp_path / "out"
    stream_tag.main(["--input", str(corpus), "--output", str(out),
                     "--model", tiny_preset, "--heads", f"spam={head}",
                     "--prompts", "shared", "--semantic_threshold", "1"])
    tagged = {r["id"]: r for r in read_outputs(out, "tagged")}
    assert sorted(tagged) == ["a", "b", "c"]
    assert [d["stage"] for d in read_outputs(out, "dead_letters")] == [
        "parse"]
    assert all(r["labels"]["spam"]["label"] in ("spam", "ham")
               for r in tagged.values())
    assert tagged["b"]["duplicate_of"] == "a"


@pytest.mark.parametrize("task,prompts", [
    ("classification", "shared"), ("sentence_similarity", "all")])
def test_a_head_for_the_other_prompt_mode_is_refused_before_the_job(
        tiny_preset, tmp_path, task, prompts):
    head = _train_head(tiny_preset, tmp_path, task)
    (tmp_path / "none.jsonl").touch()
    with pytest.raises(SystemExit, match=f"expects '{task}'"):
        stream_tag.main(["--input", str(tmp_path / "none.jsonl"),
                         "--output", str(tmp_path / "out"),
                         "--model", tiny_preset, "--heads", f"spam={head}",
                         "--prompts", prompts])
    assert not (tmp_path / "out").exists()
