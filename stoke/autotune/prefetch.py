"""The prefetch depth of streams pinned to their workers: :class:`PrefetchTuner`, for a
generator run by ``stoke.accelerate`` (and ``stoke run``) in process workers.

A generator is one stream in one order, and its state lives where it runs: it cannot be
split between workers, moved from a process to a thread, or re-sharded (a copy's shard
depends on the number of copies) without changing the items it yields. So the executor and
the number of copies are fixed before the first item (by :mod:`stoke.accelerate.generator`)
and are not tuned. What can change at any moment without changing a single item is how far
ahead each copy runs: the items made and waiting in the ring. That is tuned here, by the
same measurements as the :class:`~stoke.autotune.tuner.Tuner`'s windows (delivered steps/s,
the consumer's wait, the trainer process's own CPU per step, the copies' CPU per item, what
other processes take of the cores):

1. The ring is allocated once, within ``memory_budget_bytes`` (at most
   ``MAX_DEPTH_PER_COPY`` slots a copy); ``START_DEPTH`` (Keras' own default queue,
   ``max_queue_size=10``) or ``2 x copies + 2`` slots, the more, are in rotation at first.
   Slots beyond the depth are never touched (they take no memory).
2. Windows last ``WINDOW_S`` and ``4 x depth`` items at least (uneven items come now and
   then: a window must hold several). The first (often the model's compilation) is
   recorded, not judged.
3. A window in which the consumer hardly waited settles the depth: the copies keep up.
4. A window in which the consumer waited for most items (``COPY_BOUND_ITEMS`` of them) says
   that the copies make items slower than they are taken, all the time: they never run
   ahead (whether for CPU, for cores that others take, or for I/O), and a deeper ring would
   stay empty. It settles and says so (with the copies' CPU per item and the trainer's per
   step), and what more copies would need (``replicas=N`` and a ``worker_index``/``seed``
   parameter: the user's choice, as it changes the items).
5. Else the consumer waits for a few items only: the copies run ahead but not far enough
   (uneven items: a file read, a shuffle buffer refilled). The depth is doubled and
   measured; kept when it delivers >= 5 % more steps/s or halves the consumer's share of
   time waiting (on a shared machine the trainer's own speed moves with others' load: the
   wait is what a deeper ring removes), and doubled again; else the previous depth is put
   back and kept (a deeper ring costs memory only, within the budget).
6. Settled, longer windows watch the consumer; when it waits clearly more than when the
   depth settled (uneven again), the search resumes from the current depth.

The clock is given, so that tests replay any situation in no time. Reported through
:class:`~stoke.autotune.report.Tuning` (``acc.tuning()``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from stoke.autotune.report import Decision, Trial, Tuning
from stoke.autotune.tuner import TunerSettings, slots_that_fit
from stoke.data.structure import BatchLayout

log = logging.getLogger("stoke")

MAX_DEPTH_PER_COPY = 32  # items a copy may run ahead, at most
MAX_CAPACITY = 64  # ring slots allocated, at most (each is a shared-memory file)
START_DEPTH = 10  # items ahead at first: Keras' default max_queue_size
WINDOW_S = 1.0  # a search window lasts at least this long
COPY_BOUND_ITEMS = 0.5  # the consumer waited for this share of the items: copy-bound
WAITED_S = 0.0005  # a wait this long (or longer) for an item counts as waiting for it


class PrefetchTuner:
    """Chooses the ring depth of ``copies`` pinned streams (one per process worker) from
    what it observes; the executor and the copies are fixed (see the module docstring).

    Plugs into the loader as its tuner: :meth:`ring_size` when the layout is known,
    :meth:`observe` for every delivered item (the slot scheduler then puts :attr:`depth`
    slots in rotation), :meth:`report` for ``tuning()``. ``meter``: what measures CPU
    (``cpu_seconds_by_pid()``, ``idle_seconds()``, ``trainer_pid``; e.g.
    :class:`~stoke.accelerate.tuned_workers.TunedWorkers`), given by :meth:`attach`.
    ``fixed``: decisions made before the first item (executor, copies), reported first.
    """

    def __init__(self, copies: int, *, machine_cores: int,
                 memory_budget_bytes: int | None = None, ring_slots: int | None = None,
                 fixed: tuple[tuple[str, Any, str], ...] = (),
                 settings: TunerSettings | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.copies = max(1, int(copies))
        self.machine_cores = max(1, int(machine_cores))
        self.memory_budget_bytes = memory_budget_bytes
        self.ring_slots_option = ring_slots
        self.settings = settings or TunerSettings()
        self.clock = clock
        self.depth = 0  # slots in rotation; 0 until the ring exists
        self.capacity = 0
        self.decisions: list[Decision] = []
        self.trials: list[Trial] = []
        self.settled_at: float | None = None
        self.meter: Any = None
        self._t0 = clock()
        self._batches = 0
        self._skip = 0
        self._window: dict[str, Any] | None = None
        self._first_window_done = False
        self._searching = ring_slots is None
        self._before: Trial | None = None  # the last depth's window, while a deeper is tried
        self._watch_s = self.settings.monitor_s
        self._settled_wait = 0.0  # the consumer's wait when the depth settled
        self._waited_share = 0.0  # the last window's share of items the consumer waited for
        for what, choice, why in fixed:
            self.decide(what, choice, why)

    def attach(self, meter: Any) -> None:
        """Measure CPU through ``meter`` (the workers are up)."""
        self.meter = meter

    # -- the ring -----------------------------------------------------------------------
    def ring_size(self, layout: BatchLayout, tasks_per_worker: int = 2) -> tuple[int, int]:
        """(slots to allocate, slots in rotation) for items of ``layout``, within the memory
        budget; raises :class:`~stoke.errors.StokeError` when not even two fit. (The
        scheduler's ``tasks_per_worker`` is for record sources; a generator's copies are
        kept ahead by the depth this tuner sets.)"""
        slot = layout.slot_bytes
        budget = self.memory_budget_bytes
        fits = slots_that_fit(layout, budget, self.ring_slots_option)
        if self.ring_slots_option is not None:
            capacity = depth = self.ring_slots_option
            why = "ring_slots set by you (max_queue_size under stoke run)"
        else:
            capacity = min(fits, MAX_CAPACITY, MAX_DEPTH_PER_COPY * self.copies + 2)
            depth = min(capacity, max(START_DEPTH, 2 * self.copies + 2))
            why = (f"{depth} in rotation (as Keras' max_queue_size=10; 2 per copy + 2 if "
                   f"more) of {capacity} slots of "
                   f"{slot / 2**20:.1f} MiB allocated ({capacity * slot / 2**30:.2f} GiB"
                   + (f" of a {budget / 2**30:.2f} GiB budget" if budget else "")
                   + "); deeper while the consumer waits and the copies have slack")
        self.capacity, self.depth = capacity, depth
        self._skip = depth
        self.decide("ring", depth, why, slot_bytes=slot, capacity=capacity)
        if capacity <= depth:
            self._searching = False
        return capacity, depth

    # -- observing ----------------------------------------------------------------------
    def observe(self, rows: int, wait_s: float) -> None:
        """One item of ``rows`` rows was delivered; the consumer waited ``wait_s`` for it."""
        now = self.clock()
        self._batches += 1
        if self._window is None:
            if self._skip > 0:
                self._skip -= 1
            else:
                self._open(now)
            return
        window = self._window
        window["rows"] += rows
        window["wait_s"] += wait_s
        window["batches"] += 1
        window["waited"] += wait_s >= WAITED_S
        elapsed = now - window["start"]
        if self.settled_at is None:
            if (elapsed >= max(self.settings.window_s, WINDOW_S)
                    and window["batches"] >= max(self.settings.window_batches, 4 * self.depth)):
                self._judge(self._close(now), now)
        elif elapsed >= self._watch_s and window["batches"] >= 2 * self.depth:
            self._watch(self._close(now), now)

    def report(self) -> Tuning:
        return Tuning(
            executor="process", workers=self.copies, ring_slots=self.depth or None,
            ring_capacity=self.capacity or None, tuned=self.ring_slots_option is None,
            settled=self.settled_at is not None, settled_after_s=self.settled_at,
            cpu_budget_cores=None, memory_budget_bytes=self.memory_budget_bytes,
            decisions=tuple(self.decisions), trials=tuple(self.trials))

    def decide(self, what: str, choice: Any, why: str, **measured: Any) -> None:
        """Record a choice with why and the numbers it rests on (logged at debug level)."""
        self.decisions.append(Decision(what, choice, why, round(self.clock() - self._t0, 3),
                                       self._batches, measured))
        log.debug("stoke: %s -> %s: %s", what, choice, why)

    # -- windows ------------------------------------------------------------------------
    def _open(self, now: float) -> None:
        self._window = {"start": now, "cpu": self._cpu(), "idle": self._idle(), "rows": 0,
                        "wait_s": 0.0, "batches": 0, "waited": 0}

    def _close(self, now: float) -> Trial:
        window = self._window
        seconds = max(now - window["start"], 1e-9)
        end, idle = self._cpu(), self._idle()
        cpu_cores = trainer_cores = idle_cores = other_cores = None
        start = window["cpu"]
        if start is not None and end is not None:
            cpu_cores = sum(max(0.0, s - start.get(pid, s)) for pid, s in end.items()) / seconds
            trainer = getattr(self.meter, "trainer_pid", None)
            if trainer in end and trainer in start:
                trainer_cores = max(0.0, end[trainer] - start[trainer]) / seconds
        if window["idle"] is not None and idle is not None:
            idle_cores = max(0.0, idle - window["idle"]) / seconds
        if cpu_cores is not None and idle_cores is not None:
            other_cores = max(0.0, self.machine_cores - idle_cores - cpu_cores)
        trial = Trial("process", self.copies, window["rows"] / seconds,
                      min(1.0, window["wait_s"] / seconds), cpu_cores, idle_cores, seconds,
                      window["batches"], round(now - self._t0, 3), trainer_cores, other_cores,
                      depth=self.depth)
        self.trials.append(trial)
        del self.trials[:-500]
        self._waited_share = window["waited"] / max(1, window["batches"])
        log.debug("stoke: measured %s over %.2f s", trial.describe(), seconds)
        self._window = None
        self._skip = 0
        return trial

    def _cpu(self) -> dict[int, float] | None:
        try:
            return self.meter.cpu_seconds_by_pid() if self.meter is not None else None
        except Exception:  # noqa: BLE001 - CPU use is informative only
            return None

    def _idle(self) -> float | None:
        try:
            return self.meter.idle_seconds() if self.meter is not None else None
        except Exception:  # noqa: BLE001
            return None

    # -- deciding -----------------------------------------------------------------------
    def _judge(self, trial: Trial, now: float) -> None:
        if not self._first_window_done:  # often the model's compilation: not judged
            self._first_window_done = True
            self._open(now)
            return
        if self._before is not None:  # a deeper ring was being tried
            before, self._before = self._before, None
            if not _better(trial, before, self.settings.min_gain):
                self.depth = before.depth
                self._settle(f"a deeper ring ({trial.depth}) neither delivered 5 % more nor "
                             "halved the consumer's wait: "
                             f"{trial.describe()}; against {before.describe()}", trial)
                return
            self.decide("ring", self.depth, f"deeper pays (more steps/s or less waiting): "
                        f"{trial.describe()}; "
                        f"against {before.describe()}", **self._numbers(trial))
        self._next_step(trial, now, why_settled=None)

    def _next_step(self, trial: Trial, now: float, why_settled: str | None) -> None:
        if trial.consumer_wait < self.settings.keeps_up_wait:
            self._settle(why_settled or f"the copies keep up: {trial.describe()}", trial)
            return
        if self._waited_share >= COPY_BOUND_ITEMS:
            self._settle_copy_bound(trial)
            return
        if not self._searching or self.depth >= self.capacity:
            self._settle(why_settled or f"at the most slots allocated ({self.capacity}): "
                         f"{trial.describe()}", trial)
            return
        self._before = trial
        self.depth = min(self.capacity, 2 * self.depth)
        self._skip = self.depth  # the new slots filled first
        log.debug("stoke: trying a ring of %d", self.depth)

    def _settle(self, why: str, trial: Trial) -> None:
        self.decide("settled", f"ring {self.depth}", why, **self._numbers(trial))
        self.settled_at = round(self.clock() - self._t0, 3)
        self._settled_wait = trial.consumer_wait
        self._watch_s = self.settings.monitor_s
        self._skip = 0

    def _settle_copy_bound(self, trial: Trial) -> None:
        per_item = copy_ms_per_item(trial)
        cpu = f" ({per_item:.1f} ms of CPU per item)" if per_item is not None else ""
        step_ms = (1000 * trial.trainer_cores * trial.seconds / trial.batches
                   if trial.trainer_cores is not None else None)
        copies = self.copies
        advice = (f"the consumer waited for {self._waited_share:.0%} of the items: "
                  f"{copies} cop{'y' if copies == 1 else 'ies'} of the generator{cpu} "
                  f"never run{'s' if copies == 1 else ''} ahead, and a deeper ring "
                  "would stay empty. More copies would help (replicas=N with a "
                  "worker_index/worker_count or seed parameter, if your data allows it: "
                  "it changes which items come in which order)")
        if step_ms is not None:
            advice += f"; the trainer takes {step_ms:.1f} ms of CPU per step"
        self.decide("bottleneck", "the generator", advice, **self._numbers(trial))
        self._settle(f"copy-bound: {trial.describe()}", trial)

    def _numbers(self, trial: Trial) -> dict[str, Any]:
        """What a decision on ``trial`` rests on (the last window's share of items waited
        for among them)."""
        return {"depth": trial.depth, "copies": trial.workers,
                "steps_per_s": round(trial.steps_per_s, 2),
                "consumer_wait": round(trial.consumer_wait, 3),
                "items_waited_for": round(self._waited_share, 3),
                "trainer_ms_per_step": _rounded(trial.trainer_ms_per_step),
                "copy_ms_per_item": _rounded(copy_ms_per_item(trial)),
                "other_cores": _rounded(trial.other_cores)}

    def _watch(self, trial: Trial, now: float) -> None:
        if (trial.consumer_wait >= self._settled_wait + self.settings.waits_wait
                and self._waited_share < COPY_BOUND_ITEMS and self._searching
                and self.depth < self.capacity):
            self.decide("retune", f"ring {self.depth}",
                        f"the consumer waits more than when the depth settled "
                        f"({self._settled_wait:.0%}), for a few items: {trial.describe()}",
                        **self._numbers(trial))
            self.settled_at = None
            self._next_step(trial, now, why_settled=None)
            return
        self._watch_s = min(2 * self._watch_s, self.settings.monitor_max_s)
        self._open(now)


def copy_ms_per_item(trial: Trial) -> float | None:
    """The copies' CPU time per item they made (None: not measured)."""
    if trial.cpu_cores is None or trial.trainer_cores is None:
        return None
    workers_cores = max(0.0, trial.cpu_cores - trial.trainer_cores)
    return 1000 * workers_cores * trial.seconds / max(1, trial.batches)


def _better(deeper: Trial, before: Trial, min_gain: float) -> bool:
    """Did the deeper ring pay: more steps/s, or half the consumer's wait?"""
    return (deeper.steps_per_s >= (1 + min_gain) * before.steps_per_s
            or deeper.consumer_wait <= before.consumer_wait / 2)


def _rounded(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)
