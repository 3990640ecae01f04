"""Module-level functions for tests: process workers receive them by reference."""

from __future__ import annotations

import os
import signal
import time

import numpy as np


def identity(sample):
    return sample


def add_noise(sample, rng):
    x, y = sample
    return (x + rng.standard_normal(x.shape).astype(np.float32), y)


def fail_on_13(sample):
    x, y = sample
    if int(y) == 13:
        raise ValueError("sample thirteen is cursed")
    return sample


def kill_self_on_7(sample):
    x, y = sample
    if int(y) == 7:
        os.kill(os.getpid(), signal.SIGKILL)
    return sample


def exit_123_on_5(sample):
    if int(sample[1]) == 5:
        os._exit(123)
    return sample


def hang_on_3(sample):
    if int(sample[1]) == 3:
        time.sleep(3600)
    return sample


def ragged_at_6(sample):
    x, y = sample
    if int(y) == 6:
        return (np.zeros(5, np.float32), y)
    return (np.zeros(4, np.float32), y)


def keep_odd(sample):
    return int(sample[1]) % 2 == 1


def slow_square(sample):
    time.sleep(0.002)
    return sample * sample


def as_dict(sample):
    x, y = sample
    return {"image": np.full((2, 2), x[0], np.float32), "label": y, "extra": [y, y]}


class GatedSamples:
    """Samples ``(x[i], y[i])``. A worker's copy loads only once the ``gate`` file exists (a
    worker still importing, held as long as a test wants; at most 60 s)."""

    def __init__(self, gate: str, x: np.ndarray, y: np.ndarray) -> None:
        self.gate = gate
        self.x = x
        self.y = y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int):
        return self.x[index], self.y[index]

    def __setstate__(self, state):
        deadline = time.monotonic() + 60
        while not os.path.exists(state["gate"]) and time.monotonic() < deadline:
            time.sleep(0.01)
        self.__dict__.update(state)


def with_maker(sample):
    """The sample and the pid of the process that made it; draws from numpy's global random
    (code that does must leave the trainer's state as it was)."""
    x, y = sample
    np.random.random()
    return x, y, np.int64(os.getpid())


class LoadsOnlyInTheTrainer:
    """Samples ``i``; a worker's copy cannot be loaded (its unpickling raises)."""

    def __init__(self) -> None:
        self.length = 8  # some state: unpickling calls __setstate__

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int):
        return np.full(2, index, np.float32)

    def __setstate__(self, state):
        raise RuntimeError("this source cannot be loaded in a worker")


# -- watching the worker processes of the current process ------------------------------------
def worker_processes() -> list:
    """The stoke worker processes below this one (psutil processes)."""
    import psutil

    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if "stoke.executors.worker" in " ".join(child.cmdline()):
                found.append(child)
        except psutil.Error:
            continue
    return found


def running(pid: int) -> bool:
    """Whether process ``pid`` still runs (a zombie does not). Never raises: a process that
    ends between two looks (``pid_exists`` then ``Process(pid)``) is reaped by then, and
    psutil raises NoSuchProcess for it, which made tests that watch workers exit fail."""
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def still_running(processes: list) -> list:
    """Those of ``processes`` (psutil processes) still running: a zombie has exited (its new
    parent just has not reaped it), and one gone is passed over."""
    import psutil

    alive = []
    for process in processes:
        try:
            if process.status() != psutil.STATUS_ZOMBIE:
                alive.append(process)
        except psutil.NoSuchProcess:
            pass
    return alive


def wait_for(condition, timeout_s: float = 20.0) -> bool:
    """Poll ``condition`` until it is true or ``timeout_s`` passed; its last answer."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()
