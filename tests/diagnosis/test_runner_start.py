"""``run_measured(on_started=...)``: the command line's deferred work (importing the report)
runs once the script's process exists, and only once."""

from __future__ import annotations

import time

import psutil

from stoke.diagnosis.measure.recorder import DoctorOptions
from stoke.diagnosis.run.runner import run_measured


def test_on_started_runs_once_with_the_script_already_started(tmp_path):
    gate = tmp_path / "gate"
    script = ("import os, time\n"
              f"while not os.path.exists({str(gate)!r}): time.sleep(0.05)\n")
    seen = []

    def command_lines() -> list[str]:
        # a process that has just exec'd can read an empty command line for a moment (seen on
        # a loaded machine): read again until it is there
        for _ in range(100):
            lines = [" ".join(p.cmdline()) for p in psutil.Process().children()]
            if lines and all(lines):
                return lines
            time.sleep(0.05)
        return lines

    def started():
        # the script waits for the gate: it is running now, and this is its start's callback
        seen.append(command_lines())
        gate.touch()

    run = run_measured(["python", "-c", script], DoctorOptions(probes=False), timeout_s=300,
                       on_started=started)
    assert run.exit_code == 0, run.message
    assert run.record is not None and run.record.meta.exit_status == "completed"
    assert len(seen) == 1
    assert any("stoke.diagnosis.run.bootstrap" in line for line in seen[0]), seen


def test_a_ctrl_c_in_the_script_prints_its_traceback_as_python_does():
    # the red-team's s10_long_for_ctrlc.py: exit status 130 and the script's except block ran,
    # but the KeyboardInterrupt traceback python prints was gone under the doctor
    script = "def train():\n    raise KeyboardInterrupt\ntrain()\n"
    run = run_measured(["python", "-c", script], DoctorOptions(probes=False), timeout_s=300,
                       capture_output=True)
    assert run.exit_code == 130
    assert run.record is not None and run.record.meta.exit_status == "interrupted"
    assert "Traceback (most recent call last)" in run.message, run.message
    assert "in train" in run.message and "KeyboardInterrupt" in run.message
    # as python prints it: none of the doctor's own frames (s09_exception.py gained six)
    assert "bootstrap.py" not in run.message and "runpy" not in run.message, run.message


def test_a_script_that_does_not_compile_gets_pythons_own_message(tmp_path):
    script = tmp_path / "train.py"
    script.write_text("x = (\n")
    run = run_measured(["python", str(script)], DoctorOptions(probes=False), timeout_s=300,
                       capture_output=True)
    assert run.exit_code == 1
    assert "SyntaxError" in run.message and f'File "{script}", line 1' in run.message
    assert "bootstrap.py" not in run.message and "runpy" not in run.message, run.message
