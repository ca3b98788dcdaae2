"""SECURITY.md's promise: nothing a user supplies is unpickled or run."""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SOURCES = sorted(path for package in ("embgemma_keras", "transforms",
                                      "pipelines", "templates")
                 for path in (ROOT / package).rglob("*.py"))
UNSAFE_MODULES = {"pickle", "cPickle", "dill", "joblib", "marshal", "shelve",
                  "cloudpickle"}
UNSAFE_CALLS = {"eval", "exec", "compile", "__import__"}


def _violations(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name.split(".")[0] for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [(node.module or "").split(".")[0]]
        else:
            names = []
        yield from (f"imports {n}" for n in names if n in UNSAFE_MODULES)
        if isinstance(node, ast.Call):
            if isinstance(node.func, ast.Name) and node.func.id in UNSAFE_CALLS:
                yield f"calls {node.func.id}()"
            for keyword in node.keywords:
                if keyword.arg == "allow_pickle" and not (
                        isinstance(keyword.value, ast.Constant)
                        and keyword.value.value is False):
                    yield "passes allow_pickle other than False"


def test_the_scan_catches_what_it_looks_for():
    bad = "import pickle\nfrom joblib import load\neval('1')\n" \
          "np.load(f, allow_pickle=True)\n"
    assert len(list(_violations(ast.parse(bad)))) == 4


@pytest.mark.parametrize("path", SOURCES,
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_no_code_path_unpickles_or_evaluates(path):
    assert not list(_violations(ast.parse(path.read_text()))), path
