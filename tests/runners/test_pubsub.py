"""stream_tag as a stream, from a Pub/Sub server speaking the real gRPC API
(`local_runners.pubsub`), through Google's client and Beam's Pub/Sub IO.

It runs on the DirectRunner in streaming mode: Python's `ReadFromPubSub`
is a transform (`beam:transform:pubsub_read:v1`) that only Dataflow and the
DirectRunner implement; Prism refuses the job ("unsupported feature").
"""

import json
import time

import pytest
from google.cloud import pubsub_v1

from pipelines import dedup_corpus
from pipelines import stream_tag
from pipelines.options import start

pytestmark = pytest.mark.runners

PROJECT = "embgemma-test"
# Long beside the job's own delays: the DirectRunner's Pub/Sub watermark is
# the wall clock, so a copy that reaches the detector more than a horizon
# after its original (a slow first batch) would meet an expired bucket.
HORIZON_SECS = 20
OFFER = "Congratulations, you have won a free cruise! Call 0800 123 now."
NOTE = "Running late, I will be at the station around seven."
OTHER = "The committee approved the budget after a long debate on Tuesday."


def _publish(publisher, topic, payloads):
    for payload in payloads:
        publisher.publish(topic, payload).result()


def _record(record_id, text):
    return json.dumps({"id": record_id, "text": text}).encode()


def _pull_until(subscriber, subscriptions, expected, timeout_secs=240):
    """Messages from each subscription until `expected` in all, acked."""
    received = {name: [] for name in subscriptions}
    deadline = time.monotonic() + timeout_secs
    while (sum(map(len, received.values())) < expected
           and time.monotonic() < deadline):
        for name, path in subscriptions.items():
            response = subscriber.pull(
                request={"subscription": path, "max_messages": 100},
                timeout=10)
            if response.received_messages:
                received[name] += [json.loads(m.message.data)
                                   for m in response.received_messages]
                subscriber.acknowledge(request={
                    "subscription": path,
                    "ack_ids": [m.ack_id for m in response.received_messages]})
        time.sleep(0.5)
    return received


def _topics(publisher, subscriber):
    """The job's three topics, each with a subscription: (topics, subs)."""
    topics = {name: publisher.topic_path(PROJECT, name)
              for name in ("records", "tagged", "dead_letters")}
    subscriptions = {name: subscriber.subscription_path(PROJECT, name)
                     for name in topics}
    for name in topics:
        publisher.create_topic(name=topics[name])
        subscriber.create_subscription(name=subscriptions[name],
                                       topic=topics[name])
    return topics, subscriptions


def test_stream_tag_reads_and_writes_a_real_pubsub_api(
        pubsub_server, tiny_preset, tmp_path):
    publisher = pubsub_v1.PublisherClient()
    subscriber = pubsub_v1.SubscriberClient()
    topics, subscriptions = _topics(publisher, subscriber)

    # A message delivered, nacked, and so redelivered to the job.
    _publish(publisher, topics["records"], [_record("nacked", OTHER)])
    first = subscriber.pull(request={"subscription": subscriptions["records"],
                                     "max_messages": 1}, timeout=10)
    subscriber.modify_ack_deadline(request={
        "subscription": subscriptions["records"], "ack_deadline_seconds": 0,
        "ack_ids": [first.received_messages[0].ack_id]})

    # `start` returns once the stream runs; the test cancels it.
    job = start([
        "--input_subscription", subscriptions["records"],
        "--output_topic", topics["tagged"],
        "--dead_letter_topic", topics["dead_letters"],
        "--model", tiny_preset, "--max_batch_duration_secs", "1",
        "--horizon_secs", str(HORIZON_SECS),
        # The tiny model's random vectors make unrelated texts similar:
        # only identical vectors count as semantic duplicates here.
        "--semantic_threshold", "1.0"],
        stream_tag.REQUIRED, stream_tag.build)
    try:
        _publish(publisher, topics["records"], [
            _record("offer", OFFER), _record("note", NOTE),
            _record("offer-copy", OFFER),
            _record("note", NOTE),  # Pub/Sub's at-least-once: twice
            b"{not json", _record("empty", "  ")])
        # Published (event time) more than the horizon after "offer".
        time.sleep(HORIZON_SECS + 2)
        _publish(publisher, topics["records"], [_record("offer-late", OFFER)])
        received = _pull_until(subscriber, {
            "tagged": subscriptions["tagged"],
            "dead_letters": subscriptions["dead_letters"]}, expected=8)
    finally:
        job.cancel()
    assert str(job.state) == "CANCELLED"

    tagged, dead = received["tagged"], received["dead_letters"]
    # Eight messages delivered (the nacked one once): six records, two bad.
    assert len(tagged) + len(dead) == 8
    assert sorted(r["id"] for r in tagged) == [
        "nacked", "note", "note", "offer", "offer-copy", "offer-late"]
    verdicts = {(r["id"], r.get("duplicate_of"), r.get("kind"))
                for r in tagged}
    assert verdicts == {
        ("nacked", None, None), ("note", None, None), ("offer", None, None),
        ("offer-copy", "offer", "lexical"),
        # Beyond the horizon: not a duplicate of "offer" any more.
        ("offer-late", None, None)}
    assert sorted(d["stage"] for d in dead) == ["parse", "parse"]
    assert all(d["error"] for d in dead)


def test_a_stream_flags_copies_of_what_a_dedup_index_kept(
        pubsub_server, tiny_preset, tmp_path):
    """The index is read at the job's start while messages already flow:
    none is compared before every entry is in its buckets."""
    archive = tmp_path / "archive.jsonl"
    archive.write_bytes(_record("kept-offer", OFFER) + b"\n"
                        + _record("kept-note", NOTE) + b"\n")
    index = tmp_path / "index"
    dedup_corpus.main(["--input", str(archive), "--output",
                       str(tmp_path / "archive-out"), "--model", tiny_preset,
                       "--semantic_threshold", "1.0", "--index", str(index),
                       "--run_id", "archive"])
    publisher = pubsub_v1.PublisherClient()
    subscriber = pubsub_v1.SubscriberClient()
    topics, subscriptions = _topics(publisher, subscriber)
    # Published before the job starts: the first pull brings them at once.
    _publish(publisher, topics["records"], [
        _record("offer", OFFER), _record("other", OTHER)])
    job = start([
        "--input_subscription", subscriptions["records"],
        "--output_topic", topics["tagged"],
        "--dead_letter_topic", topics["dead_letters"],
        "--model", tiny_preset, "--max_batch_duration_secs", "1",
        "--semantic_threshold", "1.0", "--index", str(index)],
        stream_tag.REQUIRED, stream_tag.build)
    try:
        _publish(publisher, topics["records"], [_record("note", NOTE)])
        received = _pull_until(subscriber, {
            "tagged": subscriptions["tagged"]}, expected=3)
    finally:
        job.cancel()
    verdicts = {(r["id"], r.get("duplicate_of"), r.get("duplicate_of_run"))
                for r in received["tagged"]}
    assert verdicts == {("offer", "kept-offer", "archive"),
                        ("note", "kept-note", "archive"),
                        ("other", None, None)}


def test_a_stream_sees_what_a_run_commits_to_a_database_index_while_it_runs(
        pubsub_server, postgres, tiny_preset, tmp_path):
    """A stream against an index in PostgreSQL looks each record up as it
    comes: nothing is loaded at start, and entries a batch run commits
    while the stream runs are seen within seconds."""
    index = f"{postgres.url}&schema=stream_{tmp_path.name[-12:].lower()}"
    flags = ["--model", tiny_preset, "--semantic_threshold", "1.0",
             "--index", index]

    def commit(run, record_id, text):
        archive = tmp_path / f"{run}.jsonl"
        archive.write_bytes(_record(record_id, text) + b"\n")
        dedup_corpus.main(["--input", str(archive), "--output",
                           str(tmp_path / f"{run}-out"), *flags,
                           "--run_id", run])

    def tagged(record_id, text):
        _publish(publisher, topics["records"], [_record(record_id, text)])
        [record] = _pull_until(subscriber, {"tagged": subscriptions["tagged"]},
                               expected=1)["tagged"]
        return record

    commit("archive", "kept-offer", OFFER)
    publisher = pubsub_v1.PublisherClient()
    subscriber = pubsub_v1.SubscriberClient()
    topics, subscriptions = _topics(publisher, subscriber)
    # A horizon shorter than the time between two sends: each copy of NOTE
    # can only match the index.
    job = start(["--input_subscription", subscriptions["records"],
                 "--output_topic", topics["tagged"],
                 "--dead_letter_topic", topics["dead_letters"],
                 "--max_batch_duration_secs", "1", "--horizon_secs", "1",
                 *flags], stream_tag.REQUIRED, stream_tag.build)
    try:
        offer = tagged("offer", OFFER)
        commit("later", "kept-note", NOTE)
        committed, notes = time.monotonic(), []
        while time.monotonic() - committed < 30 and not any(
                r.get("duplicate_of") for r in notes):
            time.sleep(1.5)
            notes.append(tagged(f"note-{len(notes)}", NOTE))
        seen_after = time.monotonic() - committed
    finally:
        job.cancel()
    assert (offer["duplicate_of"], offer["duplicate_of_run"]) == (
        "kept-offer", "archive")
    assert (notes[-1]["duplicate_of"], notes[-1]["duplicate_of_run"]) == (
        "kept-note", "later")
    assert not any(r.get("duplicate_of") for r in notes[:-1])
    assert seen_after < 30
