"""The errors and warnings stoke raises, each saying what happened, where, and the fix."""

from __future__ import annotations


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
            f"--- traceback in the worker ---\n{worker_traceback.rstrip()}"
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
