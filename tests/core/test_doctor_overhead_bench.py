"""benchmarks/doctor_overhead.py --wall: its scripts exist, and one timed command returns its
wall time, its CPU seconds and its exit code (a failing script allowed only where the script
fails by design). Not a speed test: the wall ratios are the benchmark's, on a quiet machine."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "doctor_overhead.py"


@pytest.fixture
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(SCRIPT.parent))
    spec = importlib.util.spec_from_file_location("doctor_overhead_under_test", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    return module


def test_every_wall_script_exists_and_the_sets_name_known_scripts(bench):
    for name, (script, args, backends) in bench.WALL_SCRIPTS.items():
        assert script.is_file(), name
        assert all(isinstance(a, str) for a in args)
        assert backends is None or set(backends) <= {"tensorflow", "jax", "torch"}
    assert set(bench.WALL_DEFAULT) <= set(bench.WALL_SCRIPTS)
    assert bench.MAY_FAIL <= set(bench.WALL_SCRIPTS)


def test_a_timed_command_reports_wall_cpu_and_exit_code(bench):
    busy = "import time\nend = time.process_time() + 0.2\nwhile time.process_time() < end: pass"
    wall, cpu, code = bench._timed([sys.executable, "-c", busy], "jax")
    assert code == 0 and cpu >= 0.2 and wall > 0
    wall, cpu, code = bench._timed([sys.executable, "-c", "raise SystemExit(3)"], "jax",
                                   may_fail=True)
    assert code == 3
    with pytest.raises(RuntimeError, match="exit 3"):
        bench._timed([sys.executable, "-c", "raise SystemExit(3)"], "jax")
