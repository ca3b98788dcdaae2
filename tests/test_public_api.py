"""The public API is typed: every public function, and every public method
of a public class, annotates its parameters and its return.

Beam calls a DoFn's or CombineFn's methods and a PTransform's `expand`
with the element types it infers, and an annotation there is a type hint
Beam enforces; those methods are left to Beam's own inference.
"""

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
FLOORS = ("embgemma_keras", "transforms", "pipelines")
BEAM_CALLED = {"process", "process_batch", "setup", "start_bundle",
               "finish_bundle", "teardown", "expand", "create_accumulator",
               "add_input", "add_inputs", "merge_accumulators",
               "extract_output", "compact"}


def _unannotated(function: ast.FunctionDef) -> list[str]:
    args = function.args
    params = [*args.posonlyargs, *args.args, *args.kwonlyargs]
    if params and params[0].arg in ("self", "cls"):
        params = params[1:]
    params += [a for a in (args.vararg, args.kwarg) if a is not None]
    missing = [p.arg for p in params if p.annotation is None]
    if function.returns is None and function.name != "__init__":
        missing.append("return")
    return missing


def _public_functions(tree: ast.Module):
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and not node.name.startswith("_"):
            yield node.name, node
        elif isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
            for method in node.body:
                if (isinstance(method, ast.FunctionDef)
                        and method.name not in BEAM_CALLED
                        and (method.name == "__init__"
                             or not method.name.startswith("_"))):
                    yield f"{node.name}.{method.name}", method


def test_every_public_function_is_annotated():
    missing = []
    for floor in FLOORS:
        for path in sorted((ROOT / floor).rglob("*.py")):
            tree = ast.parse(path.read_text())
            for name, function in _public_functions(tree):
                if gaps := _unannotated(function):
                    where = path.relative_to(ROOT)
                    missing.append(f"{where}:{function.lineno} {name} {gaps}")
    assert not missing, "unannotated public API:\n" + "\n".join(missing)
