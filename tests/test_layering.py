"""The three floors, arrows down, and where a module goes.

`pipelines/` (options and wiring: one module a job) -> `transforms/` (Beam
building blocks) -> `embgemma_keras/` (the Keras model and everything
Beam-free). TensorFlow is imported by the model modules alone, and only
when a model is loaded.

The placement rule: within a floor, a module lives in the subpackage of its
domain (`records`, `embedding`, `labels`, `clusters`, `dedup`, `index`),
named for its role; a floor's root holds only what every domain shares
(settings, artifacts, progress) and, in `embgemma_keras/`, the model and
what serves it (the embedding domain), in `transforms/`, the graphs that
span domains (`tagging`). A domain keeps its name on every floor; a module
name appears on one floor only.
"""

import ast
import json
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
FLOORS = ("pipelines", "transforms", "embgemma_keras")
# Modules that build or load the model; nothing else imports TensorFlow.
MODEL_MODULES = {"embgemma_keras.backend", "embgemma_keras.embedding_gemma",
                 "embgemma_keras.int8",
                 "embgemma_keras.loading", "embgemma_keras.tiny",
                 "embgemma_keras.cli", "embgemma_keras.__main__"}
HEAVY = ("tensorflow", "keras", "keras_hub")
DOMAINS = {"records", "embedding", "labels", "clusters", "dedup", "index"}
TOOLING = ("local_runners", "benchmarks", "tests")


def _modules(floor):
    for path in sorted((ROOT / floor).rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield ".".join(parts), ast.parse(path.read_text())


def test_subpackages_are_domains_and_module_names_are_on_one_floor():
    floors_of = {}
    for floor in FLOORS:
        for path in (ROOT / floor).rglob("*.py"):
            if path.parent != ROOT / floor:
                assert path.parent.name in DOMAINS, (
                    f"{path.relative_to(ROOT)}: a subpackage is a domain, "
                    f"one of {sorted(DOMAINS)}")
            if path.stem not in ("__init__", "__main__"):
                floors_of.setdefault(path.stem, set()).add(floor)
    twice = {name: sorted(floors) for name, floors in floors_of.items()
             if len(floors) > 1}
    assert not twice, f"module names on two floors: {twice}"


def _top_level_imports(tree):
    """Modules imported when the module is imported (not inside functions)."""
    for node in tree.body:
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module


@pytest.mark.parametrize("floor", FLOORS)
def test_no_module_imports_from_a_floor_above_it(floor):
    above = FLOORS[:FLOORS.index(floor)]
    for name, tree in _modules(floor):
        for node in ast.walk(tree):
            modules = []
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                modules = [node.module]
            for module in modules:
                root = module.split(".")[0]
                assert root not in above, f"{name} imports {module}"
                # Tooling sits beside the floors, never under them.
                assert root not in TOOLING, f"{name} imports {module}"
                if floor == "embgemma_keras":
                    assert root != "apache_beam", f"{name} imports Beam"


@pytest.mark.parametrize("floor", FLOORS)
def test_only_the_model_modules_import_tensorflow(floor):
    for name, tree in _modules(floor):
        if name in MODEL_MODULES:
            continue
        for module in _top_level_imports(tree):
            assert module.split(".")[0] not in HEAVY, f"{name} imports {module}"
            assert module not in MODEL_MODULES, f"{name} imports {module}"


def test_pipelines_hold_no_transforms_or_dofns():
    beam_blocks = {"PTransform", "DoFn", "CombineFn",
                   "PTransformWithSideInputs"}
    for name, tree in _modules("pipelines"):
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                bases = {ast.unparse(base).split(".")[-1]
                         for base in node.bases}
                assert not bases & beam_blocks, (
                    f"{name}.{node.name} derives from {bases}: Beam "
                    "building blocks belong in transforms/")


def _loaded_after(code):
    """The heavy packages loaded in a fresh interpreter after `code`."""
    probe = (f"{code}\nimport sys, json\nprint(json.dumps("
             f"[m for m in {HEAVY!r} if m in sys.modules]))")
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_importing_every_beam_module_loads_no_tensorflow():
    modules = [name for floor in ("transforms", "pipelines")
               for name, _ in _modules(floor)]
    imports = "\n".join(f"import {name}" for name in modules)
    assert _loaded_after(imports) == []


@pytest.mark.slow
def test_a_dedup_without_the_model_runs_without_tensorflow(tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("\n".join(json.dumps({"id": str(i), "text": text})
                                for i, text in enumerate(
                                    ["a cat sat on the mat", "A cat sat on "
                                     "the mat", "dogs bark at night"])))
    out = tmp_path / "out"
    assert _loaded_after(
        "from pipelines import dedup_corpus\n"
        f"dedup_corpus.main(['--input', {str(corpus)!r}, '--output', "
        f"{str(out)!r}, '--no_semantic'])") == []
    report = json.loads((out / "report.json").read_text())
    assert report["counts"]["unique"] == 2
    assert report["counts"]["duplicates_by_kind"]["exact"] == 1


@pytest.mark.slow
def test_the_embedding_model_package_loads_tensorflow_only_for_the_model(
        tiny_preset):
    assert _loaded_after("from embgemma_keras import MinHasher, "
                         "RecordParser, load_head, Task, EmbeddingGemma") == []
    assert "tensorflow" in _loaded_after(
        "from embgemma_keras import EmbeddingGemma\n"
        f"EmbeddingGemma.from_preset({tiny_preset!r})")
