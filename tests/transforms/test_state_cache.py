import subprocess
import sys

import numpy as np
import objsize
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


def test_the_stateful_dofns_turn_the_scan_off_in_their_worker():
    # A fresh interpreter: the DoFn's setup is what changes the setting.
    code = ("import objsize\n"
            "from transforms.streaming_dedup import _JoinVerdicts\n"
            "assert objsize.default_settings.exclude_modules_globals\n"
            "_JoinVerdicts(1, ['lexical']).setup()\n"
            "print(objsize.default_settings.exclude_modules_globals)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True,
                            text=True, timeout=120, check=True)
    assert result.stdout.strip() == "False"
