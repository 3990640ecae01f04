"""Limits on workers: how many may start, and when waiting workers count as stuck.

- :func:`cap_workers`: more process or thread workers than cores only add memory, start-up
  time and contention (200 process workers took 8.2 GiB and 75 s to start on 2 cores), so a
  larger count is cut to the cores with a warning, unless the user asks for it
  (``oversubscribe=True``, e.g. thread workers waiting on network reads).
- :class:`StuckWatch`: the loader's judge of "the workers are stuck". Time alone cannot tell a
  hung worker from a slow one (a first sample that imports TensorFlow takes many seconds on a
  loaded machine), so after ``timeout_s`` without a result it looks at progress: the CPU
  time the workers used meanwhile. Busy workers are slow, not stuck: that is said once, and
  the wait goes on. Workers that used no CPU for ``timeout_s`` are reported, with what each
  was doing (for threads: where in the code it waits).

The pools report their CPU time (``cpu_seconds``) and what they hold (``busy_workers``);
the loader decides what to do with the verdict.
"""

from __future__ import annotations

import time
import warnings

from stoke.errors import StokeWarning, WorkerHungError

BUSY_CPU_FRACTION = 0.02  # CPU-seconds per second of waiting that count as working


def cap_workers(workers: int, cores: int, kind: str, oversubscribe: bool) -> int:
    """``workers``, or the number of ``cores`` when there are fewer (said in a warning)."""
    if workers <= cores or oversubscribe or kind not in ("process", "thread"):
        return workers
    warnings.warn(
        f"stoke: workers={workers} is more than the {cores} core(s) this process may use; "
        f"starting {cores} {kind} worker(s). More workers than cores only add memory and "
        "contention. Pass oversubscribe=True to start them all anyway (e.g. thread workers "
        "that mostly wait on network reads).", StokeWarning, stacklevel=4)
    return cores


class StuckWatch:
    """Watches one wait for a result. Call :meth:`progressed` when any result arrives and
    :meth:`verdict` while none does: it returns the :class:`WorkerHungError` to raise once
    the workers went ``timeout_s`` without a result and without using CPU."""

    def __init__(self, pool, timeout_s: float | None, what: str) -> None:
        self.pool = pool
        self.timeout_s = timeout_s
        self.what = what
        self._warned_slow = False
        self.progressed()

    def progressed(self) -> None:
        """A result arrived (the hot path: no measuring here)."""
        self._since = time.monotonic()
        self._baseline: tuple[float, float | None] | None = None  # (when, CPU seconds)

    def verdict(self) -> WorkerHungError | None:
        """Called when a poll found no result: the CPU baseline is taken at the first one."""
        if self.timeout_s is None:
            return None
        now = time.monotonic()
        if self._baseline is None:
            self._baseline = (now, self.pool.cpu_seconds())
        waited = now - self._since
        if waited <= self.timeout_s:
            return None
        cpu = self.pool.cpu_seconds()
        measured_at, cpu_then = self._baseline
        if cpu is not None and cpu_then is not None:
            used = cpu - cpu_then
            if used >= BUSY_CPU_FRACTION * max(now - measured_at, 1e-3):
                self._say_slow(waited, used)
                self._since, self._baseline = now, (now, cpu)
                return None
        busy = self.pool.busy_workers()
        idle = "" if cpu is None else ", using no CPU"
        return WorkerHungError(
            f"no result for {self.what} in {waited:.0f} s{idle}; the workers seem stuck"
            + (":\n  " + "\n  ".join(busy) if busy else "")
            + f"\nIf samples really take this long while waiting (network, locks), pass a "
            f"larger timeout_s (now {self.timeout_s:g}), or None to wait as long as the "
            "workers are alive."
        )

    def _say_slow(self, waited: float, used: float) -> None:
        if self._warned_slow:
            return
        self._warned_slow = True
        warnings.warn(
            f"stoke: no result for {self.what} in {waited:.0f} s, but the workers are busy "
            f"({used:.1f} CPU-seconds meanwhile): waiting on. (A first sample that imports a "
            "framework, or a very slow map?)", StokeWarning, stacklevel=5)
