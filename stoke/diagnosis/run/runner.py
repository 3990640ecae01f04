"""The parent side of ``stoke doctor``: run the user's command in a child process with the
doctor's hooks installed, wait for it, and read back its run record.

Owns turning ``python train.py ARGS`` (or ``train.py ARGS``, ``python -m pkg ARGS``) into
``python -m stoke.diagnosis.run.bootstrap train.py ARGS`` with the same interpreter and flags, the
environment that carries the options, the anonymous file the record comes back in (passed as a
file descriptor: no name on disk, so a doctor killed with SIGKILL leaves no temporary file
behind; the script ends with the doctor, :mod:`stoke.diagnosis.run.parent_watch`), and the
waiting (Ctrl-C, or SIGTERM to the doctor, is passed on to the script unless the script got it
too, :mod:`stoke.diagnosis.run.signal_notice`; the script then writes what it measured; the
processes it leaves are ended). The child's output goes straight to the
terminal. Analysis and rendering are left to :mod:`stoke.diagnosis.run.cli`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

from stoke.diagnosis.measure import phases
from stoke.diagnosis.measure.options import OPTIONS_ENV, RECORD_FD_ENV, DoctorOptions
from stoke.diagnosis.record import RunRecord
from stoke.diagnosis.run.parent_watch import PARENT_ENV
from stoke.diagnosis.run.process_tree import end_tree
from stoke.diagnosis.run.signal_notice import SIGNAL_FD_ENV, open_pipe, script_got_signal

# Interpreter options that take a value (python -X dev, -W error, ...).
_OPTIONS_WITH_VALUE = {"-X", "-W", "--check-hash-based-pycs"}
_PYTHON_NAME = re.compile(r"^python(\d+(\.\d+)*)?(\.exe)?$")

# After the script's process ends, how long its own children may take to go.
_CHILDREN_GRACE_S = 10.0
# After Ctrl-C, how long the script may take to write its record before it is killed.
_INTERRUPT_GRACE_S = 30.0


class CommandError(ValueError):
    """The command after ``--`` is not a Python training command the doctor can run."""


@dataclass
class DoctorRun:
    """What came back from a measured run."""

    record: RunRecord | None
    exit_code: int
    command: list[str]
    message: str | None = None  # set when something went wrong outside the script

    @property
    def script_failed(self) -> bool:
        if self.record is None:
            return self.exit_code != 0
        return self.record.meta.exit_status in ("failed", "interrupted")


def build_child_command(command: list[str]) -> list[str]:
    """``python [flags] (script | -m mod | -c code) args`` -> the same under the bootstrap.

    A bare ``python`` (``python3``, ``python3.11``) means the interpreter stoke runs in; a path
    to an interpreter (``.venv/bin/python``) is used as given, and must be able to import stoke.
    """
    if not command:
        raise CommandError(
            "Give the training command after `--`, e.g. `stoke doctor -- python train.py`."
        )
    first = command[0]
    if _PYTHON_NAME.match(first):
        # A bare `python`: the interpreter stoke runs in (the one that has stoke and, in
        # practice, the script's packages), whatever comes first on PATH.
        interpreter = sys.executable
        rest = command[1:]
    elif _PYTHON_NAME.match(os.path.basename(first)) or _same_file(first, sys.executable):
        interpreter = shutil.which(first) or first  # an explicit interpreter path: use it
        rest = command[1:]
    elif first.endswith(".py"):
        interpreter = sys.executable
        rest = command
    else:
        raise CommandError(
            f"stoke doctor runs Python training scripts: give `python train.py ARGS` or "
            f"`train.py ARGS` after `--`. Received: {' '.join(command)!r}"
        )
    flags: list[str] = []
    index = 0
    while index < len(rest) and rest[index].startswith("-") and rest[index] not in ("-m", "-c"):
        flags.append(rest[index])
        if rest[index] in _OPTIONS_WITH_VALUE and index + 1 < len(rest):
            flags.append(rest[index + 1])
            index += 1
        index += 1
    target = rest[index:]
    if not target:
        raise CommandError(
            f"No script to run in {' '.join(command)!r}: give `python train.py ARGS`."
        )
    if target[0] in ("-m", "-c") and len(target) < 2:
        raise CommandError(f"`{target[0]}` needs a value. Received: {' '.join(command)!r}")
    return [interpreter, *flags, "-m", "stoke.diagnosis.run.bootstrap", *target]


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(shutil.which(a) or a, b)
    except OSError:
        return False


def child_environment(options: DoctorOptions, record_fd: int) -> dict[str, str]:
    env = dict(os.environ)
    env[RECORD_FD_ENV] = str(record_fd)
    env[OPTIONS_ENV] = options.to_json()
    env[PARENT_ENV] = str(os.getpid())
    # The child may run another interpreter: make sure it can import this stoke.
    stoke_root = str(Path(__file__).resolve().parents[3])
    existing = env.get("PYTHONPATH")
    env["PYTHONPATH"] = stoke_root if not existing else f"{stoke_root}{os.pathsep}{existing}"
    return env


def run_measured(
    command: list[str],
    options: DoctorOptions | None = None,
    timeout_s: float | None = None,
    cwd: str | None = None,
    extra_env: dict[str, str] | None = None,
    capture_output: bool = False,
    on_started: Callable[[], None] | None = None,
) -> DoctorRun:
    """Run ``command`` under the doctor and return its record (None if none was written).

    ``timeout_s`` bounds the whole run (None: as long as the script runs); at the limit the
    script is interrupted and, after a grace period, killed. ``capture_output`` (tests) sends
    the script's output to a pipe instead of the terminal; it is returned in ``message``.
    ``on_started``: called once the script's process has started (the command line's work
    that can wait goes there, so that it does not delay the start).
    """
    options = options or DoctorOptions()
    child_command = build_child_command(command)
    notices, notice_end = open_pipe()  # the script's own Ctrl-C/SIGTERM, told to the doctor
    with tempfile.TemporaryFile(prefix="stoke-doctor-record-") as record_file, \
            os.fdopen(notices, "rb", buffering=0) as notice_file:
        env = child_environment(options, record_file.fileno())
        env[SIGNAL_FD_ENV] = str(notice_end)
        if extra_env:
            env.update(extra_env)
        output = subprocess.PIPE if capture_output else None
        env[phases.SPAWNED_ENV] = f"{phases.process_started_at() or 0.0!r} {time.time()!r}"
        try:
            process = subprocess.Popen(
                child_command,
                env=env,
                cwd=cwd,
                stdout=output,
                stderr=subprocess.STDOUT if capture_output else None,
                text=capture_output,
                pass_fds=(record_file.fileno(), notice_end),
            )
        except OSError as error:
            return DoctorRun(None, 127, command, f"could not start {child_command[0]!r}: {error}")
        finally:
            os.close(notice_end)
        if on_started is not None:
            on_started()
        descendants = _Descendants(process.pid)
        with _sigterm_as_interrupt():
            captured, message = _wait(process, timeout_s, capture_output, descendants,
                                      notice_file.fileno())
        exited_at = time.time()
        descendants.reap()
        record, cut_short = _read_record(record_file)
        if record is not None:
            record.overhead.phases = {**(record.overhead.phases or {}),
                                      "child_exited": exited_at, "record_loaded": time.time()}
    exit_code = process.returncode if process.returncode is not None else 1
    if exit_code < 0:
        exit_code = 128 - exit_code  # killed by signal N -> 128 + N, as shells report it
    if cut_short and message is None:
        message = f"the script ended (exit status {exit_code}) while it wrote its record"
    if record is None and message is None:
        message = (
            f"the script ended (exit status {exit_code}) before the doctor could write its "
            f"record: it may have been killed (out of memory?) or called os._exit()"
        )
    if capture_output:
        message = captured if message is None else f"{message}\n{captured}"
    return DoctorRun(record, exit_code, command, message)


def _read_record(record_file) -> tuple[RunRecord | None, bool]:
    """The record the script wrote into ``record_file``, and whether what it holds was cut
    short (a script killed while it wrote)."""
    record_file.seek(0)
    data = record_file.read()
    if not data:
        return None, False
    try:
        return RunRecord.from_dict(json.loads(data)), False
    except ValueError:
        return None, True


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """While the script runs, SIGTERM to the doctor (``kill``, a job scheduler) is handled as
    Ctrl-C: passed on to the script, which writes its record; the processes it leaves are
    ended. (Python's default would end the doctor at once, the script only later, with the
    doctor.) Only where signals can be handled: the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _wait(
    process: subprocess.Popen, timeout_s, capture_output: bool, descendants: _Descendants,
    notices: int,
) -> tuple[str, str | None]:
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    message = None
    captured = ""
    interrupted_at = None
    while True:
        try:
            descendants.refresh()
            if capture_output:
                left = 1.0 if deadline is None else max(0.1, min(1.0, deadline - time.monotonic()))
                try:
                    out, _ = process.communicate(timeout=left)
                    captured += out or ""
                    return captured, message
                except subprocess.TimeoutExpired:
                    pass
            else:
                try:
                    process.wait(timeout=0.5)
                    return captured, message
                except subprocess.TimeoutExpired:
                    pass
            now = time.monotonic()
            if interrupted_at is not None and now - interrupted_at > _INTERRUPT_GRACE_S:
                end_tree(process.pid)
                message = message or "the script did not stop after being interrupted: killed"
            elif deadline is not None and now > deadline and interrupted_at is None:
                message = f"the script ran past the doctor's time limit ({timeout_s:g} s)"
                interrupted_at = now
                _signal(process, signal.SIGINT)
        except KeyboardInterrupt:
            # give the script time to write its record; pass the signal on only where it did
            # not reach the script too (a terminal's Ctrl-C reaches both: one is enough)
            if interrupted_at is None:
                interrupted_at = time.monotonic()
                if not script_got_signal(notices):
                    _signal(process, signal.SIGINT)
            else:
                end_tree(process.pid)
                message = "interrupted twice: the script was killed"


def _signal(process: subprocess.Popen, signum: int) -> None:
    try:
        process.send_signal(signum)
    except ProcessLookupError:
        pass


class _Descendants:
    """The processes the script started, remembered by (pid, create time) while it runs, so
    that any it leaves behind can be ended by id after it exits (and no one else's)."""

    def __init__(self, pid: int):
        self._pid = pid
        self._known: dict[int, float] = {}
        self._checked_at = 0.0

    def refresh(self, every_s: float = 1.0) -> None:
        now = time.monotonic()
        if now - self._checked_at < every_s:
            return
        self._checked_at = now
        try:
            for child in psutil.Process(self._pid).children(recursive=True):
                self._known.setdefault(child.pid, child.create_time())
        except psutil.Error:
            pass

    def alive(self) -> list[psutil.Process]:
        found = []
        for pid, created in self._known.items():
            try:
                process = psutil.Process(pid)
                if process.create_time() == created and process.status() != psutil.STATUS_ZOMBIE:
                    found.append(process)
            except psutil.Error:
                continue
        return found

    def reap(self, grace_s: float = _CHILDREN_GRACE_S) -> None:
        """Wait up to ``grace_s`` for leftovers to exit, then kill them."""
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            if not self.alive():
                return
            time.sleep(0.1)
        for process in self.alive():
            try:
                process.kill()
            except psutil.Error:
                pass
