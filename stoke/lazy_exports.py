"""A package's public names imported on first use (PEP 562): each name is defined in one of
the package's modules and imported when first read, so that importing the package costs
nothing until then (``import stoke`` imports neither NumPy nor Keras; a worker that loads one
module of ``stoke.accelerate`` does not import the trainer's side with it).

    __getattr__, __dir__ = lazy_attributes(__name__, globals(), {"accelerate": "stoke.accelerate.entry"})

``dir(package)`` lists the names of its ``__all__`` as if imported; a name read once is
bound in the package, so the next read does not come here.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_attributes(
    package: str,
    namespace: dict[str, Any],
    exports: dict[str, str],
    built_by: dict[str, str] | None = None,
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The module ``__getattr__`` and ``__dir__`` of ``package`` (its ``globals()`` are
    ``namespace``): ``exports`` maps each public name to the module that defines it;
    ``built_by`` names, for a value built on first use (a class that subclasses Keras'), the
    function of that module that returns it."""
    built_by = built_by or {}

    def __getattr__(name: str) -> Any:
        module_name = exports.get(name)
        if module_name is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = importlib.import_module(module_name)
        value = getattr(module, built_by[name])() if name in built_by else getattr(module, name)
        namespace[name] = value  # the next read finds it without __getattr__
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(namespace.get("__all__", ())))

    return __getattr__, __dir__
