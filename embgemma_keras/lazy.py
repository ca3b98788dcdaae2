"""Package attributes imported on first use (PEP 562).

A package lists which module defines each public name; `import package`
then costs nothing, and `package.Name` imports only Name's module.
"""

import importlib
from collections.abc import Callable


def lazy_exports(package: str, exports: dict[str, str]
                 ) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """`(__getattr__, __dir__)` for `package`, from {name: module}."""
    names = sorted(exports)

    def __getattr__(name):
        if name not in exports:
            raise AttributeError(
                f"module {package!r} has no attribute {name!r}")
        module = importlib.import_module(f"{package}.{exports[name]}")
        return getattr(module, name)

    def __dir__():
        return names

    return __getattr__, __dir__
