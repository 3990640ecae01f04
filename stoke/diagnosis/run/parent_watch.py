"""The measured process ends with ``stoke doctor``: :func:`exit_with_doctor`.

If the doctor is killed (SIGKILL, or anything it cannot handle), the script it measures must
not run on as an orphan, and neither must the processes the script started (the doctor ends
those after a normal run; with the doctor gone, nobody else would). A daemon thread checks
the doctor's pid and, once it is gone, has this process and its descendants ended together by
a helper process (:mod:`stoke.diagnosis.run.process_tree`, which freezes them all before it
kills any: killed one by one from here, a ``multiprocessing.Pool``'s workers were replaced by
its handler thread before this process exited, and the replacements ran on under init). Should
the helper not start, the descendants are killed from here, then this process exits.
Nothing is left on disk either way: the record the doctor would read is an anonymous file
(:mod:`stoke.diagnosis.run.runner`).

Imports only the standard library, so that the bootstrap starts the watch before its own
imports (seconds on a loaded machine, during which a killed doctor used to leave the script
running); ``subprocess`` and ``psutil`` are imported only once the doctor is gone. The bootstrap is
:mod:`stoke.diagnosis.run.bootstrap`.
"""

from __future__ import annotations

import os
import threading
import time

PARENT_ENV = "STOKE_DOCTOR_PARENT_PID"  # the stoke doctor process this script dies with
EXIT_STATUS = 137  # as a process killed with SIGKILL reports it
POLL_S = 0.5
HELPER_WAIT_S = 120.0  # the ending helper's start-up on a loaded machine


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
    """End this process with its descendants (a helper freezes, then kills them all); if that
    fails, kill the descendants from here (by pid, children first found) and exit at once."""
    try:
        _ended_by_helper()
    except Exception:  # noqa: BLE001 - the ending below must happen whatever went wrong
        pass
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


def _ended_by_helper() -> None:
    """Start ``python -m stoke.diagnosis.run.process_tree PID`` and wait for it: it kills this
    process, so this returns only if it did not (it failed, or took over HELPER_WAIT_S)."""
    import subprocess
    import sys
    from pathlib import Path

    stoke_root = str(Path(__file__).resolve().parents[3])  # the script may have changed its path
    existing = os.environ.get("PYTHONPATH")
    env = {**os.environ,
           "PYTHONPATH": stoke_root if not existing else f"{stoke_root}{os.pathsep}{existing}"}
    helper = subprocess.Popen(
        [sys.executable, "-m", "stoke.diagnosis.run.process_tree", str(os.getpid())],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    helper.wait(timeout=HELPER_WAIT_S)
