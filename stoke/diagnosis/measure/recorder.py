"""The recorder: one measured run of a Keras training script, wired from its parts.

Owns the ``fit`` in progress
(:class:`FitContext`), the step limit (:class:`DoctorStepLimitReached`), and the
:class:`Recorder`, which the hooks feed and which collects the run's
:class:`~stoke.diagnosis.record.Measurements` (returned as a typed
:class:`~stoke.diagnosis.record.RunRecord` by :meth:`Recorder.finish`): it takes the facts
once, decides how the wait is measured on this backend, and hands each event to its part: the
step times to the
:class:`~stoke.diagnosis.measure.step_clock.StepClock`, the probe plan, the input-free window
and the bounding probes (for ``fit`` and ``train_on_batch`` alike, within one budget) to the
:class:`~stoke.diagnosis.measure.probe_schedule.ProbeSchedule`.

Leaves the timed wrappers around Keras' loop to :mod:`stoke.diagnosis.measure.timing`, patching
Keras to :mod:`stoke.diagnosis.measure.hooks`, the facts to :mod:`stoke.diagnosis.measure.facts`,
the probes' measurements to :mod:`stoke.diagnosis.measure.model_probe` and
:mod:`stoke.diagnosis.measure.input_free`, host and GPU sampling to
:mod:`stoke.diagnosis.measure.system`, running a script to :mod:`stoke.diagnosis.run.bootstrap`
and :mod:`stoke.diagnosis.run.runner`, and judging to the analysis.
"""

from __future__ import annotations

import threading
import time
import weakref
from dataclasses import dataclass
from typing import Any

from stoke.diagnosis.measure import phases
from stoke.diagnosis.measure.compiles import CompileWatch
from stoke.diagnosis.measure.facts import (
    base_meta,
    batch_end_async,
    batch_facts,
    batches_left_in_epoch,
    env_facts,
    input_facts,
    keras_backend,
    keras_version_string,
    known_fit_steps,
    leading_dim,
    model_facts,
    tf_element_spec_facts,
    tf_static_batch_size,
)
from stoke.diagnosis.measure.in_graph_steps import InGraphSteps
from stoke.diagnosis.measure.input_free import InputFreeWindow
from stoke.diagnosis.measure.options import DoctorOptions
from stoke.diagnosis.measure.probe_schedule import ProbeSchedule
from stoke.diagnosis.measure.step_clock import StepClock
from stoke.diagnosis.measure.tf_pulls import (
    generator_ready_pull_seconds,
    generator_restart_seconds,
)
from stoke.diagnosis.measure.timing import (
    GeneratorTally,
    TimedTrainFunction,
    TrainingPulls,
    UserGenerator,
    tf_pull_outside_graph,
    tf_ready_pull_seconds,
    untimed_cost_per_step_s,
    unwrap_epoch_iterator,
    wait_method,
    wrap_epoch_iterator,
)
from stoke.diagnosis.measure.training_state import hand_jax_state_to_model
from stoke.diagnosis.measure.validation import ValidationTally
from stoke.diagnosis.record import FROM_GENERATOR_INPUT_KINDS, Measurements, RunRecord

_perf_counter = time.perf_counter


class DoctorStepLimitReached(BaseException):
    """Raised in the measured process after ``--steps N`` steps (and the probes) to end the
    user's script at once; :mod:`stoke.diagnosis.run.bootstrap` catches it and exits cleanly. A
    BaseException so that a script's ``except Exception`` does not swallow it."""


class KerasInternalsChanged(RuntimeError):
    """The Keras internals the doctor hooks into are not where it expects them."""


# ---------------------------------------------------------------------------------------------
# The recorder: one measured run.


@dataclass
class FitContext:
    """What the doctor knows about the ``fit`` call in progress."""

    model: Any
    arguments: dict[str, Any]
    trainer_thread: int
    user_generator: UserGenerator | None = None  # the script's generator, as fit gets it
    epoch_iterator: Any = None
    attached: bool = False
    steps_at_start: int = 0


class Recorder:
    """Collects one run's :class:`Measurements` (``self.record``) while hooks feed it;
    :meth:`finish` returns them as a typed :class:`RunRecord`. Not thread-safe by design:
    the step clock is driven from the trainer's thread only (the generator tally aside)."""

    def __init__(self, options: DoctorOptions | None = None, argv=None, script=None):
        self.options = options or DoctorOptions()
        self.started_at = _perf_counter()
        self.record = Measurements(meta=base_meta(argv, script))
        self.clock = StepClock(
            self.started_at,
            self.record.steps,
            warmup_steps=self.options.warmup_steps,
            sync_every_steps=self.options.sync_every_steps,
            sync_min_interval_s=self.options.sync_min_interval_s,
            max_recorded_steps=self.options.max_recorded_steps,
        )
        self.schedule = ProbeSchedule(
            self.record,
            self.clock,
            enabled=self.options.probes,
            probe_after_steps=self.options.probe_after_steps,
            stop_after_steps=self.options.stop_after_steps,
            probe_seconds=self.options.probe_seconds,
            budget=self.options.probe_budget(),
        )
        self.fit: FitContext | None = None
        self.backend: str | None = None
        self.active = False  # the process's active recorder (hooks.activate)
        self.measuring = False  # steps are being timed
        self.in_train_on_batch = False
        # TensorFlow: the doctor pulls each batch itself, outside the graph, and what an eager
        # pull of a ready batch costs (measured once, on the first batch)
        self.tf_pull_outside_graph = False
        self.tf_pull_floor_s: float | None = None
        # TensorFlow, one tf.data thread making the batches: steps with Keras' own pull
        self.in_graph_steps = InGraphSteps()
        self._pending_facts_batch = True
        # batches the input-alone probe took from training's own iterator, kept for it
        self.training_pulls = TrainingPulls()
        self._generator_tally = GeneratorTally()
        self.validation = ValidationTally()  # fit's validation: hooks.evaluate feeds it
        self._user_generator: UserGenerator | None = None  # the last script generator fed
        self._sampler = None
        # JAX: which steps compiled the train step (stoke.diagnosis.measure.compiles)
        self.compile_watch: CompileWatch | None = None
        self._wrapped_models: list[weakref.ref] = []
        self._model_labels: list[tuple[weakref.ref, str]] = []  # each fit's model, named
        self._train_on_batch_model: Any = None
        self._trainer_thread: int | None = None
        self._input_facts_taken = False
        self._host_code_watched = False
        self._finished = False
        self._facts_s = 0.0  # wall time taking facts (overhead["facts_s"])

    # -- lifecycle ----------------------------------------------------------------------------

    def set_active(self, active: bool) -> None:
        """Mark this recorder as the process's active one (or no longer: then it stops
        measuring too). Called by :func:`stoke.diagnosis.measure.hooks.activate`."""
        self.active = active
        if not active:
            self.measuring = False

    def start(self, sample_system: bool = True) -> None:
        """Start the background sampler (host CPU, RSS, GPUs)."""
        if not sample_system or self._sampler is not None:
            return
        from stoke.diagnosis.measure.nvml import NvmlReader
        from stoke.diagnosis.measure.system import SystemSampler

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
            return RunRecord.from_measurements(self.record)
        self._finished = True
        finish_started = _perf_counter()
        self.active = False
        self.measuring = False
        if self.compile_watch is not None:
            self.compile_watch.close()
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
        if meta["measured_from"] is None:
            facts_started = _perf_counter()
            self._take_static_facts()
            self._facts_s += _perf_counter() - facts_started
        if self.clock.truncated:
            meta["steps_truncated"] = True
        self._finish_generator_facts()
        self.record.input.update(self.in_graph_steps.facts())
        self._estimate_tf_waits()
        steps = self.record.steps
        step_total = sum(s.step_s for s in steps)
        overhead = self.record.overhead
        # The hooks time themselves with perf_counter; the calls to it and to the wrappers
        # are not inside any timed span: add them, measured on this machine.
        self.clock.add_overhead(len(steps) * untimed_cost_per_step_s())
        doctor_s = self.clock.overhead_s
        overhead["doctor_s_total"] = doctor_s
        overhead["doctor_s_per_step"] = doctor_s / len(steps) if steps else 0.0
        overhead["fraction_of_step"] = doctor_s / step_total if step_total > 0 else 0.0
        overhead["sync_s_total"] = self.clock.sync_s
        overhead["synced_steps"] = self.clock.synced_steps
        overhead["probes_s"] = self.schedule.spent_s
        if self.schedule.spent_each:
            overhead["probe_s_each"] = dict(self.schedule.spent_each)
        if self.schedule.applied_budget_s is not None:
            overhead["probe_budget_s"] = self.schedule.applied_budget_s
            overhead["expected_run_s"] = self.schedule.applied_expected_run_s
        overhead["facts_s"] = self._facts_s
        self.unwrap_models()
        self.schedule.drop_batch()
        self._user_generator = None
        overhead["finish_s"] = _perf_counter() - finish_started
        return RunRecord.from_measurements(self.record)

    def _take_static_facts(self) -> None:
        """No fit or train_on_batch ran (a custom training loop, or none): the facts that need
        no step (threads, devices, memory growth) are still taken, when Keras was imported."""
        import sys

        if "keras" not in sys.modules or "gpus_visible" in self.record.env:
            return
        try:
            self.backend = self.backend or keras_backend()
            self.record.meta["backend"] = self.backend
            self.record.env.update(env_facts(self.backend, None))
            self.record.meta["keras_version"] = keras_version_string()
        except Exception as error:
            self.record.env["facts_error"] = repr(error)

    def unwrap_models(self) -> None:
        """Give every model its own train function back (the notebook case)."""
        for ref in self._wrapped_models:
            model = ref()
            function = getattr(model, "train_function", None) if model is not None else None
            if isinstance(function, TimedTrainFunction) and function.recorder is self:
                model.train_function = function.original
        self._wrapped_models.clear()

    # -- fit ----------------------------------------------------------------------------------

    def feed_generator(self, generator) -> UserGenerator:
        """The script's generator as ``fit`` gets it (:class:`UserGenerator`): the same one
        again for a later ``fit`` on the same generator (a Keras-2 loop of one-epoch fits),
        so batches the input-alone probe kept are still trained on."""
        current = self._user_generator
        if current is None or current.generator is not generator:
            current = self._user_generator = UserGenerator(generator, self)
        return current

    def begin_fit(
        self, model, arguments: dict[str, Any], user_generator: UserGenerator | None = None
    ) -> None:
        self.fit = FitContext(
            model=model,
            arguments=arguments,
            trainer_thread=threading.get_ident(),
            user_generator=user_generator,
            steps_at_start=self.clock.steps_seen,
        )
        self._trainer_thread = self.fit.trainer_thread
        self.record.meta.setdefault("trainer_cpu_s_at_first_fit", round(time.process_time(), 3))

    def end_fit(self) -> None:
        if self.fit is not None:
            # the fit ended inside the window (a callback stopped training): state back
            self.schedule.abandon_window(self.fit.model, "the fit ended before the window did")
            # what the doctor wrapped, unwrapped: the epoch iterator and its input are freed
            # when Keras lets go of them, as without the doctor
            unwrap_epoch_iterator(self.fit.epoch_iterator)
        self.training_pulls.forget()
        if self.in_graph_steps.started:
            self.in_graph_steps.end()  # a later fit traces its loop again: not timed
            self._charge_in_graph_trace()
        self.measuring = False
        self.fit = None

    def offer_epoch_iterator(self, epoch_iterator) -> None:
        """The first EpochIterator built inside a measured ``fit`` is the training one. Its
        input facts are taken now: a run can fail before its first step (a worker that
        raises on the batch Keras reads to build the model)."""
        fit = self.fit
        if fit is not None and fit.epoch_iterator is None and not fit.attached:
            fit.epoch_iterator = epoch_iterator
            self.backend = keras_backend()
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
        phases.mark(self.record.overhead, "fit_attached")
        self.backend = keras_backend()
        self.record.meta["measured_from"] = "fit"
        self.record.meta["backend"] = self.backend
        self.clock.begin_loop()
        if self.compile_watch is None:
            self.compile_watch = CompileWatch.for_backend(self.backend)
            self.record.model["compiles_watched"] = self.compile_watch is not None
        self._note_fit_model(model)
        if epoch_iterator is not None:
            wrap_epoch_iterator(epoch_iterator, self)
        self.wrap_train_function(model)
        self._decide_tf_pull(model)
        self._take_input_facts(epoch_iterator)
        self.record.input["wait_method"], self.record.input["wait_note"] = wait_method(
            self.backend, self.tf_pull_outside_graph
        )
        if self.backend == "tensorflow" and not self.tf_pull_outside_graph:
            # no batch will pass through Python: read dtypes off the dataset's element spec
            dataset = getattr(epoch_iterator, "_distributed_dataset", None)
            if dataset is not None and "dtypes" not in self.record.input:
                self.record.input.update(tf_element_spec_facts(dataset))
        self._take_model_and_env_facts(model)
        # With --steps N the probes close the measured window; otherwise they run after
        # probe_after_steps, or at the last step of a fit known to be shorter.
        epochs = int(fit.arguments.get("epochs") or 1) - int(fit.arguments.get("initial_epoch") or 0)
        self.schedule.plan(known_fit_steps(epoch_iterator, fit.arguments, model),
                           epochs=max(1, epochs))
        self.measuring = True
        self.clock.restart()

    def _note_fit_model(self, model) -> None:
        """The model this fit trains, by a name unique per model object (``meta.fit_models``,
        one per fit): the analysis judges the probed model's fits only."""
        known = [label for ref, label in self._model_labels if ref() is model]
        if known:
            label = known[0]
        else:
            name = str(getattr(model, "name", None) or type(model).__name__)
            taken = {label for _, label in self._model_labels}
            label, number = name, 1
            while label in taken:
                number += 1
                label = f"{name} ({number})"
            try:
                self._model_labels.append((weakref.ref(model), label))
            except TypeError:  # not weakly referenceable: named, not remembered
                pass
        fits = self.record.meta.setdefault("fit_models", [])
        fits.extend([None] * (self.clock.loop_number - len(fits)))  # fits never attached
        fits.append(label)

    def _take_input_facts(self, epoch_iterator) -> None:
        if self._input_facts_taken or self.fit is None:
            return
        self._input_facts_taken = True
        started = _perf_counter()
        try:
            self.record.input.update(
                input_facts(epoch_iterator, self.fit.arguments, self.backend, self.fit.user_generator)
            )
        except Exception as error:  # facts are best effort: never break the user's run
            self.record.input["facts_error"] = repr(error)
        self._facts_s += _perf_counter() - started

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
        self.tf_pull_outside_graph = self.backend == "tensorflow" and tf_pull_outside_graph(model)
        self.clock.waits_timed = self.backend != "tensorflow" or self.tf_pull_outside_graph
        if not self.clock.waits_timed:
            self.clock.unseen_batch_size = tf_static_batch_size(self.fit) * int(
                getattr(model, "steps_per_execution", 1) or 1
            )

    def _take_model_and_env_facts(self, model) -> None:
        started = _perf_counter()
        try:
            self.record.model.update(model_facts(model, self.backend))
            if self.fit is not None:
                self.record.model["batch_end_async"] = batch_end_async(
                    self.fit.arguments.get("callbacks"))
        except Exception as error:
            self.record.model["facts_error"] = repr(error)
        try:
            self.record.env.update(env_facts(self.backend, self.record.model.get("device")))
        except Exception as error:
            self.record.env["facts_error"] = repr(error)
        self.record.meta["keras_version"] = keras_version_string()
        self._facts_s += _perf_counter() - started

    # -- the clock (fed by stoke.diagnosis.measure.timing) -------------------------------------

    def begin_epoch(self) -> None:
        if self.measuring:
            self.clock.begin_epoch()

    def note_epoch_end_wait(self, seconds: float) -> None:
        """The trainer waited ``seconds`` at an epoch's end for the input's workers to finish
        the batches in flight (see :func:`stoke.diagnosis.measure.timing.wrap_epoch_iterator`):
        the next step carries them."""
        if self.measuring:
            self.clock.carry_wait(seconds)

    def note_batch(self, batch, wait_s: float) -> None:
        """A batch reached the trainer after ``wait_s`` seconds of waiting."""
        samples = leading_dim(batch)
        self.clock.note_batch(wait_s, samples)
        self.schedule.offer_batch(batch, samples)
        if self._pending_facts_batch:
            self._pending_facts_batch = False
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
        self._generator_tally.note(seconds)

    def note_kept_batch(self) -> None:
        """Training was handed a batch the input-alone probe had taken from the script's
        generator: the step in progress did not wait for it, and is left out of the numbers
        (with the warm-up after it: prefetching inputs take a step or two to catch up)."""
        if self.measuring:
            self.clock.hold_out()

    def pending_wait_s(self) -> float:
        """The wait noted so far for the step in progress."""
        return self.clock.pending_wait_s()

    def sync_due(self) -> bool:
        """Whether the step now ending should wait for the device: the clock's policy, the
        step before the probes or the step limit, and an epoch's first step and (where Keras
        knows the epoch's length) its last, so that an epoch's boundary lies between two
        synced steps. Under asynchronous dispatch the epoch's end waits for the device anyway
        (JAX: ``jax_state_sync``), and what the device still had queued would land between
        the epochs, outside every step: a JAX CNN on 2 cores (10 steps an epoch, synced at
        each epoch's third) recorded 550 ms of steps in an epoch of 1,690 ms, and the work of
        its last seven steps was read as the epoch's own. And an epoch's first step holds the
        epoch's start (a worker pool started again beside the device's work): unsynced, its
        device work spilled into the next steps, read as steady ones (pydataset_io.py on JAX:
        36 and 25 ms after a 162 ms first step, against 4-9 ms steps; x2.2 predicted against
        x1.5 measured)."""
        return (self.clock.sync_due((self.schedule.at_step, self.options.stop_after_steps))
                or self._epoch_boundary_step())

    def _epoch_boundary_step(self) -> bool:
        """Whether the step now ending is its epoch's first, or takes the epoch's last
        batches (where Keras knows the epoch's length)."""
        if not self.measuring:
            return False
        if self.clock.steps_in_epoch == 0:
            return True
        fit = self.fit
        if fit is None:
            return False
        left = batches_left_in_epoch(fit.epoch_iterator, self.clock.steps_in_epoch, fit.model)
        per_execution = max(1, int(getattr(fit.model, "steps_per_execution", 1) or 1))
        return left is not None and 0 < left <= per_execution

    def end_step(self, t_end: float, synced: bool, sync_s: float, call_s: float | None = None,
                 compiled: tuple[float, int] = (0.0, 0)) -> None:
        self.clock.end_step(t_end, synced, sync_s, call_s, compiled)

    def add_overhead(self, seconds: float) -> None:
        self.clock.add_overhead(seconds)

    def calibrate_tf_pull(self, batch) -> float:
        """Measure what an eager ``next()`` costs on this batch structure when a batch is
        already waiting in the buffer (the median of a few pulls from an in-memory dataset;
        for a generator or PyDataset also from Keras' ``from_generator`` pipeline, and what
        that pipeline costs to start over, :mod:`stoke.diagnosis.measure.tf_pulls`); the time
        is moved out of the step that paid it."""
        started = _perf_counter()
        self.tf_pull_floor_s = 0.0
        try:
            self.tf_pull_floor_s = tf_ready_pull_seconds(batch)
        except Exception as error:
            self.record.input["tf_pull_floor_error"] = repr(error)
        self.record.input["tf_pull_floor_s"] = self.tf_pull_floor_s
        if self.record.input.get("kind") in FROM_GENERATOR_INPUT_KINDS:
            try:
                self.record.input["tf_generator_pull_s"] = generator_ready_pull_seconds(batch)
            except Exception as error:
                self.record.input["tf_generator_pull_error"] = repr(error)[:300]
            try:
                self.record.input["tf_generator_restart_s"] = generator_restart_seconds(batch)
            except Exception as error:
                self.record.input["tf_generator_restart_error"] = repr(error)[:300]
        spent = _perf_counter() - started
        self.record.overhead["calibration_s"] = spent
        if self.schedule.enabled:  # paused training like a probe: stated and budgeted as one
            self.schedule.charge("tf_pulls", spent)
        self.clock.shift(spent)
        return spent

    def in_graph_step_due(self) -> bool:
        """TensorFlow, one tf.data thread making the batches (:mod:`.in_graph_steps`): whether
        the next step runs with Keras' own pull, timed (where: ``InGraphSteps.due``). Only
        in a fit whose probes are planned and still to come, with no batch the probes took
        waiting for training, after the warm-up, and where the probes' budget can pay the
        trace (:meth:`_in_graph_held_back`). Where it does not run, the stretch keeps
        why (``input.tf_in_graph_skipped``)."""
        stretch, schedule, clock, fit = self.in_graph_steps, self.schedule, self.clock, self.fit
        if (stretch.done or not self.tf_pull_outside_graph or fit is None or schedule.done
                or self.record.input.get("producer") != "tf.data-thread"):
            return False
        if not schedule.enabled or schedule.at_step is None:
            stretch.skip("the doctor's probes were off" if not schedule.enabled
                         else "no probe step was planned")
            return False
        if self.training_pulls.kept:  # (the probes' batches: kept while they run, done by then)
            return False
        to_probe = schedule.at_step - 1 - clock.steps_seen
        fit_steps_to_probe = schedule.at_step - fit.steps_at_start
        if not stretch.within_reach(to_probe, fit_steps_to_probe):
            return False  # (before asking for the epoch's length)
        due = stretch.due(
            to_probe=to_probe,
            fit_steps_to_probe=fit_steps_to_probe,
            steps_in_epoch=clock.steps_in_epoch,
            left_in_epoch=batches_left_in_epoch(fit.epoch_iterator, clock.steps_in_epoch,
                                                fit.model),
            held_back=self._in_graph_held_back,
        )
        self._charge_in_graph_trace()  # (the epoch's end may have ended it just now)
        return due

    def _in_graph_held_back(self) -> str | None:
        """Why the stretch may not start now (None: it may): during the warm-up, or where the
        probes' budget left does not hold what tracing Keras' loop may cost, half the fit's
        first step, which traced the step itself (sequence_float64.py: a first step of
        0.42 s, the loop's trace 0.07 s), so that the probes after it keep most of theirs."""
        clock = self.clock
        if clock.in_warmup():
            return "the doctor's warm-up steps ran up to the probes"
        first_step_s = next(
            (s.step_s for s in clock.steps if s.fit == clock.loop_number), 0.0)
        if self.schedule.left_s() < 0.5 * first_step_s:
            return (f"the probes' budget left could not pay for tracing Keras' loop (about "
                    f"half the fit's first step of {first_step_s:.2f} s)")
        return None

    def run_in_graph_step(self, train_function, iterator, sync):
        """One step with Keras' own pull (:meth:`in_graph_step_due`)."""
        result = self.in_graph_steps.run_step(train_function, iterator, sync, self.clock)
        self._charge_in_graph_trace()  # (its last timed step may have ended it)
        return result

    def _charge_in_graph_trace(self) -> None:
        """Once the steps with Keras' own pull are over: what their untimed first steps took
        beyond as many timed ones (the trace) is the probes' time, and off their budget."""
        trace_s = self.in_graph_steps.take_trace_charge()
        if trace_s is not None:
            self.schedule.charge("in_graph_steps", trace_s)

    def host_code_watch_due(self, model) -> bool:
        """Watch one eager step for host code in the model (stoke.diagnosis.measure.host_code): the
        last warm-up step (left out of the numbers), once per run, only when Python runs
        inside the step."""
        if self._host_code_watched or not self.clock.is_last_warmup_step():
            return False
        self._host_code_watched = True
        from stoke.diagnosis.measure.host_code import step_runs_eagerly

        return step_runs_eagerly(model, self.backend or "")

    def note_host_code(self, found: dict[str, str], stand_ins: dict[str, str],
                       classes: dict[str, str] | None = None) -> None:
        """The watched step's host layers (name -> how seen), their traceable stand-ins
        (name -> ``host_code.IDENTITY`` or why none; the compiled-step probe needs them) and
        their classes (name -> class name: ``Lambda`` takes another fix)."""
        model = self.record.model
        model["host_code_watched"] = True
        if not found:
            return
        model["host_ops"] = sorted({*(model.get("host_ops") or []), *found})
        model.setdefault("host_op_evidence", {}).update(found)
        model.setdefault("host_op_stand_ins", {}).update(stand_ins)
        model.setdefault("host_op_classes", {}).update(
            {name: cls for name, cls in (classes or {}).items() if name in found})

    def note_failure(self, exception: BaseException) -> None:
        """The script failed: where inside the model, when it failed in a layer's ``call``
        (stoke.diagnosis.measure.host_code.failed_in_layer: the layer, the user's line)."""
        from stoke.diagnosis.measure.host_code import failed_in_layer

        try:
            failure = failed_in_layer(exception)
        except Exception as error:  # a doctor bug must not cost the user the record
            self.record.model["failed_in_layer_error"] = repr(error)[:300]
            return
        if failure is not None:
            self.record.model["failed_in_layer"] = failure

    # -- after a step: the schedule's probes and the step limit -------------------------------

    @property
    def input_free(self) -> InputFreeWindow | None:
        """The input-free window in progress (its steps take the cached batch), else None."""
        return self.schedule.window

    def after_step(
        self, timed_function: TimedTrainFunction, args: tuple, result: Any
    ) -> InputFreeWindow | None:
        """After a measured step: the input-free window to run now inside this step (the
        caller runs it, then the probes and the step limit), or the probes and the limit."""
        if self.schedule.window_due(self.fit is not None):
            window = self.schedule.open_window(
                self.backend,
                timed_function.model,
                result,
                batches_pass_python=self.backend != "tensorflow" or self.tf_pull_outside_graph,
                ready_pull_s=(self.tf_pull_floor_s or 0.0) if self.tf_pull_outside_graph else 0.0,
                handover=self._handover_timer(),
            )
            if window is not None:
                return window
        self.probes_and_limit(timed_function, args, result)
        return None

    def _handover_timer(self):
        """What times taking a ready batch in at the window's end, warm
        (:mod:`stoke.diagnosis.measure.handover`): where the script's generator runs on the
        trainer's thread inside the timed ``next()`` (JAX, torch); None otherwise."""
        fit = self.fit
        if (self.backend not in ("jax", "torch") or fit is None or fit.user_generator is None
                or fit.epoch_iterator is None):
            return None
        from stoke.diagnosis.measure.handover import ready_handover_seconds

        epoch_iterator, backend = fit.epoch_iterator, self.backend
        return lambda batch: ready_handover_seconds(epoch_iterator, backend, batch)

    def end_input_free(self, window: InputFreeWindow | None, failure: str | None = None) -> None:
        """The window is over: keep its measurement, restart the step clock."""
        self.schedule.close_window(window, failure)

    def probes_and_limit(self, timed_function: TimedTrainFunction, args: tuple, result: Any) -> None:
        if self.schedule.due():
            from stoke.diagnosis.measure.compiled_step import compiled_step_probe
            from stoke.diagnosis.measure.model_probe import fit_probes

            step_s = self.clock.compute_s_estimate()
            probes = fit_probes(
                self.backend,
                timed_function,
                result,
                self.schedule.cached_batch,
                self.fit,
                self.record.input.get("kind"),
                run_ends_after_probes=self._run_ends_after_probes(),
                step_s=step_s,
                pull_s=self.clock.wait_s_estimate(),
                batches_left=batches_left_in_epoch(
                    self.fit.epoch_iterator if self.fit else None, self.clock.steps_in_epoch,
                    timed_function.model),
                training_pulls=(self.training_pulls
                                if self.record.input.get("tf_data_seeded_reshuffle") else None),
            )
            # host code in the model: the step its fix gives, after the model alone
            model = self.record.model
            compiled = compiled_step_probe(
                self.backend, timed_function, result, self.schedule.cached_batch,
                list(model.get("host_ops") or []), dict(model.get("host_op_stand_ins") or {}),
                step_s=step_s, loop_s=self.clock.loop_s_median(),
            )
            if compiled is not None:
                probes.insert(1, compiled)
            self.record.meta.setdefault("probed_fit", self.clock.loop_number)
            self.schedule.run(probes)
        if self._step_limit_reached():
            if self.options.on_step_limit == "stop_training":
                timed_function.model.stop_training = True
            else:
                self.measuring = False
                if self.backend == "jax":
                    hand_jax_state_to_model(timed_function.model, result)
                self._raise_step_limit()

    def _run_ends_after_probes(self) -> bool:
        limit = self.options.stop_after_steps
        return (
            self.options.on_step_limit == "raise"
            and limit is not None
            and self.clock.steps_seen >= limit
        )

    def _step_limit_reached(self) -> bool:
        limit = self.options.stop_after_steps
        if limit is None or self.clock.steps_seen < limit:
            return False
        self.record.meta["stopped_after_steps"] = self.clock.steps_seen
        return True

    def _raise_step_limit(self) -> None:
        raise DoctorStepLimitReached(f"stoke doctor: stopped after {self.clock.steps_seen} steps")

    # -- train_on_batch loops -----------------------------------------------------------------

    def measure_train_on_batch(self, original, model, args, kwargs):
        t_start = _perf_counter()
        if self._train_on_batch_model is not model:
            self._attach_train_on_batch(model, args, kwargs)
        wait = self.clock.since_last_step(t_start)
        self.in_train_on_batch = True
        try:
            result = original(model, *args, **kwargs)
        finally:
            self.in_train_on_batch = False
        t_end = _perf_counter()
        self.clock.note_batch(wait, leading_dim(args[0] if args else kwargs.get("x")))
        self.clock.start_if_idle(t_start)
        self.clock.end_step(t_end, synced=True, sync_s=0.0)
        self.clock.add_overhead(_perf_counter() - t_end)
        if self.schedule.due():
            from stoke.diagnosis.measure.model_probe import train_on_batch_probes

            self.schedule.run(
                train_on_batch_probes(
                    self.backend, original, model, args, kwargs, self.clock.compute_s_estimate()
                )
            )
        if self._step_limit_reached() and self.options.on_step_limit == "raise":
            self._raise_step_limit()
        return result

    def _attach_train_on_batch(self, model, args, kwargs) -> None:
        self._train_on_batch_model = model
        phases.mark(self.record.overhead, "fit_attached")
        self.backend = keras_backend()
        self.record.meta["measured_from"] = self.record.meta.get("measured_from") or "train_on_batch"
        self.record.meta["backend"] = self.backend
        self.clock.begin_call_loop()
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
        self.schedule.plan(keep_batch=False)

    # -- finishing ------------------------------------------------------------------------------

    def _finish_generator_facts(self) -> None:
        inputs = self.record.input
        inputs.update(self._generator_tally.input_facts(self._trainer_thread, inputs.get("producer")))
        inputs.update(self.validation.input_facts())

    def _estimate_tf_waits(self) -> None:
        """TensorFlow with the pull inside the graph: the wait of each step that could not be
        timed (``wait_timed`` False) is estimated after the run as its time less the
        model-alone step time, into ``wait_estimated_s``; ``wait_s`` stays what was timed
        (nothing), and steps without the probe stay unestimated."""
        probe = self.record.probes.get("model_alone")
        if probe is None:
            return
        # the probe's call trained on batches_per_call batches, the run's on steps_per_execution
        per_batch = float(probe.detail.get("s_per_step", 0.0)) / max(
            1, int(probe.detail.get("batches_per_call") or 1))
        per_step = per_batch * max(1, int(self.record.model.get("steps_per_execution") or 1))
        for step in self.record.steps:
            if not step.wait_timed:
                step.wait_estimated_s = max(0.0, step.step_s - per_step)
