"""`stoke doctor` killed (SIGKILL), terminated (SIGTERM) or interrupted (Ctrl-C: SIGINT to its
process group, as a terminal sends it): the script it measures and the processes the script
started (nor any started while they were ended: no process names the script afterwards) do
not run on, and nothing is left in the temporary folder or in /dev/shm. The
script also ends with a doctor killed while the script is still starting up.

Each run gets a temporary folder of its own (TMPDIR), checked empty afterwards. Every wait is
on a condition (a file the script writes, a process gone), with a generous deadline for a
loaded machine; no check depends on how long anything took.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from tests.core.helpers import still_running

REPO = Path(__file__).resolve().parents[2]
DEADLINE_S = 120.0  # start-up of a doctor and its script on a loaded 2-core machine

# A script with the kinds of processes training scripts start: a multiprocessing pool (as a
# PyDataset with use_multiprocessing) and a subprocess of its own. It says when all are up.
SCRIPT = """
import multiprocessing, subprocess, sys, time
pool = multiprocessing.Pool(2)
pool.map(abs, range(4))
helper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
open(sys.argv[1], "w").close()
try:
    time.sleep(600)
finally:
    helper.kill()
    pool.terminate()
"""


def _default_sigint() -> None:
    # a terminal's Ctrl-C reaches Python only where SIGINT is not ignored, and a test run in
    # the background inherits it ignored
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _stoke_shm() -> set[str]:
    try:
        return {name for name in os.listdir("/dev/shm") if "stoke" in name}
    except FileNotFoundError:
        return set()


def _wait_for(condition, what: str, timeout_s: float = DEADLINE_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _naming(script: Path) -> list[psutil.Process]:
    """The processes running whose command line names ``script`` (a zombie has exited)."""
    found = []
    for process in psutil.process_iter():
        try:
            if str(script) in " ".join(process.cmdline()):
                found.append(process)
        except psutil.Error:
            continue
    return still_running(found)


@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM", "Ctrl-C"])
def test_a_stopped_doctor_leaves_no_process_file_or_segment(tmp_path, how):
    temp = tmp_path / "tmp"
    temp.mkdir()
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    ready = tmp_path / "ready"
    shm_before = _stoke_shm()
    env = {**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(temp)}
    doctor = subprocess.Popen(
        [sys.executable, "-m", "stoke", "doctor", "--no-probes", "--", "python", str(script),
         str(ready)], env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True, preexec_fn=_default_sigint)
    descendants: list[psutil.Process] = []
    try:
        _wait_for(lambda: ready.exists() or doctor.poll() is not None, "the script to start")
        assert doctor.poll() is None, "the doctor ended before the script was up"
        # the script, its pool's workers and its helper: 4 processes, all up by now
        descendants = psutil.Process(doctor.pid).children(recursive=True)
        assert len(descendants) >= 4, descendants
        if how == "Ctrl-C":
            os.killpg(doctor.pid, signal.SIGINT)
        else:
            doctor.send_signal(getattr(signal, how))
        doctor.wait(timeout=DEADLINE_S)
        # the script watches for the doctor every 0.5 s, then ends what it started
        deadline = time.monotonic() + DEADLINE_S
        while still_running(descendants) and time.monotonic() < deadline:
            time.sleep(0.05)
        alive = still_running(descendants)
        assert not alive, f"{how}: left running: {[p.cmdline() for p in alive]}"
        # nor one started since (it names the script, as the pool's workers do): a pool
        # replaces a worker the moment it dies, and the workers it started while the tree was
        # killed one by one ran on under init
        deadline = time.monotonic() + DEADLINE_S
        while _naming(script) and time.monotonic() < deadline:
            time.sleep(0.05)
        named = _naming(script)
        assert not named, f"{how}: left running: {[(p.pid, p.cmdline()) for p in named]}"
        assert sorted(os.listdir(temp)) == [], f"{how}: left in the temporary folder"
        assert _stoke_shm() == shm_before
    finally:
        if doctor.poll() is None:
            doctor.kill()
            doctor.wait()
        for process in still_running(descendants) + _naming(script):
            process.kill()


# The measured process's bootstrap, with its imports of stoke's measuring side held up (as a
# loaded machine holds them up for seconds) until the test lets them go.
HELD_BOOTSTRAP = """
import importlib.abc, importlib.util, os, runpy, sys, time

reached, release = sys.argv[1], sys.argv[2]


class HoldMeasuringImports(importlib.abc.MetaPathFinder):
    \"\"\"Runs stoke.diagnosis.measure's import only once the test says so (held where a
    module's code runs, outside the import system's global lock, as a slow import is).\"\"\"

    def find_spec(self, name, path, target=None):
        if name != "stoke.diagnosis.measure":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        real = spec.loader

        class HeldLoader(importlib.abc.Loader):
            def create_module(self, spec):
                return real.create_module(spec)

            def exec_module(self, module):
                open(reached, "w").close()
                deadline = time.monotonic() + 600
                while not os.path.exists(release) and time.monotonic() < deadline:
                    time.sleep(0.05)
                real.exec_module(module)

        spec.loader = HeldLoader()
        return spec


sys.meta_path.insert(0, HoldMeasuringImports())
sys.argv = ["bootstrap", "-c", "pass"]
runpy.run_module("stoke.diagnosis.run.bootstrap", run_name="__main__", alter_sys=True)
"""


def test_the_script_ends_with_a_doctor_killed_during_its_start_up(tmp_path):
    reached, release = tmp_path / "reached", tmp_path / "release"
    doctor = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    env = {**os.environ, "PYTHONPATH": str(REPO), "STOKE_DOCTOR_PARENT_PID": str(doctor.pid)}
    env.pop("STOKE_DOCTOR_RECORD_FD", None)
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(HELD_BOOTSTRAP), str(reached), str(release)],
        env=env, cwd=tmp_path)
    try:
        _wait_for(lambda: reached.exists() or child.poll() is not None,
                  "the bootstrap to import its measuring side")
        assert child.poll() is None
        doctor.kill()
        doctor.wait()  # reaped: its pid is gone
        # the watch runs while the imports are held: it ends the process (status 137)
        # before the test lets them go; one started after the imports never would
        try:
            code = child.wait(timeout=DEADLINE_S)
        except subprocess.TimeoutExpired:
            code = None
        # 137: ended from the script itself; -9: by the helper that freezes, then kills its tree
        assert code in (137, -signal.SIGKILL), \
            "the script outlived a doctor killed during its start-up"
    finally:
        release.touch()
        if doctor.poll() is None:
            doctor.kill()
            doctor.wait()
        if child.poll() is None:
            child.kill()
            child.wait()


# The common pattern: catch Ctrl-C, save a checkpoint, exit with a status of one's own. A
# second SIGINT while saving interrupts the save (the red-team's s01_sigint.py: a 0-byte
# .keras file, exit status 130 where the plain run exited 3).
CATCHING_SCRIPT = """
import sys, time
open(sys.argv[1], "w").close()
try:
    while True:
        time.sleep(0.05)
except KeyboardInterrupt:
    try:
        time.sleep(1.5)  # saving a checkpoint
    except KeyboardInterrupt:
        print("INTERRUPTED WHILE SAVING", flush=True)
        sys.exit(4)
    print("SAVED", flush=True)
    sys.exit(3)
"""


@pytest.mark.parametrize("how", ["Ctrl-C to the group", "SIGINT to the doctor",
                                 "SIGTERM to the group"])
def test_a_scripts_own_ctrl_c_handler_gets_one_signal(tmp_path, how):
    script = tmp_path / "train.py"
    script.write_text(CATCHING_SCRIPT)
    ready = tmp_path / "ready"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    doctor = subprocess.Popen(
        [sys.executable, "-m", "stoke", "doctor", "--no-probes", "--", "python", str(script),
         str(ready)], env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True, preexec_fn=_default_sigint)
    try:
        _wait_for(lambda: ready.exists() or doctor.poll() is not None, "the script to start")
        assert doctor.poll() is None, doctor.communicate()[0]
        if how == "Ctrl-C to the group":  # as a terminal sends it: the doctor and the script
            os.killpg(doctor.pid, signal.SIGINT)
        elif how == "SIGTERM to the group":  # a scheduler ending every process of a job
            os.killpg(doctor.pid, signal.SIGTERM)
        else:  # a kill aimed at the doctor alone: passed on to the script, once
            doctor.send_signal(signal.SIGINT)
        output, _ = doctor.communicate(timeout=DEADLINE_S)
    finally:
        if doctor.poll() is None:
            os.killpg(doctor.pid, signal.SIGKILL)
            doctor.wait()
    assert "SAVED" in output and "INTERRUPTED WHILE SAVING" not in output, output
    assert doctor.returncode == 3, output
