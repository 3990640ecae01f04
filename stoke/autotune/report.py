"""What tuning reports: :class:`Tuning` (``it.tuning()``), the measured windows
(:class:`Trial`) and the choices made on them (:class:`Decision`).

Plain frozen data, JSON-ready through ``Tuning.as_dict()``; the tuner
(:mod:`stoke.autotune.tuner`) fills them, the loader hands them out.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Trial:
    """One measured window of one setting."""

    executor: str
    workers: int
    samples_per_s: float
    consumer_wait: float  # share of the window the consumer spent waiting in next()
    cpu_cores: float | None  # CPU seconds of trainer + workers per second
    idle_cores: float | None  # idle CPU seconds per second on the cores this process may use
    seconds: float
    batches: int
    at_s: float  # since tuning began
    trainer_cores: float | None = None  # the trainer process's own CPU seconds per second
    other_cores: float | None = None  # CPU taken by other processes on our cores, per second
    depth: int | None = None  # slots in rotation, where the ring depth was what was tried

    @property
    def steps_per_s(self) -> float:
        """Batches delivered per second: the steps per second of the training it feeds."""
        return self.batches / self.seconds

    @property
    def trainer_ms_per_step(self) -> float | None:
        """The trainer's own CPU time per delivered batch (process workers only)."""
        if self.trainer_cores is None or not self.batches:
            return None
        return 1000 * self.trainer_cores * self.seconds / self.batches

    def describe(self) -> str:
        cpu = ""
        if self.trainer_cores is not None and self.cpu_cores is not None:
            cpu = (f"; cores: trainer {self.trainer_cores:.1f} "
                   f"({self.trainer_ms_per_step:.1f} ms of CPU per step), workers "
                   f"{max(0.0, self.cpu_cores - self.trainer_cores):.1f}")
            if self.other_cores is not None:
                cpu += f", other processes {self.other_cores:.1f}"
        elif self.cpu_cores is not None:
            cpu = f", {self.cpu_cores:.1f} cores busy"
        ring = f", ring {self.depth}" if self.depth is not None else ""
        return (f"{self.executor} x {self.workers}{ring}: {self.steps_per_s:,.1f} steps/s "
                f"({self.samples_per_s:,.0f} samples/s), consumer waited "
                f"{self.consumer_wait:.0%}{cpu}")


@dataclass(frozen=True)
class Decision:
    """One choice: ``what`` ("start", "executor", "workers", "ring", "retune", "budget"), the
    value chosen, why, and the numbers it rests on."""

    what: str
    choice: Any
    why: str
    at_s: float
    batch: int
    measured: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Tuning:
    """What a loader runs with, how it got there, and the measurements.

    >>> it = pipe.iter()                      # doctest: +SKIP
    >>> ... ; print(it.tuning())              # doctest: +SKIP
    process x 2 workers, ring 6 of 20 slots (settled after 1.2 s)
      ring: 6 -- 20 slots of 12.0 MiB allocated (0.23 GiB of a 5.65 GiB budget), 6 in ...
      executor: process -- faster: process x 2: 6,047 samples/s, consumer waited 100%, ...
      workers: 2 -- at the budget (2 cores, 20 ring slots, 19 MiB per process worker): ...
      settled: process x 2 -- process x 2: 6,047 samples/s, consumer waited 100%, ...
      measured:
        process x 2: 6,047 samples/s, consumer waited 100%, 2.0 cores busy
        thread x 2: 4,795 samples/s, consumer waited 99%, 1.7 cores busy

    ``as_dict()`` gives the same as plain data (JSON-ready).
    """

    executor: str
    workers: int
    ring_slots: int | None  # slots in rotation (None before the first batch)
    ring_capacity: int | None  # slots allocated
    tuned: bool  # False: the user set executor and workers
    settled: bool
    settled_after_s: float | None
    cpu_budget_cores: int | None
    memory_budget_bytes: int | None
    decisions: tuple[Decision, ...] = ()
    trials: tuple[Trial, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        ring = (f", ring {self.ring_slots} of {self.ring_capacity} slots"
                if self.ring_slots is not None else "")
        state = ("set by you" if not self.tuned else
                 f"settled after {self.settled_after_s:.1f} s" if self.settled else "still measuring")
        lines = [f"{self.executor} x {self.workers} workers{ring} ({state})"]
        lines += [f"  {d.what}: {d.choice} -- {d.why}" for d in self.decisions]
        if self.trials:
            lines.append("  measured:")
            lines += [f"    {t.describe()}" for t in self.trials]
        return "\n".join(lines)



def fixed_tuning(kind: str, workers: int, ring_slots: int | None,
                 capacity: int | None) -> Tuning:
    """The report of a loader whose executor and workers were set by the user."""
    return Tuning(kind, workers, ring_slots, capacity, tuned=False, settled=True,
                  settled_after_s=0.0, cpu_budget_cores=None, memory_budget_bytes=None,
                  decisions=(Decision("executor", kind, "set by you", 0.0, 0),
                             Decision("workers", workers, "set by you", 0.0, 0)))
