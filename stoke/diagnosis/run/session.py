"""The doctor inside a notebook or a script you edit: ``stoke.doctor()`` and
``stoke.DoctorCallback``.

    with stoke.doctor() as d:              # measures every fit / train_on_batch inside
        model.fit(ds, epochs=2)
    d.report()                             # terminal report; d.report("html", "run.html")
    d.record                               # the RunRecord; d.diagnosis() the verdict

    callback = stoke.DoctorCallback(steps=200)
    model.fit(ds, epochs=2, callbacks=[callback])
    callback.report()

Both measure the same way as ``stoke doctor`` (:mod:`stoke.diagnosis.measure.recorder`), with one
difference: at the step limit they set ``model.stop_training`` (``fit`` returns normally)
instead of ending the script. ``DoctorCallback`` overrides only ``on_train_begin`` and
``on_train_end``, so Keras keeps dispatching batch callbacks asynchronously. It attaches to the
``fit`` that is already running (its iterator is found on the caller's stack); if that ``fit``
raises, ``on_train_end`` never runs: call ``callback.finish()`` to get what was measured.

Keras (and the measuring side) is imported when a session starts, not when this module is
imported.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stoke.diagnosis.measure.recorder import Recorder
    from stoke.diagnosis.record import RunRecord

# DoctorCallback is built on first access (module __getattr__), so it is not listed here.
__all__ = ["DoctorSession", "doctor"]


class DoctorSession:
    """What ``with stoke.doctor() as d`` gives: ``d.record`` once the block has ended, and
    the reports."""

    def __init__(self, recorder: Recorder):
        self.recorder = recorder
        self.record: RunRecord | None = None

    def diagnosis(self):
        """The verdict, numbers and findings (:class:`stoke.diagnosis.judge.diagnosis.Diagnosis`)."""
        from stoke.diagnosis.judge.diagnosis import analyse

        return analyse(self._finished_record())

    def report(self, format: str = "terminal", path: str | None = None) -> Any:
        """Show or write the report. ``format``: ``"terminal"`` (prints; returns the
        diagnosis), ``"json"`` or ``"html"`` (returns the text; also written to ``path``)."""
        return _report(self._finished_record(), format, path)

    def _finished_record(self) -> RunRecord:
        if self.record is None:
            raise RuntimeError(
                "The doctor's record is ready when the `with stoke.doctor()` block has ended. "
                "Call report() after the block."
            )
        return self.record


@contextlib.contextmanager
def doctor(
    steps: int | None = None,
    probes: bool = True,
    probe_after_steps: int = 50,
    probe_seconds: float = 2.0,
    sync_every_steps: int = 10,
    sample_system: bool = True,
    probe_budget_min_s: float | None = None,
) -> Iterator[DoctorSession]:
    """Measure every ``fit`` (and ``train_on_batch`` loop) run inside the block.

    ``steps``: stop training (``model.stop_training``) after that many measured steps.
    ``probe_budget_min_s``: let the probes take at least that many seconds in all, however
    short the run (None: 25% of a fit of known length, at least 1 s; 60 s otherwise).
    The other arguments are those of :class:`~stoke.diagnosis.measure.recorder.DoctorOptions`.
    """
    from stoke.diagnosis.measure import hooks
    from stoke.diagnosis.measure.recorder import DoctorOptions, Recorder

    options = DoctorOptions(
        stop_after_steps=steps,
        probe_after_steps=probe_after_steps,
        probes=probes,
        probe_seconds=probe_seconds,
        sync_every_steps=sync_every_steps,
        on_step_limit="stop_training",
        **budget_floors(probe_budget_min_s),
    )
    if hooks.active_recorder() is not None:
        raise RuntimeError(
            "A doctor session is already measuring this process: nest no `stoke.doctor()` "
            "blocks, and run no `stoke doctor` script that opens one."
        )
    installed_here = not hooks.hooks_installed()
    hooks.install_hooks()
    recorder = Recorder(options, argv=list(sys.argv), script="<session>")
    recorder.start(sample_system=sample_system)
    session = DoctorSession(recorder)
    hooks.activate(recorder)
    status, error, error_type = "completed", None, None
    try:
        yield session
    except KeyboardInterrupt:
        status, error, error_type = "interrupted", "interrupted", "KeyboardInterrupt"
        raise
    except BaseException as exception:
        status, error, error_type = "failed", repr(exception), type(exception).__name__
        recorder.note_failure(exception)
        raise
    finally:
        hooks.deactivate(recorder)
        session.record = recorder.finish(status, 0 if status == "completed" else 1, error, error_type)
        if installed_here:
            hooks.uninstall_hooks()


def budget_floors(probe_budget_min_s: float | None) -> dict[str, float]:
    """The DoctorOptions fields a single ``probe_budget_min_s`` sets: both floors (the run's
    length known or not); none when None (the defaults)."""
    if probe_budget_min_s is None:
        return {}
    return {"probe_budget_min_s": probe_budget_min_s,
            "probe_budget_known_min_s": probe_budget_min_s}


def _report(record: RunRecord, format: str, path: str | None) -> Any:
    from stoke.diagnosis.judge.diagnosis import analyse

    diagnosis = analyse(record)
    if format == "terminal":
        from stoke.diagnosis.report import render_terminal

        render_terminal(diagnosis)
        return diagnosis
    if format == "json":
        from stoke.diagnosis.report import to_json, write_json

        if path:
            write_json(diagnosis, path)
        return to_json(diagnosis)
    if format == "html":
        from stoke.diagnosis.report import render_html, write_html

        if path:
            write_html(diagnosis, path)
        return render_html(diagnosis)
    raise ValueError(f"format must be 'terminal', 'json' or 'html'. Received: format={format!r}")


_CALLBACK_CLASS = None


def _doctor_callback_class():
    """Build DoctorCallback on first use: it subclasses keras.callbacks.Callback, and Keras is
    imported only when needed."""
    global _CALLBACK_CLASS
    if _CALLBACK_CLASS is not None:
        return _CALLBACK_CLASS
    import keras

    from stoke.diagnosis.measure import hooks
    from stoke.diagnosis.measure.recorder import DoctorOptions, Recorder

    class DoctorCallback(keras.callbacks.Callback):
        """Measure the ``fit`` this callback is passed to (see the module docstring).

        ``callback.record`` holds the RunRecord after ``fit``; ``callback.report()`` shows it.
        """

        def __init__(
            self,
            steps: int | None = None,
            probes: bool = True,
            probe_after_steps: int = 50,
            probe_seconds: float = 2.0,
            sync_every_steps: int = 10,
            sample_system: bool = True,
            probe_budget_min_s: float | None = None,
        ):
            super().__init__()
            self.options = DoctorOptions(
                stop_after_steps=steps,
                probe_after_steps=probe_after_steps,
                probes=probes,
                probe_seconds=probe_seconds,
                sync_every_steps=sync_every_steps,
                on_step_limit="stop_training",
                **budget_floors(probe_budget_min_s),
            )
            self.sample_system = sample_system
            self.record: RunRecord | None = None
            self._recorder: Recorder | None = None

        def on_train_begin(self, logs=None):
            if hooks.active_recorder() is not None:
                return  # a stoke.doctor() session or `stoke doctor` already measures this fit
            epoch_iterator, arguments = hooks.find_running_epoch_iterator()
            recorder = Recorder(self.options, argv=list(sys.argv), script="<callback>")
            recorder.start(sample_system=self.sample_system)
            self._recorder = recorder
            hooks.activate(recorder)
            recorder.begin_fit(self.model, arguments or {})
            if epoch_iterator is None:
                recorder.record.meta["attach_note"] = (
                    "the training iterator was not found on the stack: batch waits were not "
                    "timed (only step times)"
                )
            recorder.attach(self.model, epoch_iterator)

        def on_train_end(self, logs=None):
            self.finish()

        def finish(self) -> RunRecord | None:
            """End the measurement (``on_train_end`` calls it) and return the record."""
            recorder = self._recorder
            if recorder is None:
                return self.record
            self._recorder = None
            hooks.deactivate(recorder)
            recorder.end_fit()
            self.record = recorder.finish()
            return self.record

        def report(self, format: str = "terminal", path: str | None = None) -> Any:
            """As :meth:`DoctorSession.report`."""
            if self.record is None:
                raise RuntimeError(
                    "DoctorCallback has no record yet: report() works after fit() returned "
                    "(or after callback.finish())."
                )
            return _report(self.record, format, path)

    _CALLBACK_CLASS = DoctorCallback
    return DoctorCallback


def __getattr__(name: str):
    if name == "DoctorCallback":
        return _doctor_callback_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
