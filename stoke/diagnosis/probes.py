"""Watch a live Keras run from inside: time every training step and the trainer's wait for its
batch, and collect the facts the findings need.

Owns the hooks into Keras (patched at runtime, guarded by version, removable), the per-step
clock (:class:`Recorder`), the sampled device syncs, and the facts about the input, the model
and the environment. Leaves the two bounding probes to :mod:`stoke.diagnosis.model_probe`,
host and GPU sampling to :mod:`stoke.diagnosis.system`, running a script to
:mod:`stoke.diagnosis.bootstrap` and :mod:`stoke.diagnosis.runner`, and judging to the analysis.

How a step is timed. A step is one call of Keras' train function; it ends when the call
returns; now and then (see :meth:`Recorder.sync_due`) after the device finished
(``synced=True``).
``step_s`` is the time from the previous step's end; the first step of each epoch counts from
the moment the epoch's batches were asked for, so validation and epoch-end callbacks are not
inside any step. ``wait_s`` is the time the trainer was blocked pulling its batch:

- JAX: ``next()`` runs on the trainer's thread inside the train function; the iterator the
  training ``EpochIterator`` hands over is wrapped and each ``next()`` is timed (this includes
  Keras' one-batch-ahead ``device_put`` on accelerators).
- torch: ``EpochIterator.__next__`` pulls from a worker-less ``DataLoader`` (Keras converts each
  batch to a tensor on the device there, synchronously); the same wrapper times it.
- TensorFlow: Keras pulls inside a ``tf.function``, out of Python's sight. With
  ``steps_per_execution == 1`` and no distribution strategy the doctor pulls the batch itself,
  eagerly (timed), and hands it to Keras' own step function (the path Keras takes for Python
  iterators): same step, one graph boundary moved. An eager ``next()`` costs ~0.2-0.8 ms of
  dispatch even when a batch is waiting; that cost, measured once on a ready in-memory
  dataset of the same structure (``input["tf_pull_floor_s"]``), is taken off each wait.
  Otherwise (``steps_per_execution > 1``, a strategy) the pull stays in the graph and
  ``wait_s`` is estimated after the run as step time minus the model-alone step time
  (``input["wait_method"]`` says which).

No callback overriding ``on_train_batch_end`` is added (it would make Keras synchronous): the
hooks wrap the train function and the batch iterator, and the device is synchronised only on
sampled steps. The time spent inside the hooks is summed into ``record.overhead``.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import os
import platform
import re
import socket
import sys
import threading
import time
import types
import weakref
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from stoke.diagnosis.input_free import InputFreeWindow
from stoke.diagnosis.record import RunRecord, StepSample

# Keras versions whose internals these hooks were written against and tested on. Outside the
# range the hooks still install when every internal they touch is present, with a warning.
TESTED_KERAS = ((3, 8), (3, 15))

_perf_counter = time.perf_counter


class DoctorStepLimitReached(BaseException):
    """Raised in the measured process after ``--steps N`` steps (and the probes) to end the
    user's script at once; :mod:`stoke.diagnosis.bootstrap` catches it and exits cleanly. A
    BaseException so that a script's ``except Exception`` does not swallow it."""


class KerasInternalsChanged(RuntimeError):
    """The Keras internals the doctor hooks into are not where it expects them."""


@dataclass(frozen=True)
class DoctorOptions:
    """How the doctor measures a run.

    ``stop_after_steps``: end the run after this many measured steps (``None``: run to the end).
    ``probe_after_steps``: run the bounding probes after this many steps (or at
    ``stop_after_steps``, or at the last step of a shorter ``fit`` when its length is known).
    ``sync_every_steps`` and ``sync_min_interval_s``: block on the device at most every N-th
    step and at most every S seconds (both must have passed), plus on the first steady step
    and the last step before the probes or the step limit, so that windows of steps are timed
    exactly while the run keeps its asynchronous dispatch (1 and 0 make every step
    synchronous: not the user's run).
    ``on_step_limit``: ``"raise"`` ends the script (``stoke doctor``); ``"stop_training"`` sets
    ``model.stop_training`` and lets ``fit`` return (notebooks).

        DoctorOptions(stop_after_steps=200, probe_seconds=3.0)
    """

    stop_after_steps: int | None = None
    probe_after_steps: int = 50
    probes: bool = True
    probe_seconds: float = 2.0
    sync_every_steps: int = 10
    sync_min_interval_s: float = 0.25
    warmup_steps: int = 2
    system_interval_s: float = 0.25
    on_step_limit: str = "raise"
    max_recorded_steps: int = 200_000

    def __post_init__(self):
        if self.stop_after_steps is not None and self.stop_after_steps < 1:
            raise ValueError(
                f"stop_after_steps must be >= 1 (or None to run to the end). "
                f"Received: stop_after_steps={self.stop_after_steps}"
            )
        if self.probe_after_steps < 1:
            raise ValueError(
                f"probe_after_steps must be >= 1. Received: probe_after_steps={self.probe_after_steps}"
            )
        if not self.probe_seconds > 0:
            raise ValueError(
                f"probe_seconds must be > 0. Received: probe_seconds={self.probe_seconds}"
            )
        if self.sync_every_steps < 1:
            raise ValueError(
                f"sync_every_steps must be >= 1. Received: sync_every_steps={self.sync_every_steps}"
            )
        if self.sync_min_interval_s < 0:
            raise ValueError(
                f"sync_min_interval_s must be >= 0 seconds. "
                f"Received: sync_min_interval_s={self.sync_min_interval_s}"
            )
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0. Received: warmup_steps={self.warmup_steps}")
        if not self.system_interval_s > 0:
            raise ValueError(
                f"system_interval_s must be > 0 seconds. "
                f"Received: system_interval_s={self.system_interval_s}"
            )
        if self.on_step_limit not in ("raise", "stop_training"):
            raise ValueError(
                f"on_step_limit must be 'raise' or 'stop_training'. "
                f"Received: on_step_limit={self.on_step_limit!r}"
            )

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> DoctorOptions:
        data = json.loads(text) if text else {}
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


# ---------------------------------------------------------------------------------------------
# The recorder: one measured run.


@dataclass
class FitContext:
    """What the doctor knows about the ``fit`` call in progress."""

    model: Any
    arguments: dict[str, Any]
    trainer_thread: int
    user_generator: Any = None
    generator_lock: threading.Lock | None = None
    epoch_iterator: Any = None
    attached: bool = False
    steps_at_start: int = 0


class Recorder:
    """Collects one run's :class:`RunRecord` while hooks feed it. Not thread-safe by design:
    the step clock is driven from the trainer's thread only."""

    def __init__(self, options: DoctorOptions | None = None, argv=None, script=None):
        self.options = options or DoctorOptions()
        self.started_at = _perf_counter()
        self.record = RunRecord(meta=_base_meta(argv, script))
        self.fit: FitContext | None = None
        self.backend: str | None = None
        self.active = False
        self.measuring = False
        self.in_train_on_batch = False
        self.steps_seen = 0
        self.probes_done = False
        self.probe_at_step: int | None = None
        self.input_free: InputFreeWindow | None = None  # the input-free window in progress
        self.input_free_done = not self.options.probes  # done: nothing to run, nothing to check
        self.last_batch: Any = None
        self.keep_last_batch = False
        self.pending_facts_batch = True
        self.tf_pull_outside_graph = False
        self.tf_estimated_batch_size = 0
        self._prev_end: float | None = None
        self._wait_acc = 0.0
        self._samples_acc = 0
        self._epoch = -1
        self._steps_in_fit = 0
        self._overhead_s = 0.0
        self._sync_s = 0.0
        self._synced_steps = 0
        self._last_sync_step = -1
        self._last_sync_t = -1e9
        self.tf_pull_floor_s: float | None = None
        self._probes_s = 0.0
        self._generator_s = 0.0
        self._generator_batches = 0
        self._generator_threads: set[int] = set()
        self._generator_lock = threading.Lock()
        self._sampler = None
        self._wrapped_models: list[weakref.ref] = []
        self._train_on_batch_model: Any = None
        self._trainer_thread: int | None = None
        self._input_facts_taken = False
        self._finished = False

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self, sample_system: bool = True) -> None:
        """Start the background sampler (host CPU, RSS, GPUs)."""
        if not sample_system or self._sampler is not None:
            return
        from stoke.diagnosis.nvml import NvmlReader
        from stoke.diagnosis.system import SystemSampler

        reader = NvmlReader.open()
        self.record.env["nvml"] = reader is not None
        if reader is not None:
            self.record.env["gpus_physical"] = reader.gpu_count
            self.record.env["gpu_names"] = reader.names
        self._sampler = SystemSampler(
            started_at=self.started_at,
            interval_s=self.options.system_interval_s,
            gpu_reader=reader,
        )
        self._sampler.start()

    def finish(
        self,
        exit_status: str = "completed",
        exit_code: int = 0,
        error: str | None = None,
        error_type: str | None = None,
    ) -> RunRecord:
        """Stop sampling, fill the summary fields and return the record (idempotent)."""
        if self._finished:
            return self.record
        self._finished = True
        self.active = False
        self.measuring = False
        if self._sampler is not None:
            self.record.system = self._sampler.stop()
            self.record.overhead["sampler_cpu_s"] = round(self._sampler.cpu_time_s, 6)
        meta = self.record.meta
        meta["exit_status"] = exit_status
        meta["exit_code"] = exit_code
        meta["error"] = error
        meta["error_type"] = error_type
        meta["duration_s"] = _perf_counter() - self.started_at
        meta.setdefault("measured_from", None)
        self._finish_generator_facts()
        self._estimate_tf_waits()
        steps = self.record.steps
        step_total = sum(s.step_s for s in steps)
        overhead = self.record.overhead
        # The hooks time themselves with perf_counter; the calls to it and to the wrappers
        # are not inside any timed span: add them, measured on this machine.
        self._overhead_s += len(steps) * _untimed_cost_per_step_s()
        overhead["doctor_s_total"] = self._overhead_s
        overhead["doctor_s_per_step"] = self._overhead_s / len(steps) if steps else 0.0
        overhead["fraction_of_step"] = self._overhead_s / step_total if step_total > 0 else 0.0
        overhead["sync_s_total"] = self._sync_s
        overhead["synced_steps"] = self._synced_steps
        overhead["probes_s"] = self._probes_s
        self.unwrap_models()
        self.last_batch = None
        return self.record

    def unwrap_models(self) -> None:
        """Give every model its own train function back (the notebook case)."""
        for ref in self._wrapped_models:
            model = ref()
            function = getattr(model, "train_function", None) if model is not None else None
            if isinstance(function, TimedTrainFunction) and function.recorder is self:
                model.train_function = function.original
        self._wrapped_models.clear()

    # -- fit ----------------------------------------------------------------------------------

    def begin_fit(self, model, arguments: dict[str, Any], user_generator=None, lock=None) -> None:
        self.fit = FitContext(
            model=model,
            arguments=arguments,
            trainer_thread=threading.get_ident(),
            user_generator=user_generator,
            generator_lock=lock,
            steps_at_start=self.steps_seen,
        )
        self._trainer_thread = self.fit.trainer_thread

    def end_fit(self) -> None:
        if self.input_free is not None and self.fit is not None:
            # the fit ended inside the window (a callback stopped training): state back
            self.input_free.abandon(self.fit.model)
            self.end_input_free(None, "the fit ended before the window did")
        self.measuring = False
        self.fit = None

    def offer_epoch_iterator(self, epoch_iterator) -> None:
        """The first EpochIterator built inside a measured ``fit`` is the training one. Its
        input facts are taken now: a run can fail before its first step (a worker that
        raises on the batch Keras reads to build the model)."""
        fit = self.fit
        if fit is not None and fit.epoch_iterator is None and not fit.attached:
            fit.epoch_iterator = epoch_iterator
            self.backend = _keras_backend()
            self.record.meta["backend"] = self.backend
            self._take_input_facts(epoch_iterator)

    def on_train_function_made(self, model) -> None:
        fit = self.fit
        if fit is None or model is not fit.model:
            return
        if fit.attached:
            self.wrap_train_function(model)  # Keras rebuilt it: wrap the new one
        else:
            self.attach(model, fit.epoch_iterator)

    def attach(self, model, epoch_iterator) -> None:
        """Start measuring the ``fit`` in progress: wrap its batch iterator and train function,
        take the facts, start the clock. Called once the train function exists, before the
        first epoch (from the ``make_train_function`` hook, or from ``DoctorCallback``)."""
        fit = self.fit
        if fit is None:
            raise RuntimeError("Recorder.attach() needs begin_fit() first.")
        fit.attached = True
        fit.epoch_iterator = epoch_iterator
        self.backend = _keras_backend()
        self.record.meta["measured_from"] = "fit"
        self.record.meta["backend"] = self.backend
        self._steps_in_fit = 0
        if epoch_iterator is not None:
            _wrap_epoch_iterator(epoch_iterator, self)
        self.wrap_train_function(model)
        self._decide_tf_pull(model)
        self._take_input_facts(epoch_iterator)
        self.record.input["wait_method"], self.record.input["wait_note"] = self._wait_method()
        if self.backend == "tensorflow" and not self.tf_pull_outside_graph:
            # no batch will pass through Python: read dtypes off the dataset's element spec
            dataset = getattr(epoch_iterator, "_distributed_dataset", None)
            if dataset is not None and "dtypes" not in self.record.input:
                self.record.input.update(_tf_element_spec_facts(dataset))
        self._take_model_and_env_facts(model)
        self._plan_probes(epoch_iterator, model)
        self.measuring = True
        self._reset_clock()

    def _take_input_facts(self, epoch_iterator) -> None:
        if self._input_facts_taken or self.fit is None:
            return
        self._input_facts_taken = True
        try:
            self.record.input.update(
                input_facts(epoch_iterator, self.fit.arguments, self.backend, self.fit.user_generator)
            )
        except Exception as error:  # facts are best effort: never break the user's run
            self.record.input["facts_error"] = repr(error)

    def wrap_train_function(self, model) -> None:
        function = getattr(model, "train_function", None)
        if function is None:
            return
        if isinstance(function, TimedTrainFunction):
            if function.recorder is self:
                return
            function = function.original
        model.train_function = TimedTrainFunction(function, self, model)
        self._wrapped_models.append(weakref.ref(model))

    def _decide_tf_pull(self, model) -> None:
        self.tf_pull_outside_graph = False
        if self.backend != "tensorflow":
            return
        strategy = getattr(model, "distribute_strategy", None)
        default_strategy = strategy is None or "Default" in type(strategy).__name__
        self.tf_pull_outside_graph = (
            int(getattr(model, "steps_per_execution", 1) or 1) == 1 and default_strategy
        )
        if not self.tf_pull_outside_graph:
            self.tf_estimated_batch_size = _tf_static_batch_size(self.fit) * int(
                getattr(model, "steps_per_execution", 1) or 1
            )

    def _wait_method(self) -> tuple[str, str]:
        if self.backend == "tensorflow":
            if self.tf_pull_outside_graph:
                return (
                    "timed-next-outside-graph",
                    "TensorFlow pulls batches inside a tf.function; the doctor pulls each batch "
                    "eagerly itself (timed) and hands it to Keras' step function (the path "
                    "Keras takes for Python iterators). An eager pull costs its dispatch even "
                    "when a batch is ready (tf_pull_floor_s, measured at the start): that is "
                    "taken off each wait, so only time the prefetch buffer was empty counts.",
                )
            return (
                "estimated-from-model-alone",
                "TensorFlow pulls batches inside the compiled loop (steps_per_execution > 1 or "
                "a distribution strategy), invisible to Python: wait_s is estimated as the "
                "step time minus the model-alone step time, and is 0 without that probe.",
            )
        if self.backend == "jax":
            return (
                "timed-next",
                "Each next() on the training iterator is timed on the trainer's thread "
                "(includes Keras' one-batch-ahead device_put). JAX dispatch is asynchronous: "
                "the device may still run the previous step while the trainer waits.",
            )
        return (
            "timed-next",
            "Each next() on the training iterator is timed on the trainer's thread "
            "(includes Keras' conversion of the batch to a tensor on the device).",
        )

    def _take_model_and_env_facts(self, model) -> None:
        try:
            self.record.model.update(model_facts(model, self.backend))
        except Exception as error:
            self.record.model["facts_error"] = repr(error)
        try:
            self.record.env.update(env_facts(self.backend, self.record.model.get("device")))
        except Exception as error:
            self.record.env["facts_error"] = repr(error)
        self.record.meta["keras_version"] = _keras_version_string()

    def _plan_probes(self, epoch_iterator, model) -> None:
        if self.probes_done or self.probe_at_step is not None:
            return
        # With --steps N the probes close the measured window; otherwise they run after
        # probe_after_steps, or at the last step of a fit known to be shorter.
        planned = self.options.stop_after_steps or self.options.probe_after_steps
        total = _known_fit_steps(epoch_iterator, self.fit.arguments if self.fit else {}, model)
        if total is not None and total > 0:
            planned = min(planned, total)
        self.probe_at_step = self.steps_seen + planned
        self.keep_last_batch = self.options.probes

    # -- the clock ----------------------------------------------------------------------------

    def _reset_clock(self) -> None:
        self._prev_end = _perf_counter()
        self._wait_acc = 0.0
        self._samples_acc = 0

    def begin_epoch(self) -> None:
        if not self.measuring:
            return
        self._epoch += 1
        self._reset_clock()

    def note_batch(self, batch, wait_s: float) -> None:
        """A batch reached the trainer after ``wait_s`` seconds of waiting."""
        self._wait_acc += wait_s
        self._samples_acc += _leading_dim(batch)
        if self.keep_last_batch and self.steps_seen + 1 >= self.probe_at_step:
            # only the probe step's batch is kept: holding others would pin buffers (a
            # shared-memory slot, a device batch) the input wants back
            self.last_batch = batch
        if self.pending_facts_batch:
            self.pending_facts_batch = False
            try:
                facts = batch_facts(batch)
                self.record.input.update(facts)
                if not self.record.input.get("batch_size"):
                    self.record.input["batch_size"] = facts["first_batch_size"] or None
            except Exception as error:
                self.record.input["batch_facts_error"] = repr(error)

    def note_generator_batch(self, seconds: float) -> None:
        if not self.measuring:
            return  # Keras peeks at the first batches while building the adapter: not training
        with self._generator_lock:
            self._generator_s += seconds
            self._generator_batches += 1
            if len(self._generator_threads) < 8:
                self._generator_threads.add(threading.get_ident())

    def sync_due(self) -> bool:
        """Whether the step now ending should wait for the device: the first steady step of
        a fit, the step before the probes or the limit, else when both ``sync_every_steps``
        steps and ``sync_min_interval_s`` seconds have passed since the last sync."""
        number = self.steps_seen + 1
        if self._steps_in_fit == self.options.warmup_steps:
            return True
        if number == self.probe_at_step or number == self.options.stop_after_steps:
            return True
        return (
            number - self._last_sync_step >= self.options.sync_every_steps
            and _perf_counter() - self._last_sync_t >= self.options.sync_min_interval_s
        )

    def end_step(self, t_end: float, synced: bool, sync_s: float) -> None:
        prev_end = self._prev_end if self._prev_end is not None else t_end
        samples = self._samples_acc or self.tf_estimated_batch_size
        warmup = self._steps_in_fit < self.options.warmup_steps
        if len(self.record.steps) < self.options.max_recorded_steps:
            self.record.steps.append(
                StepSample(
                    step=self.steps_seen,
                    epoch=max(self._epoch, 0),
                    t_s=t_end - self.started_at,
                    wait_s=self._wait_acc,
                    step_s=t_end - prev_end,
                    batch_size=samples,
                    synced=synced,
                    warmup=warmup,
                )
            )
        else:
            self.record.meta["steps_truncated"] = True
        self.steps_seen += 1
        self._steps_in_fit += 1
        if synced:
            self._synced_steps += 1
            self._sync_s += sync_s
            self._last_sync_step = self.steps_seen
            self._last_sync_t = t_end
        self._prev_end = t_end
        self._wait_acc = 0.0
        self._samples_acc = 0

    def add_overhead(self, seconds: float) -> None:
        self._overhead_s += seconds

    def calibrate_tf_pull(self, batch) -> float:
        """Measure what an eager ``next()`` costs on this batch structure when a batch is
        already waiting in the buffer (the median of a few pulls from an in-memory dataset);
        the time is moved out of the step that paid it."""
        started = _perf_counter()
        self.tf_pull_floor_s = 0.0
        try:
            self.tf_pull_floor_s = _tf_ready_pull_seconds(batch)
        except Exception as error:
            self.record.input["tf_pull_floor_error"] = repr(error)
        self.record.input["tf_pull_floor_s"] = self.tf_pull_floor_s
        spent = _perf_counter() - started
        self.record.overhead["calibration_s"] = spent
        if self._prev_end is not None:
            self._prev_end += spent
        return spent

    # -- after a step: probes and the step limit ----------------------------------------------

    def after_step(self, timed_function: TimedTrainFunction, args: tuple, result: Any) -> None:
        # the window's checks only until it ran (or could not): then one attribute per step
        if (
            not self.input_free_done
            and self._input_free_due()
            and self._start_input_free(timed_function, result)
        ):
            return  # the probes and the step limit come when the window ends
        self.probes_and_limit(timed_function, args, result)

    def probes_and_limit(self, timed_function: TimedTrainFunction, args: tuple, result: Any) -> None:
        if (
            not self.probes_done
            and self.probe_at_step is not None
            and self.steps_seen >= self.probe_at_step
        ):
            self.run_probes(timed_function, args, result)
        limit = self.options.stop_after_steps
        if limit is not None and self.steps_seen >= limit:
            self.record.meta["stopped_after_steps"] = self.steps_seen
            if self.options.on_step_limit == "stop_training":
                timed_function.model.stop_training = True
            else:
                self.measuring = False
                if self.backend == "jax":
                    _hand_jax_state_to_model(timed_function.model, result)
                raise DoctorStepLimitReached(f"stoke doctor: stopped after {self.steps_seen} steps")

    # -- the input-free window (stoke.diagnosis.input_free) -------------------------------------

    def _input_free_due(self) -> bool:
        return (
            self.options.probes
            and self.input_free is None
            and not self.probes_done
            and self.probe_at_step is not None
            and self.steps_seen >= self.probe_at_step
            and self.fit is not None
        )

    def _start_input_free(self, timed_function: TimedTrainFunction, result: Any) -> bool:
        """Open the window after this step when it can run; True when it did."""
        from stoke.diagnosis import input_free

        recent = [s for s in self.record.steps[-64:] if not s.warmup]
        reason = None
        if self.backend == "tensorflow" and not self.tf_pull_outside_graph:
            reason = "TensorFlow pulls this run's batches inside the compiled loop: none can be swapped"
        elif self.last_batch is None:
            reason = "no batch of the run was kept"
        elif recent and input_free.wait_fraction(recent) < input_free.MIN_WAIT_FRACTION:
            reason = "the run barely waits for its input: there is no input cost to remove"
        if reason is None:
            try:
                self.input_free = input_free.InputFreeWindow(
                    self.backend, timed_function.model, result, self.last_batch,
                    _leading_dim(self.last_batch),
                    input_free.planned_calls(recent, self.options.probe_seconds),
                    ready_pull_s=(self.tf_pull_floor_s or 0.0) if self.tf_pull_outside_graph else 0.0,
                )
                return True
            except Exception as error:
                reason = f"the window could not start: {error!r}"
        self.input_free_done = True
        self.record.meta.setdefault("probe_notes", {})["input_free"] = reason
        return False

    def end_input_free(self, window: InputFreeWindow | None, failure: str | None = None) -> None:
        """The window is over: keep its measurement, restart the step clock."""
        current, self.input_free = self.input_free, None
        self.input_free_done = True
        if window is not None and window.result is not None:
            self.record.probes["input_free"] = window.result
        else:
            self.record.meta.setdefault("probe_notes", {})["input_free"] = failure or "no result"
        if current is not None:
            self._probes_s += _perf_counter() - current.started_at
        self._reset_clock()

    def run_probes(self, timed_function, args, result) -> None:
        self.probes_done = True
        self.keep_last_batch = False
        started = _perf_counter()
        try:
            if self.options.probes:
                from stoke.diagnosis.model_probe import run_fit_probes

                run_fit_probes(self, timed_function, args, result)
            else:
                self.record.meta.setdefault("probe_notes", {})["all"] = "probes disabled (--no-probes)"
        finally:
            self.last_batch = None
            self._probes_s += _perf_counter() - started
            self._reset_clock()

    # -- train_on_batch loops -----------------------------------------------------------------

    def measure_train_on_batch(self, original, model, args, kwargs):
        t_start = _perf_counter()
        if self._train_on_batch_model is not model:
            self._attach_train_on_batch(model, args, kwargs)
        wait = t_start - self._prev_end if self._prev_end is not None else 0.0
        self.in_train_on_batch = True
        try:
            result = original(model, *args, **kwargs)
        finally:
            self.in_train_on_batch = False
        t_end = _perf_counter()
        batch = args[0] if args else kwargs.get("x")
        self._wait_acc = wait
        self._samples_acc = _leading_dim(batch)
        if self._prev_end is None:
            self._prev_end = t_start
        self.end_step(t_end, synced=True, sync_s=0.0)
        self.add_overhead(_perf_counter() - t_end)
        if (
            not self.probes_done
            and self.probe_at_step is not None
            and self.steps_seen >= self.probe_at_step
        ):
            self.probes_done = True
            started = _perf_counter()
            try:
                if self.options.probes:
                    from stoke.diagnosis.model_probe import run_train_on_batch_probes

                    run_train_on_batch_probes(self, original, model, args, kwargs)
            finally:
                self._probes_s += _perf_counter() - started
                self._prev_end = _perf_counter()
        limit = self.options.stop_after_steps
        if limit is not None and self.steps_seen >= limit:
            self.record.meta["stopped_after_steps"] = self.steps_seen
            if self.options.on_step_limit == "raise":
                raise DoctorStepLimitReached(f"stoke doctor: stopped after {self.steps_seen} steps")
        return result

    def _attach_train_on_batch(self, model, args, kwargs) -> None:
        self._train_on_batch_model = model
        self.backend = _keras_backend()
        self.record.meta["measured_from"] = self.record.meta.get("measured_from") or "train_on_batch"
        self.record.meta["backend"] = self.backend
        self._steps_in_fit = 0
        self._prev_end = None
        batch = (
            args[0] if args else kwargs.get("x"),
            args[1] if len(args) > 1 else kwargs.get("y"),
        )
        if not self._input_facts_taken:
            self._input_facts_taken = True
            self.record.input.update(
                {
                    "kind": "train_on_batch",
                    "main_thread": True,
                    "producer": "trainer-thread",
                    "wait_method": "between-calls",
                    "wait_note": (
                        "A train_on_batch loop makes its batches in the script's own code: "
                        "wait_s is the time spent outside train_on_batch between two calls "
                        "(loading data and anything else the loop does)."
                    ),
                }
            )
            try:
                self.record.input.update(batch_facts(batch))
            except Exception as error:
                self.record.input["batch_facts_error"] = repr(error)
        self._take_model_and_env_facts(model)
        if self.probe_at_step is None:
            planned = self.options.stop_after_steps or self.options.probe_after_steps
            self.probe_at_step = self.steps_seen + planned

    # -- finishing ------------------------------------------------------------------------------

    def _finish_generator_facts(self) -> None:
        if not self._generator_batches:
            return
        inputs = self.record.input
        inputs["generator_s_per_batch"] = self._generator_s / self._generator_batches
        inputs["generator_batches"] = self._generator_batches
        if self._trainer_thread is not None and self._generator_threads:
            on_trainer = self._trainer_thread in self._generator_threads
            inputs["main_thread"] = on_trainer
            if on_trainer:
                inputs["producer"] = "trainer-thread"
            elif inputs.get("producer") == "trainer-thread":
                inputs["producer"] = "tf.data-thread"

    def _estimate_tf_waits(self) -> None:
        if self.record.input.get("wait_method") != "estimated-from-model-alone":
            return
        probe = self.record.probes.get("model_alone")
        if probe is None:
            return
        per_step = float(probe.detail.get("s_per_step", 0.0)) * max(
            1, int(self.record.model.get("steps_per_execution") or 1)
        )
        for step in self.record.steps:
            step.wait_s = max(0.0, step.step_s - per_step)


# ---------------------------------------------------------------------------------------------
# Wrappers that sit in the user's run.


class _TimedBatches:
    """The trainer's batch iterator with each ``next()`` timed into the recorder."""

    __slots__ = ("_inner", "_recorder")

    def __init__(self, inner, recorder: Recorder):
        self._inner = inner
        self._recorder = recorder

    def __iter__(self):
        return self

    def __next__(self):
        recorder = self._recorder
        if not recorder.measuring:
            return next(self._inner)
        window = recorder.input_free
        if window is not None:
            return window.batch  # the input-free window: the input costs nothing
        started = _perf_counter()
        batch = next(self._inner)
        arrived = _perf_counter()
        recorder.note_batch(batch, arrived - started)
        recorder.add_overhead(_perf_counter() - arrived)
        return batch


class _TimedBatchIterable:
    """What the wrapped ``EpochIterator._get_iterator`` returns: Keras calls ``iter()`` on it."""

    __slots__ = ("_inner", "_recorder")

    def __init__(self, inner, recorder: Recorder):
        self._inner = inner
        self._recorder = recorder

    def __iter__(self):
        return _TimedBatches(iter(self._inner), self._recorder)


def _wrap_epoch_iterator(epoch_iterator, recorder: Recorder) -> None:
    """Time the training EpochIterator's batches (JAX, torch) and mark epoch starts."""
    if getattr(epoch_iterator, "_stoke_doctor_recorder", None) is recorder:
        return
    epoch_iterator._stoke_doctor_recorder = recorder
    original_enumerate = epoch_iterator._enumerate_iterator

    def enumerate_marking_epochs():
        recorder.begin_epoch()
        for item in original_enumerate():
            yield item
            while recorder.input_free is not None:
                # the input-free window: the same step again, on the same batch, as many
                # times as the window lasts; the epoch's own steps and batches stay as they were
                yield item

    epoch_iterator._enumerate_iterator = enumerate_marking_epochs
    if recorder.backend == "tensorflow":
        return  # TensorFlow pulls inside the train function: see TimedTrainFunction.
    original_get_iterator = epoch_iterator._get_iterator

    def timed_get_iterator():
        return _TimedBatchIterable(original_get_iterator(), recorder)

    epoch_iterator._get_iterator = timed_get_iterator


class TimedTrainFunction:
    """Stands in for ``model.train_function``: times the call, syncs the device on sampled
    steps, and (TensorFlow) pulls the batch outside the graph. ``original`` is Keras' own."""

    def __init__(self, original, recorder: Recorder, model):
        self.original = original
        self.recorder = recorder
        self.model = model
        self.backend = _keras_backend()
        self._sync = _device_sync_function(self.backend, model)
        self._tf_iterator_types: tuple = ()
        if self.backend == "tensorflow":
            import tensorflow as tf

            self._tf_iterator_types = (tf.data.Iterator, tf.distribute.DistributedIterator)

    def __call__(self, *args):
        recorder = self.recorder
        if not recorder.measuring or recorder.in_train_on_batch:
            return self.original(*args)
        if recorder.input_free is not None:
            return self._input_free_call(recorder.input_free, args)
        t_enter = _perf_counter()
        not_overhead_s = 0.0  # the pull itself and a one-time calibration
        if recorder.tf_pull_outside_graph and len(args) == 1:
            iterator = args[0]
            if isinstance(iterator, self._tf_iterator_types):
                pull_started = _perf_counter()
                data = next(iterator)  # StopIteration ends the epoch, as in Keras' own path
                pulled = _perf_counter()
                calibration_s = 0.0
                if recorder.tf_pull_floor_s is None:
                    calibration_s = recorder.calibrate_tf_pull(data)
                # An eager get_next costs its dispatch even when a batch is ready; Keras'
                # in-graph pull costs about as much inside its step. Only the rest is waiting.
                recorder.note_batch(data, max(0.0, pulled - pull_started - recorder.tf_pull_floor_s))
                not_overhead_s = pulled - pull_started + calibration_s
                args = (iter((data,)),)
        t_call = _perf_counter()
        result = self.original(*args)
        t_returned = _perf_counter()
        synced = recorder.sync_due()
        if synced:
            self._sync(result)
        t_end = _perf_counter()
        recorder.end_step(t_end, synced, t_end - t_returned)
        recorder.add_overhead((t_call - t_enter - not_overhead_s) + (_perf_counter() - t_end))
        recorder.after_step(self, args, result)
        return result

    def sync(self, result) -> None:
        self._sync(result)

    def _input_free_call(self, window: InputFreeWindow, args: tuple):
        recorder = self.recorder
        if len(args) == 1 and isinstance(args[0], self._tf_iterator_types):
            args = (iter((window.batch,)),)  # TensorFlow, pulled outside the graph: no pull
        try:
            result, finished = window.call(self.original, self._sync, args)
        except BaseException:
            window.abandon(self.model)
            recorder.end_input_free(None, "a step of the window raised")
            raise
        if finished:
            recorder.end_input_free(window)
            recorder.probes_and_limit(self, args, result)
        return result


def _device_sync_function(backend: str, model):
    """A function that blocks until the device finished the step that produced ``result``."""
    if backend == "jax":
        import jax

        def sync_jax(result):
            jax.block_until_ready(result)

        return sync_jax
    if backend == "torch":
        import torch

        if torch.cuda.is_available():

            def sync_torch(result):
                torch.cuda.synchronize()

            return sync_torch
        return lambda result: None
    if backend == "tensorflow":
        from keras import tree

        def sync_tensorflow(result):
            for value in tree.flatten(result):
                numpy = getattr(value, "numpy", None)
                if numpy is not None:
                    numpy()

        return sync_tensorflow
    return lambda result: None


def _tf_ready_pull_seconds(batch, pulls: int = 25) -> float:
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensors(batch).repeat().prefetch(4)
    iterator = iter(dataset)
    for _ in range(3):
        next(iterator)
    times = []
    for _ in range(pulls):
        time.sleep(0.0005)  # let the prefetch buffer refill: measure a ready pull
        started = _perf_counter()
        next(iterator)
        times.append(_perf_counter() - started)
    times.sort()
    return times[len(times) // 2]


def _hand_jax_state_to_model(model, result) -> None:
    """Give the model a JAX training state ``result = (logs, state)`` to sync into its
    variables: the last step's before ending a ``fit`` early (Keras' ``fit`` does this after
    the train function returns; its ``finally`` then syncs it), or the state an abandoned
    input-free window saved."""
    try:
        _logs, state = result
        trainable, non_trainable, optimizer_variables, metrics_variables = state
        model._jax_state = {
            "trainable_variables": trainable,
            "non_trainable_variables": non_trainable,
            "optimizer_variables": optimizer_variables,
            "metrics_variables": metrics_variables,
        }
        model._jax_state_synced = False
    except Exception:
        pass


def _untimed_cost_per_step_s(repeats: int = 2000) -> float:
    """What a step's hooks spend outside their own timed spans: about six perf_counter()
    calls and two Python calls (the wrapper and the iterator's __next__)."""

    def noop():
        return None

    started = _perf_counter()
    for _ in range(repeats):
        _perf_counter()
        _perf_counter()
        _perf_counter()
        noop()
    per_three = (_perf_counter() - started) / repeats
    return 2 * per_three


def timed_generator(generator, recorder: Recorder, lock: threading.Lock):
    """Yield the user's generator's batches, timing each ``next()`` and noting the thread
    that asked. A real generator, because Keras accepts only ``types.GeneratorType``."""
    while True:
        started = _perf_counter()
        with lock:
            try:
                item = next(generator)
            except StopIteration:
                return
        recorder.note_generator_batch(_perf_counter() - started)
        yield item


# ---------------------------------------------------------------------------------------------
# Installing the hooks.

_ACTIVE: Recorder | None = None
_ORIGINALS: dict[tuple[type, str], Any] = {}
_INSTALL_LOCK = threading.Lock()


def active_recorder() -> Recorder | None:
    return _ACTIVE


def activate(recorder: Recorder) -> None:
    global _ACTIVE
    recorder.active = True
    _ACTIVE = recorder


def deactivate(recorder: Recorder) -> None:
    global _ACTIVE
    recorder.active = False
    recorder.measuring = False
    if _ACTIVE is recorder:
        _ACTIVE = None


def hooks_installed() -> bool:
    return bool(_ORIGINALS)


def install_hooks() -> None:
    """Patch Keras so an active :class:`Recorder` sees every training step. Idempotent.

    Raises :class:`KerasInternalsChanged` (before patching anything) when an internal the
    hooks need is missing in the installed Keras.
    """
    with _INSTALL_LOCK:
        if _ORIGINALS:
            return
        import keras

        backend = keras.backend.backend()
        trainer_class = _backend_trainer_class(backend)
        from keras.src.trainers import epoch_iterator as epoch_iterator_module

        epoch_iterator_class = epoch_iterator_module.EpochIterator
        needed = {
            epoch_iterator_class: ("__init__", "_get_iterator", "_enumerate_iterator"),
            trainer_class: ("fit", "make_train_function", "train_on_batch"),
        }
        missing = [
            f"{owner.__module__}.{owner.__qualname__}.{name}"
            for owner, names in needed.items()
            for name in names
            if not callable(getattr(owner, name, None))
        ]
        if missing:
            raise KerasInternalsChanged(
                f"stoke doctor hooks into Keras internals that keras {keras.__version__} does "
                f"not have: {', '.join(missing)}. It was written for keras "
                f"{_version_range_text()}. Pin keras to that range (pip install "
                f"'keras<={TESTED_KERAS[1][0]}.{TESTED_KERAS[1][1]}.*') or upgrade stoke."
            )
        _patch(epoch_iterator_class, "__init__", _epoch_iterator_init_hook)
        _patch(trainer_class, "fit", _fit_hook)
        _patch(trainer_class, "make_train_function", _make_train_function_hook)
        _patch(trainer_class, "train_on_batch", _train_on_batch_hook)


def uninstall_hooks() -> None:
    """Put Keras back as it was."""
    with _INSTALL_LOCK:
        for (owner, name), original in _ORIGINALS.items():
            setattr(owner, name, original)
        _ORIGINALS.clear()


def keras_version_warning() -> str | None:
    """A warning when the installed Keras is outside the tested range, else None."""
    version = _keras_version_tuple()
    if version is None:
        return None
    if not (TESTED_KERAS[0] <= version[:2] <= TESTED_KERAS[1]):
        return (
            f"stoke doctor was tested with keras {_version_range_text()}; this is keras "
            f"{_keras_version_string()}. The hooks installed, but if the numbers look wrong, "
            f"pin keras to the tested range."
        )
    return None


def _version_range_text() -> str:
    (lo_major, lo_minor), (hi_major, hi_minor) = TESTED_KERAS
    return f"{lo_major}.{lo_minor} to {hi_major}.{hi_minor}"


def _patch(owner: type, name: str, make_wrapper) -> None:
    original = owner.__dict__[name]
    wrapper = make_wrapper(original)
    functools.update_wrapper(wrapper, original)
    _ORIGINALS[(owner, name)] = original
    setattr(owner, name, wrapper)


def _backend_trainer_class(backend: str) -> type:
    if backend == "jax":
        from keras.src.backend.jax.trainer import JAXTrainer

        return JAXTrainer
    if backend == "torch":
        from keras.src.backend.torch.trainer import TorchTrainer

        return TorchTrainer
    if backend == "tensorflow":
        from keras.src.backend.tensorflow.trainer import TensorFlowTrainer

        return TensorFlowTrainer
    raise KerasInternalsChanged(
        f"stoke doctor measures training on the tensorflow, jax and torch backends. "
        f"Received: KERAS_BACKEND={backend!r}. Set KERAS_BACKEND to one of those."
    )


def _epoch_iterator_init_hook(original):
    def __init__(self, *args, **kwargs):
        original(self, *args, **kwargs)
        recorder = _ACTIVE
        if recorder is not None:
            recorder.offer_epoch_iterator(self)

    return __init__


def _fit_hook(original):
    signature = inspect.signature(original)

    def fit(self, *args, **kwargs):
        recorder = _ACTIVE
        if recorder is None or recorder.fit is not None:
            return original(self, *args, **kwargs)  # not measuring, or a fit inside a fit
        try:
            bound = signature.bind(self, *args, **kwargs)
        except TypeError:
            return original(self, *args, **kwargs)  # let Keras say what is wrong
        bound.apply_defaults()
        x = bound.arguments.get("x")
        user_generator = lock = None
        if isinstance(x, types.GeneratorType):
            user_generator = x
            lock = threading.Lock()
            bound.arguments["x"] = timed_generator(x, recorder, lock)
        arguments = {k: v for k, v in bound.arguments.items() if k != "self"}
        arguments["x"] = x
        recorder.begin_fit(self, arguments, user_generator, lock)
        try:
            return original(*bound.args, **bound.kwargs)
        except DoctorStepLimitReached:
            _stop_input_workers(recorder.fit.epoch_iterator if recorder.fit else None)
            raise
        finally:
            recorder.end_fit()

    return fit


def _make_train_function_hook(original):
    def make_train_function(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        recorder = _ACTIVE
        if recorder is not None and not recorder.in_train_on_batch:
            recorder.on_train_function_made(self)
        return result

    return make_train_function


def _train_on_batch_hook(original):
    def train_on_batch(self, *args, **kwargs):
        recorder = _ACTIVE
        if recorder is None or recorder.fit is not None or recorder.in_train_on_batch:
            return original(self, *args, **kwargs)
        return recorder.measure_train_on_batch(original, self, args, kwargs)

    return train_on_batch


def _stop_input_workers(epoch_iterator) -> None:
    """Stop a PyDataset's worker pool when the doctor ends a run mid-epoch (Keras stops it at
    the epoch's end, which will not come)."""
    adapter = getattr(epoch_iterator, "data_adapter", None)
    enqueuer = getattr(adapter, "enqueuer", None)
    if enqueuer is not None:
        try:
            enqueuer.stop()
        except Exception:
            pass


def find_running_epoch_iterator(max_depth: int = 30):
    """The training EpochIterator of the ``fit`` that called us (for ``DoctorCallback``):
    found as the local ``epoch_iterator`` of a calling frame. None if not found."""
    from keras.src.trainers.epoch_iterator import EpochIterator

    frame = sys._getframe(1)
    for _ in range(max_depth):
        if frame is None:
            return None, None
        candidate = frame.f_locals.get("epoch_iterator")
        if isinstance(candidate, EpochIterator) and frame.f_code.co_name == "fit":
            arguments = {
                name: frame.f_locals.get(name)
                for name in (
                    "x",
                    "y",
                    "sample_weight",
                    "batch_size",
                    "steps_per_epoch",
                    "epochs",
                    "shuffle",
                    "class_weight",
                    "initial_epoch",
                )
            }
            return candidate, arguments
        frame = frame.f_back
    return None, None


# ---------------------------------------------------------------------------------------------
# Facts: the input, the model, the environment. Best effort: each says None when unknown.

_ADAPTER_KINDS = {
    "ArrayDataAdapter": "arrays",
    "TFDatasetAdapter": "tf.data",
    "PyDatasetAdapter": "pydataset",
    "GeneratorDataAdapter": "generator",
    "TorchDataLoaderAdapter": "torch_dataloader",
    "GrainDatasetAdapter": "grain",
}


def input_facts(epoch_iterator, arguments: dict[str, Any], backend: str, user_generator) -> dict:
    adapter = getattr(epoch_iterator, "data_adapter", None)
    x = arguments.get("x")
    kind = _ADAPTER_KINDS.get(type(adapter).__name__, "unknown")
    if _is_stoke_object(x) or _is_stoke_object(adapter):
        kind = "stoke"
    facts: dict[str, Any] = {
        "kind": kind,
        "adapter": type(adapter).__name__ if adapter is not None else None,
        "batch_size": arguments.get("batch_size") or getattr(adapter, "batch_size", None),
        "steps_per_epoch": arguments.get("steps_per_epoch"),
        "num_batches": getattr(epoch_iterator, "num_batches", None),
        "pydataset_workers": None,
        "use_multiprocessing": None,
        "tf_data_parallel_map": None,
        "tf_data_prefetch": None,
        "main_thread": None,
        "producer": None,
    }
    on_tf = backend == "tensorflow"
    if kind == "generator":
        facts["main_thread"] = not on_tf
        facts["producer"] = "tf.data-thread" if on_tf else "trainer-thread"
    elif kind == "pydataset":
        dataset = getattr(adapter, "py_dataset", x)
        workers = int(getattr(dataset, "workers", 1) or 0)
        multiprocessing = bool(getattr(dataset, "use_multiprocessing", False))
        facts["pydataset_workers"] = workers
        facts["use_multiprocessing"] = multiprocessing
        facts["max_queue_size"] = getattr(dataset, "max_queue_size", None)
        if getattr(adapter, "enqueuer", None) is not None:
            facts["main_thread"] = False
            facts["producer"] = "worker-processes" if multiprocessing else "worker-threads"
        else:
            facts["main_thread"] = not on_tf
            facts["producer"] = "tf.data-thread" if on_tf else "trainer-thread"
    elif kind == "arrays":
        facts["main_thread"] = not on_tf
        facts["producer"] = "native" if on_tf else "trainer-thread"
        if arguments.get("batch_size") is None:
            facts["batch_size"] = getattr(adapter, "batch_size", None) or 32
        # Keras casts float arrays to floatx once, when fit starts (a copy of the whole
        # dataset); the batches the trainer sees (``dtypes``) are already cast.
        source = (arguments.get("x"), arguments.get("y"), arguments.get("sample_weight"))
        facts["source_dtypes"] = {
            path: dtype
            for path, leaf in _leaves(source)
            if (dtype := _dtype_name(leaf)) is not None
        }
    elif kind == "tf.data":
        facts["main_thread"] = False
        facts["producer"] = "native"
        facts.update(tf_data_facts(x))
        if facts.get("tf_data_py_function"):
            facts["producer"] = "tf.data-thread"
        if "dtypes" not in facts:
            facts.update(_tf_element_spec_facts(x))
    elif kind == "torch_dataloader":
        workers = int(getattr(x, "num_workers", 0) or 0)
        facts["torch_num_workers"] = workers
        facts["torch_pin_memory"] = bool(getattr(x, "pin_memory", False))
        facts["batch_size"] = getattr(x, "batch_size", None)
        if workers > 0:
            facts["main_thread"] = False
            facts["producer"] = "worker-processes"
        else:
            facts["main_thread"] = not on_tf
            facts["producer"] = "tf.data-thread" if on_tf else "trainer-thread"
    elif kind == "stoke":
        options = getattr(getattr(x, "loader", None), "options", None)
        executor = getattr(options, "executor", None)
        facts["stoke_executor"] = executor
        facts["stoke_workers"] = getattr(options, "workers", None)
        facts["producer"] = {
            "process": "worker-processes",
            "ray": "worker-processes",
            "thread": "worker-threads",
            "inline": "trainer-thread",
        }.get(executor)
        facts["main_thread"] = executor == "inline"
    return facts


def _is_stoke_object(obj) -> bool:
    return obj is not None and type(obj).__module__.split(".")[0] == "stoke"


def batch_facts(batch) -> dict[str, Any]:
    """dtypes, shapes and bytes of one batch, keyed by path ("0", "1", "0/image", ...)."""
    dtypes: dict[str, str] = {}
    shapes: dict[str, list] = {}
    total_bytes = 0
    for path, leaf in _leaves(batch):
        dtype = _dtype_name(leaf)
        if dtype is None:
            continue
        shape = [int(d) if d is not None else None for d in getattr(leaf, "shape", ())]
        dtypes[path] = dtype
        shapes[path] = shape
        total_bytes += _nbytes(shape, dtype)
    return {
        "dtypes": dtypes,
        "shapes": shapes,
        "batch_bytes": total_bytes,
        "first_batch_size": _leading_dim(batch),
    }


def _leaves(node, path: str = "", depth: int = 0):
    if depth > 10:
        return
    if isinstance(node, (tuple, list)):
        for index, child in enumerate(node):
            yield from _leaves(child, f"{path}/{index}" if path else str(index), depth + 1)
    elif isinstance(node, dict):
        for key, child in node.items():
            yield from _leaves(child, f"{path}/{key}" if path else str(key), depth + 1)
    elif node is not None:
        yield path or "0", node


def _dtype_name(leaf) -> str | None:
    dtype = getattr(leaf, "dtype", None)
    if dtype is None:
        return None
    name = getattr(dtype, "name", None)
    if isinstance(name, str) and not str(type(dtype)).startswith("<class 'numpy"):
        return name  # TensorFlow DType
    text = str(dtype)
    return text[len("torch.") :] if text.startswith("torch.") else text


def _nbytes(shape: list, dtype: str) -> int:
    itemsize = {"bfloat16": 2, "float16": 2, "bool": 1, "string": 0}.get(dtype)
    if itemsize is None:
        try:
            import numpy

            itemsize = numpy.dtype(dtype).itemsize
        except Exception:
            return 0
    count = 1
    for dim in shape:
        if dim is None:
            return 0
        count *= dim
    return count * itemsize


def _leading_dim(batch) -> int:
    node = batch
    for _ in range(8):
        if isinstance(node, (tuple, list)):
            if not node:
                return 0
            node = node[0]
        elif isinstance(node, dict):
            if not node:
                return 0
            node = next(iter(node.values()))
        else:
            break
    shape = getattr(node, "shape", None)
    try:
        return int(shape[0]) if shape is not None and len(shape) else 0
    except (TypeError, ValueError, IndexError):
        return 0


def tf_data_facts(dataset) -> dict[str, Any]:
    """Read a tf.data pipeline's graph: parallel or sequential maps, prefetch, Python inside.

    Best effort: serialises the dataset graph (``DatasetToGraphV2`` on ``_variant_tensor``) and
    reads its ops. Datasets built from Python generators show up as ``tf_data_py_function``.
    """
    facts: dict[str, Any] = {
        "tf_data_parallel_map": None,
        "tf_data_prefetch": None,
        "tf_data_py_function": None,
        "tf_data_map_parallelism": [],
    }
    try:
        import tensorflow as tf

        variant = dataset._variant_tensor
        serialized = tf.raw_ops.DatasetToGraphV2(input_dataset=variant)
        graph = tf.compat.v1.GraphDef()
        graph.ParseFromString(serialized.numpy())
    except Exception as error:
        facts["tf_data_graph_error"] = repr(error)
        return facts
    constants = {}
    for node in graph.node:
        if node.op == "Const":
            try:
                constants[node.name] = int(tf.make_ndarray(node.attr["value"].tensor))
            except Exception:
                pass
    sequential_maps = parallel_maps = 0
    parallelism = []
    ops = [node.op for node in graph.node]
    for node in graph.node:
        if node.op == "MapDataset":
            sequential_maps += 1
            parallelism.append(1)
        elif node.op in ("ParallelMapDataset", "ParallelMapDatasetV2", "MapAndBatchDataset"):
            inputs = [i for i in node.input if not i.startswith("^")]
            value = constants.get(inputs[-1].split(":")[0]) if len(inputs) > 1 else None
            if node.op == "MapAndBatchDataset" and len(inputs) >= 3:
                value = constants.get(inputs[-2].split(":")[0], value)
            parallelism.append(value if value is not None else -1)
            if value == 1:
                sequential_maps += 1
            else:
                parallel_maps += 1
    if sequential_maps or parallel_maps:
        facts["tf_data_parallel_map"] = sequential_maps == 0
    facts["tf_data_map_parallelism"] = parallelism
    facts["tf_data_prefetch"] = any(op == "PrefetchDataset" for op in ops)
    python_ops = {"EagerPyFunc", "PyFunc", "PyFuncStateless"}
    in_functions = any(
        node.op in python_ops for function in graph.library.function for node in function.node_def
    )
    facts["tf_data_py_function"] = in_functions or any(op in python_ops for op in ops)
    facts["tf_data_ops"] = sorted({op for op in ops if op.endswith("Dataset") or "Dataset" in op})
    try:
        facts["tf_data_inject_prefetch"] = bool(
            dataset.options().experimental_optimization.inject_prefetch
        )
    except Exception:
        pass
    return facts


def _tf_element_spec_facts(dataset) -> dict[str, Any]:
    try:
        spec = dataset.element_spec
    except Exception:
        return {}
    dtypes, shapes = {}, {}
    for path, leaf in _leaves(spec):
        dtype = getattr(leaf, "dtype", None)
        if dtype is None:
            continue
        dtypes[path] = dtype.name
        shapes[path] = [d for d in leaf.shape.as_list()] if leaf.shape.rank is not None else None
    return {"dtypes": dtypes, "shapes": shapes}


def _tf_static_batch_size(fit: FitContext | None) -> int:
    if fit is None:
        return 0
    batch_size = fit.arguments.get("batch_size")
    if batch_size:
        return int(batch_size)
    adapter = getattr(fit.epoch_iterator, "data_adapter", None)
    size = getattr(adapter, "batch_size", None)
    if size:
        return int(size)
    try:
        dataset = fit.epoch_iterator._distributed_dataset
        first = next(iter(_leaves(dataset.element_spec)))[1]
        return int(first.shape[0] or 0)
    except Exception:
        return 0


def _known_fit_steps(epoch_iterator, arguments: dict[str, Any], model) -> int | None:
    """How many train-function calls this ``fit`` will make, when Keras knows it."""
    try:
        per_epoch = epoch_iterator.num_batches if epoch_iterator is not None else None
    except Exception:
        per_epoch = None
    if not per_epoch:
        return None
    epochs = int(arguments.get("epochs") or 1) - int(arguments.get("initial_epoch") or 0)
    per_execution = max(1, int(getattr(model, "steps_per_execution", 1) or 1))
    calls_per_epoch = -(-int(per_epoch) // per_execution)
    return max(0, epochs) * calls_per_epoch


_HOST_MARKERS = (
    (re.compile(r"\bpy_function\b"), "tf.py_function"),
    (re.compile(r"\bnumpy_function\b"), "tf.numpy_function"),
    (re.compile(r"\bpure_callback\b"), "jax.pure_callback"),
    (re.compile(r"\bio_callback\b"), "jax.io_callback"),
    (re.compile(r"\.numpy\(\)"), ".numpy()"),
    (re.compile(r"\bconvert_to_numpy\("), "convert_to_numpy"),
    (re.compile(r"\.item\(\)"), ".item()"),
    (re.compile(r"\.cpu\(\)"), ".cpu()"),
    (re.compile(r"\.tolist\(\)"), ".tolist()"),
    (re.compile(r"\b(?:np|numpy|onp)\.(?:asarray|array|ascontiguousarray|copy)\("), "np.asarray"),
)


def host_op_layers(model) -> dict[str, str]:
    """Layers (and a subclassed model) whose ``call`` moves tensors to the host: NumPy
    conversions, ``py_function`` / ``numpy_function``, JAX host callbacks, ``.item()``.

    Best effort, by reading the source of each non-Keras ``call`` (and of ``Lambda``
    functions): ``np.sqrt(d)`` on a constant is not flagged, ``np.asarray(x)`` is.
    """
    found: dict[str, str] = {}
    candidates = [model]
    try:
        candidates += list(model._flatten_layers(include_self=False))
    except Exception:
        candidates += list(getattr(model, "layers", []))
    for layer in candidates:
        cls = type(layer)
        if cls.__module__.startswith("keras."):
            if cls.__name__ != "Lambda":
                continue
            function = getattr(layer, "function", None)
        else:
            function = cls.__dict__.get("call") or getattr(cls, "call", None)
            if function is not None and getattr(function, "__module__", "").startswith("keras."):
                continue
        if function is None:
            continue
        try:
            source = inspect.getsource(function)
        except (OSError, TypeError):
            continue
        source = "\n".join(line.split("#", 1)[0] for line in source.splitlines())
        for pattern, label in _HOST_MARKERS:
            if pattern.search(source):
                found[layer.name] = label
                break
    return found


def model_facts(model, backend: str) -> dict[str, Any]:
    facts: dict[str, Any] = {
        "name": getattr(model, "name", None),
        "class": type(model).__name__,
        "run_eagerly": bool(getattr(model, "run_eagerly", False)),
        "jit_compile": getattr(model, "jit_compile", None),
        "steps_per_execution": int(getattr(model, "steps_per_execution", 1) or 1),
        "params": None,
        "device": _model_device(model, backend),
        "host_ops": [],
    }
    try:
        facts["params"] = int(model.count_params())
    except Exception:
        pass
    try:
        facts["layers"] = len(list(model._flatten_layers(include_self=False)))
    except Exception:
        pass
    optimizer = getattr(model, "optimizer", None)
    facts["optimizer"] = type(optimizer).__name__ if optimizer is not None else None
    policy = getattr(model, "dtype_policy", None)
    facts["dtype_policy"] = getattr(policy, "name", None)
    try:
        host = host_op_layers(model)
        facts["host_ops"] = sorted(host)
        facts["host_op_evidence"] = host
    except Exception as error:
        facts["host_ops_error"] = repr(error)
    return facts


def _model_device(model, backend: str) -> str | None:
    try:
        variables = model.trainable_variables or model.variables
        value = variables[0].value
    except Exception:
        return None
    try:
        if backend == "jax":
            return _device_kind(next(iter(value.devices())).platform)
        if backend == "torch":
            return _device_kind(value.device.type)
        if backend == "tensorflow":
            text = str(value.device).upper()
            for kind in ("GPU", "TPU", "CPU"):
                if f"DEVICE:{kind}" in text or f"/{kind}:" in text:
                    return kind.lower()
    except Exception:
        return None
    return None


def _device_kind(name: str) -> str:
    name = name.lower()
    return {"cuda": "gpu", "rocm": "gpu"}.get(name, name)


def env_facts(backend: str, model_device: str | None) -> dict[str, Any]:
    facts: dict[str, Any] = {
        "gpus_visible": 0,
        "gpus_used": 0,
        "accelerator_kind": None,
        "tf_intra_op_threads": None,
        "tf_inter_op_threads": None,
        "memory_growth": None,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
    }
    if backend == "jax":
        import jax

        platform_name = jax.default_backend()
        facts["jax_platform"] = platform_name
        try:
            facts["gpus_visible"] = len(jax.devices("gpu"))
        except Exception:
            facts["gpus_visible"] = 0
        facts["accelerator_kind"] = platform_name if platform_name != "cpu" else None
        preallocate = os.environ.get("XLA_PYTHON_CLIENT_PREALLOCATE", "true").lower()
        allocator = os.environ.get("XLA_PYTHON_CLIENT_ALLOCATOR", "").lower()
        if facts["gpus_visible"]:
            facts["memory_growth"] = preallocate == "false" or allocator == "platform"
        facts["gpus_used"] = _jax_devices_used(model_device)
    elif backend == "torch":
        import torch

        facts["torch_cuda"] = torch.version.cuda
        facts["gpus_visible"] = torch.cuda.device_count() if torch.cuda.is_available() else 0
        facts["accelerator_kind"] = "gpu" if facts["gpus_visible"] else None
        facts["gpus_used"] = 1 if model_device == "gpu" else 0
        facts["torch_threads"] = torch.get_num_threads()
    if "tensorflow" in sys.modules:
        tf_facts = _tensorflow_env_facts()
        if backend == "tensorflow":
            facts.update(tf_facts)
            facts["gpus_used"] = tf_facts.pop("_replicas", 1) if model_device == "gpu" else 0
        else:
            for key in ("tf_intra_op_threads", "tf_inter_op_threads"):
                facts[key] = tf_facts.get(key)
    facts.pop("_replicas", None)
    return facts


def _jax_devices_used(model_device: str | None) -> int:
    if model_device != "gpu":
        return 0
    try:
        import keras

        distribution = keras.distribution.distribution()
        if distribution is not None:
            return int(distribution.device_mesh.devices.size)
    except Exception:
        pass
    return 1


def _tensorflow_env_facts() -> dict[str, Any]:
    import tensorflow as tf

    facts: dict[str, Any] = {}
    gpus = tf.config.list_physical_devices("GPU")
    facts["gpus_visible"] = len(gpus)
    facts["accelerator_kind"] = "gpu" if gpus else None
    facts["tf_intra_op_threads"] = tf.config.threading.get_intra_op_parallelism_threads()
    facts["tf_inter_op_threads"] = tf.config.threading.get_inter_op_parallelism_threads()
    if gpus:
        try:
            facts["memory_growth"] = all(tf.config.experimental.get_memory_growth(g) for g in gpus)
        except Exception:
            facts["memory_growth"] = None
        if os.environ.get("TF_FORCE_GPU_ALLOW_GROWTH", "").lower() == "true":
            facts["memory_growth"] = True
    try:
        facts["_replicas"] = int(tf.distribute.get_strategy().num_replicas_in_sync)
    except Exception:
        facts["_replicas"] = 1
    return facts


# ---------------------------------------------------------------------------------------------
# Small helpers.


def _keras_backend() -> str:
    import keras

    return keras.backend.backend()


def _keras_version_string() -> str | None:
    keras = sys.modules.get("keras")
    return getattr(keras, "__version__", None) if keras is not None else None


def _keras_version_tuple() -> tuple[int, ...] | None:
    text = _keras_version_string()
    if not text:
        return None
    parts = []
    for piece in text.split(".")[:3]:
        digits = re.match(r"\d+", piece)
        if not digits:
            break
        parts.append(int(digits.group()))
    return tuple(parts) if parts else None


def _base_meta(argv, script) -> dict[str, Any]:
    from stoke import __version__

    return {
        "stoke_version": __version__,
        "python": platform.python_version(),
        "keras_version": _keras_version_string(),
        "backend": os.environ.get("KERAS_BACKEND"),
        "argv": list(argv) if argv is not None else list(sys.argv),
        "script": script,
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "hostname": socket.gethostname(),
        "cpu_count": os.cpu_count(),
        "exit_status": None,
        "error": None,
    }
