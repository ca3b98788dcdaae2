"""$ per million records on Dataflow, from measured throughput and memory.

    python -m benchmarks.cost [benchmarks/results/throughput-real-bfloat16.json]

Reads what `benchmarks/stream_throughput.py` measured on this machine
(records/s of each job and its peak RSS, with the number of CPUs it ran
on), and prices one million records on Dataflow worker types:

- streaming (`stream_tag`): at its records/s measured on a stream
  (`--as_stream` on Prism and Flink, as on Dataflow every state request
  crossing the Fn API), and at its estimated records/s on a stream (the
  run over files plus the detector's extra cost on a stream's path), one
  row per runner that extra cost was measured on (the local runner keeps
  state in-process),
  vCPU-hours and GB-hours of streaming workers, plus Streaming Engine
  data processed: every record crosses the engine as its JSON line
  several times (to the detector's buckets once per LSH band, with its
  sketch; to the verdict join; to the sink);
- batch (`dedup_corpus`): vCPU-hours and GB-hours of batch workers, plus
  Dataflow Shuffle data processed (the record's line through each
  GroupByKey of the exact, lexical and semantic stages).

Assumptions, stated so they can be changed: throughput scales with vCPUs
(each vCPU of a worker does what one vCPU did here: the model's matrix
products use every core); one SDK process per VM, holding one model, so a
worker type fits when its memory holds the measured peak RSS plus
`HEADROOM_GB`; workers are busy (a stream below capacity costs its idle
workers too). GPU workers were not measured and are marked so.
"""

import argparse
import json
import pathlib
import sys

# Public list prices of Dataflow in us-central1, USD, from Google's
# Dataflow pricing page as of 2025-06 (not re-read for this run: this
# machine has no web access). Change them for your region, date and
# discounts.
PRICE_DATE, PRICE_REGION = "2025-06", "us-central1"
BATCH_VCPU_HOUR = 0.056
BATCH_GB_HOUR = 0.003557
SHUFFLE_PER_GB = 0.011  # Dataflow Shuffle data processed (batch)
STREAMING_VCPU_HOUR = 0.069
STREAMING_GB_HOUR = 0.003557
STREAMING_ENGINE_PER_GB = 0.018  # Streaming Engine data processed

HEADROOM_GB = 1.0  # Beam's buffers, state cache and the OS, beside the job
WORKER_TYPES = {  # name: (vCPUs, GB)
    "n1-standard-4": (4, 15.0),
    "n2-standard-4": (4, 16.0),
    "n2-highmem-4": (4, 32.0),
    "n2-standard-8": (8, 32.0),
}
# Bytes a record adds to the engine or shuffle beyond its JSON line, per
# crossing: its key, id and window.
PER_CROSSING_BYTES = 64
# Times a stream_tag record crosses Streaming Engine: once per LSH band
# (16 lexical + 16 semantic; a 512-byte MinHash or 1,536-byte float16
# sketch, not the line), to the verdict join, and to the sink.
STREAM_SKETCH_BYTES = 16 * (512 + PER_CROSSING_BYTES) + 16 * (
    1536 + PER_CROSSING_BYTES)
STREAM_LINE_CROSSINGS = 2
BATCH_SHUFFLES = 4  # ids, exact, lexical components, semantic buckets


def cost_per_million(records_per_s_per_vcpu, peak_gb, vcpus, gb, streaming,
                     line_bytes):
    """USD for 10^6 records on one worker type, or None if it won't fit."""
    if peak_gb + HEADROOM_GB > gb:
        return None
    hours = 1e6 / (records_per_s_per_vcpu * vcpus) / 3600
    if streaming:
        engine_gb = 1e6 * (STREAM_SKETCH_BYTES + STREAM_LINE_CROSSINGS * (
            line_bytes + PER_CROSSING_BYTES)) / 1e9
        return (hours * (vcpus * STREAMING_VCPU_HOUR + gb * STREAMING_GB_HOUR)
                + engine_gb * STREAMING_ENGINE_PER_GB)
    shuffle_gb = 1e6 * BATCH_SHUFFLES * (line_bytes + PER_CROSSING_BYTES) / 1e9
    return (hours * (vcpus * BATCH_VCPU_HOUR + gb * BATCH_GB_HOUR)
            + shuffle_gb * SHUFFLE_PER_GB)


def table(results, line_bytes):
    rows = []
    for runner, paths in results.get("as_stream", {}).items():
        _, rate, peak = paths["as_stream"]
        per_vcpu = rate / results["cpus"]
        rows.append((f"stream_tag shared, --as_stream, {runner}", per_vcpu,
                     peak, [cost_per_million(per_vcpu, peak, vcpus, gb, True,
                                             line_bytes)
                            for vcpus, gb in WORKER_TYPES.values()]))
    for job, measured in results["jobs"].items():
        streaming = job.startswith("stream_tag")
        # A stream takes the detector's state-and-timers path, which a run
        # over files does not: one row per runner its cost was measured on.
        rates = ({f"{job}, est. {runner}": rate for runner, rate in
                  measured["stream_records_per_s_estimate"].items()}
                 if streaming else {})
        for label, rate in (rates or {
                job: measured["records_per_s_after_startup"]}).items():
            per_vcpu = rate / results["cpus"]
            costs = [cost_per_million(per_vcpu, measured["peak_rss_gb"],
                                      vcpus, gb, streaming, line_bytes)
                     for vcpus, gb in WORKER_TYPES.values()]
            rows.append((label, per_vcpu, measured["peak_rss_gb"], costs))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("results", nargs="*", type=pathlib.Path,
                        help="throughput-*.json files from "
                             "stream_throughput.py (default: all in "
                             "benchmarks/results)")
    paths = parser.parse_args(argv).results or sorted(
        (pathlib.Path(__file__).parent / "results").glob("throughput-*.json"))
    if not paths:
        sys.exit("no measurements: run benchmarks/stream_throughput.py first")
    print(f"USD per million records, Dataflow list prices {PRICE_REGION} "
          f"{PRICE_DATE}; '-': the job's memory does not fit the worker\n")
    print(f"{'measurement':26} {'job':40} {'rec/s/vCPU':>10} {'RSS GB':>7} "
          + " ".join(f"{name:>14}" for name in WORKER_TYPES))
    for path in paths:
        results = json.loads(path.read_text())
        name = f"{results['model']} {results['dtype']}"
        # A record's vector-free JSON line, as the detector's join holds it.
        line_bytes = (results.get("state", {}).get(
            "join_bytes_per_record_in_flight")
            or results.get("as_stream_line_bytes"))
        if line_bytes is None or (results["jobs"] and
                                  "detector_per_record" not in results):
            print(f"{name:26} (from an older stream_throughput.py; run it "
                  "again)")
            continue
        for job, per_vcpu, peak, costs in table(results, line_bytes):
            cells = " ".join(f"{'-' if c is None else f'{c:.2f}':>14}"
                             for c in costs)
            print(f"{name:26} {job:40} {per_vcpu:10.1f} {peak:7.2f} {cells}")
    print(f"{'GPU workers':26} {'(not measured: no GPU run of the jobs)':40}")


if __name__ == "__main__":
    main()
