"""Host code in the model, found by what runs: one eager training step watched.

A layer whose ``call`` computes with NumPy on the step's tensors (``return np.sin(inputs)``)
leaves the device every step and cannot be compiled. Reading the source misses most ways to
write it, so the doctor watches one real step instead, when the step runs eagerly (the only
way such code runs at all: ``run_eagerly=True``, or the torch backend without
``jit_compile``). During that step:

- every user-defined layer class (not Keras' own) has its ``call`` wrapped, and every
  ``keras.layers.Lambda`` its ``function`` (on the instance: the user's code that Keras' own
  ``Lambda.call`` runs; s06_lambda_numpy.py, ``Lambda(lambda t: np.log1p(np.abs(t)))`` on
  TensorFlow run eagerly, went unnamed when only user classes were watched): a layer whose
  output holds NumPy arrays although its inputs were backend tensors computed on the host;
- the backend tensor's own conversions to NumPy are hooked where they are Python
  (``torch.Tensor.__array__`` and ``.numpy()``, TensorFlow's ``EagerTensor.numpy`` and
  ``__array__``): a conversion while a user layer's ``call`` runs names that layer.

Everything is put back after the step; the step's result is untouched. Measured on the three
backends by tests/backends/test_doctor_wild.py (``np.sin`` in a layer, run eagerly).

For each layer seen computing on the host the watch also says whether a traceable stand-in
exists (:func:`stand_in_for`): the identity, when the layer's output has its input's shape and
dtype (``np.sin(x)``, a host normalisation), else the reason there is none. The compiled-step
probe (:mod:`stoke.diagnosis.measure.compiled_step`) swaps the layers' ``call`` for it
(:func:`stood_in`) to time the step the host-op fix gives.

When host code cannot run at all (JAX builds the model on tracers; torch's tensors require
grad), the run fails inside the layer: :func:`failed_in_layer` reads the failure's own frames
(the innermost layer ``call`` and the user's line in it), not its message, which Keras may
name after the outer model (JAX: "when calling Sequential.call()" for a failing Lambda).

Owns the watch, the stand-ins and the failure's layer: the recorder decides when, the
findings what to say.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from stoke.errors import in_library


def step_runs_eagerly(model, backend: str) -> bool:
    """Whether Python runs inside the train step (so host code in a layer can run at all)."""
    if bool(getattr(model, "run_eagerly", False)):
        return True
    return backend == "torch" and not bool(getattr(model, "jit_compile", False))


IDENTITY = "identity"


@dataclass
class HostCodeSeen:
    """What one watched step showed: ``found``, user layer name -> how it was seen computing
    on the host; ``shapes``, each user layer called -> its stand-in (:func:`stand_in_for`);
    ``classes``, each user layer called -> its class name (``Lambda`` for a Lambda layer)."""

    found: dict[str, str] = field(default_factory=dict)
    shapes: dict[str, str] = field(default_factory=dict)
    classes: dict[str, str] = field(default_factory=dict)  # each user layer called -> its class

    @property
    def stand_ins(self) -> dict[str, str]:
        """For each host layer: ``IDENTITY``, or why no traceable stand-in is known."""
        return {name: self.shapes.get(name, "its input and output were not seen")
                for name in self.found}


@contextlib.contextmanager
def watch_host_code(model, backend: str) -> Iterator[HostCodeSeen]:
    """Within the block, user layers that compute on the host are noted in the yielded
    :class:`HostCodeSeen`."""
    seen = HostCodeSeen()
    active: list[tuple[str, str]] = []  # the user code running now: (layer name, what runs)
    restore: list[tuple[Any, str, Any]] = []
    try:
        for cls, _names in _user_layer_classes(model).items():
            original = cls.__dict__.get("call")
            if original is None:
                continue
            restore.append((cls, "call", original))
            cls.call = _watched_call(original, active, seen)
        for layer in _lambda_layers(model):
            original = layer.__dict__["function"]
            restore.append((layer, "function", original))
            layer.function = _watched_function(layer, original, active, seen)
        for owner, attribute in _conversion_points(backend):
            original = owner.__dict__.get(attribute)
            if original is None:
                continue
            restore.append((owner, attribute, original))
            setattr(owner, attribute, _watched_conversion(original, attribute, active, seen.found))
    except Exception:
        _put_back(restore)
        restore = []
    try:
        yield seen
    finally:
        _put_back(restore)


def _put_back(restore) -> None:
    for owner, attribute, original in reversed(restore):
        try:
            setattr(owner, attribute, original)
        except Exception:
            pass


def _all_layers(model) -> list:
    layers = [model]
    try:
        layers += list(model._flatten_layers(include_self=False))
    except Exception:
        layers += list(getattr(model, "layers", []))
    return layers


def _user_layer_classes(model) -> dict[type, list[str]]:
    classes: dict[type, list[str]] = {}
    for layer in _all_layers(model):
        cls = type(layer)
        if cls.__module__.split(".")[0] in ("keras", "tf_keras", "tensorflow"):
            continue
        classes.setdefault(cls, []).append(getattr(layer, "name", cls.__name__))
    return classes


def _lambda_layers(model) -> list:
    """The model's ``keras.layers.Lambda`` layers whose ``function`` is set on the instance
    (Keras' own class: :func:`_user_layer_classes` leaves it out, its function is the user's)."""
    from keras.layers import Lambda

    return [layer for layer in _all_layers(model)
            if isinstance(layer, Lambda) and callable(layer.__dict__.get("function"))]


def lambda_words(function) -> str:
    """How a Lambda layer's function is named in the evidence: ``<lambda> (train.py:11)``."""
    code = getattr(function, "__code__", None)
    name = getattr(function, "__name__", type(function).__name__)
    if code is None:
        return name
    return f"{name} ({code.co_filename.rsplit('/', 1)[-1]}:{code.co_firstlineno})"


def _watched_call(original, active: list[tuple[str, str]], seen: HostCodeSeen):
    def call(self, *args, **kwargs):
        name = getattr(self, "name", type(self).__name__)
        active.append((name, "call()"))
        try:
            output = original(self, *args, **kwargs)
        finally:
            active.pop()
        seen.classes.setdefault(name, type(self).__name__)
        _note_output(name, f"{type(self).__name__}.call", args, kwargs, output, seen)
        return output

    call.__wrapped__ = original
    return call


def _watched_function(layer, original, active: list[tuple[str, str]], seen: HostCodeSeen):
    """A Lambda layer's ``function`` watched as a user layer's ``call`` is, under the layer's
    name."""
    name = getattr(layer, "name", "lambda")
    words = f"its Lambda function {lambda_words(original)}"

    def function(*args, **kwargs):
        active.append((name, words))
        try:
            output = original(*args, **kwargs)
        finally:
            active.pop()
        seen.classes.setdefault(name, type(layer).__name__)
        _note_output(name, words, args, kwargs, output, seen)
        return output

    function.__wrapped__ = original
    return function


def _note_output(name: str, what: str, args: tuple, kwargs: dict, output: Any,
                 seen: HostCodeSeen) -> None:
    found, shapes = seen.found, seen.shapes
    if name not in shapes:
        shapes[name] = stand_in_for(args[0] if args else None, output)
    if name not in found and _holds_numpy(output) and not _holds_numpy((args, kwargs)):
        found[name] = (
            f"{what} returned a NumPy array from backend tensors during a training step "
            "(computed on the host)"
        )


def stand_in_for(inputs: Any, output: Any) -> str:
    """``IDENTITY`` when returning ``inputs`` is a faithful stand-in for a layer that returned
    ``output``: one array each, of the same shape and dtype (what the next layer is built
    for); else why no traceable stand-in is known."""
    spec_in, spec_out = _array_spec(inputs), _array_spec(output)
    if spec_in is None or spec_out is None:
        return "its input or output is not a single array (no traceable stand-in is known)"
    if spec_in != spec_out:
        return (f"its output {_spec_words(spec_out)} differs from its input {_spec_words(spec_in)} "
                "(the identity cannot stand in for it)")
    return IDENTITY


def stood_in(model, layer_names: list[str]):
    """A context manager in which the user layers named ``layer_names`` (their classes' ``call``;
    a Lambda layer's own ``function``) return their first input: the identity stand-in of
    :func:`stand_in_for`. Put back on exit."""
    lambdas = [layer for layer in _lambda_layers(model) if layer.name in layer_names]
    lambda_ids = {id(layer) for layer in lambdas}
    classes = {type(layer) for layer in _all_layers(model)
               if getattr(layer, "name", None) in layer_names and id(layer) not in lambda_ids}
    return _swapped_calls(classes, lambdas)


@contextlib.contextmanager
def _swapped_calls(classes: set[type], lambdas: list) -> Iterator[set[type]]:
    def identity(self, inputs, *args, **kwargs):
        return inputs

    def identity_function(inputs, *args, **kwargs):
        return inputs

    restore = []
    try:
        for cls in classes:
            original = cls.__dict__.get("call")
            if original is None:
                raise RuntimeError(f"{cls.__name__} defines no call() of its own to stand in for")
            restore.append((cls, "call", original))
            cls.call = identity
        for layer in lambdas:
            restore.append((layer, "function", layer.__dict__["function"]))
            layer.function = identity_function
        yield classes
    finally:
        _put_back(restore)


def _array_spec(value: Any) -> tuple[tuple, str] | None:
    shape = getattr(value, "shape", None)
    dtype = getattr(value, "dtype", None)
    if shape is None or dtype is None:
        return None
    try:
        from keras import backend

        return tuple(int(d) if d is not None else None for d in shape), backend.standardize_dtype(dtype)
    except Exception:
        return None


def _spec_words(spec: tuple[tuple, str]) -> str:
    shape, dtype = spec
    return f"{shape} {dtype}"


def _watched_conversion(original, attribute: str, active: list[tuple[str, str]],
                        found: dict[str, str]):
    def conversion(self, *args, **kwargs):
        if active and active[-1][0] not in found:
            name, what = active[-1]
            where = _user_site(sys._getframe(1))
            found[name] = (
                f"a tensor converted to NumPy ({attribute}) inside {what} during a training "
                f"step, at {where}"
            )
        return original(self, *args, **kwargs)

    return conversion


def _user_site(frame) -> str:
    """``file.py:line`` of the innermost frame outside the libraries (:func:`stoke.errors.in_library`;
    the first frame when there is none)."""
    site = frame
    while site is not None and in_library(site):
        site = site.f_back
    site = site or frame
    return f"{site.f_code.co_filename.rsplit('/', 1)[-1]}:{site.f_lineno}"


def _conversion_points(backend: str) -> list[tuple[Any, str]]:
    if backend == "torch":
        import torch

        return [(torch.Tensor, "__array__"), (torch.Tensor, "numpy")]
    if backend == "tensorflow":
        from tensorflow.python.framework import ops

        return [(ops._EagerTensorBase, "__array__"), (ops._EagerTensorBase, "numpy")]
    return []  # JAX arrays convert in C++: the layer's output tells instead


def _holds_numpy(tree: Any, depth: int = 0) -> bool:
    import numpy as np

    if isinstance(tree, np.ndarray):
        return tree.ndim > 0
    if depth > 4:
        return False
    if isinstance(tree, dict):
        return any(_holds_numpy(v, depth + 1) for v in tree.values())
    if isinstance(tree, list | tuple):
        return any(_holds_numpy(v, depth + 1) for v in tree)
    return False


def failed_in_layer(exception: BaseException) -> dict[str, str] | None:
    """Where a run that failed inside a layer failed, read from the failure's own frames: the
    innermost Keras layer ``call`` (the layer's name and class), the user's line inside it
    (``site``; ``function``: its function, a Lambda layer's ``<lambda>``), the frame that raised
    (``raised_in``: ``__array__`` when a tensor was handed to NumPy) and that error's first line
    (``error``). None when no layer's ``call`` is on the failure's stack.

    The chain of exceptions is read innermost first (``__cause__``, ``__context__``): Keras
    re-raises a layer's failure from the outer model's call, and on JAX its message then names
    the model ("when calling Sequential.call()") and loses the layer's (s06_lambda_numpy.py).
    The frames keep it: the innermost exception's stack runs ``Lambda.call`` (``self``: the
    layer) and the user's ``<lambda>``, on the three backends."""
    for error in reversed(_exception_chain(exception)):
        frame = _innermost_frame(error.__traceback__)
        found = _layer_call_below(frame)
        if found is None:
            continue
        layer, user = found
        lines = (str(error).strip().splitlines() or [""])
        return {
            "layer": str(getattr(layer, "name", type(layer).__name__)),
            "class": type(layer).__name__,
            "function": user.f_code.co_name if user is not None else "call",
            "site": _user_site(user if user is not None else frame),
            "raised_in": frame.f_code.co_name,
            "error": f"{type(error).__name__}: {lines[0]}"[:500],
        }
    return None


def _exception_chain(exception: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    error: BaseException | None = exception
    while error is not None and all(error is not seen for seen in chain) and len(chain) < 16:
        chain.append(error)
        error = error.__cause__ or error.__context__
    return chain


def _innermost_frame(tb):
    frame = None
    while tb is not None:
        frame = tb.tb_frame
        tb = tb.tb_next
    return frame


def _layer_call_below(frame):
    """(layer, the innermost user frame below its ``call``) for the innermost frame up the stack
    from ``frame`` that runs a Keras layer's ``call`` (``self`` a ``keras.layers.Layer``)."""
    keras = sys.modules.get("keras")
    layer_type = getattr(getattr(keras, "layers", None), "Layer", None)
    if layer_type is None:
        return None
    user = None
    depth = 0
    while frame is not None and depth < 200:
        if frame.f_code.co_name == "call":
            owner = frame.f_locals.get("self")
            if isinstance(owner, layer_type):
                return owner, user
        if user is None and not in_library(frame):
            user = frame
        frame = frame.f_back
        depth += 1
    return None
