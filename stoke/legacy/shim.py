"""Keras-2 training calls on Keras 3, fed by :func:`stoke.accelerate`.

Keras 3 rejects what Keras-2-era scripts pass: ``fit(..., workers=4,
use_multiprocessing=True, max_queue_size=10)`` (``TypeError: fit() got an unexpected keyword
argument 'workers'``) and ``fit_generator``/``evaluate_generator``/``predict_generator``
(``AttributeError``). :func:`install` patches ``keras.Model`` so that they work again:

- ``fit``/``evaluate``/``predict`` accept the three old arguments. A ``Sequence``/
  ``PyDataset`` or a generator given to them (as ``x`` or ``validation_data``) runs through
  ``stoke.accelerate``: ``workers`` becomes stoke's process workers (at most one per core),
  ``max_queue_size`` its ring depth; ``use_multiprocessing`` needs no translation (stoke
  uses processes when the dataset can be pickled, threads otherwise). For other data the
  old arguments are dropped, as Keras 2 ignored them.
- ``fit_generator``/``evaluate_generator``/``predict_generator`` call ``fit``/``evaluate``/
  ``predict`` with their arguments renamed.
- ``fit(shuffle=True)`` (the default) still shuffles a Sequence's batch order each epoch,
  seeded from Python's ``random`` (so ``keras.utils.set_random_seed`` makes it repeatable).

The first time the shim acts it prints, once, what to change in the script to run without
it. Owns nothing else: ``stoke run`` (``run.py``) installs it and runs the script.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import inspect
import os
import random
import sys
import threading
from typing import Any

LEGACY_ARGUMENTS = ("max_queue_size", "workers", "use_multiprocessing")
METHODS = ("fit", "evaluate", "predict", "fit_generator", "evaluate_generator",
           "predict_generator")

_lock = threading.Lock()
_state: dict[str, Any] = {"installed": False, "originals": {}, "told": False, "workers": "auto",
                          "finder": None, "quiet": False, "keras2_only": False}


def install(workers: int | str = "auto", quiet: bool = False, keras2_only: bool = False) -> None:
    """Patch ``keras.Model`` now if Keras is imported, else as soon as it is (so that a
    script can still choose its backend before importing Keras). ``workers``: stoke's
    workers for every accelerated dataset ("auto": what the script asked for, at most one
    per core). ``quiet``: do not print the note on what to change. ``keras2_only`` (the
    doctor): accelerate only what a Keras-2 call passes (``fit_generator`` and the like, or
    ``workers``/``use_multiprocessing``/``max_queue_size``); a plain Keras 3
    ``fit(generator)`` runs as the script wrote it, so the doctor measures the user's input."""
    with _lock:
        _state["workers"] = workers
        _state["quiet"] = quiet
        _state["keras2_only"] = keras2_only
        if _state["installed"]:
            return
        _state["installed"] = True
        if "keras" in sys.modules:
            _patch(sys.modules["keras"])
        else:
            finder = _PatchOnImport()
            _state["finder"] = finder
            sys.meta_path.insert(0, finder)


def uninstall() -> None:
    """Undo :func:`install`."""
    with _lock:
        finder = _state["finder"]
        if finder is not None and finder in sys.meta_path:
            sys.meta_path.remove(finder)
        _state["finder"] = None
        originals = _state["originals"]
        if originals and "keras" in sys.modules:
            model = sys.modules["keras"].Model
            for name, original in originals.items():
                if original is None:
                    if name in model.__dict__:
                        delattr(model, name)
                else:
                    setattr(model, name, original)
        _state["originals"] = {}
        _state["installed"] = False


def installed() -> bool:
    return _state["installed"]


class _PatchOnImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself: when ``keras`` is imported, wraps its loader so the patch is
    applied right after the package has run."""

    def find_spec(self, name, path=None, target=None):
        if name != "keras":
            return None
        sys.meta_path.remove(self)
        _state["finder"] = None
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader
        exec_module = loader.exec_module

        def exec_and_patch(module):
            exec_module(module)
            with _lock:
                if _state["installed"]:
                    _patch(module)

        loader.exec_module = exec_and_patch
        return spec


def _patch(keras) -> None:
    model = keras.Model
    if _state["originals"]:
        return
    originals = {name: model.__dict__.get(name) for name in METHODS}
    _state["originals"] = originals
    resolved = {name: getattr(model, name, None) for name in ("fit", "evaluate", "predict")}

    def fit(self, *args, **kwargs):
        return _run(resolved["fit"], "fit", self, args, kwargs)

    def evaluate(self, *args, **kwargs):
        return _run(resolved["evaluate"], "evaluate", self, args, kwargs)

    def predict(self, *args, **kwargs):
        return _run(resolved["predict"], "predict", self, args, kwargs)

    def fit_generator(self, generator, steps_per_epoch=None, epochs=1, verbose=1,
                      callbacks=None, validation_data=None, validation_steps=None,
                      validation_freq=1, class_weight=None, max_queue_size=10, workers=1,
                      use_multiprocessing=False, shuffle=True, initial_epoch=0):
        """Keras 2's ``fit_generator``, as ``fit`` (Keras 2 did the same)."""
        _tell("fit_generator", {})
        return self.fit(generator, steps_per_epoch=steps_per_epoch, epochs=epochs,
                        verbose=verbose, callbacks=callbacks, validation_data=validation_data,
                        validation_steps=validation_steps, validation_freq=validation_freq,
                        class_weight=class_weight, max_queue_size=max_queue_size,
                        workers=workers, use_multiprocessing=use_multiprocessing,
                        shuffle=shuffle, initial_epoch=initial_epoch)

    def evaluate_generator(self, generator, steps=None, callbacks=None, max_queue_size=10,
                           workers=1, use_multiprocessing=False, verbose=0):
        """Keras 2's ``evaluate_generator``, as ``evaluate``."""
        _tell("evaluate_generator", {})
        return self.evaluate(generator, steps=steps, callbacks=callbacks, verbose=verbose,
                             max_queue_size=max_queue_size, workers=workers,
                             use_multiprocessing=use_multiprocessing)

    def predict_generator(self, generator, steps=None, callbacks=None, max_queue_size=10,
                          workers=1, use_multiprocessing=False, verbose=0):
        """Keras 2's ``predict_generator``, as ``predict``."""
        _tell("predict_generator", {})
        return self.predict(generator, steps=steps, callbacks=callbacks, verbose=verbose,
                            max_queue_size=max_queue_size, workers=workers,
                            use_multiprocessing=use_multiprocessing)

    for function in (fit, evaluate, predict):
        original = resolved[function.__name__]
        function.__doc__ = original.__doc__
        function.__wrapped__ = original
    patched = dict(fit=fit, evaluate=evaluate, predict=predict, fit_generator=fit_generator,
                   evaluate_generator=evaluate_generator, predict_generator=predict_generator)
    for name, function in patched.items():
        function.__qualname__ = f"Model.{name}"
        setattr(model, name, function)


def _run(original, name: str, model, args: tuple, kwargs: dict):
    """Call Keras 3's ``original`` with the old arguments taken out and Sequences or
    generators accelerated; close what was accelerated when it returns."""
    legacy = {k: kwargs.pop(k) for k in LEGACY_ARGUMENTS if k in kwargs}
    try:
        bound = inspect.signature(original).bind(model, *args, **kwargs)
    except TypeError as exc:
        raise TypeError(f"{name}(): {exc}") from None
    arguments = bound.arguments
    opened = []
    try:
        route = bool(legacy) or not _state["keras2_only"]
        x = arguments.get("x")
        if route and _routable(x):
            steps = arguments.get("steps_per_epoch" if name == "fit" else "steps")
            shuffle = bool(arguments.get("shuffle", True)) if name == "fit" else False
            arguments["x"] = _accelerated(x, legacy, shuffle, steps, opened)
        validation = arguments.get("validation_data")
        if route and name == "fit" and _routable(validation):
            arguments["validation_data"] = _accelerated(
                validation, legacy, False, arguments.get("validation_steps"), opened)
        if legacy or opened:
            _tell(name, legacy)
        return original(*bound.args, **bound.kwargs)
    finally:
        for accelerated in opened:
            accelerated.close()


def _routable(data: Any) -> bool:
    from stoke.accelerate import AcceleratedGenerator, AcceleratedSequence

    if data is None or isinstance(data, (AcceleratedSequence, AcceleratedGenerator)):
        return False
    if inspect.isgenerator(data):
        return True
    keras = sys.modules.get("keras")
    return keras is not None and isinstance(data, keras.utils.PyDataset)


def _accelerated(data: Any, legacy: dict, shuffle: bool, steps: int | None, opened: list):
    from stoke.accelerate import accelerate
    from stoke.loader import available_cores

    workers = _state["workers"]
    if workers == "auto":
        asked = legacy.get("workers", getattr(data, "_workers", None))
        workers = min(asked, available_cores()) if isinstance(asked, int) and asked > 1 \
            else available_cores()
    queue = legacy.get("max_queue_size")
    ring_slots = max(2, int(queue)) if isinstance(queue, int) and queue > 0 else None
    if inspect.isgenerator(data):
        accelerated = accelerate(data, steps_per_epoch=steps, ring_slots=ring_slots)
    else:
        accelerated = accelerate(data, workers=workers, shuffle=shuffle,
                                 seed=random.getrandbits(31), ring_slots=ring_slots)
    opened.append(accelerated)
    return accelerated


def _tell(name: str, legacy: dict) -> None:
    """Print once what to change in the script so that it runs without the shim."""
    with _lock:
        if _state["told"] or _state["quiet"]:
            return
        _state["told"] = True
    where = _caller()
    if name.endswith("_generator"):
        used = f"model.{name}(...)"
    elif legacy:
        used = f"model.{name}(..., {', '.join(f'{k}={v!r}' for k, v in legacy.items())})"
    else:
        used = f"model.{name}(dataset)"
    print(
        f"stoke: {where}{used} ran through stoke.accelerate (Keras 3 has no "
        "fit_generator and no workers/use_multiprocessing/max_queue_size arguments).\n"
        "stoke: to run this script without `stoke run`, change:\n"
        "    model.fit(seq, workers=4, use_multiprocessing=True, max_queue_size=10, ...)\n"
        "        -> model.fit(stoke.accelerate(seq), ...)\n"
        "    model.fit_generator(gen(a), steps_per_epoch=n, ...)\n"
        "        -> model.fit(stoke.accelerate(gen, a, steps_per_epoch=n), ...)\n"
        "    model.evaluate_generator(gen(a), steps=n)  (predict_generator alike)\n"
        "        -> model.evaluate(stoke.accelerate(gen, a, steps_per_epoch=n))\n"
        "  (and `import stoke`; this note is printed once)",
        file=sys.stderr, flush=True)


def _caller() -> str:
    """``file:line: `` of the user's call, outside stoke and Keras."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    frame = sys._getframe(1)
    while frame is not None:
        filename = os.path.abspath(frame.f_code.co_filename)
        if not filename.startswith(here) and f"{os.sep}keras{os.sep}" not in filename:
            return f"{os.path.relpath(filename)}:{frame.f_lineno}: "
        frame = frame.f_back
    return ""
