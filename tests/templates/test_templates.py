"""The Flex Templates agree with the jobs they launch."""

import argparse
import json
import os
import pathlib
import re
import runpy
import shutil
import subprocess
import sys

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines import dedup_corpus
from pipelines import fit_clusters
from pipelines import stream_tag
from pipelines import train_classifier

ROOT = pathlib.Path(__file__).resolve().parents[2]
TEMPLATES = ROOT / "templates"
JOBS = {module.__name__.split(".")[1]: module for module in (
    stream_tag, dedup_corpus, train_classifier, fit_clusters)}
# Flags a template does not offer, and why.
NOT_IN_TEMPLATE = {
    "stream_tag": {
        "input": "a template streams from Pub/Sub; tag files with the "
                 "direct command",
        "text_column": "Pub/Sub messages are JSON objects with a text field",
        "as_stream": "replays --input files, which a template does not read",
        "timestamp_field": "--as_stream only",
        "replay_rate": "--as_stream only",
    },
    "dedup_corpus": {},
    "fit_clusters": {},
    "train_classifier": {
        "zero_shot": "repeated once per label, which template parameters "
                     "cannot express; zero-shot heads need no training job",
        "min_score": "zero-shot only",
        "input": "a common flag this job does not use: it reads --train",
    },
}
# Values each parameter's regexes must refuse.
BAD_VALUES = {
    "dtype": "float16", "dim": "300", "heads": "spam",
    "input_subscription": "projects/p/topics/t", "output_topic": "t",
    "output_table": "table", "input": "gs://bucket/corpus.parquet",
    "output": "/local/dir", "no_semantic": "yes", "shingles": "char5",
    "folds": "1", "model": "relative/dir",
}


def _metadata(job):
    return json.loads((TEMPLATES / job / "metadata.json").read_text())


def _example(parameter):
    match = re.search(r"\(Example: (\S+)\)$", parameter["helpText"])
    assert match, f"{parameter['name']}: help text ends without an example"
    return match.group(1)


def _flags(module):
    parser = argparse.ArgumentParser()
    for group in module.OPTIONS:
        group._add_argparse_args(parser)
    return {action.dest for action in parser._actions} - {"help"}


def _parameters():
    return [(job, p) for job in JOBS for p in _metadata(job)["parameters"]]


@pytest.mark.parametrize("job,parameter", _parameters(),
                         ids=lambda v: v if isinstance(v, str) else v["name"])
def test_each_parameter_is_accepted_by_the_jobs_parser(job, parameter):
    # The launcher passes every parameter as --name=value.
    name, example = parameter["name"], _example(parameter)
    parsed = PipelineOptions([f"--{name}={example}"]).get_all_options()
    assert name in parsed, f"{job} does not know --{name}"
    value = parsed[name]
    if isinstance(value, bool):
        assert value == (example == "true")
    elif isinstance(value, (int, float)):
        assert value == float(example)
    else:
        assert value == example


@pytest.mark.parametrize("job,parameter", _parameters(),
                         ids=lambda v: v if isinstance(v, str) else v["name"])
def test_regexes_accept_the_example_and_refuse_bad_values(job, parameter):
    assert parameter["label"] and parameter["helpText"]
    assert isinstance(parameter["isOptional"], bool)
    for regex in parameter.get("regexes", []):
        assert re.fullmatch(regex, _example(parameter)), regex
        if parameter["name"] in BAD_VALUES:
            assert not re.fullmatch(regex, BAD_VALUES[parameter["name"]])


@pytest.mark.parametrize("job", JOBS)
def test_every_flag_is_a_parameter_or_left_out_with_a_reason(job):
    names = [p["name"] for p in _metadata(job)["parameters"]]
    assert len(names) == len(set(names))
    assert set(names) | set(NOT_IN_TEMPLATE[job]) == _flags(JOBS[job])
    assert not set(names) & set(NOT_IN_TEMPLATE[job])


@pytest.mark.parametrize("job", JOBS)
def test_required_flags_are_the_required_parameters(job):
    module = JOBS[job]
    required = {p["name"] for p in _metadata(job)["parameters"]
                if not p["isOptional"]}
    assert required == set(module.REQUIRED)


@pytest.mark.skipif(shutil.which("gcloud") is None,
                    reason="gcloud is not installed")
@pytest.mark.parametrize("job", JOBS)
@pytest.mark.slow
def test_gcloud_accepts_the_metadata(job):
    spec = subprocess.run(
        ["gcloud", "dataflow", "flex-template", "build", f"gs://b/{job}.json",
         "--image", f"europe-docker.pkg.dev/p/r/{job}:1",
         "--sdk-language", "PYTHON", "--metadata-file",
         str(TEMPLATES / job / "metadata.json"), "--print-only",
         "--project", "p"],
        capture_output=True, text=True, check=True, timeout=120).stdout
    assert f'"name": "{_metadata(job)["name"]}"' in spec


def _dockerfile_args():
    text = (TEMPLATES / "Dockerfile").read_text()
    return text, dict(re.findall(r"^ARG (\w+)=(\S+)$", text, re.M))


def test_the_image_runs_the_beam_version_of_pyproject():
    setup_version = re.search(r'"apache-beam\[gcp\]==([^"]+)"',
                              (ROOT / "pyproject.toml").read_text()).group(1)
    _, args = _dockerfile_args()
    assert args["BEAM_VERSION"] == setup_version


def test_every_base_image_is_pinned_to_one_python():
    text, args = _dockerfile_args()
    images = re.findall(r"^FROM (\S+?/\S+)", text, re.M)
    assert images, "no base image found"
    pythons = set()
    for image in images:
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image)
        name, _, tag = image.rpartition(":")
        assert tag and tag != "latest", f"{image} is not pinned"
        pythons.add(re.search(r"python3\.?(\d+)", name).group(1))
    assert len(pythons) == 1, pythons


@pytest.mark.parametrize("job", JOBS)
def test_the_entry_point_runs_the_job_named_in_the_image(job, monkeypatch,
                                                         capsys):
    monkeypatch.setenv("EMBGEMMA_JOB", job)
    monkeypatch.setattr(sys, "argv", ["main.py", "--help"])
    runpy.run_path(str(TEMPLATES / "main.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert JOBS[job].__doc__.splitlines()[0] in out


def test_the_entry_point_refuses_an_unknown_job(monkeypatch):
    monkeypatch.setenv("EMBGEMMA_JOB", "mine_bitcoin")
    with pytest.raises(SystemExit, match="must be one of"):
        runpy.run_path(str(TEMPLATES / "main.py"), run_name="__main__")


def test_build_script_builds_pushes_and_registers_every_template(tmp_path):
    # docker and gcloud stand-ins that record how they were called.
    log = tmp_path / "calls"
    for tool in ("docker", "gcloud"):
        stub = tmp_path / tool
        stub.write_text(f'#!/bin/sh\necho "{tool} $*" >> {log}\n')
        stub.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}",
           "PROJECT": "p", "REGION": "europe-west4", "REPOSITORY": "r",
           "BUCKET": "b", "TAG": "v1"}
    subprocess.run([str(TEMPLATES / "build.sh"), "/models/gemma"], env=env,
                   check=True, timeout=60)
    calls = log.read_text().splitlines()
    assert len(calls) == 3 * len(JOBS)
    for job in JOBS:
        name = job.replace("_", "-")
        image = f"europe-west4-docker.pkg.dev/p/r/embgemma-{name}:v1"
        build = next(c for c in calls if f"JOB={job} " in c)
        assert "--build-context model_source=/models/gemma" in build
        assert f"--tag {image}" in build
        assert f"docker push {image}" in calls
        register = next(c for c in calls if f"gs://b/templates/{job}.json" in c)
        assert f"--metadata-file templates/{job}/metadata.json" in register
        assert f"--image {image}" in register
