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
step, each timed from the previous step's end to its own, after a device sync. They are the
run's own steps, in order, seen by its callbacks; the step clock does not record them (their
wait cannot be timed; the step count and the step limit include them) and the probe step
after them is measured as usual. The seconds land in
``input["tf_in_graph_step_s"]``; :func:`stoke.diagnosis.judge.analysis.overlapped_producer`
reads them. What the untimed steps took beyond as many timed ones (the trace) is charged to
the probes.
"""

from __future__ import annotations

import time
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


class InGraphSteps:
    """One run's stretch of steps pulled inside Keras' step. Driven from the trainer's
    thread: :meth:`due` before a step, then :meth:`run_step` runs it.

        stretch = InGraphSteps()
        if stretch.due(wanted=True):
            result = stretch.run_step(train_function, iterator, sync, clock)
    """

    def __init__(self) -> None:
        self.step_s: list[float] = []  # the timed steps' seconds
        self.warmup_s = 0.0  # the untimed steps' wall time
        self._warmup_left = WARMUP_STEPS
        self._timed_s = 0.0
        self.done = False

    # the stretch's steps, warm-up included: the most, and the least worth starting
    longest = WARMUP_STEPS + STEPS
    shortest = WARMUP_STEPS + MIN_STEPS

    def due(self, wanted: bool) -> bool:
        """Whether the next step runs with Keras' own pull: ``wanted`` (the recorder's
        conditions: the probes are next, no batch kept for training) and not done."""
        return wanted and not self.done

    def run_step(self, train_function, iterator, sync, clock: StepClock) -> object:
        """Keras' train function on the run's own iterator (the pull in its graph), synced,
        timed on the run's step ``clock`` (which passes the step without recording it)."""
        result = train_function(iterator)
        sync(result)
        ended = _perf_counter()
        seconds = clock.since_last_step(ended)
        clock.pass_step(ended)
        if self._warmup_left > 0:
            self._warmup_left -= 1
            self.warmup_s += seconds
            return result
        self.step_s.append(seconds)
        self._timed_s += seconds
        if len(self.step_s) >= STEPS or (
                len(self.step_s) >= MIN_STEPS and self._timed_s >= MAX_SECONDS):
            self.done = True
        return result

    @property
    def started(self) -> bool:
        """Whether a step of the stretch ran."""
        return self._warmup_left < WARMUP_STEPS

    def end(self) -> None:
        """No more stretch steps (the probes came, the fit ended)."""
        self.done = True

    def trace_s(self) -> float:
        """What the untimed first steps took beyond as many timed ones (Keras tracing its
        loop over the iterator, mostly): the doctor's cost, not the run's."""
        if not self.step_s:
            return self.warmup_s
        typical_s = sorted(self.step_s)[len(self.step_s) // 2]
        return max(0.0, self.warmup_s - (WARMUP_STEPS - self._warmup_left) * typical_s)

    def facts(self) -> dict:
        """``input["tf_in_graph_step_s"]``: the timed steps (none when no step was timed)."""
        return {"tf_in_graph_step_s": list(self.step_s)} if self.step_s else {}
