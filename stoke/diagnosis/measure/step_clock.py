"""The step clock: when each measured training step ended, how long it waited for its batch,
and when the device is synchronised.

Owns the per-step numbers the doctor records (:class:`~stoke.diagnosis.record.StepSample`:
step time, wait, batch size, warm-up, synced), the running counters (steps seen, steps since
the loop started, epoch), the doctor's own time inside its hooks and in the sampled syncs,
the fit loop's own time per step outside the train function and the train function's own time
(both as the run's steps take them: right after their waits), and the sync policy
(:meth:`StepClock.sync_due`). Raw measurements only: estimates made from them (the recent
steps' compute, their wait) are separate methods, never written back into a step.

Leaves where the times come from to :mod:`stoke.diagnosis.measure.timing` (the timed
wrappers) and the recorder's ``train_on_batch`` path, and what to do between steps (probes,
the step limit) to :mod:`stoke.diagnosis.measure.probe_schedule` and the recorder.
"""

from __future__ import annotations

import statistics
import time
from collections import deque

from stoke.diagnosis.record import StepSample

_perf_counter = time.perf_counter

# Recent steps kept for the fit loop's own time and the probes' estimates.
RECENT_STEPS = 64
# synced steps this many times slower than the others hold the device's queued work
QUEUED_WORK_FACTOR = 3.0


class StepClock:
    """One run's step clock. Driven from the trainer's thread only.

    A step ends in :meth:`end_step`; its time counts from the previous step's end (or from
    :meth:`restart`: an epoch start, the end of the probes), its wait is what
    :meth:`note_batch` added since. The first ``warmup_steps`` steps of each loop (``fit`` or a
    ``train_on_batch`` loop) are recorded as warm-up.

        clock = StepClock(started_at, steps=record.steps, warmup_steps=2)
        clock.restart()
        clock.note_batch(wait_s=0.01, samples=32)
        clock.end_step(time.perf_counter(), synced=clock.sync_due(), sync_s=0.0)
    """

    def __init__(
        self,
        started_at: float,
        steps: list[StepSample],
        warmup_steps: int = 2,
        sync_every_steps: int = 10,
        sync_min_interval_s: float = 0.25,
        max_recorded_steps: int = 200_000,
    ):
        self.started_at = started_at
        self.steps = steps  # the record's own list: the clock appends each step to it
        self.warmup_steps = warmup_steps
        self.sync_every_steps = sync_every_steps
        self.sync_min_interval_s = sync_min_interval_s
        self.max_recorded_steps = max_recorded_steps
        self.steps_seen = 0  # every measured step of the run
        self.truncated = False  # steps past max_recorded_steps were counted, not recorded
        self.overhead_s = 0.0  # time inside the doctor's hooks
        self.sync_s = 0.0  # time blocked in the sampled device syncs
        self.synced_steps = 0
        # the default batch size of a step whose batches are not seen (TensorFlow, pull in graph)
        self.unseen_batch_size = 0
        # False while the trainer's pull cannot be timed (TensorFlow, pull in graph): the
        # steps say so (StepSample.wait_timed) and their wait is estimated after the run
        self.waits_timed = True
        self._steps_in_loop = 0
        self.steps_in_epoch = 0  # steps ended since the epoch in progress began
        self._loop = -1  # the fit (or train_on_batch loop) in progress, from 0
        self._epoch = -1
        self._prev_end: float | None = None
        self._wait_s = 0.0
        self._carried_wait_s = 0.0
        self._samples = 0
        self._last_sync_step = -1
        self._last_sync_t = -1e9
        self._loop_s: deque[float] = deque(maxlen=RECENT_STEPS)
        self._call_s: deque[float] = deque(maxlen=RECENT_STEPS)

    # -- the loop and the epoch -------------------------------------------------------------

    def begin_loop(self) -> None:
        """A ``fit`` starts measuring: its first steps are warm-up again."""
        self._steps_in_loop = 0
        self._loop += 1

    @property
    def loop_number(self) -> int:
        """The fit in progress (``StepSample.fit`` of its steps), from 0."""
        return max(self._loop, 0)

    def begin_call_loop(self) -> None:
        """A ``train_on_batch`` loop starts: warm-up again, and no step has ended yet (the
        first call's wait is unknown)."""
        self._steps_in_loop = 0
        self.waits_timed = True  # the time between two calls is timed
        self._prev_end = None

    def begin_epoch(self) -> None:
        self._epoch += 1
        self.steps_in_epoch = 0
        self.restart()

    def restart(self) -> None:
        """The next step counts from now (after an epoch start, the probes, a pause), and
        holds the wait carried to it (:meth:`carry_wait`) as wait and as time."""
        carried, self._carried_wait_s = self._carried_wait_s, 0.0
        self._prev_end = _perf_counter() - carried
        self._wait_s = carried
        self._samples = 0

    def carry_wait(self, seconds: float) -> None:
        """The trainer waited ``seconds`` for its input between two steps, outside any step's
        clock (Keras draining a PyDataset's worker pool at an epoch's end, before the next
        epoch restarts the clock): the next step counts them as its wait and its time."""
        self._carried_wait_s += max(0.0, seconds)

    def start_if_idle(self, t: float) -> None:
        """The next step counts from ``t`` when no step ended before it in this loop."""
        if self._prev_end is None:
            self._prev_end = t

    def shift(self, seconds: float) -> None:
        """Leave ``seconds`` spent inside the step in progress out of it (a calibration)."""
        if self._prev_end is not None:
            self._prev_end += seconds

    def since_last_step(self, t: float) -> float:
        """Seconds from the last step's end to ``t`` (0 when no step ended in this loop)."""
        return t - self._prev_end if self._prev_end is not None else 0.0

    # -- inside a step ----------------------------------------------------------------------

    @property
    def steps_in_loop(self) -> int:
        """Steps measured since the loop (``fit``, ``train_on_batch`` loop) started."""
        return self._steps_in_loop

    def in_warmup(self) -> bool:
        """Whether the step in progress is a warm-up step."""
        return self._steps_in_loop < self.warmup_steps

    def is_last_warmup_step(self) -> bool:
        """Whether the step in progress is the last warm-up step (the first with none)."""
        return self._steps_in_loop == max(0, self.warmup_steps - 1)

    def hold_out(self) -> None:
        """Record the step in progress as warm-up, and the warm-up count starts again after
        it: its batch was made earlier (the input-alone probe kept it), so its wait is not the
        input's. May be called from a tf.data thread."""
        self._steps_in_loop = 0

    def note_batch(self, wait_s: float, samples: int) -> None:
        """A batch of ``samples`` reached the trainer after ``wait_s`` seconds of waiting."""
        self._wait_s += wait_s
        self._samples += samples

    def pending_wait_s(self) -> float:
        """The wait noted so far for the step in progress."""
        return self._wait_s

    def add_overhead(self, seconds: float) -> None:
        """Time spent inside the doctor's hooks."""
        self.overhead_s += seconds

    def sync_due(self, also_at_steps: tuple[int | None, ...] = ()) -> bool:
        """Whether the step now ending should wait for the device: the first steady step of
        a loop, a step number in ``also_at_steps`` (the probes', the step limit's), else when
        both ``sync_every_steps`` steps and ``sync_min_interval_s`` seconds have passed since
        the last sync."""
        number = self.steps_seen + 1
        if self._steps_in_loop == self.warmup_steps:
            return True
        if number in also_at_steps:
            return True
        return (
            number - self._last_sync_step >= self.sync_every_steps
            and _perf_counter() - self._last_sync_t >= self.sync_min_interval_s
        )

    def end_step(self, t_end: float, synced: bool, sync_s: float, call_s: float | None = None,
                 compiled: tuple[float, int] = (0.0, 0)) -> None:
        """The step in progress ended at ``t_end`` (after a device sync of ``sync_s`` seconds
        when ``synced``); ``call_s``: the train function's own time in it, when known;
        ``compiled``: the backend's compiling inside it, seconds and compilations (JAX,
        :mod:`.compiles`)."""
        prev_end = self._prev_end if self._prev_end is not None else t_end
        if call_s is not None and not self.in_warmup():
            # the fit loop's own time per step, outside the train function and the wait
            self._loop_s.append(max(0.0, (t_end - prev_end) - self._wait_s - call_s))
            self._call_s.append(max(0.0, call_s))
        if len(self.steps) < self.max_recorded_steps:
            self.steps.append(
                StepSample(
                    step=self.steps_seen,
                    epoch=max(self._epoch, 0),
                    t_s=t_end - self.started_at,
                    wait_s=self._wait_s,
                    step_s=t_end - prev_end,
                    batch_size=self._samples or self.unseen_batch_size,
                    synced=synced,
                    warmup=self.in_warmup(),
                    wait_timed=self.waits_timed,
                    fit=self.loop_number,
                    compiled_s=round(compiled[0], 6),
                    compiles=compiled[1],
                )
            )
        else:
            self.truncated = True
        self.steps_seen += 1
        self.steps_in_epoch += 1
        self._steps_in_loop += 1
        if synced:
            self.synced_steps += 1
            self.sync_s += sync_s
            self._last_sync_step = self.steps_seen
            self._last_sync_t = t_end
        self._prev_end = t_end
        self._wait_s = 0.0
        self._samples = 0

    def pass_step(self, t_end: float) -> None:
        """A step of the run ended at ``t_end`` that the clock counts but does not record
        (TensorFlow, the batch pulled inside Keras' step: :mod:`.in_graph_steps`): the next
        step counts from ``t_end``; the step limit and the probes' step count it."""
        self.steps_seen += 1
        self.steps_in_epoch += 1
        self._steps_in_loop += 1
        self._prev_end = t_end
        self._wait_s = 0.0
        self._samples = 0

    # -- estimates from the recorded steps (never written into them) -------------------------

    def recent_steady_steps(self) -> list[StepSample]:
        """The last recorded steps, warm-up left out."""
        return [s for s in self.steps[-RECENT_STEPS:] if not s.warmup]

    def loop_s_median(self) -> float:
        """The fit loop's own time per step outside the train function (median of recent
        steps; 0 when unknown)."""
        return statistics.median(self._loop_s) if self._loop_s else 0.0

    def call_s_median(self) -> float:
        """The train function's own time per step, its wait left out, as the run's steps took
        it (median of recent steps; 0 when unknown): the input-free window's calls time the
        same work back to back, and the ratio says how much slower it runs after a wait."""
        return statistics.median(self._call_s) if self._call_s else 0.0

    def compute_s_estimate(self) -> float:
        """A step's time not spent waiting: the median of the recent steady steps', or, where
        their synced steps take over :data:`QUEUED_WORK_FACTOR` times the others (the device's
        queued work lands there: asynchronous dispatch), their mean from after the first synced
        step through the last (0 when none). Under asynchronous dispatch an unsynced step
        times only its dispatch: the median alone said 1-10 ms for a JAX CNN on 2 cores whose
        steps took 150 ms, and the input-free window planned 35 calls for 1.6 s of budget,
        which took 5.7 s. On a backend that does not queue, the median stands (a pause in one
        step does not move it)."""
        steps = self.recent_steady_steps()
        if not steps:
            return 0.0
        computes = [max(s.step_s - s.wait_s, 0.0) for s in steps]
        median = statistics.median(computes)
        synced = [i for i, s in enumerate(steps) if s.synced]
        unsynced = [c for s, c in zip(steps, computes) if not s.synced]
        if not (synced and unsynced and synced[-1] >= 1) or statistics.median(
                computes[i] for i in synced) <= QUEUED_WORK_FACTOR * statistics.median(unsynced):
            return median
        start = synced[0] + 1 if len(synced) > 1 else 0
        return max(median, statistics.fmean(computes[start:synced[-1] + 1]))

    def wait_s_estimate(self) -> float:
        """A step's wait for its batch (median of the recent steady steps; 0 when none)."""
        steps = self.recent_steady_steps()
        return statistics.median(s.wait_s for s in steps) if steps else 0.0

    def steps_wall_s(self) -> float:
        """The recorded steps' wall time, warm-up included."""
        return sum(s.step_s for s in self.steps)
