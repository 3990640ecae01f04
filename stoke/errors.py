"""The errors and warnings stoke raises, each saying what happened, where, and the fix."""

from __future__ import annotations

import sys
from types import FrameType


class StokeError(Exception):
    """Base class of every error stoke raises on purpose."""


class SampleError(StokeError):
    """A user function (source read, ``map``, ``filter``) raised on one sample.

    ``index`` is the sample's index in the source; ``original_type`` the exception's class
    name; ``worker_traceback`` the traceback as text, as it was in the worker. ``sample``:
    how the message names the sample when its index alone says little (a record source:
    its file and record number, e.g. ``"at record 3 of data/train-007.tfrecord"``).
    """

    def __init__(self, index: int, stage: str, original_type: str, message: str,
                 worker_traceback: str, worker: str = "", sample: str = "") -> None:
        self.index = index
        self.stage = stage
        self.original_type = original_type
        self.original_message = message
        self.worker_traceback = worker_traceback
        self.worker = worker
        self.sample = sample
        where = f" in {worker}" if worker else ""
        super().__init__(
            f"sample {sample or index} failed in {stage}{where}: {original_type}: {message}\n"
            f"--- the original traceback ---\n{worker_traceback.rstrip()}"
        )

    def __reduce__(self):
        return (SampleError, (self.index, self.stage, self.original_type,
                              self.original_message, self.worker_traceback, self.worker,
                              self.sample))


class WorkerDiedError(StokeError):
    """A worker process ended without being asked to (killed, segfault, out of memory)."""

    def __init__(self, worker: str, exitcode: int | None, held: str) -> None:
        self.worker = worker
        self.exitcode = exitcode
        if exitcode is not None and exitcode < 0:
            import signal

            try:
                how = f"killed by signal {signal.Signals(-exitcode).name} (exit code {exitcode})"
            except ValueError:
                how = f"killed by signal {-exitcode} (exit code {exitcode})"
        else:
            how = f"exited with code {exitcode}"
        hint = ""
        if exitcode in (-9, 137):
            hint = " A SIGKILL is often the out-of-memory killer: check `dmesg` or lower workers."
        super().__init__(f"{worker} {how} while it held {held}.{hint}")


class WorkerHungError(StokeError):
    """No worker produced anything within the time limit the user set."""


class UnpicklableError(StokeError):
    """The pipeline (source or a function) cannot be sent to worker processes."""


class LayoutError(StokeError):
    """A sample does not fit the batch: ragged shapes, changed structure, or unsupported dtype."""


class StokeWarning(UserWarning):
    """Warnings stoke gives (float64 cast, fallbacks)."""


# Frames of these top-level packages are never "the user's code": a warning raised inside them
# (stoke's own frames, Keras' fit loop calling into stoke, the threading machinery) points past
# them, at the first frame of the script that called in; so does the doctor when it names the
# line that converted a tensor to NumPy (Keras' ``convert_to_numpy`` converts inside Keras).
LIBRARY_PACKAGES = frozenset({
    "stoke", "keras", "tensorflow", "tf_keras", "jax", "jaxlib", "torch", "numpy", "optree",
    "tree", "threading", "contextlib", "concurrent", "queue", "runpy", "importlib",
})


def in_library(frame: FrameType) -> bool:
    """Whether ``frame`` runs code of one of ``LIBRARY_PACKAGES`` (not the user's)."""
    return (frame.f_globals.get("__name__") or "").partition(".")[0] in LIBRARY_PACKAGES


def user_stacklevel() -> int:
    """The ``stacklevel`` that makes a ``warnings.warn`` called by the caller of this function
    point at the user's line: the first frame up the stack whose module is not stoke's nor a
    library's that calls into stoke (Keras' ``fit`` loop, threading). When the stack holds no
    such frame (a batch made on a background thread), the outermost frame.

        warnings.warn("stoke: ...", StokeWarning, stacklevel=user_stacklevel())
    """
    frame = sys._getframe(1)  # the frame that calls warnings.warn (stacklevel 1)
    level = 1
    outermost = 1
    while frame is not None:
        if not in_library(frame):
            return level
        outermost = level
        frame = frame.f_back
        level += 1
    return outermost
