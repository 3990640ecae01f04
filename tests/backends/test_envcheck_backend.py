"""``stoke env`` against the real backend the runner picked (KERAS_BACKEND): the probe that
imports Keras, lists devices and times a matmul, in this process and through the command."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import stoke
from stoke.envcheck.facts import FAIL, INFO, OK, TRAINING_BACKENDS
from stoke.envcheck.probe import probe_backend

BACKEND = os.environ.get("KERAS_BACKEND")
pytestmark = pytest.mark.skipif(
    BACKEND not in TRAINING_BACKENDS,
    reason="run through tests.run_all, which sets KERAS_BACKEND",
)


def test_probe_lists_devices_and_runs_a_correct_matmul():
    probe = probe_backend(matmul_budget_s=0.1)
    assert probe["error"] is None, probe
    assert probe["backend"] == BACKEND
    assert probe["devices"], probe
    matmul = probe["matmul"]
    assert matmul["correct"], matmul
    assert matmul["gflops"] > 0 and matmul["repeats"] >= 3
    if probe["gpu_count"] == 0:
        assert matmul["device_kind"] == "cpu", matmul
    if BACKEND == "torch":
        assert probe["threads"]["torch_num_threads"] >= 1
    if BACKEND == "tensorflow":
        assert "is_cuda_build" in probe["build"]
    # The probe's result is what the parent reads from the child: plain JSON.
    json.dumps(probe)


def test_command_checks_the_active_backend(tmp_path):
    path = tmp_path / "env.json"
    root = os.path.dirname(os.path.dirname(os.path.abspath(stoke.__file__)))
    path_list = [root, *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path_list), "COLUMNS": "160"}
    done = subprocess.run(
        [sys.executable, "-m", "stoke", "env", "--json", str(path)],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
    )
    payload = json.loads(path.read_text())
    assert done.returncode == (1 if payload["status"] == FAIL else 0), done.stdout
    (probe,) = payload["facts"]["probes"]
    assert probe["backend"] == BACKEND and probe["error"] is None, probe
    checks = {c["id"]: c for c in payload["checks"]}
    devices, matmul = checks[f"devices-{BACKEND}"], checks[f"matmul-{BACKEND}"]
    if payload["facts"]["nvidia"]["gpus"]:
        assert devices["status"] in (OK, INFO, FAIL)
    else:  # a CPU-only machine: said plainly, not a failure
        assert devices["status"] == INFO, devices
        assert matmul["status"] == INFO, matmul
        assert "no NVIDIA GPU visible" in checks["nvidia"]["message"]
    assert f"matmul ({BACKEND})" in done.stdout
