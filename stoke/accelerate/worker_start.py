"""When an accelerated Sequence starts its workers: :class:`WorkerStart` and :func:`gain`.

With ``executor="auto"`` and ``workers="auto"``, ``stoke.accelerate(sequence)`` starts no
worker up front. The trainer makes the batches itself, as Keras' own loop would, and times
each one: how long ``__getitem__`` took (``make``), how long the consumer took before it asked
for the next (``rest``: the training step, Keras' own work), and how many cores the trainer
process used meanwhile. Workers start once those numbers say they pay (:func:`gain` at least
``MIN_GAIN``):

    step now            = make + rest
    step with workers   = max(rest + handover,
                              (make_cpu + cores_used * rest + 2 * handover) / cores)

the batch made beside the step instead of before it, never faster than the rest of the step,
and never faster than the cores can do the work of both (``handover``: a batch through the
shared-memory ring costs the worker and the trainer each about ``HANDOVER_S``; measured on
2 cores, a 128 KiB batch: 0.13 ms of the trainer's CPU). A model trained on the CPU that
already fills the cores gains next to nothing from workers that take cores from it; a cheap
``__getitem__`` beside a long step gains nothing either.

And the workers' start-up must pay for itself: each worker imports what the dataset uses
(Keras and its backend are seconds of CPU each). Workers run at a lower priority, so a core
the trainer leaves idle absorbs their start-ups, one after the other, at no cost to it; on
cores the trainer fills, their CPU is the trainer's loss:

    start-up cost = start-up CPU * workers * clip(1 - (cores - cores_used), 0, 1) / cores

(the trainer's own CPU time when the dataset was wrapped stands for a worker's start-up CPU:
the same interpreter importing the same modules, at most ``STARTUP_CPU_CAP_S``). The workers
must save more than that, and at least ``MIN_SAVED_S`` (no processes started to save a few
milliseconds), over the batches still to come, taken to be at least an epoch and
at least as many as the trainer made so far (a run tends to last as long again as it has:
a "no" on a short epoch becomes a "yes" once the run has shown itself long). Measured on 2
cores (``benchmarks/accelerate_tutorial.py``, torch, a model trained on the CPU): workers at
once took the run from 11.3 s to 18.8 s; deferred, the rule kept them off. A slow
``__getitem__`` before a GPU step (the case stoke is for) gains many times over, with cores to
spare: the workers start after ``FIRST_LOOK`` batches, and the trainer goes on making batches
until one is up.

When the answer is no, it is asked again every ``LOOK_AGAIN`` batches (a step that shrinks
after warm-up, a dataset that gets slower), on fresh numbers. Every answer, with its numbers,
is kept for ``acc.tuning()``.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

MIN_GAIN = 1.1  # start workers when they would make the step at least 10% shorter
FIRST_LOOK = 8  # timed batches (each with the rest of the step before the next) to decide on
LOOK_AGAIN = 64  # batches before a "no" is asked again
OUTLIER = 4.0  # a rest this many times the median (an epoch's end, compilation) is left out
HANDOVER_S = 0.15e-3  # a batch through the ring, for the worker and for the trainer each
MIN_SAVED_S = 1.0  # the least saving (beyond the start-up's cost) that starts workers
STARTUP_CPU_CAP_S = 10.0  # the most a worker's start-up is taken to cost, in CPU seconds


def startup_cost_s(startup_cpu_s: float, workers: int, cores_used: float, cores: float) -> float:
    """Seconds of the trainer's time that starting ``workers`` workers costs, each taking
    ``startup_cpu_s`` of CPU, beside a trainer that uses ``cores_used`` of ``cores`` (module
    docstring): nothing while a core stays idle, all of it on full cores."""
    cores = max(cores, 1.0)
    contended = min(1.0, max(0.0, 1.0 - (cores - max(cores_used, 0.0))))
    return startup_cpu_s * workers * contended / cores


def gain(make_s: float, make_cpu_s: float, rest_s: float, cores_used: float,
         cores: float) -> float:
    """How many times faster a step would be with the batch made by workers beside it than
    before it in the trainer (see the module docstring). ``cores_used``: the trainer
    process's CPU seconds per second during the rest of the step; ``cores``: the cores it
    may use."""
    now = make_s + rest_s
    with_workers = max(rest_s + HANDOVER_S,
                       (make_cpu_s + cores_used * rest_s + 2 * HANDOVER_S) / max(cores, 1.0))
    if with_workers <= 0.0:
        return 1.0
    return now / with_workers


@dataclass(frozen=True)
class StartAnswer:
    """One decision: start the workers or not, and the numbers it rests on (medians over
    ``batches`` timed batches)."""

    start: bool
    gain: float
    make_ms: float
    rest_ms: float
    cores_used: float
    cores: float
    batches: int
    saved_s: float = 0.0  # what the workers would save over the batches to come
    startup_cost_s: float = 0.0  # what starting them would cost the trainer
    horizon: int = 0  # the batches to come the saving is counted over

    def why(self) -> str:
        if self.start:
            verdict = "workers started"
        elif self.gain < MIN_GAIN:
            verdict = f"batches made in the trainer (workers would need x{MIN_GAIN:.2f})"
        else:
            verdict = (f"batches made in the trainer (workers would save "
                       f"{self.saved_s:.2f} s over the next {self.horizon} batches: not "
                       f"{MIN_SAVED_S:g} s beyond the {self.startup_cost_s:.2f} s their "
                       f"start-up costs)")
        return (f"x{self.gain:.2f} with workers: __getitem__ {self.make_ms:.2f} ms, the rest "
                f"of the step {self.rest_ms:.2f} ms using {self.cores_used:.1f} of "
                f"{self.cores:g} cores ({self.batches} batches timed): {verdict}")


class WorkerStart:
    """Times the batches the trainer makes and says when workers should start.

    >>> rule = WorkerStart(cores=2, batches_per_epoch=100, workers=2)
    >>> began = rule.now()
    >>> batch = list(range(1000))   # the trainer makes a batch
    >>> rule.made(began, rule.now())
    >>> rule.should_start()        # nothing decided before FIRST_LOOK batches
    False
    """

    def __init__(self, cores: float, batches_per_epoch: int, workers: int = 2,
                 startup_cpu_s: float | None = None, clock=time.perf_counter,
                 cpu_clock=time.process_time, thread_clock=time.thread_time) -> None:
        self.cores = float(cores)
        self.batches_per_epoch = batches_per_epoch
        self.workers = workers  # how many start first
        if startup_cpu_s is None:  # the trainer's imports so far stand for a worker's
            startup_cpu_s = cpu_clock()
        self.startup_cpu_s = min(float(startup_cpu_s), STARTUP_CPU_CAP_S)
        self._clock, self._cpu_clock, self._thread_clock = clock, cpu_clock, thread_clock
        # (make_s, make_cpu_s, rest_s, rest_cpu_s) of each batch after the first
        self._timed: list[tuple[float, float, float, float]] = []
        self._last_end: tuple[float, float] | None = None  # (wall, process CPU) at the last end
        self._next_look = FIRST_LOOK
        self.batches_made = 0  # by the trainer, every one
        self.answers: list[StartAnswer] = []

    def made(self, began: tuple[float, float, float], ended: tuple[float, float, float]) -> None:
        """Record one batch made in the trainer: ``(wall, process CPU, thread CPU)`` clock
        readings (:meth:`now`) before and after ``__getitem__``."""
        self.batches_made += 1
        if self._last_end is not None:
            rest_s = began[0] - self._last_end[0]
            rest_cpu_s = began[1] - self._last_end[1]
            self._timed.append((ended[0] - began[0], ended[2] - began[2], rest_s, rest_cpu_s))
        self._last_end = (ended[0], ended[1])

    def now(self) -> tuple[float, float, float]:
        return self._clock(), self._cpu_clock(), self._thread_clock()

    def should_start(self) -> bool:
        """Do the batches timed since the last answer say that workers pay? Decided after
        ``FIRST_LOOK`` batches, then again every ``LOOK_AGAIN`` (False in between)."""
        if len(self._timed) < self._next_look:
            return False
        answer = self.answer(self._timed)
        self.answers.append(answer)
        if not answer.start:
            self._timed.clear()
            self._next_look = LOOK_AGAIN
        return answer.start

    def answer(self, timed: list[tuple[float, float, float, float]]) -> StartAnswer:
        """The decision on these timed batches (the rests far above their median, an epoch's
        end or a compilation, left out)."""
        typical = statistics.median(rest for _, _, rest, _ in timed)
        kept = [t for t in timed if t[2] <= OUTLIER * typical] or timed
        make_s = statistics.median(t[0] for t in kept)
        make_cpu_s = statistics.median(t[1] for t in kept)
        rest_s = statistics.median(t[2] for t in kept)
        rest_wall = sum(t[2] for t in kept)
        cores_used = sum(t[3] for t in kept) / rest_wall if rest_wall > 0 else 0.0
        cores_used = min(max(cores_used, 0.0), self.cores)
        return decide(make_s, make_cpu_s, rest_s, cores_used, self.cores,
                      horizon=max(self.batches_per_epoch, self.batches_made),
                      workers=self.workers, startup_cpu_s=self.startup_cpu_s,
                      batches=len(kept))


def decide(make_s: float, make_cpu_s: float, rest_s: float, cores_used: float, cores: float,
           horizon: int, workers: int, startup_cpu_s: float, batches: int = 0) -> StartAnswer:
    """The rule (module docstring) on typical timings: start the workers if they make the
    step at least ``MIN_GAIN`` times shorter and save, over ``horizon`` batches, more than
    their start-up costs plus ``MIN_SAVED_S``."""
    found = gain(make_s, make_cpu_s, rest_s, cores_used, cores)
    saved_s = (make_s + rest_s) * (1.0 - 1.0 / found) * horizon
    cost_s = startup_cost_s(min(startup_cpu_s, STARTUP_CPU_CAP_S), workers, cores_used, cores)
    return StartAnswer(found >= MIN_GAIN and saved_s > cost_s + MIN_SAVED_S, found,
                       1000 * make_s, 1000 * rest_s, cores_used, cores, batches, saved_s,
                       cost_s, horizon)


def when_workers_start(make_s: float, make_cpu_s: float, rest_s: float, cores_used: float,
                       cores: float, batches_per_epoch: int, run_batches: int, workers: int,
                       startup_cpu_s: float) -> tuple[int | None, StartAnswer]:
    """How many batches a run of ``run_batches`` batches with these steady timings has the
    trainer make before :class:`WorkerStart` starts the workers (None: never within the run),
    and the answer given then (or the last "no"): the rule asked after ``FIRST_LOOK`` timed
    batches, then every ``LOOK_AGAIN``, the saving counted over at least an epoch and at
    least the batches made so far. What ``stoke doctor`` predicts ``stoke.accelerate`` does."""
    def look(made: int) -> StartAnswer:
        return decide(make_s, make_cpu_s, rest_s, cores_used, cores,
                      max(batches_per_epoch, made), workers, startup_cpu_s,
                      FIRST_LOOK if made == FIRST_LOOK + 1 else LOOK_AGAIN)

    made = FIRST_LOOK + 1  # the first batch is made, not timed against a rest before it
    answer = look(made)
    if made > run_batches:
        return None, answer
    if answer.gain < MIN_GAIN:  # the gain does not grow with the run: no look starts them
        return None, look(made + LOOK_AGAIN * ((run_batches - made) // LOOK_AGAIN))
    while True:
        if answer.start:
            return made, answer
        if made + LOOK_AGAIN > run_batches:
            return None, answer
        made += LOOK_AGAIN
        answer = look(made)
