"""Lazy package exports (the scientific-Python SPEC 1 pattern): a package lists its public names and the module each
comes from, and a name's module is imported when the name is first used.

This keeps `import cdtm_hf.<package>` cheap: a command line parses and checks its arguments before `datasets`, the
Trainer or a backbone library is imported.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, exports: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """`(__getattr__, __dir__)` for a package whose public `exports` map a name to its module (relative, `.x`).

    Args:
        package (`str`): the package's `__name__`.
        exports (`Mapping[str, str]`): public name -> the module that defines it, relative to `package`.
    """

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            from ._compat import removed_attribute

            return removed_attribute(package, name)
        value = getattr(importlib.import_module(module, package), name)
        importlib.import_module(package).__dict__[name] = value  # later lookups skip __getattr__
        return value

    def __dir__() -> list[str]:
        return sorted(set(exports) | set(importlib.import_module(package).__dict__))

    return __getattr__, __dir__
