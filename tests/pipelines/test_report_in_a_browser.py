"""dedup_corpus's report.html, rendered by a real browser (headless
Chromium, Debian's `chromium` package, which `.ci/run` installs).

The page must work on its own: no scripts, styles or fonts from a network
(Chromium runs with every host name unresolvable, so a page that needed a
CDN would show its plots missing).
"""

import os
import pathlib
import re
import shutil
import subprocess

import pytest
from PIL import Image

from pipelines import dedup_corpus

pytestmark = pytest.mark.slow

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples"
BAR_COLOUR = (0x48, 0x78, 0xa8)  # the plots' bars
# No network, no first-run services: a page that loads anything remote fails.
OFFLINE = ["--headless", "--no-sandbox", "--disable-gpu",
           "--no-first-run", "--disable-background-networking",
           "--disable-component-update", "--disable-sync",
           "--host-resolver-rules=MAP * ~NOTFOUND"]


@pytest.fixture(scope="module")
def chromium():
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        reason = "no chromium on PATH (Debian: apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return binary


@pytest.fixture(scope="module")
def report(tiny_preset, tmp_path_factory):
    out = tmp_path_factory.mktemp("dedup")
    dedup_corpus.main(["--input", str(EXAMPLES / "corpus.jsonl"),
                       "--output", str(out), "--model", tiny_preset])
    return out / "report.html"


def _chromium(binary, tmp_path, *args):
    return subprocess.run(
        [binary, *OFFLINE, f"--user-data-dir={tmp_path / 'profile'}", *args],
        capture_output=True, text=True, timeout=120, check=True)


def test_the_report_renders_counts_plots_and_pairs(chromium, report,
                                                   tmp_path):
    dom = _chromium(chromium, tmp_path, "--dump-dom",
                    report.as_uri()).stdout
    assert "210 records in:" in dom
    assert "records / s" in dom and "corpus.jsonl" in dom  # the run
    assert len(re.findall(r"<svg\b", dom)) >= 2
    assert "Example pairs" in dom
    assert not re.search(r"""(src|href)=["']?https?:""", dom)

    png = tmp_path / "report.png"
    _chromium(chromium, tmp_path, f"--screenshot={png}",
              "--window-size=1100,2400", report.as_uri())
    pixels = Image.open(png).convert("RGB").getdata()
    # The bars were drawn: thousands of pixels in their colour.
    assert sum(1 for p in pixels if p == BAR_COLOUR) > 2000
