"""What the tuner tunes: :class:`TunerTarget`, the small protocol a pool follows so that a
:class:`~stoke.autotune.tuner.Tuner` can change its executor and workers and measure them.

Implemented by :class:`~stoke.executors.auto.AutoPool` (a loader's pool of pools: it may
switch executors), :class:`~stoke.accelerate.tuned_workers.TunedWorkers` (resizes the
process pool of an accelerated Sequence) and the tests' simulated pool. Every member is
implemented by each of them (a neutral answer where one is true); the tuner never probes
its target for a member.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class TunerTarget(Protocol):
    kind: str  # the executor running now ("process", "thread"): the tuner starts from it
    trainer_pid: int  # the process that runs the trainer (and thread workers)
    unavailable: dict[str, str]  # executor kind -> why it cannot run (told to the user)

    def apply(self, kind: str, workers: int) -> None:
        """Run ``workers`` workers of ``kind`` (once they are up); a kind that cannot run
        is added to :attr:`unavailable` instead."""
        ...

    def prestart(self, kind: str, workers: int) -> None:
        """Start ``workers`` workers of ``kind`` in the background, to be tried later (a
        target that runs one kind only has nothing to start)."""
        ...

    def ready(self) -> bool:
        """Does the setting last applied run alone (its workers up, no other workers
        finishing tasks or starting), so that a window measures it?"""
        ...

    def cpu_seconds_by_pid(self) -> dict[int, float]:
        """CPU seconds so far of the trainer process (:attr:`trainer_pid`) and of each
        worker process, by pid."""
        ...

    def idle_seconds(self) -> float:
        """Idle CPU seconds so far of the cores this process may run on."""
        ...

    def worker_bytes(self) -> int | None:
        """Memory of its own of one process worker (None: not known, or no process
        workers); counts against the memory budget."""
        ...

    def release_idle(self) -> None:
        """Let go of workers that are neither running nor about to (e.g. the pool of an
        executor that lost), once they hold no task."""
        ...
