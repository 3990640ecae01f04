"""TensorFlow: a few of the run's steps with Keras' own pull inside its step, timed.

Where one tf.data thread makes the batches (Keras' ``from_generator`` around a PyDataset
without workers or a Python generator: ``input["producer"] == "tf.data-thread"``), the doctor
pulls each batch eagerly to time the wait (:func:`stoke.diagnosis.measure.timing.
tf_pull_outside_graph`). That moves one thing: the trainer returns to Python after each pull
and must take the GIL back from the thread making the next batch in Python, which Keras'
in-graph pull does not. The doctor's steps are then slower than the run's own: the tutorial
``Sequence`` of the corpus (``sequence_float64.py``, 2 cores) took 4.5 ms a step under the
doctor against 3.2-3.9 ms without it (its fixed twin 2.3-2.9 ms). How much of the producer's
work Keras' step really hides cannot be modelled from the parts (the max of the two and the
cores they share said 2.7 ms, x1.00 predicted against x1.37 measured), so it is measured:
just before the probe step, up to :data:`STEPS` training steps (after :data:`WARMUP_STEPS`:
the first traces Keras' loop over the iterator) run as Keras runs them, the batch pulled inside the
step, each timed from the previous step's end to its own. They are the
run's own steps, in order, seen by its callbacks; the step clock does not record them (their
wait cannot be timed; the step count and the step limit include them) and the probe step
after them is measured as usual. The seconds land in
``input["tf_in_graph_step_s"]``; :func:`stoke.diagnosis.judge.analysis.overlapped_producer`
reads them. What the untimed steps took beyond as many timed ones (the trace) is charged to
the probes. Where no stretch ran, why lands in ``input["tf_in_graph_skipped"]``: the
prediction then names the step as modelled, not measured, among what it did without (an
epoch of unknown length, epochs too short, probes early in the fit).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from stoke.diagnosis.measure.step_clock import StepClock

_perf_counter = time.perf_counter

# steps run first and not timed: the first traces Keras' loop over the dataset's iterator
WARMUP_STEPS = 2
# the most steps timed, and the least: after STEPS, or MIN_STEPS and MAX_SECONDS, it ends
STEPS = 16
MIN_STEPS = 4
MAX_SECONDS = 1.0
# why not started, while the probe step is too far ahead to start: only the last word when
# the run or its fit ended before the stretch could start (facts() says so then)
_STILL_AHEAD = "the probes' step was still further ahead"


class InGraphSteps:
    """One run's stretch of steps pulled inside Keras' step: where it runs (:meth:`due`),
    each step (:meth:`run_step`), and the trace it costs the probes (:meth:`take_trace_charge`).
    Driven from the trainer's thread, before each step the doctor would pull for.

        stretch = InGraphSteps()
        if stretch.due(to_probe=12, fit_steps_to_probe=40, steps_in_epoch=5,
                       left_in_epoch=15, held_back=lambda: None):
            result = stretch.run_step(train_function, iterator, sync, clock)
        stretch.skipped  # None, or why it has not started (the last reason given)
    """

    # the stretch's steps, warm-up included: the most, and the least worth starting
    longest = WARMUP_STEPS + STEPS
    shortest = WARMUP_STEPS + MIN_STEPS

    def __init__(self) -> None:
        self.step_s: list[float] = []  # the timed steps' seconds
        self.warmup_s = 0.0  # the untimed steps' wall time
        self._warmup_left = WARMUP_STEPS
        self._timed_s = 0.0
        self._trace_charged = False
        self.done = False
        self.skipped: str | None = None  # why it did not start, the last time it could have

    def due(self, to_probe: int, fit_steps_to_probe: int, steps_in_epoch: int,
            left_in_epoch: int | None, held_back: Callable[[], str | None]) -> bool:
        """Whether the next step runs with Keras' own pull. ``to_probe``: steps before the
        probe step; ``fit_steps_to_probe``: the fit's steps up to it; ``steps_in_epoch`` and
        ``left_in_epoch``: the epoch's steps so far and left (None: its length is not known);
        ``held_back()``: why the caller's own conditions keep it from starting, or None
        (asked last).

        The stretch ends right before the probe step, takes at most a third of the fit's
        steps up to it (the rest are measured as usual), and stays inside one epoch, never its
        first or last step (an epoch's boundary stays between two recorded steps: the epoch's
        own work is read there); an epoch of unknown length gets none. Ended early (the
        epoch's end came), it does not start again. Each time it could start and does not,
        :attr:`skipped` says why."""
        if self.done or not self.within_reach(to_probe, fit_steps_to_probe):
            return False
        inside_epoch = steps_in_epoch >= 1 and left_in_epoch is not None and left_in_epoch >= 2
        if not self.started:
            why = self._why_not_start(to_probe, fit_steps_to_probe, steps_in_epoch,
                                      left_in_epoch, inside_epoch) or held_back()
            self.skipped = why  # (None: it starts, and no earlier reason holds)
            return why is None
        if inside_epoch and to_probe >= 1:
            return True
        self.end()
        return False

    def _why_not_start(self, to_probe: int, fit_steps_to_probe: int, steps_in_epoch: int,
                       left_in_epoch: int | None, inside_epoch: bool) -> str | None:
        """Why the stretch cannot start at this step, in the report's words (None: it can)."""
        if left_in_epoch is None:
            return "the epoch's length is not known (a generator without steps_per_epoch)"
        epoch_steps = steps_in_epoch + left_in_epoch
        if epoch_steps < self.shortest + 2:
            return (f"the epochs are {epoch_steps} steps long: {self.shortest} such steps and "
                    "the epoch's first and last do not fit in one")
        if to_probe > min(self.longest, fit_steps_to_probe // 3):
            return self._too_early(fit_steps_to_probe) if (
                fit_steps_to_probe // 3 < self.shortest) else _STILL_AHEAD
        if not inside_epoch:
            return "an epoch's first or last step fell where they would run"
        if self.shortest > min(to_probe, left_in_epoch - 1):
            return (f"an epoch's end fell within the {self.shortest} steps before the probes "
                    "that they need")
        return None

    def within_reach(self, to_probe: int, fit_steps_to_probe: int) -> bool:
        """Whether the probe step is near enough for the stretch (or it has started): at
        most :attr:`longest` steps ahead, at least :attr:`shortest` (the epoch's length not
        needed to say so). Closer than that and never started: too early in the fit; further:
        still ahead (the reason where the run ends first)."""
        if self.started or self.shortest <= to_probe <= self.longest:
            return True
        self.skip(self._too_early(fit_steps_to_probe) if to_probe < self.shortest
                  else _STILL_AHEAD)
        return False

    def _too_early(self, fit_steps_to_probe: int) -> str:
        return (f"the probes came {fit_steps_to_probe} steps into the fit, too early: the "
                "steps with Keras' pull take at most a third of the steps before them, and "
                f"{self.shortest} are needed")

    def run_step(self, train_function, iterator, sync, clock: StepClock) -> object:
        """Keras' train function on the run's own iterator (the pull in its graph), timed on
        the run's step ``clock`` (which counts the step without recording it). The device is
        synced after the last untimed step and the last timed one only: in between, each step
        may overlap the next one's pull as Keras' own steps do (a sync a step would stop that
        on an accelerator)."""
        result = train_function(iterator)
        ended = _perf_counter()
        seconds = clock.since_last_step(ended)
        if self._warmup_left > 0:
            self._warmup_left -= 1
            if self._warmup_left == 0:  # the timed steps start with the device idle
                sync(result)
                ended = _perf_counter()
                seconds = clock.since_last_step(ended)
            clock.pass_step(ended)
            self.warmup_s += seconds
            return result
        timed = len(self.step_s) + 1
        if timed >= STEPS or (timed >= MIN_STEPS and self._timed_s + seconds >= MAX_SECONDS):
            sync(result)  # the last: its time holds what the device still had to do
            ended = _perf_counter()
            seconds = clock.since_last_step(ended)
            self.done = True
        clock.pass_step(ended)
        self.step_s.append(seconds)
        self._timed_s += seconds
        return result

    @property
    def started(self) -> bool:
        """Whether a step of the stretch ran."""
        return self._warmup_left < WARMUP_STEPS

    def end(self) -> None:
        """No more stretch steps (the probes came, the epoch or the fit ended)."""
        self.done = True

    def skip(self, why: str) -> None:
        """The caller kept it from being asked (``why``), unless a reason came first (the
        probes' step still ahead is not one: a run that ends there, or never gets nearer,
        says so)."""
        if not self.started and self.skipped in (None, _STILL_AHEAD):
            self.skipped = why

    def trace_s(self) -> float:
        """What the untimed first steps took beyond as many timed ones (Keras tracing its
        loop over the iterator, mostly): the doctor's cost, not the run's."""
        if not self.step_s:
            return self.warmup_s
        typical_s = sorted(self.step_s)[len(self.step_s) // 2]
        return max(0.0, self.warmup_s - (WARMUP_STEPS - self._warmup_left) * typical_s)

    def take_trace_charge(self) -> float | None:
        """Once the stretch is over: its :meth:`trace_s`, for the probes' time and budget;
        None before that, or once taken."""
        if not (self.done and self.started) or self._trace_charged:
            return None
        self._trace_charged = True
        return self.trace_s()

    def facts(self) -> dict:
        """``input["tf_in_graph_step_s"]``: the timed steps; where none was timed,
        ``input["tf_in_graph_skipped"]``: why (nothing when it was never considered)."""
        if self.step_s:
            return {"tf_in_graph_step_s": list(self.step_s)}
        if self.started:
            why = "the fit ended during their first, untimed steps"
        elif self.skipped == _STILL_AHEAD:
            why = "the run or its fit ended before the probes' step"
        else:
            why = self.skipped
        return {"tf_in_graph_skipped": why} if why else {}
