"""The measured process ends with ``stoke doctor``: :func:`exit_with_doctor`.

If the doctor is killed (SIGKILL, or anything it cannot handle), the script it measures must
not run on as an orphan, and neither must the processes the script started (the doctor ends
those after a normal run; with the doctor gone, nobody else would). A daemon thread checks
the doctor's pid and, once it is gone, ends this process's descendants and then this process.
Nothing is left on disk either way: the record the doctor would read is an anonymous file
(:mod:`stoke.diagnosis.run.runner`).

Imports only the standard library, so that the bootstrap starts the watch before its own
imports (seconds on a loaded machine, during which a killed doctor used to leave the script
running); ``psutil`` is imported only once the doctor is gone. The bootstrap is
:mod:`stoke.diagnosis.run.bootstrap`.
"""

from __future__ import annotations

import os
import threading
import time

PARENT_ENV = "STOKE_DOCTOR_PARENT_PID"  # the stoke doctor process this script dies with
EXIT_STATUS = 137  # as a process killed with SIGKILL reports it
POLL_S = 0.5


def exit_with_doctor() -> None:
    """Start the watch (the doctor's pid comes in ``STOKE_DOCTOR_PARENT_PID``: a wrapper such
    as ``conda run`` may stand between the two; the parent process without it). Ends this
    process at once if the doctor is already gone."""
    doctor = int(os.environ.get(PARENT_ENV) or os.getppid())
    if not _alive(doctor):  # the doctor died while this process was starting
        _end_here()

    def watch() -> None:
        while _alive(doctor):
            time.sleep(POLL_S)
        _end_here()

    threading.Thread(target=watch, name="stoke-doctor-parent-watch", daemon=True).start()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _end_here() -> None:
    """Kill this process's descendants (by pid, children first found), then exit at once."""
    try:
        import psutil

        for process in psutil.Process().children(recursive=True):
            try:
                process.kill()
            except psutil.Error:
                pass
    except Exception:  # noqa: BLE001 - the exit below must happen whatever went wrong
        pass
    os._exit(EXIT_STATUS)
