"""Installing the doctor's hooks into Keras, and the recorder they feed.

Owns the patches (``EpochIterator.__init__``, and the backend trainer's ``fit``, ``evaluate``
(fit's validation, timed into :mod:`stoke.diagnosis.measure.validation`),
``make_train_function`` and ``train_on_batch``): applied at runtime, checked against the
installed Keras before anything is patched (``KerasInternalsChanged``), warned about outside
the tested range (``TESTED_KERAS``), removable.
Owns the process-wide state too, here only: the active recorder (:func:`activate`,
:func:`deactivate`, :func:`active_recorder`) and the installed patches
(:func:`hooks_installed`). Also finds the running ``fit``'s batch iterator for
``DoctorCallback``.

No callback overriding ``on_train_batch_end`` is added (it would make Keras synchronous): the
hooks wrap the train function and the batch iterator (:mod:`stoke.diagnosis.measure.timing`), and the
device is synchronised only on sampled steps. The time spent inside the hooks is summed into
``record.overhead``.
"""

from __future__ import annotations

import functools
import inspect
import sys
import threading
import time
import types
from typing import Any

from stoke.diagnosis.measure.facts import keras_version_string, keras_version_tuple
from stoke.diagnosis.measure.recorder import DoctorStepLimitReached, KerasInternalsChanged, Recorder
from stoke.diagnosis.measure.validation import timed_validation_generator, validation_kind

# Keras versions whose internals these hooks were written against and tested on. Outside the
# range the hooks still install when every internal they touch is present, with a warning.
TESTED_KERAS = ((3, 8), (3, 15))

_ACTIVE: Recorder | None = None
_ORIGINALS: dict[tuple[type, str], Any] = {}
_INSTALL_LOCK = threading.Lock()


def active_recorder() -> Recorder | None:
    return _ACTIVE


def activate(recorder: Recorder) -> None:
    global _ACTIVE
    recorder.set_active(True)
    _ACTIVE = recorder


def deactivate(recorder: Recorder) -> None:
    global _ACTIVE
    recorder.set_active(False)
    if _ACTIVE is recorder:
        _ACTIVE = None


def hooks_installed() -> bool:
    return bool(_ORIGINALS)


def install_hooks() -> None:
    """Patch Keras so an active :class:`Recorder` sees every training step. Idempotent.

    Raises :class:`KerasInternalsChanged` (before patching anything) when an internal the
    hooks need is missing in the installed Keras.
    """
    with _INSTALL_LOCK:
        if _ORIGINALS:
            return
        import keras

        backend = keras.backend.backend()
        trainer_class = _backend_trainer_class(backend)
        from keras.src.trainers import epoch_iterator as epoch_iterator_module

        epoch_iterator_class = epoch_iterator_module.EpochIterator
        needed = {
            epoch_iterator_class: ("__init__", "_get_iterator", "_enumerate_iterator"),
            trainer_class: ("fit", "evaluate", "make_train_function", "train_on_batch"),
        }
        missing = [
            f"{owner.__module__}.{owner.__qualname__}.{name}"
            for owner, names in needed.items()
            for name in names
            if not callable(getattr(owner, name, None))
        ]
        if missing:
            raise KerasInternalsChanged(
                f"stoke doctor hooks into Keras internals that keras {keras.__version__} does "
                f"not have: {', '.join(missing)}. It was written for keras "
                f"{_version_range_text()}. Pin keras to that range (pip install "
                f"'keras<={TESTED_KERAS[1][0]}.{TESTED_KERAS[1][1]}.*') or upgrade stoke."
            )
        _patch(epoch_iterator_class, "__init__", _epoch_iterator_init_hook)
        _patch(trainer_class, "fit", _fit_hook)
        _patch(trainer_class, "evaluate", _evaluate_hook)
        _patch(trainer_class, "make_train_function", _make_train_function_hook)
        _patch(trainer_class, "train_on_batch", _train_on_batch_hook)


def uninstall_hooks() -> None:
    """Put Keras back as it was."""
    with _INSTALL_LOCK:
        for (owner, name), original in _ORIGINALS.items():
            setattr(owner, name, original)
        _ORIGINALS.clear()


def keras_version_warning() -> str | None:
    """A warning when the installed Keras is outside the tested range, else None."""
    version = keras_version_tuple()
    if version is None:
        return None
    if not (TESTED_KERAS[0] <= version[:2] <= TESTED_KERAS[1]):
        return (
            f"stoke doctor was tested with keras {_version_range_text()}; this is keras "
            f"{keras_version_string()}. The hooks installed, but if the numbers look wrong, "
            f"pin keras to the tested range."
        )
    return None


def _version_range_text() -> str:
    (lo_major, lo_minor), (hi_major, hi_minor) = TESTED_KERAS
    return f"{lo_major}.{lo_minor} to {hi_major}.{hi_minor}"


def _patch(owner: type, name: str, make_wrapper) -> None:
    original = owner.__dict__[name]
    wrapper = make_wrapper(original)
    functools.update_wrapper(wrapper, original)
    _ORIGINALS[(owner, name)] = original
    setattr(owner, name, wrapper)


def _backend_trainer_class(backend: str) -> type:
    if backend == "jax":
        from keras.src.backend.jax.trainer import JAXTrainer

        return JAXTrainer
    if backend == "torch":
        from keras.src.backend.torch.trainer import TorchTrainer

        return TorchTrainer
    if backend == "tensorflow":
        from keras.src.backend.tensorflow.trainer import TensorFlowTrainer

        return TensorFlowTrainer
    raise KerasInternalsChanged(
        f"stoke doctor measures training on the tensorflow, jax and torch backends. "
        f"Received: KERAS_BACKEND={backend!r}. Set KERAS_BACKEND to one of those."
    )


def _epoch_iterator_init_hook(original):
    def __init__(self, *args, **kwargs):
        original(self, *args, **kwargs)
        recorder = _ACTIVE
        if recorder is not None:
            recorder.offer_epoch_iterator(self)

    return __init__


def _fit_hook(original):
    signature = inspect.signature(original)

    def fit(self, *args, **kwargs):
        recorder = _ACTIVE
        if recorder is None or recorder.fit is not None:
            return original(self, *args, **kwargs)  # not measuring, or a fit inside a fit
        try:
            bound = signature.bind(self, *args, **kwargs)
        except TypeError:
            return original(self, *args, **kwargs)  # let Keras say what is wrong
        bound.apply_defaults()
        x = bound.arguments.get("x")
        user_generator = None
        if isinstance(x, types.GeneratorType):
            user_generator = recorder.feed_generator(x)
            bound.arguments["x"] = user_generator.batches()
        validation_data = bound.arguments.get("validation_data")
        recorder.validation.kind = validation_kind(validation_data)
        if isinstance(validation_data, types.GeneratorType):
            bound.arguments["validation_data"] = timed_validation_generator(
                validation_data, recorder.validation
            )
        arguments = {k: v for k, v in bound.arguments.items() if k != "self"}
        arguments["x"] = x
        arguments["validation_data"] = validation_data
        recorder.begin_fit(self, arguments, user_generator)
        try:
            return original(*bound.args, **bound.kwargs)
        except DoctorStepLimitReached:
            _stop_input_workers(recorder.fit.epoch_iterator if recorder.fit else None)
            raise
        finally:
            recorder.end_fit()

    return fit


def _evaluate_hook(original):
    def evaluate(self, *args, **kwargs):
        recorder = _ACTIVE
        if recorder is None or recorder.fit is None or recorder.fit.model is not self:
            return original(self, *args, **kwargs)  # not fit's own validation
        started = time.perf_counter()
        try:
            return original(self, *args, **kwargs)
        finally:
            recorder.validation.note_call(time.perf_counter() - started)

    return evaluate


def _make_train_function_hook(original):
    def make_train_function(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        recorder = _ACTIVE
        if recorder is not None and not recorder.in_train_on_batch:
            recorder.on_train_function_made(self)
        return result

    return make_train_function


def _train_on_batch_hook(original):
    def train_on_batch(self, *args, **kwargs):
        recorder = _ACTIVE
        if recorder is None or recorder.fit is not None or recorder.in_train_on_batch:
            return original(self, *args, **kwargs)
        return recorder.measure_train_on_batch(original, self, args, kwargs)

    return train_on_batch


def _stop_input_workers(epoch_iterator) -> None:
    """Stop a PyDataset's worker pool when the doctor ends a run mid-epoch (Keras stops it at
    the epoch's end, which will not come)."""
    adapter = getattr(epoch_iterator, "data_adapter", None)
    enqueuer = getattr(adapter, "enqueuer", None)
    if enqueuer is not None:
        try:
            enqueuer.stop()
        except Exception:
            pass


def find_running_epoch_iterator(max_depth: int = 30):
    """The training EpochIterator of the ``fit`` that called us (for ``DoctorCallback``):
    found as the local ``epoch_iterator`` of a calling frame. None if not found."""
    from keras.src.trainers.epoch_iterator import EpochIterator

    frame = sys._getframe(1)
    for _ in range(max_depth):
        if frame is None:
            return None, None
        candidate = frame.f_locals.get("epoch_iterator")
        if isinstance(candidate, EpochIterator) and frame.f_code.co_name == "fit":
            arguments = {
                name: frame.f_locals.get(name)
                for name in (
                    "x",
                    "y",
                    "sample_weight",
                    "batch_size",
                    "steps_per_epoch",
                    "epochs",
                    "shuffle",
                    "class_weight",
                    "initial_epoch",
                )
            }
            return candidate, arguments
        frame = frame.f_back
    return None, None
