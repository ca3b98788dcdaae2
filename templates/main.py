"""Flex Template entry point: runs the job named by $EMBGEMMA_JOB.

The image is built once per job (`--build-arg JOB=...`); the launcher runs
this file with the template's parameters as flags.
"""

import importlib
import os
import sys

JOBS = ("stream_tag", "dedup_corpus", "train_classifier", "fit_clusters")


def main():
    job = os.environ.get("EMBGEMMA_JOB")
    if job not in JOBS:
        sys.exit(f"EMBGEMMA_JOB must be one of {JOBS}, got {job!r}")
    importlib.import_module(f"pipelines.{job}").main()


if __name__ == "__main__":
    main()
