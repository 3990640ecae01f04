"""benchmarks/formats_throughput.py runs end to end in its quick mode and writes what its
docstring promises (not a speed test: the numbers of a quick run mean nothing)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_formats_benchmark_quick(tmp_path):
    out = tmp_path / "formats.json"
    rows = "memory-examples,tfrecord,tfrecord-http,webdataset"
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "formats_throughput.py"), "--quick",
         "--workers", "1", "--only", rows, "--out", str(out)],
        capture_output=True, text=True, timeout=600, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["schema"] == "stoke.bench.formats_throughput/1"
    by_name = {r["name"]: r for r in result["rows"]}
    assert list(by_name) == rows.split(",")
    assert all(r["status"] == "ok" and r["images_per_s"] > 0 for r in by_name.values())
    assert by_name["tfrecord"]["compared_with"] == "memory-examples"
    assert by_name["tfrecord-http"]["ratio"] > 0
    assert result["first_batch_million_files_s"] > 0
    # every compared row says its read cost, or that it was not measured (never "nan")
    assert "nan" not in done.stdout
    assert "read cost not measured" in next(
        line for line in done.stdout.splitlines() if line.startswith("tfrecord-http "))


def test_first_batch_benchmark_quick(tmp_path):
    out = tmp_path / "first_batch.json"
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "first_batch.py"), "--quick", "--workers",
         "1", "--brace-counts", "100,1000000", "--glob-counts", "20,200", "--out", str(out)],
        capture_output=True, text=True, timeout=600, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["schema"] == "stoke.bench.first_batch/1"
    assert set(result["rows"]) == {"brace-lazy", "glob-eager", "glob-lazy"}
    assert list(result["rows"]["brace-lazy"]) == ["100", "1000000"]
    assert all(r > 0 for r in result["ratios"].values())
