"""Ctrl-C (SIGINT to the process group, as a terminal sends it) in the middle of training:
``benchmarks/keras2_run.py`` and the ``stoke run`` it starts, with stoke's workers up, leave no
process, no temporary file (``stoke-keras2-run-...``) and no /dev/shm segment behind.

Every wait is on a condition (a process or a file that appears, a process gone), with a
generous deadline for a loaded machine.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from tests.core.helpers import still_running

REPO = Path(__file__).resolve().parents[2]
DEADLINE_S = 300.0  # TensorFlow's import and a first fit on a loaded 2-core machine


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # a background test run inherits it ignored


def _stoke_shm() -> set[str]:
    try:
        return {name for name in os.listdir("/dev/shm") if "stoke" in name}
    except FileNotFoundError:
        return set()


def _stoke_workers(root: psutil.Process) -> list[psutil.Process]:
    workers = []
    for process in root.children(recursive=True):
        try:
            if "stoke.executors.worker" in " ".join(process.cmdline()):
                workers.append(process)
        except psutil.Error:
            pass
    return workers


def test_ctrl_c_during_stoke_run_under_the_keras2_benchmark_leaves_nothing(tmp_path):
    temp = tmp_path / "tmp"
    temp.mkdir()
    shm_before = _stoke_shm()
    env = {**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(temp),
           "TF_CPP_MIN_LOG_LEVEL": "3"}
    bench = subprocess.Popen(
        [sys.executable, "benchmarks/keras2_run.py", "--rounds", "1", "--epochs", "200",
         "--steps", "50", "--batch-work-ms", "2"], env=env, cwd=REPO,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        preexec_fn=_default_sigint)
    seen: dict[int, psutil.Process] = {}
    try:
        root = psutil.Process(bench.pid)
        deadline = time.monotonic() + DEADLINE_S
        # `stoke run` is first in round 0: wait until its workers feed the fit
        while not _stoke_workers(root):
            assert bench.poll() is None, "the benchmark ended before stoke's workers started"
            assert time.monotonic() < deadline, "stoke's workers did not start"
            for process in root.children(recursive=True):
                seen.setdefault(process.pid, process)
            time.sleep(0.05)
        for process in root.children(recursive=True):
            seen.setdefault(process.pid, process)
        assert os.listdir(temp), "the benchmark's scripts are not in its temporary folder"
        os.killpg(bench.pid, signal.SIGINT)
        bench.wait(timeout=DEADLINE_S)
        deadline = time.monotonic() + DEADLINE_S
        while still_running(list(seen.values())) and time.monotonic() < deadline:
            time.sleep(0.05)
        alive = still_running(list(seen.values()))
        assert not alive, f"left running: {[p.cmdline()[:4] for p in alive]}"
        assert sorted(os.listdir(temp)) == [], "left in the temporary folder"
        assert _stoke_shm() == shm_before
    finally:
        if bench.poll() is None:
            os.killpg(bench.pid, signal.SIGKILL)
            bench.wait()
        for process in still_running(list(seen.values())):
            process.kill()
