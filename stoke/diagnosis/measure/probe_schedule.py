"""The probe schedule: when the doctor probes, what it keeps for the probes, and how long they
may take.

Owns, for both ways a run is measured (``fit`` and a ``train_on_batch`` loop), one plan: the
step the probes run after (:meth:`ProbeSchedule.plan`), the one batch kept for them
(:meth:`ProbeSchedule.offer_batch`), the input-free window's turn (``fit`` only: opened inside
the step that triggers the probes, :meth:`ProbeSchedule.open_window`), then the bounding probes
in order (:meth:`ProbeSchedule.run`), each given its seconds from one global budget
(:class:`ProbeBudget`). The budget scales with the run: once ``fit`` has its length (steps x
epochs) and a few steps were timed, all probes together take at most ``fraction`` of the run's
expected steps' wall time (its steps x the measured step time), or ``known_min_s`` (1 s),
whichever is larger, so a short script stays short; when the length is not known (a generator without ``steps_per_epoch``, a ``train_on_batch``
loop) or the doctor ends the run itself (``--steps N``: a measuring session), at most
``fraction`` of the steps measured so far, or ``min_s`` seconds, whichever is larger.

A probe given less than ``probe_seconds`` that used its whole share is *shortened*: its
result says so (``detail["shortened"]``), and the analysis names it among what lowers the
prediction's confidence. A probe whose least run would not fit in what is left is not run
and ``meta["probe_notes"]`` says so. The probes' wall time (``overhead["probes_s"]``, and per
probe ``overhead["probe_s_each"]``), the budget that applied (``overhead["probe_budget_s"]``)
and the expected run it came from (``overhead["expected_run_s"]``) go in the record.

Leaves the measurements to :mod:`stoke.diagnosis.measure.model_probe` and
:mod:`stoke.diagnosis.measure.input_free`, the step numbers to
:mod:`stoke.diagnosis.measure.step_clock`, and which probes a path runs to the recorder.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from stoke.diagnosis.measure import phases
from stoke.diagnosis.record import Measurements, ProbeResult, input_shares_the_cores

if TYPE_CHECKING:
    from stoke.diagnosis.measure.input_free import InputFreeWindow
    from stoke.diagnosis.measure.step_clock import StepClock

_perf_counter = time.perf_counter

# The probes are planned to end within this share of what is left of the budget: what a
# probe costs outside its timed part (copying the training state, a fresh iterator) is not
# known in advance.
PLANNING_MARGIN = 0.9


@dataclass(frozen=True)
class ProbeBudget:
    """How long all of one run's probes may take together.

    With the run's expected steps' wall time known (``expected_run_s``: the run's length
    times its measured step time): ``fraction`` of it (of the steps measured so far, if more),
    or ``known_min_s`` seconds, whichever is larger: a short run gets short probes (issue 14:
    the doctored run within 1.5x the plain one). Without it: ``fraction`` of the measured
    steps' wall time, or ``min_s`` seconds, whichever is larger.

        ProbeBudget().limit_s(steps_wall_s=400.0)  # 100.0
        ProbeBudget().limit_s(1.0, expected_run_s=8.0)  # 2.0
        ProbeBudget().limit_s(1.0, expected_run_s=2.0)  # 1.0 (known_min_s)
    """

    fraction: float = 0.25
    min_s: float = 60.0
    known_min_s: float = 1.0

    def __post_init__(self):
        if not 0 < self.fraction:
            raise ValueError(
                f"probe_budget_fraction must be > 0. Received: probe_budget_fraction={self.fraction}"
            )
        if self.min_s < 0:
            raise ValueError(
                f"probe_budget_min_s must be >= 0 seconds. Received: probe_budget_min_s={self.min_s}"
            )
        if self.known_min_s < 0:
            raise ValueError(
                f"probe_budget_known_min_s must be >= 0 seconds. "
                f"Received: probe_budget_known_min_s={self.known_min_s}"
            )

    def limit_s(self, steps_wall_s: float, expected_run_s: float | None = None,
                charged_s: float = 0.0) -> float:
        """``charged_s``: spent before the probes on a measurement charged to them
        (:meth:`ProbeSchedule.charge`): it comes off the share, not off the floor, which
        stays the probes' own (a short TensorFlow run's first-step timing took 0.8 of its
        1.0 s at load 11, and left the window 0.03 s)."""
        if expected_run_s is not None:
            return max(self.known_min_s + charged_s,
                       self.fraction * max(steps_wall_s, expected_run_s))
        return max(self.min_s + charged_s, self.fraction * steps_wall_s)

    def describe(self, steps_wall_s: float, expected_run_s: float | None = None,
                 charged_s: float = 0.0) -> str:
        limit = self.limit_s(steps_wall_s, expected_run_s, charged_s)
        floor_s = self.known_min_s if expected_run_s is not None else self.min_s
        least = f"at least {floor_s:g} s" + (
            f" after the {charged_s:.1f} s of first-step timing" if charged_s > 0 else "")
        if expected_run_s is not None:
            return (
                f"{limit:.1f} s: {self.fraction:.0%} of the run's expected "
                f"{max(steps_wall_s, expected_run_s):.1f} s of steps, {least}"
            )
        return (
            f"{limit:.1f} s: {self.fraction:.0%} of the measured steps' "
            f"{steps_wall_s:.1f} s, {least}"
        )


class ProbeNotRun(Exception):
    """Raised by a probe that finds it cannot run; its message is the note."""


@dataclass(frozen=True)
class Probe:
    """One bounding probe, as the schedule runs it.

    ``run(seconds, deadline)`` measures for about ``seconds`` and ends by the
    ``perf_counter()`` time ``deadline`` (at the granularity of one step or pull); returns its
    result, None when it measured nothing (``empty`` is noted), or raises :class:`ProbeNotRun`.
    ``fixed_s`` and ``unit_s`` are what its warm-up and its least timed part (one step, one
    pull) are expected to cost, from the run's own steps: the budget needs them.
    ``max_units``: the most steps or pulls it times however long it may run (None: no cap);
    with it the schedule tells a probe cut by the budget from one that ended on its own.
    ``skipped``: why it cannot run at all (noted, not run)."""

    name: str
    label: str
    run: Callable[[float, float], ProbeResult | None]
    fixed_s: float = 0.0
    unit_s: float = 0.0
    max_units: int | None = None
    skipped: str | None = None
    empty: str = "the probe measured nothing"


class ProbeSchedule:
    """One run's probe plan, budget and input-free window. Driven from the trainer's thread."""

    def __init__(
        self,
        record: Measurements,
        clock: StepClock,
        enabled: bool = True,
        probe_after_steps: int = 50,
        stop_after_steps: int | None = None,
        probe_seconds: float = 2.0,
        budget: ProbeBudget | None = None,
    ):
        self.record = record
        self.clock = clock
        self.enabled = enabled
        self.probe_after_steps = probe_after_steps
        self.stop_after_steps = stop_after_steps
        self.probe_seconds = probe_seconds
        self.budget = budget or ProbeBudget()
        self.at_step: int | None = None  # the probes run once this many steps were measured
        self.done = False
        self.window: InputFreeWindow | None = None  # the input-free window in progress
        self.window_done = not enabled  # done: nothing to run, nothing to check
        self.cached_batch: Any = None  # the probe step's batch
        self.spent_s = 0.0  # the probes' wall time so far
        self.spent_each: dict[str, float] = {}  # each probe's wall time (input_free, ...)
        self.charged_s = 0.0  # of spent_s: measurements outside the probes (charge())
        self.applied_budget_s: float | None = None  # the budget when the probes ran
        # the run's steps when known (its length; None: unknown, or the doctor ends the run)
        self.expected_steps: int | None = None
        # a fit of this many epochs, of a length Keras does not know yet (a dataset of unknown
        # cardinality in its first epoch): the run lasts at least this many times the steps
        # its epoch in progress took so far
        self.epochs: int | None = None
        self.applied_expected_run_s: float | None = None  # what the budget was a share of
        self._keep_batch = False
        self._cached_batch_size = 0

    # -- the plan ---------------------------------------------------------------------------

    def plan(self, total_steps: int | None = None, keep_batch: bool = True,
             epochs: int | None = None) -> None:
        """Plan the probes once: after ``probe_after_steps`` more steps (or at the step
        limit), or at the last step of a loop known to be ``total_steps`` long. A known
        length (and no step limit: the run is the user's, not a measuring session) makes
        the budget a share of the expected run (:meth:`expected_run_s`). Without it, a fit of
        ``epochs`` epochs makes the budget a share of the least such a run can last."""
        if self.done or self.at_step is not None:
            return
        planned = self.stop_after_steps or self.probe_after_steps
        if total_steps is not None and total_steps > 0:
            planned = min(planned, total_steps)
            if self.stop_after_steps is None:
                self.expected_steps = total_steps
        elif epochs and epochs > 1 and self.stop_after_steps is None:
            # (one epoch of unknown length, an endless input's: nothing bounds it, the floor)
            self.epochs = epochs
        self.at_step = self.clock.steps_seen + planned
        self._keep_batch = self.enabled and keep_batch

    def offer_batch(self, batch: Any, batch_size: int) -> None:
        """A batch reached the trainer: kept when it is the probe step's (holding others
        would pin buffers, a shared-memory slot or a device batch, the input wants back)."""
        if self._keep_batch and self.clock.steps_seen + 1 >= self.at_step:
            self.cached_batch = batch
            self._cached_batch_size = batch_size

    def drop_batch(self) -> None:
        """Let the kept batch go (the run is over: it pins what the input wants back)."""
        self.cached_batch = None
        self._keep_batch = False

    def due(self) -> bool:
        """Whether the probes are due after the step that just ended."""
        return not self.done and self.at_step is not None and self.clock.steps_seen >= self.at_step

    def notes(self) -> dict[str, str]:
        return self.record.meta.setdefault("probe_notes", {})

    # -- the budget -------------------------------------------------------------------------

    def charge(self, name: str, seconds: float) -> None:
        """A measurement made outside the probes that paused training the way a probe does
        (on TensorFlow, timing ready pulls at the first step: 0.04 s on a quiet machine,
        2.6 s at load 20): its wall time is the probes' (stated in the report with theirs,
        under ``name`` in ``probe_s_each``) and comes off their budget's share of the run
        (not off its floor: :meth:`ProbeBudget.limit_s`)."""
        self.spent_s += seconds
        self.charged_s += seconds
        self.spent_each[name] = self.spent_each.get(name, 0.0) + seconds

    def expected_run_s(self) -> float | None:
        """The run's expected steps' wall time: its known length times the median time of
        its recent steady steps (of all its steps while none is steady yet); None when the
        length is not known or no step was timed. A fit whose epochs' length is not known
        yet (:attr:`epochs`): the least it can last, its epochs times the steps its epoch in
        progress took so far (the red-team's s18_tfrecord_noprefetch.py, a TFRecord dataset:
        3.3-3.5 s of probes, under a 60 s floor, beside 1.4 s of steps; 1.50-1.69x the plain
        run's wall time)."""
        expected_steps = self.expected_steps
        if expected_steps is None and self.epochs:
            expected_steps = self.epochs * self.clock.steps_in_epoch or None
        if expected_steps is None:
            return None
        steps = self.clock.recent_steady_steps() or self.clock.steps
        if not steps:
            return None
        return expected_steps * statistics.median(s.step_s for s in steps)

    def budget_s(self) -> float:
        return self.budget.limit_s(self.clock.steps_wall_s(), self.expected_run_s(),
                                   self.charged_s)

    def left_s(self) -> float:
        """What the probes may still spend, within the planning margin."""
        return self.budget_s() * PLANNING_MARGIN - self.spent_s

    def describe_budget(self) -> str:
        return self.budget.describe(self.clock.steps_wall_s(), self.expected_run_s(),
                                    self.charged_s)

    def _allot(self, probes_left: int, fixed_s: float, unit_s: float) -> tuple[float, float] | str:
        """(seconds, deadline) for the next probe, or why it does not fit: what is left of
        the budget, shared among the probes left."""
        budget_s = self.applied_budget_s = self.budget_s()
        expected_s = self.expected_run_s()
        # the steps' wall time the budget is a share of (as describe_budget says it)
        self.applied_expected_run_s = (
            None if expected_s is None else max(self.clock.steps_wall_s(), expected_s))
        left_s = self.left_s()
        share_s = left_s / max(1, probes_left)
        seconds = min(self.probe_seconds, share_s - fixed_s)
        if seconds <= 0 or seconds < unit_s:
            # the share is what decided: "2.6 s left, needs 1.4 s" alone reads as a contradiction
            share = (f", {max(0.0, share_s):.1f} s of it for this probe (shared with the "
                     f"{probes_left - 1} after it)" if probes_left > 1 else "")
            return (
                f"not run: the probe budget ({self.describe_budget()}) "
                f"had {max(0.0, budget_s - self.spent_s):.1f} s left{share}, this probe needs "
                f"about {fixed_s + unit_s:.1f} s"
            )
        return seconds, _perf_counter() + share_s

    def mark_if_shortened(self, result: ProbeResult, seconds: float, max_units: int | None) -> None:
        """Say in ``result.detail["shortened"]`` when the budget cut the probe: it was given
        less than ``probe_seconds`` and stopped well before it would have ended on its own
        (``probe_seconds`` of its steps or pulls, at most ``max_units``)."""
        if seconds >= self.probe_seconds or result.batches <= 0 or result.detail.get("exhausted"):
            return  # given its full time, or it ended on its own (an input that ran out)
        per_unit = result.seconds / result.batches
        full_s = self.probe_seconds
        if max_units is not None:
            full_s = min(full_s, max_units * per_unit)
        if result.seconds >= 0.8 * full_s:
            return
        result.detail["shortened"] = (
            f"timed {result.batches} step(s) or pull(s) in {result.seconds:.2f} s instead of "
            f"about {full_s:.2f} s: its share of the probe budget ({self.describe_budget()})"
        )

    # -- the input-free window (fit only) ---------------------------------------------------

    def window_due(self, fit_in_progress: bool) -> bool:
        return (
            not self.window_done
            and self.enabled
            and self.window is None
            and fit_in_progress
            and self.due()
        )

    def open_window(
        self,
        backend: str,
        model,
        step_result: Any,
        batches_pass_python: bool,
        ready_pull_s: float,
        probes_after: int = 2,
        handover: Callable[[Any], float] | None = None,
    ) -> InputFreeWindow | None:
        """Open the input-free window after this step when it can run (the window and the
        ``probes_after`` probes after it share what is left of the budget); None when it
        cannot, with the reason noted. ``batches_pass_python``: the run's batches reach the
        train function through Python (not on TensorFlow with the pull inside the graph).
        ``handover``: times taking a ready batch in, warm, at the window's end (see
        :class:`~stoke.diagnosis.measure.input_free.InputFreeWindow`)."""
        from stoke.diagnosis.measure import input_free

        recent = self.clock.recent_steady_steps()
        reason = None
        if not batches_pass_python:
            reason = "TensorFlow pulls this run's batches inside the compiled loop: none can be swapped"
        elif self.cached_batch is None:
            reason = "no batch of the run was kept"
        elif (recent and input_free.wait_fraction(recent) < input_free.MIN_WAIT_FRACTION
              and not input_shares_the_cores(self.record.model.get("device"),
                                             self.record.input.get("producer"),
                                             self.record.input.get("tf_data_parallel_map"))):
            # (where the input's workers share a CPU-trained model's cores, its cost shows as a
            # slower step, not as a wait: the window times the step without them)
            reason = (
                f"the {len(recent)} steps before it waited "
                f"{input_free.wait_fraction(recent):.1%} of their time (below "
                f"{input_free.MIN_WAIT_FRACTION:.0%}): no input cost to remove there"
            )
        if reason is None:
            step_s = self.clock.compute_s_estimate()
            allotted = self._allot(1 + probes_after, input_free.WARMUP_CALLS * step_s, step_s)
            if isinstance(allotted, str):
                reason = allotted
        if reason is None:
            seconds, deadline = allotted
            try:
                self.window = input_free.InputFreeWindow(
                    backend, model, step_result, self.cached_batch, self._cached_batch_size,
                    input_free.planned_calls(step_s, seconds),
                    ready_pull_s=ready_pull_s,
                    loop_s=self.clock.loop_s_median(),
                    max_seconds=seconds,
                    deadline=deadline,
                    call_s_after_wait=self.clock.call_s_median(),
                    handover=handover,
                    scale_loop=backend == "jax",
                    batch_end_async=self.record.model.get("batch_end_async") is True,
                )
                # when the window started (its state copy included), as a Unix time
                phases.mark(self.record.overhead, "probes_started",
                            time.time() - (_perf_counter() - self.window.started_at))
                return self.window
            except Exception as error:
                reason = f"the window could not start: {error!r}"
        self.window_done = True
        self.notes()["input_free"] = reason
        return None

    def close_window(self, window: InputFreeWindow | None, failure: str | None = None) -> None:
        """The window is over: keep its measurement (or why there is none), charge its wall
        time to the budget, restart the step clock."""
        current, self.window = self.window, None
        self.window_done = True
        if window is not None and window.result is not None:
            from stoke.diagnosis.measure.input_free import MAX_CALLS

            self.mark_if_shortened(window.result, window.max_seconds, MAX_CALLS)
            self.record.probes["input_free"] = window.result
        else:
            self.notes()["input_free"] = failure or "no result"
        if current is not None:
            spent = _perf_counter() - current.started_at
            self.spent_s += spent
            self.spent_each["input_free"] = self.spent_each.get("input_free", 0.0) + spent
            phases.mark(self.record.overhead, "probes_ended")
        self.clock.restart()

    def abandon_window(self, model, failure: str) -> None:
        """The loop ended inside the window: the training state back, no measurement."""
        if self.window is not None:
            self.window.abandon(model)
            self.close_window(None, failure)

    # -- the bounding probes ----------------------------------------------------------------

    def run(self, probes: list[Probe]) -> None:
        """Run the due probes in order, each within its share of what is left of the budget;
        results go to ``record.probes``, reasons for a probe not run to
        ``meta["probe_notes"]``. Once per run; the step clock restarts afterwards."""
        self.done = True
        checkpoint = _perf_counter()
        try:
            if not self.enabled:
                self.notes()["all"] = "probes disabled (--no-probes)"
                return
            phases.mark(self.record.overhead, "probes_started")
            runnable = [probe for probe in probes if probe.skipped is None]
            for probe in probes:
                if probe.skipped is not None:
                    self.notes()[probe.name] = probe.skipped
                    continue
                allotted = self._allot(len(runnable), probe.fixed_s, probe.unit_s)
                runnable.remove(probe)
                if isinstance(allotted, str):
                    self.notes()[probe.name] = allotted
                    continue
                seconds, deadline = allotted
                try:
                    result = probe.run(seconds, deadline)
                except ProbeNotRun as reason:
                    self.notes()[probe.name] = str(reason)
                except Exception as error:
                    self.notes()[probe.name] = f"the {probe.label} probe failed: {error!r}"
                else:
                    if result is None:
                        self.notes()[probe.name] = probe.empty
                    else:
                        self.mark_if_shortened(result, seconds, probe.max_units)
                        self.record.probes[probe.name] = result
                now = _perf_counter()
                self.spent_s += now - checkpoint
                self.spent_each[probe.name] = now - checkpoint
                checkpoint = now
        finally:
            self.drop_batch()
            self.spent_s += _perf_counter() - checkpoint
            if self.enabled:
                phases.mark(self.record.overhead, "probes_ended")
            self.clock.restart()
