"""Keras-2 training calls on Keras 3, fed by :func:`stoke.accelerate`.

Keras 3 rejects what Keras-2-era scripts pass: ``fit(..., workers=4,
use_multiprocessing=True, max_queue_size=10)`` (``TypeError: fit() got an unexpected keyword
argument 'workers'``), ``fit_generator``/``evaluate_generator``/``predict_generator``
(``AttributeError``) and ``from keras.preprocessing.image import ImageDataGenerator``
(``ImportError``). :func:`install` patches Keras as soon as it is imported (``import keras``,
``from keras import ...``, ``tf.keras``, ``from tensorflow import keras``, before or after
stoke, TensorFlow first or not at all) so that they work again:

- ``fit``/``evaluate``/``predict`` accept the three old arguments. A ``Sequence``/
  ``PyDataset``, one of Keras' legacy image iterators (``ImageDataGenerator.flow*``) or a
  generator given to them (as ``x`` or ``validation_data``) runs through
  ``stoke.accelerate``: stoke's process workers are tuned by measurement as ``to_keras``'
  are, ``workers`` capping the cores they may take (at most the cores this process may
  use), ``max_queue_size`` their ring depth; ``use_multiprocessing`` needs no translation (stoke
  uses processes when the dataset can be pickled, threads otherwise). For other data
  (arrays, a ``tf.data`` dataset) the old arguments are dropped, as Keras 2 ignored them.
- ``fit_generator``/``evaluate_generator``/``predict_generator`` call ``fit``/``evaluate``/
  ``predict`` with their arguments renamed. A Sequence given to such a Keras-2 call with
  steps other than its length is read as Keras 2's enqueuer read it, one stream of passes
  (each epoch the next ``steps_per_epoch`` batches; ``AcceleratedSequence.endless``, or
  :mod:`.keras2_stream` when nothing is fed by stoke).
- ``fit(shuffle=True)`` (the default) still shuffles a Sequence's batch order each epoch,
  seeded from Python's ``random`` (so ``keras.utils.set_random_seed`` makes it repeatable).
- ``keras.preprocessing.image``/``.sequence``/``.text`` get back what Keras 3 still ships
  under ``tf.keras`` only (``ImageDataGenerator``, ``TimeseriesGenerator``, ``Tokenizer``).
- optimizers take Keras 2's ``lr=`` and ``decay=`` (:mod:`.optimizers`); a float step count
  (``steps_per_epoch=len(x) / 32``) is counted as Keras 2 did (its ceiling).
- Keras-2 APIs with no Keras 3 equivalent (``predict_classes``, Keras 1's ``nb_epoch``...)
  raise :class:`Keras2CallError`, naming the call, its line and what to write instead.

``install(keras2_only=True)`` (``stoke doctor``, ``stoke run --no-accelerate``) translates
the calls but feeds nothing through ``stoke.accelerate``: the script's data runs in the
trainer as Keras 3 runs it, so the doctor measures what the user wrote; only a Sequence
given to a Keras-2 ``fit`` with steps other than its length is read as Keras 2 read it, one
stream of passes (:mod:`.keras2_stream`), so that every mode trains Keras 2's steps.
:func:`conversions` lists each distinct call translated
(:class:`~stoke.legacy.conversions.Conversion`). The first time a call is translated its
line and replacement are printed, once (``stoke run`` names the script's own lines), on lines
of their own where no progress bar is drawn: before the call starts, or, for a line that
comes while a training call runs (an optimizer made in a callback, a call from another
thread), held until the last running call returns.
"""

from __future__ import annotations

import inspect
import random
import sys
import threading
import warnings
from typing import Any

from stoke.errors import StokeError, StokeWarning
from stoke.legacy import conversions as _records
from stoke.legacy.conversions import Conversion, call_site, user_frame, where
from stoke.legacy.imports import when_imported

LEGACY_ARGUMENTS = ("max_queue_size", "workers", "use_multiprocessing")
METHODS = ("fit", "evaluate", "predict", "fit_generator", "evaluate_generator",
           "predict_generator")
# Keras 1/2 arguments that Keras 3 has no equivalent for: name -> what to write instead
REMOVED_ARGUMENTS = {
    "nb_epoch": "epochs=...",
    "samples_per_epoch": "steps_per_epoch=samples // batch_size",
    "nb_val_samples": "validation_steps=samples // batch_size",
    "val_samples": "steps=samples // batch_size",
    "nb_worker": "workers=... (or nothing: stoke picks the workers)",
    "pickle_safe": "use_multiprocessing=... (or nothing)",
}
# Model methods that Keras 3 dropped without a method of the same meaning
REMOVED_METHODS = {
    "predict_classes": "np.argmax(model.predict(x), axis=-1) (a sigmoid output: "
                       "(model.predict(x) > 0.5).astype('int32'))",
    "predict_proba": "model.predict(x)",
}
NOTE_HEADER = "stoke: to run this script without `stoke run`, change:"


class Keras2CallError(StokeError, TypeError):
    """A Keras-2 call that stoke cannot translate to Keras 3; the message says what to
    write instead."""


_lock = threading.RLock()
_local = threading.local()  # .depth: inside a translated call (fit_generator -> fit)
_state: dict[str, Any] = {"installed": False, "originals": {}, "told": False, "workers": "auto",
                          "cancel": None, "quiet": False, "keras2_only": False,
                          "show_tuning": False,
                          "added": [], "optimizer": None,
                          "running": 0, "held": []}  # training calls running (all threads)


def install(workers: int | str = "auto", quiet: bool = False, keras2_only: bool = False,
            show_tuning: bool = False) -> None:
    """Patch Keras now if it is imported, else as soon as it is (so that a script can still
    choose its backend before importing Keras). ``workers``: stoke's workers for every
    accelerated dataset ("auto": tuned by measurement, within the cores the script asked
    for with ``workers=``, at most the cores this process may use).
    ``quiet``: do not print what to change. ``keras2_only`` (the doctor): translate the
    Keras-2 calls but do not feed their data through ``stoke.accelerate``. ``show_tuning``:
    when a call returns, print what fed each of its datasets and why (``acc.tuning()``)."""
    with _lock:
        _state["workers"] = workers
        _state["quiet"] = quiet
        _state["show_tuning"] = show_tuning
        _state["keras2_only"] = keras2_only
        if _state["installed"]:
            return
        _state["installed"] = True
    _state["cancel"] = when_imported("keras", _patch_if_installed)


def uninstall() -> None:
    """Undo :func:`install` (and forget the conversions)."""
    with _lock:
        cancel = _state["cancel"]
        if cancel is not None:
            cancel()
        _state["cancel"] = None
        originals = _state["originals"]
        if originals and "keras" in sys.modules:
            model = sys.modules["keras"].Model
            for name, original in originals.items():
                if original is None:
                    if name in model.__dict__:
                        delattr(model, name)
                else:
                    setattr(model, name, original)
        for owner, name in _state["added"]:
            if name in vars(owner):
                delattr(owner, name)
        if _state["optimizer"] is not None:
            cls, original_init = _state["optimizer"]
            cls.__init__ = original_init
        _state.update(originals={}, added=[], optimizer=None, installed=False, told=False,
                      show_tuning=False, held=[])
        _noted_other.clear()
        _records.forget()


def installed() -> bool:
    return _state["installed"]


def conversions() -> list[Conversion]:
    """Each distinct Keras-2 call translated so far (one record per file, line and
    method), in the order first seen."""
    return _records.recorded()


# -- patching ---------------------------------------------------------------------------------
def _patch_if_installed(keras) -> None:
    """Runs inside the script's ``import keras``: a failure here must not fail that import
    (the script then meets Keras 3's own errors), so it is a warning."""
    with _lock:
        if _state["installed"] and not _state["originals"]:
            try:
                _patch(keras)
            except Exception as exc:  # noqa: BLE001 - explained in the warning
                warnings.warn(
                    f"stoke could not patch Keras {getattr(keras, '__version__', '?')} for "
                    f"Keras-2 calls ({type(exc).__name__}: {exc}); the script runs on plain "
                    "Keras 3. Please report this with your Keras version.", StokeWarning,
                    stacklevel=2)


def _patch(keras) -> None:
    from stoke.legacy.optimizers import patch_optimizers
    from stoke.legacy.preprocessing import restore_keras2_paths

    model = keras.Model
    originals = {name: model.__dict__.get(name) for name in (*METHODS, *REMOVED_METHODS)}
    _state["originals"] = originals
    resolved = {name: getattr(model, name, None) for name in ("fit", "evaluate", "predict")}

    def fit(self, *args, **kwargs):
        return _call(resolved["fit"], "fit", "fit", self, args, kwargs, {})

    def evaluate(self, *args, **kwargs):
        return _call(resolved["evaluate"], "evaluate", "evaluate", self, args, kwargs, {})

    def predict(self, *args, **kwargs):
        return _call(resolved["predict"], "predict", "predict", self, args, kwargs, {})

    def fit_generator(self, *args, **kwargs):
        """Keras 2's ``fit_generator``, as ``fit`` (Keras 2 did the same)."""
        return _generator_call(resolved["fit"], "fit_generator", self, args, kwargs)

    def evaluate_generator(self, *args, **kwargs):
        """Keras 2's ``evaluate_generator``, as ``evaluate``."""
        return _generator_call(resolved["evaluate"], "evaluate_generator", self, args, kwargs)

    def predict_generator(self, *args, **kwargs):
        """Keras 2's ``predict_generator``, as ``predict``."""
        return _generator_call(resolved["predict"], "predict_generator", self, args, kwargs)

    for function in (fit, evaluate, predict):
        original = resolved[function.__name__]
        function.__doc__ = original.__doc__
        function.__wrapped__ = original
    patched = dict(fit=fit, evaluate=evaluate, predict=predict, fit_generator=fit_generator,
                   evaluate_generator=evaluate_generator, predict_generator=predict_generator)
    for name in REMOVED_METHODS:
        patched[name] = _removed_method(name)
    for name, function in patched.items():
        function.__qualname__ = f"Model.{name}"
        setattr(model, name, function)
    _state["added"] = restore_keras2_paths(keras)
    _state["optimizer"] = patch_optimizers(keras, _note_other)


def _removed_method(name: str):
    def removed(self, *args, **kwargs):
        frame = user_frame(sys._getframe(1))
        filename, lineno, source = call_site(frame)
        raise Keras2CallError(
            f"{filename}:{lineno}: `{source or f'model.{name}(...)'}`: Keras 3 has no "
            f"Model.{name} (removed in Keras 2.6), and stoke cannot translate it. Write "
            f"instead: {REMOVED_METHODS[name]}.")

    return removed


# Keras 2's signatures of the *_generator methods (their defaults are Keras 2's)
def _fit_generator_signature(generator, steps_per_epoch=None, epochs=1, verbose=1,
                             callbacks=None, validation_data=None, validation_steps=None,
                             validation_freq=1, class_weight=None, max_queue_size=10,
                             workers=1, use_multiprocessing=False, shuffle=True,
                             initial_epoch=0):
    pass


def _evaluate_generator_signature(generator, steps=None, callbacks=None, max_queue_size=10,
                                  workers=1, use_multiprocessing=False, verbose=0):
    pass


def _predict_generator_signature(generator, steps=None, callbacks=None, max_queue_size=10,
                                 workers=1, use_multiprocessing=False, verbose=0):
    pass


_SIGNATURES = {
    "fit_generator": inspect.signature(_fit_generator_signature),
    "evaluate_generator": inspect.signature(_evaluate_generator_signature),
    "predict_generator": inspect.signature(_predict_generator_signature),
}


def _generator_call(original, method: str, model, args: tuple, kwargs: dict):
    """``fit_generator(...)`` and the like: bound to Keras 2's signature, then called as
    ``fit``/``evaluate``/``predict`` with the generator as ``x``."""
    _refuse_removed_arguments(method, kwargs)
    try:
        bound = _SIGNATURES[method].bind(*args, **kwargs)
    except TypeError as exc:
        raise _call_error(method, f"{exc} (Keras 2's signature: {method}"
                                  f"{_SIGNATURES[method]})") from None
    given = dict(bound.arguments)
    bound.apply_defaults()
    arguments = dict(bound.arguments)
    if "shuffle" not in given:  # Keras 3's default is Keras 2's (True); see _keep_quiet_shuffle
        arguments.pop("shuffle", None)
    arguments["x"] = arguments.pop("generator")
    if method != "fit_generator":
        arguments.setdefault("verbose", 0)
    legacy_given = {k: given[k] for k in LEGACY_ARGUMENTS if k in given}
    return _call(original, method.removesuffix("_generator"), method, model, (), arguments,
                 legacy_given)


def _refuse_removed_arguments(method: str, kwargs: dict) -> None:
    removed = [k for k in kwargs if k in REMOVED_ARGUMENTS]
    if removed:
        raise _call_error(method, "Keras 1 argument(s) " + ", ".join(
            f"{k}= (write {REMOVED_ARGUMENTS[k]})" for k in removed)
            + " have no Keras 3 equivalent that stoke can derive")


def _call_error(method: str, what: str) -> Keras2CallError:
    frame = user_frame(sys._getframe(1))
    filename, lineno, source = call_site(frame)
    return Keras2CallError(f"{filename}:{lineno}: `{source or f'model.{method}(...)'}`: {what}.")


def _call(original, name: str, method: str, model, args: tuple, kwargs: dict,
          legacy_given: dict):
    """Call Keras 3's ``original`` (``name``: fit, evaluate or predict) with the old
    arguments taken out and (unless ``keras2_only``) Sequences or generators accelerated;
    close what was accelerated when it returns. ``method``: what the script called."""
    depth = getattr(_local, "depth", 0)
    if depth:  # fit called by a translated call (or by a Keras method): as it is
        for key in LEGACY_ARGUMENTS:
            kwargs.pop(key, None)
        return original(model, *args, **kwargs)
    _refuse_removed_arguments(method, kwargs)
    legacy = {k: kwargs.pop(k) for k in LEGACY_ARGUMENTS if k in kwargs}
    if method == name:  # (a *_generator call says which of them the script passed)
        legacy_given = legacy
    try:
        bound = inspect.signature(original).bind(model, *args, **kwargs)
    except TypeError as exc:
        raise TypeError(f"{method}(): {exc}") from None
    arguments = bound.arguments
    _count_steps_as_keras2(arguments)
    opened: list = []
    x = arguments.get("x")
    kind = input_kind(x)
    accelerate = not _state["keras2_only"]
    # Keras 2 took class_weight with a generator, Keras 3 refuses it: a Keras-2 call too
    class_weight = arguments.get("class_weight")
    class_weight_on_generator = inspect.isgenerator(x) and class_weight is not None
    keras2_call = bool(legacy_given) or method != name or class_weight_on_generator
    # (else a Keras 3 call: as written)
    read_as_stream = False  # a Sequence read as Keras 2's stream of passes
    try:
        if accelerate and _routable(x):
            steps = arguments.get("steps_per_epoch" if name == "fit" else "steps")
            shuffle = bool(arguments.get("shuffle", True)) if name == "fit" else False
            arguments["x"] = _accelerated(x, legacy, legacy_given, shuffle, steps, opened,
                                          endless=keras2_call)
            # (one evaluate or predict: Keras 3 reads the first steps, as Keras 2 did)
            read_as_stream = (name == "fit" and not inspect.isgenerator(x)
                              and arguments["x"].endless)
        elif inspect.isgenerator(x) and keras2_call:
            # as Keras 2 took it: bare arrays, class_weight
            arguments["x"] = keras2_batches(x, arguments.pop("class_weight", None))
        elif name == "fit" and keras2_call and _read_as_keras2_stream(x, arguments):
            from stoke.legacy.keras2_stream import keras2_stream

            # the batches and step counts of Keras 2's enqueuer, read in the trainer; the
            # stream shuffles (fit_generator's default), so Keras need not be told to
            arguments["x"] = keras2_stream(x, shuffle=bool(arguments.get("shuffle", True)))
            arguments["shuffle"] = False
            read_as_stream = True
        validation = arguments.get("validation_data")
        if accelerate and name == "fit" and _routable(validation):
            arguments["validation_data"] = _accelerated(
                validation, legacy, legacy_given, False, arguments.get("validation_steps"), opened)
        elif inspect.isgenerator(validation) and keras2_call:
            arguments["validation_data"] = keras2_batches(validation, None)
        if name == "fit" and (keras2_call or arguments.get("x") is not x):
            _keep_quiet_shuffle(arguments)
        if keras2_call or opened:
            _note(Conversion(*call_site(user_frame(sys._getframe(1))), method=method,
                             input_kind=kind,
                             legacy_arguments=tuple(
                                 f"{k}={v!r}" for k, v in legacy_given.items()) + (
                                 (f"class_weight={class_weight!r}",)
                                 if class_weight_on_generator else ()),
                             accelerated=bool(opened), read_as_stream=read_as_stream))
        _local.depth = depth + 1
        _calls_running(+1)
        try:
            return original(*bound.args, **bound.kwargs)
        finally:
            _local.depth = depth
            _calls_running(-1)
    finally:
        if _state["show_tuning"] and opened:
            _print_tuning(method, opened)
        for accelerated in opened:
            accelerated.close()


def _read_as_keras2_stream(x: Any, arguments: dict) -> bool:
    """Whether a Keras-2 ``fit`` not fed by stoke reads ``x`` as Keras 2 did, one stream of
    passes (:mod:`stoke.legacy.keras2_stream`): a Sequence of known length, given steps
    other than its length, that Keras reads in the trainer (a PyDataset made with
    ``workers>1`` or ``use_multiprocessing`` keeps Keras 3's own enqueuer, and its epochs)."""
    keras = sys.modules.get("keras")
    steps = arguments.get("steps_per_epoch")
    if keras is None or steps is None or not isinstance(x, keras.utils.PyDataset):
        return False
    length = x.num_batches
    workers = x.workers
    enqueued = workers > 1 or (workers > 0 and x.use_multiprocessing)
    return length is not None and steps != length and not enqueued


def _keep_quiet_shuffle(arguments: dict) -> None:
    """``fit``'s ``shuffle`` default (True) off where Keras would ignore it with a warning
    ("`shuffle=True` was passed, but will be ignored since the data `x` was provided as
    ..."): data that comes in its own order (a generator, an endless PyDataset, a
    ``tf.data`` dataset...). Such data reaches ``fit`` by the shim's routing (a generator
    made endless, ``fit_generator``'s Keras-2 default), not as the script wrote it; a
    ``shuffle`` the script passed itself is left to Keras."""
    if "shuffle" in arguments:
        return
    x = arguments.get("x")
    keras = sys.modules.get("keras")
    if keras is not None and isinstance(x, keras.utils.PyDataset):
        ignored = getattr(x, "num_batches", None) is None  # as Keras asks it
    else:
        ignored = input_kind(x) not in ("arrays", "none")
    if ignored:
        arguments["shuffle"] = False


def _print_tuning(method: str, opened: list) -> None:
    """``stoke run --tuning``: what fed each dataset of a call that returned, and why."""
    for accelerated in opened:
        try:
            report = accelerated.tuning()
        except Exception as exc:  # noqa: BLE001 - a report must not fail the script
            report = f"(no report: {type(exc).__name__}: {exc})"
        print(f"stoke: {method}() was fed by {accelerated!r}:\n{report}", file=sys.stderr,
              flush=True)


STEP_ARGUMENTS = ("steps_per_epoch", "validation_steps", "steps")


def _count_steps_as_keras2(arguments: dict) -> None:
    """A float step count (Keras 2's own example: ``steps_per_epoch=len(x_train) / 32``) as
    Keras 2 counted it: steps ran while ``steps_done < steps``, so ``ceil(steps)``; Keras 3's
    ``range()`` refuses floats."""
    import math

    for name in STEP_ARGUMENTS:
        value = arguments.get(name)
        if isinstance(value, float) and math.isfinite(value):
            arguments[name] = math.ceil(value)


def keras2_batches(generator, class_weight: dict | None):
    """A generator's batches as Keras 3 takes them: a bare array as ``(x,)`` (Keras 2 took
    it as is), and ``class_weight`` (which Keras 3 refuses for generators) as sample
    weights, as Keras 2 applied it."""
    import numpy as np

    for batch in generator:
        if isinstance(batch, list):
            batch = tuple(batch)
        if not isinstance(batch, (tuple, dict)):
            batch = (batch,)
        if class_weight is not None and isinstance(batch, tuple) and len(batch) == 2:
            labels = np.asarray(batch[1])
            if labels.ndim > 1 and labels.shape[-1] > 1:
                labels = labels.argmax(axis=-1)
            labels = labels.reshape(len(labels), -1)[:, 0]
            weights = np.array([class_weight.get(int(c), 1.0) for c in labels], np.float32)
            batch = (*batch, weights)
        yield batch


def input_kind(data: Any) -> str:
    """What a training call was given, in the words of :class:`Conversion`."""
    from stoke.accelerate.image_iterator import is_keras_image_iterator

    if data is None:
        return "none"
    if inspect.isgenerator(data):
        return "generator"
    if is_keras_image_iterator(data):
        return "image-iterator"
    module = type(data).__module__ or ""
    if module.startswith("tensorflow") and hasattr(data, "element_spec"):
        return "tf.data"
    if module.startswith("torch.utils.data"):
        return "torch-dataloader"
    if hasattr(data, "__len__") and hasattr(data, "__getitem__") and hasattr(data, "on_epoch_end"):
        return "sequence"
    if hasattr(data, "shape") or isinstance(data, (list, tuple, dict)):
        return "arrays"
    return "other"


def _routable(data: Any) -> bool:
    from stoke.accelerate import AcceleratedGenerator, AcceleratedSequence

    if data is None or isinstance(data, (AcceleratedSequence, AcceleratedGenerator)):
        return False
    if inspect.isgenerator(data):
        return True
    keras = sys.modules.get("keras")
    return keras is not None and isinstance(data, keras.utils.PyDataset)


def _accelerated(data: Any, legacy: dict, given: dict, shuffle: bool, steps: int | None,
                 opened: list, endless: bool = False):
    """``data`` accelerated for a call whose Keras-2 arguments are ``legacy`` (``given``:
    those the script wrote; the others are Keras 2's defaults). ``endless`` (a Keras-2
    call): a Sequence read for ``steps`` other than its length is one stream of passes, as
    Keras 2's enqueuer read it (see ``AcceleratedSequence.endless``)."""
    from stoke.accelerate import accelerate
    from stoke.executors.choose import for_legacy_script

    worker_options = for_legacy_script(_state["workers"],
                                       legacy.get("workers", getattr(data, "workers", None)))
    queue = legacy.get("max_queue_size")
    ring_slots = max(2, int(queue)) if isinstance(queue, int) and queue > 0 else None
    if inspect.isgenerator(data):
        # one copy, in order (workers= cannot apply: see stoke.accelerate.generator); its
        # ring depth tuned unless the script chose max_queue_size (not Keras 2's default)
        ring_slots = ring_slots if "max_queue_size" in given else None
        accelerated = accelerate(data, steps_per_epoch=steps, ring_slots=ring_slots)
        # the call gives Keras the steps: one Keras iterator for the whole call (fast on TF)
        accelerated.endless = steps is not None
    else:
        accelerated = accelerate(data, **worker_options, shuffle=shuffle,
                                 seed=random.getrandbits(31), ring_slots=ring_slots)
        accelerated.endless = endless and steps is not None and steps != len(accelerated)
    opened.append(accelerated)
    return accelerated


def _note(conversion: Conversion) -> None:
    """Keep the record; print its line the first time this call is seen."""
    if _records.record(conversion):
        _print_note(conversion.advice())


_noted_other: set[tuple[str, int]] = set()


def _note_other(shown: str, instead: str) -> None:
    """A translated call that is not a training call (an optimizer's ``lr=``): its line,
    once."""
    filename, lineno, _ = call_site(user_frame(sys._getframe(1)))
    with _lock:
        if (filename, lineno) in _noted_other:
            return
        _noted_other.add((filename, lineno))
    _print_note(f"{where(filename, lineno)} `{shown}` → {instead}")


def _calls_running(change: int) -> None:
    """Count the training calls running; print the notes held while any ran once none does
    (their progress bars are finished then)."""
    with _lock:
        _state["running"] += change
        held = _state["held"] if _state["running"] == 0 else []
        _state["held"] = [] if held else _state["held"]
    if held:
        _print_lines(held)


def _print_note(line: str) -> None:
    """Print ``line`` now, or hold it while a training call runs (its progress bar would be
    cut in the middle)."""
    if _state["quiet"]:
        return
    with _lock:
        if _state["running"]:
            _state["held"].append(line)
            return
    _print_lines([line])


def _print_lines(lines: list[str]) -> None:
    with _lock:
        header = not _state["told"]
        _state["told"] = True
    shown = [NOTE_HEADER] if header else []
    shown.extend(f"    {line}" for line in lines)
    print("\n".join(shown), file=sys.stderr, flush=True)
