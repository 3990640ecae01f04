"""The backend compiling the train step inside a step: :class:`CompileWatch`.

JAX compiles Keras' train step once per batch shape (and dtype). A script whose batches
change shape (sequences padded per batch, ``padded_batch`` without fixed shapes, a smaller
last batch) compiles it again and again; each compilation is a step hundreds of times
slower than the rest (the red-team's s05_ragged_sequence.py: 2.3 s of compiling in a 2.5 s
run of 2 ms steps; s04_padded_batch.py: a first epoch of 10.3 s against 5.2 s with one
length). The doctor times each step; this says which steps compiled, and for how long,
from JAX's own events (``jax.monitoring``: ``/jax/core/compile/backend_compile_duration``,
recorded by XLA's compile of each new shape), counted while the doctor's timed call of the
train function runs on the trainer's thread. So the analysis leaves exactly those steps out
of the steady state, and ``step-recompiles`` names them.

TensorFlow (``reduce_retracing``: shapes relaxed after a few traces) and torch (no
compilation unless ``jit_compile``) are not watched: ``CompileWatch.for_backend`` gives None.
"""

from __future__ import annotations

import threading
from typing import Any

BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


class CompileWatch:
    """Counts JAX's backend compilations on one thread between :meth:`start` and :meth:`stop`.

    >>> watch = CompileWatch.for_backend("torch")
    >>> watch is None
    True
    """

    def __init__(self) -> None:
        import jax.monitoring

        self._monitoring = jax.monitoring
        self._thread: int | None = None
        self._seconds = 0.0
        self._count = 0
        self._monitoring.register_event_duration_secs_listener(self._heard)
        self._closed = False

    @classmethod
    def for_backend(cls, backend: str | None) -> CompileWatch | None:
        """A watch on JAX; None on the other backends (nothing to watch, see the module)."""
        if backend != "jax":
            return None
        try:
            return cls()
        except Exception:  # noqa: BLE001 - a JAX without jax.monitoring: steps only timed
            return None

    def _heard(self, event: str, duration_s: float, **_: Any) -> None:
        if event == BACKEND_COMPILE_EVENT and threading.get_ident() == self._thread:
            self._seconds += duration_s
            self._count += 1

    def start(self) -> None:
        """Count from now, on this thread."""
        self._seconds, self._count = 0.0, 0
        self._thread = threading.get_ident()

    def stop(self) -> tuple[float, int]:
        """The compilation seconds and count since :meth:`start`."""
        self._thread = None
        return self._seconds, self._count

    def close(self) -> None:
        """Stop listening (the recorder's end): the listener goes, as the doctor found JAX."""
        if self._closed:
            return
        self._closed = True
        self._thread = None
        try:
            self._monitoring.unregister_event_duration_listener(self._heard)
        except Exception:  # noqa: BLE001 - already gone (jax.monitoring.clear_event_listeners)
            pass
