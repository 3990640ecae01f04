"""``stoke bench``: the built-in example end to end, a user's pipeline against their own
loader, the JSON record, and errors that say what to pass."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

import stoke

ROOT = Path(__file__).resolve().parents[2]


def small_pipeline():
    """What a user points ``stoke bench`` at: a function returning a pipeline."""
    return stoke.from_arrays(np.zeros((64, 4), np.float32), np.arange(64)).map(double).batch(8)


def double(sample):
    x, y = sample
    return (x * 2, y)


def my_loader():
    """The user's current loader: a generator of batches."""
    for start in range(0, 64, 8):
        yield np.zeros((8, 4), np.float32), np.arange(start, start + 8)


def bench(*args: str, timeout: float = 300.0) -> subprocess.CompletedProcess:
    # 300 s (was 60): at load 17 on 2 cores the quick example alone ran past 60 s
    return subprocess.run([sys.executable, "-m", "stoke", "bench", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def test_example_quick_prints_a_table_and_a_verdict():
    run = bench("--example", "--quick")  # no wall-clock bound: a loaded machine sets it
    assert run.returncode == 0, run.stderr[-2000:]
    out = run.stdout
    for expected in ("samples/s", "CPU cores", "memory MiB", "inline", "thread x 1",
                     "process x 2", "auto", "Fastest:", "auto chose"):
        assert expected in out, f"{expected!r} missing from:\n{out}"


def test_a_users_pipeline_against_their_loader_with_json(tmp_path):
    record = tmp_path / "bench.json"
    run = bench("tests.core.test_bench_cli:small_pipeline", "--quick", "--executors", "thread",
                "--workers", "1,2", "--no-auto", "--seconds", "0.2", "--warmup", "0.05",
                "--baseline", "tests.core.test_bench_cli:my_loader", "--json", str(record))
    assert run.returncode == 0, run.stderr[-2000:]
    assert "your loader" in run.stdout and "Your loader:" in run.stdout
    data = json.loads(record.read_text())
    assert data["schema"] == "stoke.bench/1"
    names = [row["name"] for row in data["rows"]]
    assert names == ["your loader", "inline", "thread x 1", "thread x 2"]
    assert all(row["samples_per_s"] > 0 for row in data["rows"])


def test_neither_pipeline_nor_example_is_refused():
    run = bench()
    assert run.returncode == 2
    assert "--example" in run.stderr and "MODULE:ATTR" in run.stderr


def test_a_name_that_does_not_load_says_so():
    run = bench("no_such_module_anywhere:pipe", "--quick")
    assert run.returncode == 2
    assert "could not load it" in run.stderr and "no_such_module_anywhere" in run.stderr


def test_an_object_that_is_not_a_pipeline_says_what_it_is():
    run = bench("tests.core.test_bench_cli:ROOT", "--quick")
    assert run.returncode == 2
    assert "not a stoke Pipeline" in run.stderr


def test_json_into_a_folder_that_does_not_exist_yet(tmp_path):
    record = tmp_path / "results" / "today" / "bench.json"
    run = bench("tests.core.test_bench_cli:small_pipeline", "--quick", "--executors", "thread",
                "--workers", "1", "--no-auto", "--seconds", "0.2", "--warmup", "0.05",
                "--json", str(record))
    assert run.returncode == 0, run.stderr[-2000:]
    assert json.loads(record.read_text())["schema"] == "stoke.bench/1"
