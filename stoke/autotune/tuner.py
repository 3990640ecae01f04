"""The tuner: the executor, the number of workers and the ring depth, chosen by measurement.

:class:`Tuner` holds the decisions: plain logic over measured windows (delivered samples/s,
the share of time the consumer waited in ``next()``, CPU use of trainer + workers), driven by
a clock it is given, so that tests can replay any situation in no time. What it reports is
:mod:`stoke.autotune.report`'s (``it.tuning()``; progress is logged at debug level on the
``stoke`` logger), what a window measures of the machine :mod:`stoke.autotune.meter`'s, the
pool whose executor and workers it changes :class:`stoke.executors.auto.AutoPool`, and when
a loader is tuned at all, with which budgets, :mod:`stoke.executors.choose`.

It leaves the plan, the order of delivery and the ring to the loader, and running tasks to
the executors. Tuning never changes *what* is delivered: the plan and per-sample randomness
depend on (seed, epoch, index) only.

How it decides (``executor="auto"``, ``workers="auto"``):

1. **Executor.** ``executor="auto"`` runs process workers: user code apart from the
   trainer, so that a sample that crashes (a segfault in a C extension) raises
   ``WorkerDiedError`` instead of killing the training. A pipeline that cannot be pickled,
   or whose process workers cannot load it, runs in threads. (Given both kinds, as the
   tests do, the tuner can also compare them: each gets a measured window with the same
   worker count, a second one each within 15 %; within 5 % processes win.)
2. **Workers, by the cores the trainer leaves.** Each window measures the trainer
   process's own CPU time per step, the workers', and what other processes take of the
   cores this process may run on. From 2 (or 1), the count doubles while the delivered
   rate (steps/s of the consumer) grows by >= 5 % and the consumer still waits, up to the
   cores left after the trainer and the others (``cpu_budget_cores`` caps it further),
   unless the workers leave most of the cores idle (sleeping, waiting on I/O); past that
   room, while the consumer waits 25 % or more, one more worker at a time is measured and
   kept if it pays (others' share of the cores is not fixed); when a doubling gains less,
   the midpoint is tried once. Then it **backs off** when the workers
   may be taking the trainer's CPU: more workers than the cores leave room for, every core
   busy while a trainer that waits needs 3/4 of a core or more, or every core busy while a
   trainer that does not wait runs on the CPU for less than 60 % of its step (its step
   time grew because of the workers): fewer workers are measured and kept when they deliver
   as many steps/s. So a model trained on the CPU that mostly waits leaves the workers
   every core, and one that needs its cores gets them back.
3. **Ring depth.** 2 x workers + 2 slots in rotation; more when deliveries fall below what
   the workers make while the consumer waits (an uneven consumer). The ring is allocated
   once, within ``memory_budget_bytes``; slots beyond the depth are never touched. Process
   workers' own memory (USS, measured) counts against the budget too: it caps their number.
4. **Re-tuning.** Once settled, longer windows watch the consumer: when it starts waiting
   (it got faster, say after compilation) or the workers' rate drifts by 25 % (another
   process took cores), the worker count is searched again from the current setting (the
   executors too, if they could not be told apart before); when it has not waited for
   three windows, workers it does not need are let go.

A window opens only after a change has taken effect (new workers up, old tasks drained)
and as many batches as the ring holds have passed, so it measures the new setting alone.
The very first window is recorded but not judged: it often holds the model's compilation;
and two windows whose trainer CPU per step differs twice or more are not compared (the
trainer did other work in one of them): that one is measured again.
Windows in which the consumer hardly waited say that the input keeps up, not how fast it
could go: the search stops climbing there and resumes when the consumer waits again.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass
from typing import Any

from stoke.autotune.report import Decision, Trial, Tuning
from stoke.autotune.target import TunerTarget
from stoke.data.structure import BatchLayout
from stoke.errors import StokeError

log = logging.getLogger("stoke")

Config = tuple[str, int]  # (executor kind, workers)
MAX_WORKERS = 64
MAX_TRIALS_KEPT = 500


@dataclass(frozen=True)
class TunerSettings:
    """How the tuner measures. The defaults suit batches of 1-100 ms; tests shorten them."""

    start_workers: int = 2
    window_s: float = 0.4  # a search window lasts at least this long...
    window_batches: int = 5  # ...and at least this many batches (and one per worker)
    min_gain: float = 0.05  # a change must bring this much more
    near: float = 0.10  # a losing executor within this much of the best is tried further
    close_call: float = 0.15  # executors this close are measured twice before choosing
    keeps_up_wait: float = 0.05  # search: below this consumer wait, the input keeps up
    monitor_s: float = 2.0  # settled: the first watch window; doubles while nothing changes
    monitor_max_s: float = 30.0
    waits_wait: float = 0.10  # settled: above this consumer wait, the input holds it up
    idle_wait: float = 0.02  # settled: below this, the consumer does not need all workers
    shrink_after_windows: int = 3
    shrink_headroom: float = 1.5  # keep workers for this much more than the consumer takes
    drift: float = 0.25  # the workers' rate moved this much: measure again
    oversubscribe_below: float = 0.5  # go past the core budget only below this CPU share
    oversubscribe_factor: int = 4  # ...up to this many workers per budgeted core
    core_slack: float = 0.15  # a core counts as free for a worker from this much free CPU
    trainer_needs_cores: float = 0.75  # a trainer using this much may lose to the workers...
    saturated_idle: float = 0.05  # ...when less than this share of the cores is idle
    starved_share: float = 0.6  # a trainer on the CPU for less of its step time lacks cores
    probe_wait: float = 0.25  # a consumer waiting this much: one more worker is measured
    trainer_differs: float = 2.0  # trainer CPU per step this many times another window's:
    # that window held other work of the trainer (compilation): measured again



class _Window:
    def __init__(self, start: float, cpu: dict[int, float] | None, idle: float | None) -> None:
        self.start = start
        self.cpu = cpu
        self.idle = idle
        self.rows = 0
        self.wait_s = 0.0
        self.batches = 0


_WARMUP, _MEASURE, _WATCH = "warm-up", "measure", "watch"


class Tuner:
    """Chooses (executor, workers) and the ring depth from what it observes.

    The loader reports every delivered batch (:meth:`observe`: its rows and how long the
    consumer waited for it); the tuner tells its pool what to run (``apply``) and publishes
    the ring depth it wants (:attr:`depth`). Its pool follows
    :class:`~stoke.autotune.target.TunerTarget`
    (:class:`~stoke.executors.auto.AutoPool`, :class:`~stoke.accelerate.tuned_workers.TunedWorkers`;
    the tests use a simulated one).
    """

    def __init__(self, kinds: Iterable[str], cpu_budget_cores: int, *,
                 fixed_workers: int | None = None, memory_budget_bytes: int | None = None,
                 ring_slots: int | None = None, settings: TunerSettings | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 machine_cores: int | None = None) -> None:
        self.kinds = tuple(kinds)
        self.cpu_budget_cores = max(1, int(cpu_budget_cores))
        # the cores this process may run on (trainer, workers and everyone else share them)
        self.machine_cores = max(self.cpu_budget_cores, int(machine_cores or 0))
        self.fixed_workers = fixed_workers
        self.memory_budget_bytes = memory_budget_bytes
        self.ring_slots_option = ring_slots
        self.settings = settings or TunerSettings()
        self.clock = clock
        start = fixed_workers or min(self.settings.start_workers, self.cpu_budget_cores)
        self.config: Config = (self.kinds[0], start)
        self.depth = 0  # slots in rotation; 0 until the ring exists
        self.tasks_per_worker = 2  # slots in rotation per worker (set with the ring)
        self.capacity = 0  # slots allocated
        self.slot_bytes = 0
        self.decisions: list[Decision] = []
        self.trials: list[Trial] = []
        self.settled_at: float | None = None
        self.pool: TunerTarget | None = None
        self._t0 = clock()
        self._batches = 0
        self._phase = _WARMUP
        self._skip = 0
        self._window: _Window | None = None
        self._measured: dict[Config, Trial | None] = {}
        self._search: Generator[Config, Trial | None, Config] | None = None
        self._capacity_trial: Trial | None = None  # what the current setting can make
        self._watch_s = self.settings.monitor_s
        self._idle_windows = 0
        self._deepened = False
        self._noted: set[str] = set()  # unavailable kinds already explained
        self._room_checked = False  # settled below the cores' room and looked again once
        self._first_window_done = False
        self._kinds_told_apart = len(self.kinds) == 1

    # -- set-up -------------------------------------------------------------------------
    def attach(self, pool: TunerTarget) -> None:
        """Start with ``pool``, already running the first kind it could (``pool.kind``)."""
        self.pool = pool
        self.config = (pool.kind, self.config[1])
        if len(self.kinds) > 1 or self.config[0] not in pool.unavailable:
            for kind, why in pool.unavailable.items():
                self._noted.add(kind)
                self.decide("executor", self.config[0], f"not {kind}: {why}")
        self._search = self._explore(self.config, compare_kinds=True)
        first = next(self._search)
        assert first == self.config, (first, self.config)
        for kind in self.kinds:  # ready to be tried while the first kind feeds the consumer
            if kind != self.config[0]:
                pool.prestart(kind, self.config[1])

    def ring_size(self, layout: BatchLayout, tasks_per_worker: int = 2) -> tuple[int, int]:
        """(slots to allocate, slots in rotation) for batches of ``layout``, within the
        memory budget: ``tasks_per_worker`` per worker + 2 in rotation (more than 2 for
        remote reads: ``stoke.data.program.tasks_per_worker``); raises
        :class:`StokeError` when not even two batches fit."""
        self.slot_bytes = slot = layout.slot_bytes
        self.tasks_per_worker = per = tasks_per_worker
        budget = self.memory_budget_bytes
        fits = slots_that_fit(layout, budget, self.ring_slots_option)
        if self.ring_slots_option is not None:
            capacity = depth = self.ring_slots_option
            why = "ring_slots set by you"
        else:
            most = self._hard_max_workers()
            capacity = min(fits, per * most + 2 + self.cpu_budget_cores)
            depth = min(capacity, per * self.config[1] + 2)
            why = (f"{capacity} slots of {slot / 2**20:.1f} MiB allocated "
                   f"({capacity * slot / 2**30:.2f} GiB"
                   + (f" of a {budget / 2**30:.2f} GiB budget" if budget else "") + "), "
                   f"{depth} in rotation ({per} per worker + 2"
                   + (": remote reads, queued to hide their latency" if per > 2 else "") + ")")
        self.capacity, self.depth = capacity, depth
        self._skip = depth
        self.decide("ring", depth, why, slot_bytes=slot, capacity=capacity)
        return capacity, depth

    # -- observing ----------------------------------------------------------------------
    def observe(self, rows: int, wait_s: float) -> None:
        """One batch of ``rows`` samples was delivered; the consumer waited ``wait_s`` for it."""
        now = self.clock()
        self._batches += 1
        if self._phase == _WARMUP:
            if self.config[0] in self.pool.unavailable and self._search is not None:
                self._advance(None)
            elif self.pool.ready():
                if self._skip > 0:
                    self._skip -= 1
                else:
                    self._open(now, _MEASURE if self._search is not None else _WATCH)
            return
        window = self._window
        window.rows += rows
        window.wait_s += wait_s
        window.batches += 1
        elapsed = now - window.start
        if self._phase == _MEASURE:
            if (elapsed >= self.settings.window_s
                    and window.batches >= max(self.settings.window_batches, self.config[1])):
                trial = self._close(now)
                if not self._first_window_done:
                    # the first window of a loader's life often holds the trainer's own
                    # start (compiling the model): kept in the record, not judged on
                    self._first_window_done = True
                    self._open(now, _MEASURE)
                    return
                self._advance(trial)
        elif elapsed >= self._watch_s and window.batches >= 2 * max(self.depth, 1):
            self._watch(self._close(now))

    def report(self) -> Tuning:
        kind, workers = self.config
        return Tuning(
            executor=kind, workers=workers, ring_slots=self.depth or None,
            ring_capacity=self.capacity or None, tuned=True,
            settled=self._search is None and self.settled_at is not None,
            settled_after_s=self.settled_at, cpu_budget_cores=self.cpu_budget_cores,
            memory_budget_bytes=self.memory_budget_bytes, decisions=tuple(self.decisions),
            trials=tuple(self.trials))

    # -- windows ------------------------------------------------------------------------
    def _open(self, now: float, phase: str) -> None:
        if phase == _WATCH:
            self.pool.release_idle()  # the pools that lost, once they hold no task
        self._phase = phase
        self._window = _Window(now, self._cpu(), self._idle())

    def _close(self, now: float) -> Trial:
        window = self._window
        seconds = max(now - window.start, 1e-9)
        cpu_cores = None
        end = self._cpu()
        if window.cpu is not None and end is not None:
            used = sum(max(0.0, s - window.cpu.get(pid, s)) for pid, s in end.items())
            cpu_cores = used / seconds
        idle_cores = None
        idle = self._idle()
        if window.idle is not None and idle is not None:
            idle_cores = max(0.0, idle - window.idle) / seconds
        kind, workers = self.config
        trainer_cores = other_cores = None
        trainer = self.pool.trainer_pid
        if (kind == "process" and cpu_cores is not None
                and trainer in end and trainer in window.cpu):
            # process workers: the trainer process's CPU is the trainer's own work
            trainer_cores = max(0.0, end[trainer] - window.cpu[trainer]) / seconds
        if cpu_cores is not None and idle_cores is not None:
            other_cores = max(0.0, self.machine_cores - idle_cores - cpu_cores)
        trial = Trial(kind, workers, window.rows / seconds, min(1.0, window.wait_s / seconds),
                      cpu_cores, idle_cores, seconds, window.batches, round(now - self._t0, 3),
                      trainer_cores, other_cores)
        self.trials.append(trial)
        del self.trials[:-MAX_TRIALS_KEPT]
        log.debug("stoke: measured %s over %.2f s", trial.describe(), seconds)
        return trial

    def _cpu(self) -> dict[int, float] | None:
        try:
            return self.pool.cpu_seconds_by_pid()
        except Exception:  # noqa: BLE001 - CPU use is informative only
            return None

    def _idle(self) -> float | None:
        try:
            return self.pool.idle_seconds()
        except Exception:  # noqa: BLE001
            return None

    # -- changing -----------------------------------------------------------------------
    def _go(self, config: Config) -> None:
        """Run ``config`` next; measure it once it runs alone and the ring has turned over."""
        if config != self.config:
            log.debug("stoke: trying %s x %d", *config)
            self.pool.apply(*config)
            self.config = config
            if self.capacity:
                self.depth = max(self.depth, min(self.capacity,
                                                 self.tasks_per_worker * config[1] + 2))
            self._phase = _WARMUP
            self._skip = self.depth
        else:
            self._open(self.clock(), _MEASURE if self._search is not None else _WATCH)

    def _advance(self, trial: Trial | None) -> None:
        """Hand a measurement (None: that executor cannot run) to the search; a setting
        measured again is judged on both windows together."""
        earlier = self._measured.get(self.config)
        if trial is not None and earlier is not None:
            trial = _combine(earlier, trial)
        self._measured[self.config] = trial
        try:
            target = self._search.send(trial)
        except StopIteration as done:
            self._search = None
            self._settle(done.value)
            return
        self._go(target)

    def _settle(self, config: Config) -> None:
        self._capacity_trial = self._measured.get(config)
        if self._capacity_trial is not None and self._keeps_up(self._capacity_trial):
            self._capacity_trial = None  # a consumer-bound rate says nothing of capacity
        self.settled_at = round(self.clock() - self._t0, 3)
        kind, workers = config
        trial = self._measured.get(config)
        self.decide("settled", f"{kind} x {workers}",
                     trial.describe() if trial else "no measurement needed",
                     **({"samples_per_s": round(trial.samples_per_s, 1)} if trial else {}))
        self._idle_windows = 0
        self._deepened = False
        if config != self.config:
            self._watch_s = self.settings.monitor_s
        self._go(config)
        self.pool.release_idle()

    def _retune(self, why: str, trial: Trial, executors_too: bool) -> None:
        """Search again from the current setting: the worker count, and the executors too
        when they have not been told apart yet (or ``executors_too``)."""
        self.decide("retune", f"{self.config[0]} x {self.config[1]}", why,
                     **_numbers(trial))
        self._measured = {}
        self.settled_at = None
        self._search = self._explore(
            self.config, compare_kinds=False,
            contenders=executors_too or not self._kinds_told_apart)
        first = next(self._search)
        assert first == self.config
        self._advance(trial)

    def decide(self, what: str, choice: Any, why: str, **measured: Any) -> None:
        """Record a choice (``what``: "executor", "workers", "ring", ...) with why and the
        numbers it rests on: it is part of :meth:`report` and logged at debug level."""
        decision = Decision(what, choice, why, round(self.clock() - self._t0, 3),
                            self._batches, measured)
        self.decisions.append(decision)
        log.debug("stoke: %s -> %s: %s", what, choice, why)

    # -- the search ---------------------------------------------------------------------
    def _keeps_up(self, trial: Trial) -> bool:
        return trial.consumer_wait < self.settings.keeps_up_wait

    def _measure(self, config: Config) -> Generator[Config, Trial | None, Trial | None]:
        if config[0] in self.pool.unavailable:
            return None
        if config in self._measured:
            return self._measured[config]
        trial = yield config
        return trial

    def _explore(self, start: Config, compare_kinds: bool, contenders: bool = True
                 ) -> Generator[Config, Trial | None, Config]:
        """Yields the settings to measure, receives their trials, returns the best one."""
        s = self.settings
        kind, workers = start
        kinds = [kind] + [k for k in self.kinds if k != kind]
        first = yield start
        if first is None:  # only when the starting kind itself cannot run
            kinds = [k for k in kinds if k not in self.pool.unavailable]
            return (kinds[0], workers)
        if compare_kinds and len(kinds) > 1:
            for other in kinds[1:]:
                yield from self._measure((other, workers))
            rates = sorted((t.samples_per_s for k in kinds
                            if (t := self._measured.get((k, workers))) is not None), reverse=True)
            if len(rates) > 1 and rates[1] >= rates[0] * (1 - s.close_call):
                # a close call: one more window each (the running one first: no extra switch)
                for again in reversed(kinds):
                    if self._measured.get((again, workers)) is not None:
                        yield (again, workers)
            kind = self._pick_kind(workers)
        best = yield from self._climb(kind, workers)
        for other in (k for k in kinds if k != best[0] and contenders):
            trial = yield from self._measure((other, best[1]))
            top = self._measured.get(best)
            if trial is None or top is None:
                continue
            if trial.samples_per_s > top.samples_per_s * (1 + s.min_gain):
                self.decide("executor", other, f"{trial.describe()}; {top.describe()}",
                             **_numbers(trial))
                best = yield from self._climb(other, best[1])
            elif (trial.samples_per_s >= top.samples_per_s * (1 - s.near)
                  and best[1] < self._max_workers(other) and not self._keeps_up(trial)):
                candidate = yield from self._climb(other, best[1], quiet=True)
                tried = self._measured.get(candidate)
                if tried is not None and tried.samples_per_s > top.samples_per_s * (1 + s.min_gain):
                    self.decide("executor", other,
                                 f"it climbs further: {tried.describe()}; {top.describe()}",
                                 **_numbers(tried))
                    best = candidate
        return best

    def _pick_kind(self, workers: int) -> str:
        measured = [(k, self._measured.get((k, workers))) for k in self.kinds]
        measured = [(k, t) for k, t in measured if t is not None]
        if len(measured) == 1:
            chosen, trial = measured[0]
            fresh = {k: why for k, why in self.pool.unavailable.items() if k not in self._noted}
            if fresh and len(self.kinds) > 1:
                self._noted.update(fresh)
                self.decide("executor", chosen, "; ".join(f"not {k}: {why}"
                                                           for k, why in fresh.items()),
                             **_numbers(trial))
            return chosen
        self._kinds_told_apart = not all(self._keeps_up(t) for _, t in measured)
        fastest = max(measured, key=lambda kt: kt[1].samples_per_s)
        chosen, top = fastest
        process = dict(measured).get("process")
        if (chosen != "process" and process is not None
                and process.samples_per_s * (1 + self.settings.min_gain) >= top.samples_per_s):
            chosen, why = "process", "as fast within 5 % (thread workers share the trainer's GIL)"
        elif all(self._keeps_up(t) for _, t in measured):
            chosen = "process" if process is not None else chosen
            why = "the input keeps up either way"
        else:
            why = "faster"
        thread = dict(measured).get("thread")
        if (chosen == "process" and thread is not None and thread.cpu_cores is not None
                and process.cpu_cores is not None and thread.cpu_cores < 0.75 * workers
                and process.cpu_cores > 1.25 * thread.cpu_cores):
            why += f"; threads kept only {thread.cpu_cores:.1f} cores busy (the GIL)"
        why = f"{why}: " + "; ".join(t.describe() for _, t in measured)
        self.decide("executor", chosen, why,
                     **{f"{k}_samples_per_s": round(t.samples_per_s, 1) for k, t in measured})
        return chosen

    def _climb(self, kind: str, workers: int, quiet: bool = False
               ) -> Generator[Config, Trial | None, Config]:
        """More workers of ``kind`` while it pays; returns the best count found."""
        s = self.settings
        low = self._measured.get((kind, workers))
        if low is None:
            low = yield from self._measure((kind, workers))
            if low is None:
                return (kind, workers)
        note = (lambda *a, **k: None) if quiet else self.decide
        while True:
            if self.fixed_workers is not None:
                break
            if self._keeps_up(low):
                better = yield from self._back_off(kind, workers, low, note)
                if better is None:
                    note("workers", workers, f"the input keeps up: {low.describe()}",
                         **_numbers(low))
                    break
                workers, low = better
                break
            high_count = self._next_count(kind, workers, low)
            if high_count is None:
                better = yield from self._back_off(kind, workers, low, note)
                if better is None:
                    note("workers", workers, f"at the budget ({self._budget_words(kind, low)}): "
                         f"{low.describe()}", **_numbers(low))
                    break
                workers, low = better
                break
            high = yield from self._measure((kind, high_count))
            if high is None:
                break
            if _trainer_differs(low, high, s.trainer_differs):
                # one window held other work of the trainer: measure that setting again
                again = high_count if _trainer_ms(high) > _trainer_ms(low) else workers
                del self._measured[(kind, again)]
                remeasured = yield from self._measure((kind, again))
                if remeasured is not None and again == high_count:
                    high = remeasured
                elif remeasured is not None:
                    low = remeasured
            gain = high.samples_per_s / max(low.samples_per_s, 1e-9) - 1
            if gain > s.min_gain or (self._keeps_up(high) and gain >= 0):
                note("workers", high_count, f"{gain:+.0%} with {high_count} workers: "
                     f"{high.describe()}", **_numbers(high))
                workers, low = high_count, high
                continue
            if high_count - workers >= 2:
                middle_count = (workers + high_count) // 2
                middle = yield from self._measure((kind, middle_count))
                if middle is not None and middle.samples_per_s > low.samples_per_s * (1 + s.min_gain):
                    note("workers", middle_count,
                         f"{middle.samples_per_s / low.samples_per_s - 1:+.0%} with "
                         f"{middle_count}: {middle.describe()}", **_numbers(middle))
                    workers, low = middle_count, middle
                    break
            note("workers", workers, f"{high_count} workers gained only {gain:+.0%}: "
                 f"{low.describe()}", **_numbers(low))
            break
        return (kind, workers)

    # -- limits -------------------------------------------------------------------------
    def _hard_max_workers(self) -> int:
        if self.fixed_workers is not None:
            return self.fixed_workers
        return min(MAX_WORKERS, self.cpu_budget_cores * self.settings.oversubscribe_factor)

    def _max_workers(self, kind: str) -> int:
        """The most workers of ``kind`` the ring and memory allow (CPU is checked apart)."""
        if self.fixed_workers is not None:
            return self.fixed_workers
        most = self._hard_max_workers()
        if self.capacity:
            most = min(most, max(1, self.capacity - 1))
        if kind == "process" and self.memory_budget_bytes and self.pool is not None:
            per_worker = self.pool.worker_bytes()
            if per_worker:
                left = self.memory_budget_bytes - self.capacity * self.slot_bytes
                most = min(most, max(1, left // per_worker))
        return most

    def _worker_ceiling(self, trial: Trial) -> int:
        """Workers the cores leave room for: the CPU budget, less what the trainer process
        and other processes took in ``trial`` (measured with process workers; a thread
        worker's CPU cannot be told from the trainer's, so then the budget alone)."""
        if trial.trainer_cores is None:
            return self.cpu_budget_cores
        free = self.machine_cores - trial.trainer_cores - (trial.other_cores or 0.0)
        return max(1, min(self.cpu_budget_cores, math.ceil(free - self.settings.core_slack)))

    def _fewer(self, workers: int, trial: Trial) -> int | None:
        """A smaller worker count worth measuring, when the trainer may be losing CPU to
        the workers: more workers than the cores leave room for; or every core busy while
        the trainer waits for input and needs a good share of a core; or every core busy
        while the trainer, which does not wait, gets less CPU than its steps take (its
        step time grew because the workers took its cores)."""
        s = self.settings
        if workers <= 1 or self.fixed_workers is not None or trial.trainer_cores is None:
            return None
        waits = not self._keeps_up(trial)
        saturated = (trial.idle_cores is not None
                     and trial.idle_cores < s.saturated_idle * self.machine_cores)
        ceiling = self._worker_ceiling(trial)
        if waits and ceiling < workers:
            fewer = ceiling
        elif saturated and waits and trial.trainer_cores >= s.trainer_needs_cores:
            fewer = workers - 1
        elif saturated and not waits and _starved(trial, s.starved_share):
            fewer = max(ceiling, workers // 2) if ceiling < workers else workers - 1
        else:
            return None
        return None if (trial.executor, fewer) in self._measured else fewer

    def _back_off(self, kind: str, workers: int, low: Trial, note: Callable[..., None]
                  ) -> Generator[Config, Trial | None, tuple[int, Trial] | None]:
        """Measure fewer workers when :meth:`_fewer` says the trainer may be losing to
        them; returns (workers, trial) when fewer deliver at least as many steps/s."""
        fewer = self._fewer(workers, low)
        if fewer is None:
            return None
        trial = yield from self._measure((kind, fewer))
        if trial is not None and _trainer_differs(low, trial, self.settings.trainer_differs):
            # the trainer itself did other work in one window (compiling, say): measure the
            # setting whose window had it again before comparing
            again = (kind, workers) if _trainer_ms(low) > _trainer_ms(trial) else (kind, fewer)
            del self._measured[again]
            remeasured = yield from self._measure(again)
            if remeasured is not None:
                low, trial = (remeasured, trial) if again[1] == workers else (low, remeasured)
        if trial is None or trial.steps_per_s < low.steps_per_s:
            return None
        note("workers", fewer,
             f"{fewer} deliver as many steps/s or more than {workers}: the trainer shares the "
             f"cores ({self._budget_words(kind, low)}): {trial.describe()}; {low.describe()}",
             **_numbers(trial))
        return fewer, trial

    def _next_count(self, kind: str, workers: int, low: Trial) -> int | None:
        most = self._max_workers(kind)
        cores = self._worker_ceiling(low)
        if workers < cores:
            nxt = min(2 * workers, cores, most)
        elif (low.consumer_wait >= self.settings.probe_wait
              and workers < min(self.cpu_budget_cores, most)):
            # no room by the measured shares, but the consumer waits: other processes'
            # share is not fixed, so one more worker is measured (kept only if it pays)
            nxt = workers + 1
        elif (low.cpu_cores is not None and low.idle_cores is not None
              and low.cpu_cores < self.settings.oversubscribe_below * cores
              and low.idle_cores > self.settings.oversubscribe_below * cores):
            # the workers mostly wait (I/O, sleep) and the cores are idle: add more
            nxt = min(2 * workers, most)
        else:
            return None
        return nxt if nxt > workers else None

    def _budget_words(self, kind: str, trial: Trial | None = None) -> str:
        words = f"{self.cpu_budget_cores} cores"
        if trial is not None and trial.trainer_cores is not None:
            others = trial.other_cores or 0.0
            words = (f"{self.machine_cores} cores, of which the trainer took "
                     f"{trial.trainer_cores:.1f} and other processes {others:.1f}: room for "
                     f"{self._worker_ceiling(trial)} worker(s)")
            if self.cpu_budget_cores < self.machine_cores:
                words += f" within cpu_budget_cores={self.cpu_budget_cores}"
        if self.capacity:
            words += f", {self.capacity} ring slots"
        if kind == "process" and self.pool is not None and self.pool.worker_bytes():
            words += f", {self.pool.worker_bytes() / 2**20:.0f} MiB per process worker"
        return words

    # -- watching once settled ----------------------------------------------------------
    def _watch(self, trial: Trial) -> None:
        s = self.settings
        kind, workers = self.config
        made = self._capacity_trial
        if trial.consumer_wait >= s.waits_wait:
            self._idle_windows = 0
            if made is None:
                self._retune(f"the consumer now waits {trial.consumer_wait:.0%} of the time",
                             trial, executors_too=False)
                return
            if (not self._room_checked and self.fixed_workers is None
                    and trial.consumer_wait >= s.probe_wait
                    and workers < min(self.cpu_budget_cores, self._max_workers(kind))):
                # the setting was chosen on windows where the trainer took more (compiling,
                # say) or others did: look again, once, while the consumer waits
                self._room_checked = True
                self._retune(f"the consumer waits {trial.consumer_wait:.0%} of the time below "
                             f"the core budget: looking again for room "
                             f"({self._budget_words(kind, trial)})", trial, executors_too=False)
                return
            ratio = trial.samples_per_s / max(made.samples_per_s, 1e-9)
            if ratio < 1 - s.drift and self.depth < self.capacity and not self._deepened:
                self._deepened = True
                self.depth = min(self.capacity, self.depth + max(2, workers))
                self.decide("ring", self.depth,
                             f"deliveries fell to {trial.samples_per_s:,.0f} samples/s while the "
                             f"consumer waited, below the {made.samples_per_s:,.0f} the workers "
                             "made: more batches in flight absorb an uneven consumer",
                             **_numbers(trial))
            elif abs(ratio - 1) > s.drift:
                self._retune(f"the workers now make {trial.samples_per_s:,.0f} samples/s, "
                             f"{made.samples_per_s:,.0f} when measured", trial,
                             executors_too=False)
                return
            else:
                self._watch_s = min(2 * self._watch_s, s.monitor_max_s)
        elif trial.consumer_wait <= s.idle_wait:
            self._room_checked = False  # the consumer keeps up: room may be looked for again
            self._idle_windows += 1
            if (self._idle_windows >= s.shrink_after_windows and made is not None
                    and workers > 1 and self.fixed_workers is None):
                per_worker = made.samples_per_s / workers
                needed = max(1, math.ceil(trial.samples_per_s * s.shrink_headroom / per_worker))
                if needed < workers:
                    self.decide("workers", needed,
                                 f"the consumer takes {trial.samples_per_s:,.0f} samples/s and "
                                 f"has not waited for {self._idle_windows} windows; "
                                 f"{workers} workers make {made.samples_per_s:,.0f}",
                                 **_numbers(trial))
                    self._capacity_trial = None
                    self._idle_windows = 0
                    self._go((kind, needed))
                    return
            self._watch_s = min(2 * self._watch_s, s.monitor_max_s)
        else:
            self._idle_windows = 0
        self._open(self.clock(), _WATCH)


def _trainer_ms(trial: Trial) -> float:
    return trial.trainer_ms_per_step or 0.0


def _trainer_differs(a: Trial, b: Trial, factor: float) -> bool:
    """Did the trainer spend ``factor`` times more CPU per step in one window than in the
    other? Its own work per step hardly depends on the workers; so much more means it did
    something else in that window (compiling a function, say)."""
    low, high = sorted((_trainer_ms(a), _trainer_ms(b)))
    return low > 0 and high > factor * low


def _starved(trial: Trial, share: float) -> bool:
    """Did the trainer run on the CPU for less than ``share`` of the time it spent on its
    steps (not waiting for input)? Then it was ready to run but had no core."""
    busy_s = trial.seconds * (1 - trial.consumer_wait)
    return (trial.trainer_cores is not None and busy_s > 0
            and trial.trainer_cores * trial.seconds < share * busy_s)


def _combine(a: Trial, b: Trial) -> Trial:
    """Two windows of one setting as one (weighted by their lengths)."""
    total = a.seconds + b.seconds

    def mean(x: float | None, y: float | None) -> float | None:
        return None if x is None or y is None else (x * a.seconds + y * b.seconds) / total

    return Trial(a.executor, a.workers, mean(a.samples_per_s, b.samples_per_s),
                 mean(a.consumer_wait, b.consumer_wait), mean(a.cpu_cores, b.cpu_cores),
                 mean(a.idle_cores, b.idle_cores), total, a.batches + b.batches, b.at_s,
                 mean(a.trainer_cores, b.trainer_cores), mean(a.other_cores, b.other_cores))


def _numbers(trial: Trial) -> dict[str, Any]:
    def rounded(value: float | None, digits: int = 2) -> float | None:
        return None if value is None else round(value, digits)

    return {"executor": trial.executor, "workers": trial.workers,
            "steps_per_s": round(trial.steps_per_s, 2),
            "samples_per_s": round(trial.samples_per_s, 1),
            "consumer_wait": round(trial.consumer_wait, 3),
            "cpu_cores": rounded(trial.cpu_cores),
            "trainer_cores": rounded(trial.trainer_cores),
            "trainer_ms_per_step": rounded(trial.trainer_ms_per_step),
            "other_cores": rounded(trial.other_cores)}


def slots_that_fit(layout: BatchLayout, budget: int | None, asked: int | None) -> int:
    """How many batches of ``layout`` the memory ``budget`` holds (None: no limit); raises
    :func:`memory_error` when the ``asked`` slots (the user's ``ring_slots``) or, without
    them, two slots do not fit."""
    fits = budget // layout.slot_bytes if budget is not None else 1 << 30
    need = asked if asked is not None else 2
    if need > fits:
        raise memory_error(layout, need, budget)
    return fits


def memory_error(layout: BatchLayout, slots: int, budget: int | None) -> StokeError:
    """The error of a ring of ``slots`` batches of ``layout`` over the memory ``budget``."""
    need = slots * layout.slot_bytes
    return StokeError(
        f"a batch does not fit the memory budget: one batch takes "
        f"{layout.slot_bytes / 2**20:.1f} MiB ({layout.describe()}), and the ring needs at "
        f"least {slots} of them ({need / 2**20:.1f} MiB), but memory_budget_bytes is "
        f"{(budget or 0) / 2**20:.1f} MiB. Use a smaller batch, ship uint8 instead of float32 "
        "(finish normalisation on the device), or raise memory_budget_bytes (default: a "
        "quarter of the available RAM)."
    )
