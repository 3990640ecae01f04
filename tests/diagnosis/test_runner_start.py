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
