"""`stoke doctor` killed with SIGKILL: the script it measures does not run on as an orphan."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import psutil


def test_the_measured_script_dies_with_the_doctor(tmp_path):
    # TMPDIR: a doctor killed with SIGKILL cannot remove its stoke-doctor-... folder
    env = {**os.environ, "PYTHONPATH": os.getcwd(), "TMPDIR": str(tmp_path)}
    doctor = subprocess.Popen(
        [sys.executable, "-m", "stoke", "doctor", "--no-probes", "--", "python", "-c",
         "import time; time.sleep(120)"], env=env, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        children: list[psutil.Process] = []
        while not children and time.monotonic() < deadline:
            children = psutil.Process(doctor.pid).children()
            time.sleep(0.1)
        assert children, "the doctor did not start the script"
        doctor.kill()
        doctor.wait(timeout=60)
        # the script watches for the doctor once its start-up imports are done: on a loaded
        # machine (load 24, 2 cores) that took more than 10 s; one that never ends still fails
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and _running(children):
            time.sleep(0.1)
        alive = _running(children)
        for process in alive:
            process.kill()
        assert not alive, "the measured script outlived the doctor"
    finally:
        if doctor.poll() is None:
            doctor.kill()


def _running(processes: list[psutil.Process]) -> list[psutil.Process]:
    """Those still running (a zombie has exited; its new parent just has not reaped it)."""
    running = []
    for process in processes:
        try:
            if process.status() != psutil.STATUS_ZOMBIE:
                running.append(process)
        except psutil.NoSuchProcess:
            pass
    return running
