"""Faults on real runners and servers: nothing lost, nothing doubled.

Each test injects one fault into a running job (a server stopped or
paused for a while) and checks that every record comes out once, with the
verdicts it gets without the fault, and that nothing is dead-lettered for
the outage alone. The figures they print are in docs/reliability.md.
"""

import json
import logging
import pathlib
import time

import pytest
from google.cloud import pubsub_v1

from local_runners.postgres import LocalPostgres
from pipelines import dedup_corpus
from pipelines import stream_tag
from pipelines.options import start
from tests.runners.test_pubsub import NOTE
from tests.runners.test_pubsub import OFFER
from tests.runners.test_pubsub import OTHER
from tests.runners.test_pubsub import _publish
from tests.runners.test_pubsub import _pull_until
from tests.runners.test_pubsub import _record
from tests.runners.test_pubsub import _topics

pytestmark = pytest.mark.runners

OUTAGE_SECS = 30
CORPUS = pathlib.Path(__file__).resolve().parents[2] / "examples" / (
    "corpus.jsonl")


def test_a_stream_waits_for_its_index_through_a_database_outage(
        pubsub_server, tiny_preset, tmp_path, caplog, set_up_runner):
    """The PostgreSQL index stopped for 30 s while records arrive: their
    lookups wait (a log line each try), then every record is tagged once,
    with the index's verdicts, and none is dead-lettered."""
    server = LocalPostgres(tmp_path / "postgres")
    url = set_up_runner(server.start)
    try:
        index = f"{url}&schema=outage"
        archive = tmp_path / "archive.jsonl"
        archive.write_bytes(_record("kept-offer", OFFER) + b"\n"
                            + _record("kept-note", NOTE) + b"\n")
        flags = ["--model", tiny_preset, "--semantic_threshold", "1.0",
                 "--index", index]
        dedup_corpus.main(["--input", str(archive), "--output",
                           str(tmp_path / "archive-out"), *flags,
                           "--run_id", "archive"])
        publisher = pubsub_v1.PublisherClient()
        subscriber = pubsub_v1.SubscriberClient()
        topics, subscriptions = _topics(publisher, subscriber)
        tagged_from = {"tagged": subscriptions["tagged"]}
        job = start(["--input_subscription", subscriptions["records"],
                     "--output_topic", topics["tagged"],
                     "--dead_letter_topic", topics["dead_letters"],
                     "--max_batch_duration_secs", "1",
                     "--horizon_secs", "1", *flags],
                    stream_tag.REQUIRED, stream_tag.build)
        try:
            _publish(publisher, topics["records"], [_record("offer", OFFER)])
            before = _pull_until(subscriber, tagged_from, expected=1)
            server.stop()
            stopped = time.monotonic()
            with caplog.at_level(logging.WARNING):
                _publish(publisher, topics["records"], [
                    _record("note", NOTE), _record("other", OTHER),
                    _record("offer-again", OFFER)])
                time.sleep(OUTAGE_SECS - (time.monotonic() - stopped))
                server.start()
                restarted = time.monotonic()
                after = _pull_until(subscriber, tagged_from, expected=3)
                recovered_secs = time.monotonic() - restarted
            dead = _pull_until(subscriber, {
                "dead": subscriptions["dead_letters"]}, expected=1,
                timeout_secs=5)
        finally:
            job.cancel()
    finally:
        server.stop()
    tagged = before["tagged"] + after["tagged"]
    print(f"\ndatabase outage {OUTAGE_SECS} s: {len(tagged)} tagged, "
          f"{len(dead['dead'])} dead letters, recovered "
          f"{recovered_secs:.1f} s after the restart")
    assert sorted((r["id"], r.get("duplicate_of"), r.get("duplicate_of_run"))
                  for r in tagged) == [
        ("note", "kept-note", "archive"),
        ("offer", "kept-offer", "archive"),
        ("offer-again", "kept-offer", "archive"),
        ("other", None, None)]
    assert dead["dead"] == []
    assert "the dedup index is unreachable" in caplog.text


def test_a_stream_rides_out_a_paused_pubsub_server(pubsub_server,
                                                   tiny_preset, tmp_path):
    """The Pub/Sub server frozen for 30 s (SIGSTOP, SIGCONT) just after
    records were published: the job's pulls and publishes wait, then every
    record is tagged once, copies flagged, nothing dead-lettered."""
    publisher = pubsub_v1.PublisherClient()
    subscriber = pubsub_v1.SubscriberClient()
    topics, subscriptions = _topics(publisher, subscriber)
    tagged_from = {"tagged": subscriptions["tagged"]}
    records = [json.loads(line)
               for line in CORPUS.read_text().splitlines()[:20]]
    copies = [{"id": f"copy-{r['id']}", "text": r["text"]}
              for r in records[:5]]
    job = start(["--input_subscription", subscriptions["records"],
                 "--output_topic", topics["tagged"],
                 "--dead_letter_topic", topics["dead_letters"],
                 "--model", tiny_preset, "--semantic_threshold", "1.0",
                 "--max_batch_duration_secs", "1"],
                stream_tag.REQUIRED, stream_tag.build)
    try:
        _publish(publisher, topics["records"], [_record("first", OFFER)])
        before = _pull_until(subscriber, tagged_from, expected=1)
        _publish(publisher, topics["records"],
                 [json.dumps(r).encode() for r in records + copies])
        with pubsub_server.paused():
            time.sleep(OUTAGE_SECS)
        resumed = time.monotonic()
        after = _pull_until(subscriber, tagged_from,
                            expected=len(records) + len(copies))
        recovered_secs = time.monotonic() - resumed
        # Anything delivered twice would come within the ack deadline.
        again = _pull_until(subscriber, {**tagged_from, "dead": subscriptions[
            "dead_letters"]}, expected=1, timeout_secs=15)
    finally:
        job.cancel()
    tagged = before["tagged"] + after["tagged"] + again["tagged"]
    print(f"\nPub/Sub paused {OUTAGE_SECS} s: {len(tagged)} tagged, "
          f"{len(again['dead'])} dead letters, recovered "
          f"{recovered_secs:.1f} s after the resume")
    ids = sorted(r["id"] for r in tagged)
    assert ids == sorted(["first", *(r["id"] for r in records + copies)])
    flagged = {r["id"]: r.get("duplicate_of") for r in tagged}
    for copy in copies:
        assert flagged[copy["id"]] is not None
    assert again["dead"] == []
