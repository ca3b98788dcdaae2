import subprocess
import sys

import numpy as np
import objsize
import pytest
from apache_beam.runners.worker.statecache import get_deep_size

from transforms.state_cache import skip_module_scan


class _Entry:
    def __init__(self, vector):
        self.vector = vector
        self.label = "spam"


VALUES = [
    ("r1", b"\x00" * 512, 1_700_000_000_000_000),
    [("r1", b"\x01" * 1536, 5), ("r2", b"\x02" * 1536, 6)],
    {"id": "r1", "text": "hello", "labels": {"spam": {"score": 0.5}}},
    np.ones((4, 768), np.float32),
    _Entry(np.zeros(3)),
    [len, np, _Entry],  # a function, a module and a class: never measured
]


def test_weights_are_the_same_without_the_module_scan(monkeypatch):
    with_scan = [get_deep_size(value) for value in VALUES]
    monkeypatch.setattr(objsize, "default_settings", objsize.default_settings)
    skip_module_scan()
    assert objsize.default_settings.exclude_modules_globals is False
    assert [get_deep_size(value) for value in VALUES] == with_scan
    skip_module_scan()  # idempotent
    assert objsize.default_settings.exclude_modules_globals is False


@pytest.mark.slow
def test_the_stateful_dofns_turn_the_scan_off_in_their_worker():
    # A fresh interpreter: the DoFn's setup is what changes the setting.
    code = ("import objsize\n"
            "from transforms.dedup.streaming import _JoinVerdicts\n"
            "assert objsize.default_settings.exclude_modules_globals\n"
            "_JoinVerdicts(1, {'lexical': 0}).setup()\n"
            "print(objsize.default_settings.exclude_modules_globals)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True,
                            text=True, timeout=120, check=True)
    assert result.stdout.strip() == "False"


@pytest.mark.slow
def test_jobs_run_the_local_worker_without_a_state_cache(monkeypatch,
                                                         tmp_path):
    from apache_beam.runners.portability.fn_api_runner import worker_handlers

    from pipelines import dedup_corpus

    monkeypatch.setattr(worker_handlers, "STATE_CACHE_SIZE_MB", 100)
    sizes = []
    cache = worker_handlers.StateCache
    monkeypatch.setattr(worker_handlers, "StateCache",
                        lambda size: sizes.append(size) or cache(size))
    # The FnApiRunner by name: the DirectRunner runs a job on Prism instead
    # when it can start one (as it can once tests/runners have run).
    dedup_corpus.main(["--input", "examples/corpus.jsonl", "--output",
                       str(tmp_path / "out"), "--no_semantic", "--runner",
                       "apache_beam.runners.portability.fn_api_runner."
                       "FnApiRunner"])
    assert sizes and set(sizes) == {0}
    assert not cache(sizes[0]).is_cache_enabled()
