"""Keras 2's optimizer arguments on Keras 3: ``lr`` and ``decay``.

Keras 3 refuses ``Adam(lr=0.01)`` (``ValueError: Argument(s) not recognized``) and ignores
``SGD(decay=1e-6)`` with a warning, so a Keras-2 script either stops or trains with another
learning rate than it says. :func:`patch_optimizers` makes the base optimizer take them as
Keras 2 did: ``lr`` is ``learning_rate`` (``lr`` wins when both are given), ``decay`` is
Keras 2's time decay, ``learning_rate / (1 + decay * iterations)``, which is Keras 3's
``InverseTimeDecay(learning_rate, decay_steps=1, decay_rate=decay)``. Each distinct call is
noted once, with its line, by :mod:`.shim`. Owns nothing else.
"""

from __future__ import annotations

from collections.abc import Callable


def base_optimizer_class(keras) -> type | None:
    """The class whose ``__init__`` takes ``learning_rate`` and refuses other arguments."""
    for cls in keras.optimizers.Optimizer.__mro__:
        if cls.__name__ == "BaseOptimizer" and "__init__" in vars(cls):
            return cls
    return None


def patch_optimizers(keras, note: Callable[[str, str], None]) -> tuple[type, Callable] | None:
    """Patch the base optimizer's ``__init__``; returns ``(class, original __init__)`` to
    undo it, or None when this Keras has no such class. ``note(shown, instead)`` is called
    for each translated construction."""
    cls = base_optimizer_class(keras)
    if cls is None:
        return None
    original = vars(cls)["__init__"]

    def __init__(self, learning_rate, *args, **kwargs):
        shown = []
        if "lr" in kwargs:
            learning_rate = kwargs.pop("lr")
            shown.append(f"lr={learning_rate!r}")
        decay = kwargs.get("decay")
        if decay:
            kwargs.pop("decay")
            shown.append(f"decay={decay!r}")
            if not isinstance(learning_rate, (int, float)):
                raise TypeError(
                    f"{type(self).__name__}(decay={decay!r}) with a learning rate schedule: "
                    "Keras 3 has no `decay` argument and stoke cannot combine it with a "
                    "schedule. Put the decay in the schedule (keras.optimizers.schedules).")
            learning_rate = keras.optimizers.schedules.InverseTimeDecay(
                float(learning_rate), decay_steps=1, decay_rate=float(decay))
        if shown:
            name = type(self).__name__
            instead = ", ".join(
                ["learning_rate=" + (f"keras.optimizers.schedules.InverseTimeDecay("
                                     f"{float(learning_rate.initial_learning_rate)!r}, "
                                     f"decay_steps=1, decay_rate={float(decay)!r})"
                                     if decay else repr(learning_rate))])
            note(f"{name}(..., {', '.join(shown)})", f"`{name}({instead}, ...)`")
        original(self, learning_rate, *args, **kwargs)

    __init__.__wrapped__ = original
    __init__.__qualname__ = original.__qualname__
    __init__.__doc__ = original.__doc__
    cls.__init__ = __init__
    return cls, original
