"""Every example in the README and on the docs site runs.

A page's fenced blocks run in document order, in a temporary directory
holding a copy of `examples/`, with `EMBGEMMA_MODEL` naming the tiny
random-weight model (which also stands in for `hf://google/embeddinggemma-300m`,
so no example downloads anything):

- a `python` block runs in a namespace shared by the page's blocks, since
  they continue each other;
- in a `bash` block, each `python -m pipelines.JOB ...` or
  `python -m embgemma_keras ...` command runs the job with its arguments
  (and what it names with `--output` must exist afterwards), and
  `export NAME=VALUE` sets a variable for the rest of the page. Setting up
  the virtual environment (`python3 -m venv`, `. .venv/bin/activate`,
  `pip install`) is what this test already runs in. Any other command
  fails the test, and so does a block that runs no job.

A block that cannot run here (it needs Dataflow, Docker, the runners'
builds, ...) is marked by a `<!-- not run: why -->` line just before it;
every other `python` and `bash` block must run. Blocks in other languages
(`json`, `text`) show data, never code to run.
"""

import dataclasses
import importlib
import os
import pathlib
import re
import shlex
import shutil

import pytest

from embgemma_keras.int8 import CACHE_ENV_VAR

ROOT = pathlib.Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
RUN = {"python", "bash"}
SHOWN = {"json", "text"}
HF_HANDLE = "hf://google/embeddinggemma-300m"
NOT_RUN = re.compile(r"<!-- not run: (?P<why>\S.*?) -->")
FENCE = re.compile(r"^(?P<indent>\s*)```(?P<lang>\S*)\s*$")
# The module whose `main(argv)` `python -m MODULE` calls.
ENTRY_POINTS = {"embgemma_keras": "embgemma_keras.cli"}
INSTALL_AND_RUN = (
    'python3 -m venv .venv && . .venv/bin/activate && pip install -e ".[test]"'
    " && python -m pipelines.dedup_corpus --input examples/corpus.jsonl"
    " --output dedup_out")
TEST_COMMAND = ". .venv/bin/activate && python -m pytest"
# Commands that set up the environment this test already runs in.
SETUP = (("python3", "-m", "venv"), (".", ".venv/bin/activate"),
         ("pip", "install"))


@dataclasses.dataclass
class Block:
    page: str
    line: int
    lang: str
    code: str
    not_run: str | None  # why, when the block is marked


def _blocks(page: pathlib.Path) -> list[Block]:
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks, i = [], 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if not fence:
            i += 1
            continue
        indent, start = fence["indent"], i
        i += 1
        body = []
        while lines[i].strip() != "```":
            body.append(lines[i][len(indent):])
            i += 1
        before = next((line.strip() for line in reversed(lines[:start])
                       if line.strip()), "")
        marker = NOT_RUN.fullmatch(before)
        blocks.append(Block(str(page.relative_to(ROOT)), start + 1,
                            fence["lang"], "\n".join(body) + "\n",
                            marker["why"] if marker else None))
        i += 1
    return blocks


def _runnable(page):
    return [block for block in _blocks(page)
            if block.lang in RUN and block.not_run is None]


def test_every_block_says_whether_it_runs():
    """A block's language decides whether it runs: an untagged block, or a
    `sh`/`console` one, would escape this test unseen."""
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        blocks = _blocks(page)
        for block in blocks:
            assert block.lang in RUN | SHOWN, (
                f"{block.page}:{block.line}: tag the block as one of "
                f"{sorted(RUN | SHOWN)}, not {block.lang!r}")
            assert block.not_run is None or block.lang in RUN, (
                f"{block.page}:{block.line}: a {block.lang} block never "
                f"runs; drop its 'not run' marker")
        # A marker that is not just before a block marks nothing.
        markers = sum(bool(NOT_RUN.fullmatch(line.strip()))
                      for line in text.splitlines())
        marked = sum(block.not_run is not None for block in blocks)
        assert markers == marked, (
            f"{page.name}: a '<!-- not run: ... -->' line must be just "
            f"before the block it marks")


def test_the_readme_keeps_the_two_commands():
    """A new user runs the first (and this test runs its job); CI runs the
    second (`.ci/run`)."""
    blocks = {block.code.strip(): block
              for block in _blocks(ROOT / "README.md")}
    assert blocks[INSTALL_AND_RUN].not_run is None
    assert TEST_COMMAND in blocks


def test_the_readme_links_resolve():
    """The docs site is read from the README's links; each must exist."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    targets = re.findall(r"\]\((?!https?://)([^)#\s]+)", text)
    assert targets
    missing = [target for target in targets if not (ROOT / target).exists()]
    assert not missing


def _commands(code):
    """Each command of a bash block, as its words."""
    for line in code.replace("\\\n", " ").splitlines():
        command = []
        for word in shlex.split(line, comments=True):
            if word in ("&&", ";"):
                yield command
                command = []
            else:
                command.append(word)
        if command:
            yield command


def _run_job(module, args):
    entry = importlib.import_module(ENTRY_POINTS.get(module, module))
    try:
        status = entry.main(args)
    except SystemExit as stop:
        status = stop.code
    shown = shlex.join(["python", "-m", module, *args])
    assert status in (None, 0), f"`{shown}` exited with {status}"
    if "--output" in args:
        output = args[args.index("--output") + 1]
        assert pathlib.Path(output).exists(), f"`{shown}` wrote no {output}"


def _run_bash(block, code, monkeypatch):
    jobs = 0
    for words in _commands(code):
        words = [os.path.expandvars(word) for word in words]
        where = f"{block.page}:{block.line}: `{shlex.join(words)}`"
        if words[0] == "export":
            for assignment in words[1:]:
                name, _, value = assignment.partition("=")
                monkeypatch.setenv(name, value)
        elif words[:2] == ["python", "-m"] and (
                words[2].startswith("pipelines.")
                or words[2] == "embgemma_keras"):
            _run_job(words[2], words[3:])
            jobs += 1
        else:
            assert any(tuple(words[:len(setup)]) == setup
                       for setup in SETUP), (
                f"{where} cannot run here: mark its block "
                f"'<!-- not run: why -->'")
    assert jobs, (f"{block.page}:{block.line}: the block runs no job; mark "
                  f"it '<!-- not run: why -->'")


@pytest.mark.slow  # each page runs whole jobs
@pytest.mark.parametrize(
    "page", [page for page in PAGES if _runnable(page)],
    ids=lambda page: str(page.relative_to(ROOT)))
def test_the_examples_of_a_page_run(page, tiny_preset, tmp_path,
                                    monkeypatch):
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PWD", str(tmp_path))
    monkeypatch.setenv("EMBGEMMA_MODEL", str(tiny_preset))
    # int8 programs an example makes go here, not into the user's cache.
    monkeypatch.setenv(CACHE_ENV_VAR, str(tmp_path / "cache"))
    namespace = {"__name__": "docs_example"}
    for block in _runnable(page):
        code = block.code.replace(HF_HANDLE, str(tiny_preset))
        if block.lang == "python":
            exec(compile(code, f"{block.page}:{block.line}", "exec"),
                 namespace)
        else:
            _run_bash(block, code, monkeypatch)
