"""Running code right after a module has been imported, however it is imported.

Owns :func:`when_imported`. A finder on ``sys.meta_path`` wraps the loader of the module's
spec so that a callback runs once the module's code has run. It stays on ``sys.meta_path``
until the module really was executed: a mere lookup (TensorFlow's ``__init__`` calls
``importlib.util.find_spec("keras")`` and throws the result away) does not consume it.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
import threading
from collections.abc import Callable

_lock = threading.RLock()


class _AfterImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself: wraps the loader of ``name``'s spec found by the others."""

    def __init__(self, name: str, callback: Callable[[object], None]) -> None:
        self.name = name
        self.callback = callback
        self.looking = False
        self.done = False

    def find_spec(self, fullname, path=None, target=None):
        if fullname != self.name or self.looking or self.done:
            return None
        self.looking = True
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            self.looking = False
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        loader = spec.loader
        exec_module = loader.exec_module
        finder = self

        def exec_module_then_call(module):
            exec_module(module)
            finder.fire(module)

        loader.exec_module = exec_module_then_call
        return spec

    def fire(self, module) -> None:
        with _lock:
            if self.done:
                return
            self.done = True
            if self in sys.meta_path:
                sys.meta_path.remove(self)
        self.callback(module)

    def cancel(self) -> None:
        with _lock:
            self.done = True
            if self in sys.meta_path:
                sys.meta_path.remove(self)


def when_imported(name: str, callback: Callable[[object], None]) -> Callable[[], None]:
    """Call ``callback(module)`` once ``name`` is imported: now if it already is, else right
    after its code has run. Returns a function that cancels a callback not yet made."""
    with _lock:
        module = sys.modules.get(name)
        if module is None:
            finder = _AfterImport(name, callback)
            sys.meta_path.insert(0, finder)
            return finder.cancel
    callback(module)
    return lambda: None
