"""The measured process: run the user's script unchanged, with the doctor's hooks in Keras.

``python -m stoke.diagnosis.run.bootstrap SCRIPT ARGS`` (or ``-m MODULE ARGS``, ``-c CODE ARGS``)
runs the target as ``__main__`` the way ``python`` would (``sys.argv``, ``sys.path[0]``), with
a :class:`~stoke.diagnosis.measure.recorder.Recorder` active. Keras is not imported here: the script may
pick its backend (``os.environ["KERAS_BACKEND"] = ...``) before importing it, so the hooks are
installed by an import watcher the moment ``keras`` finishes importing.

On the way out (normal end, ``sys.exit``, an exception, Ctrl-C/SIGTERM, or the doctor's own
stop after ``--steps N``) the record is written to the file descriptor in
``STOKE_DOCTOR_RECORD_FD`` (an anonymous file the doctor made: nothing is left on disk however
either process ends), and the process exits with the script's exit status (0 when the doctor
stopped it). A further Ctrl-C while the record is written is ignored (the doctor kills the
script if it does not end).

The first thing it does is to watch the doctor (:mod:`stoke.diagnosis.run.parent_watch`), before
importing the measuring side: a doctor killed during the script's start-up takes the script
with it at once. Then it tells the doctor of the signals it gets
(:mod:`stoke.diagnosis.run.signal_notice`): a Ctrl-C that reached this process too is not passed
on a second time. Those imports are therefore inside the functions that use them.

The parent side (building this command, reading the record, reporting) is
:mod:`stoke.diagnosis.run.runner`.
"""

from __future__ import annotations

import gc
import json
import os
import runpy
import signal
import sys
import time
import traceback
from typing import TYPE_CHECKING

from stoke.diagnosis.run import signal_notice
from stoke.diagnosis.run.parent_watch import exit_with_doctor

if TYPE_CHECKING:
    from stoke.diagnosis.measure.recorder import Recorder
    from stoke.diagnosis.record import RunRecord

USAGE = "usage: python -m stoke.diagnosis.run.bootstrap (SCRIPT | -m MODULE | -c CODE) [ARGS...]"


def _keras_imported(recorder: Recorder) -> None:
    """Keras has imported: install the hooks, and move every object alive now (Keras', the
    backend's, the script's imports) out of the garbage collector's sight
    (:func:`gc.freeze`), so that the collection before exit scans only what the run made.
    That collection, in a process holding TensorFlow or JAX, took 2-10 s of a short
    script's wall time on a loaded 2-core machine (the plain run pays none); frozen, it takes
    milliseconds. Objects alive at import are modules, classes and functions: they live to
    the end anyway. ``gc.unfreeze()`` after the last collection hands them back for the
    interpreter's shutdown."""
    from stoke.diagnosis.measure import phases

    phases.mark(recorder.record.overhead, "keras_imported")
    _install_or_explain(recorder)
    gc.freeze()
    phases.mark(recorder.record.overhead, "hooks_installed")


def _install_or_explain(recorder: Recorder) -> None:
    from stoke.diagnosis.measure.hooks import install_hooks, keras_version_warning

    try:
        install_hooks()
    except Exception as error:
        message = f"stoke doctor: cannot measure this run: {error}"
        print(message, file=sys.stderr, flush=True)
        recorder.record.meta["hook_error"] = str(error)
        return
    warning = keras_version_warning()
    if warning:
        print(f"stoke doctor: {warning}", file=sys.stderr, flush=True)
        recorder.record.meta["keras_warning"] = warning


def _parse_target(argv: list[str]) -> tuple[str, str, list[str]]:
    """(kind, target, args) with kind "path", "module" or "code"."""
    if not argv:
        raise SystemExit(USAGE)
    if argv[0] == "-m":
        if len(argv) < 2:
            raise SystemExit(USAGE)
        return "module", argv[1], argv[2:]
    if argv[0] == "-c":
        if len(argv) < 2:
            raise SystemExit(USAGE)
        return "code", argv[1], argv[2:]
    return "path", argv[0], argv[1:]


def print_script_traceback() -> None:
    """The exception being handled, printed as python prints a script's: the doctor's own
    frames (this bootstrap, ``runpy``, stoke's hooks around ``fit``) left out, the script's
    and its libraries' kept (the red-team's s09_exception.py gained six stoke frames)."""
    import types

    kind, value, tb = sys.exc_info()
    every, frames = [], []
    while tb is not None:
        every.append(tb)
        if not _doctors_frame(tb.tb_frame.f_code.co_filename):
            frames.append(tb)
        tb = tb.tb_next
    if every and _stoke_frame(every[-1].tb_frame.f_code.co_filename):
        traceback.print_exception(kind, value, value.__traceback__)  # raised by the doctor
        return
    chain = None
    for kept in reversed(frames):
        chain = types.TracebackType(chain, kept.tb_frame, kept.tb_lasti, kept.tb_lineno)
    # none left (a SyntaxError in the script): python prints no frame either
    traceback.print_exception(kind, value, chain)


def _doctors_frame(filename: str) -> bool:
    """A frame of the doctor's (:func:`_stoke_frame`) or of ``runpy``, which runs the script."""
    return (_stoke_frame(filename) or filename == "<frozen runpy>"
            or os.path.basename(filename) == "runpy.py")


def _stoke_frame(filename: str) -> bool:
    """A frame of the doctor's measuring side or of the Keras-2 translation it installs (not of
    stoke's feeder, whose frames a script using stoke would see without the doctor too)."""
    stoke_dir = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return filename.startswith((os.path.join(stoke_dir, "diagnosis") + os.sep,
                                os.path.join(stoke_dir, "legacy") + os.sep))


def _run_target(kind: str, target: str, args: list[str]) -> None:
    if kind == "path":
        sys.argv = [target, *args]
        sys.path[0] = os.path.dirname(os.path.abspath(target))
        # python names a script by its absolute path (__file__, tracebacks) since 3.9
        runpy.run_path(os.path.abspath(target), run_name="__main__")
    elif kind == "module":
        sys.argv = [target, *args]
        sys.path[0] = os.getcwd()
        runpy.run_module(target, run_name="__main__", alter_sys=True)
    else:
        sys.argv = ["-c", *args]
        sys.path[0] = ""
        code = compile(target, "<string>", "exec")
        namespace = {"__name__": "__main__", "__builtins__": __builtins__}
        exec(code, namespace)


_BOOTSTRAP_PID = os.getpid()


def _raise_keyboard_interrupt(signum, frame):
    """SIGTERM in the measured process ends it like Ctrl-C, so the record is written. Forked
    children (a PyDataset's pool workers) get their default handler back at fork time, and
    this one is a no-op trap for any that would still reach it."""
    if os.getpid() != _BOOTSTRAP_PID:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
        return
    raise KeyboardInterrupt(f"signal {signum}")


def note_keras2_conversions(recorder: Recorder) -> None:
    """Put the Keras-2 calls the shim translated into the record (``meta["keras2_conversions"]``),
    so that the findings diagnose what the user wrote (a ``fit_generator`` on a plain generator
    is a generator on the main thread), not the translation."""
    from stoke.legacy import shim

    # The one hasattr probe of this module: ``conversions()`` arrives with the adopt branch
    # (stoke.legacy is that area's); until both are merged a shim without it records nothing.
    if not hasattr(shim, "conversions"):
        return
    try:
        recorder.record.meta["keras2_conversions"] = [
            conversion_record(c) for c in shim.conversions()
        ]
    except Exception as error:  # the record must still be written
        recorder.record.meta["keras2_conversions_error"] = repr(error)


def conversion_record(conversion) -> dict:
    """A shim ``Conversion`` (a frozen dataclass) as plain JSON types."""
    import dataclasses

    data = dataclasses.asdict(conversion) if dataclasses.is_dataclass(conversion) else dict(conversion)
    return {key: value if isinstance(value, str | int | float | bool | type(None)) else repr(value)
            for key, value in data.items()}


def _mark_start(overhead: dict) -> None:
    """The marks of this process's start (and of stoke doctor's, passed in the environment),
    and ``bootstrap_s``: from this process's start until the script starts."""
    from stoke.diagnosis.measure import phases

    spawned = os.environ.get(phases.SPAWNED_ENV, "").split()
    if len(spawned) == 2:
        try:
            doctor_started, child_spawned = (float(value) for value in spawned)
        except ValueError:
            pass
        else:
            if doctor_started > 0:
                phases.mark(overhead, "doctor_started", doctor_started)
            phases.mark(overhead, "child_spawned", child_spawned)
    started = phases.process_started_at()
    if started is not None:
        phases.mark(overhead, "process_started", started)
    phases.mark(overhead, "script_started")
    if started is not None:
        overhead["bootstrap_s"] = max(0.0, overhead["phases"]["script_started"] - started)


def write_record(record: RunRecord, fd: int) -> None:
    """Write ``record`` (JSON) over what the file ``fd`` holds; the doctor reads it once this
    process has ended (one cut short by a kill reads as no record)."""
    data = memoryview(json.dumps(record.to_dict()).encode())
    os.ftruncate(fd, 0)
    written = 0
    while written < len(data):
        written += os.pwrite(fd, data[written:], written)


def _record_fd() -> int | None:
    """The descriptor the doctor passed (kept from the script's own child processes)."""
    from stoke.diagnosis.measure.options import RECORD_FD_ENV

    text = os.environ.get(RECORD_FD_ENV)
    if not text:
        return None
    fd = int(text)
    os.set_inheritable(fd, False)
    return fd


def main(argv: list[str] | None = None) -> int:
    exit_with_doctor()  # first: before the imports below, which take seconds on a busy machine
    signal_notice.install_in_script()  # the doctor passes a Ctrl-C on only where this missed it
    argv = list(sys.argv[1:] if argv is None else argv)
    kind, target, args = _parse_target(argv)
    if kind == "path" and not os.path.exists(target):
        print(f"stoke doctor: no such script: {target!r}", file=sys.stderr)
        return 2
    from stoke.diagnosis.measure import phases
    from stoke.diagnosis.measure.hooks import activate, deactivate
    from stoke.diagnosis.measure.options import OPTIONS_ENV, DoctorOptions
    from stoke.diagnosis.measure.recorder import DoctorStepLimitReached, Recorder
    from stoke.diagnosis.record import RunRecord
    from stoke.legacy.imports import when_imported
    from stoke.legacy.run import exit_status

    record_fd = _record_fd()
    options = DoctorOptions.from_json(os.environ.get(OPTIONS_ENV, ""))
    recorder = Recorder(options, argv=[target, *args], script=target if kind != "code" else "-c")
    recorder.start()
    activate(recorder)
    # once Keras has imported, however it is reached (also TensorFlow first: tf.keras)
    when_imported("keras", lambda _keras: _keras_imported(recorder))
    # Keras-2-era scripts (fit(workers=..., use_multiprocessing=...), fit_generator) run
    # under the doctor translated to Keras 3 calls, on the script's own input (not stoke's)
    from stoke.legacy.shim import install as install_keras2_shim

    install_keras2_shim(keras2_only=True)  # Keras 3 calls stay as the script wrote them
    previous_sigterm = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    os.register_at_fork(after_in_child=lambda: signal.signal(signal.SIGTERM, previous_sigterm))
    status, code, error, error_type = "completed", 0, None, None
    _mark_start(recorder.record.overhead)
    try:
        _run_target(kind, target, args)
    except DoctorStepLimitReached:
        status = "stopped-after-steps"
    except SystemExit as exit_request:
        code = exit_status(exit_request.code)
        status = "completed" if code == 0 else "failed"
        if code != 0:
            error, error_type = f"the script exited with status {code}", "SystemExit"
    except KeyboardInterrupt as interrupt:
        if not interrupt.args:  # Ctrl-C: its traceback, as python prints it (a signal's: none)
            print_script_traceback()
        status, code = "interrupted", 130
        error, error_type = "interrupted (Ctrl-C or SIGTERM)", "KeyboardInterrupt"
    except BaseException as exception:  # the user's error: report it the way python would
        print_script_traceback()
        recorder.note_failure(exception)
        status, code = "failed", 1
        error = "".join(traceback.format_exception_only(type(exception), exception)).strip()
        error_type = type(exception).__name__
    finally:
        phases.mark(recorder.record.overhead, "script_ended")
        signal.signal(signal.SIGTERM, previous_sigterm)
        # the script is over: a second Ctrl-C (the terminal's, then the doctor's own) must
        # not cost the record; the doctor kills this process if it does not end
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        deactivate(recorder)
        note_keras2_conversions(recorder)
        try:
            record = recorder.finish(status, code, error, error_type)
        except Exception as doctor_error:  # a doctor bug must not cost the user the record
            measurements = recorder.record
            measurements.meta.update(exit_status=status, exit_code=code, error=error)
            measurements.meta["doctor_error"] = repr(doctor_error)
            record = RunRecord.from_measurements(measurements)
        record.overhead.phases = {**(record.overhead.phases or {}), "record_ready": time.time()}
        if record_fd is not None:
            write_record(record, record_fd)
        sys.stdout.flush()
        sys.stderr.flush()
        # Free what the run left in reference cycles now, while threads can still take the
        # GIL: a tf.data iterator over a Python generator that is destroyed during interpreter
        # shutdown waits forever for its prefetch thread, which needs the GIL to stop.
        gc.collect()
        gc.unfreeze()
    return code


if __name__ == "__main__":
    sys.exit(main())
