"""The throughput benchmark runs end to end in its tiny mode and writes a complete result.

Not a speed test (performance is claimed by the benchmark itself, on a quiet machine): this
checks that every row runs with the same data, that the JSON says what the README promises,
that peers whose package is missing are skipped rather than fatal, that no loader leaves a
worker process behind, and that the plot can be drawn from the result.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "pipeline_throughput.py"
PLOT = REPO / "benchmarks" / "plot.py"

# Every row of the comparison, and the package it needs (a contract with README.md).
EXPECTED_ROWS = {
    "python-loop": None,
    "stoke-process": "stoke",
    "stoke-thread": "stoke",
    "stoke-process-keep": "stoke",
    "tf.data-numpy_function": "tensorflow",
    "pydataset-threads": "keras",
    "pydataset-processes": "keras",
    "torch-dataloader": "torch",
    "grain-threads": "grain",
    "grain-processes": "grain",
    "tf-native-ops": "tensorflow",
    "independent-loops x1": None,  # the references: one core's ceiling, and W cores'
    "independent-loops x2": None,
}


def _installed(module: str | None) -> bool:
    return module is None or importlib.util.find_spec(module) is not None


def _run(tmp_path: Path, *args: str, timeout_s: float = 240.0) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--data-dir", str(tmp_path / "data"), *args],
        cwd=REPO, capture_output=True, text=True, timeout=timeout_s,
    )


def _explain(proc: subprocess.CompletedProcess) -> str:
    return f"exit {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}"


@pytest.mark.slow
def test_quick_comparison_has_every_row_and_a_plot(tmp_path):
    out = tmp_path / "result.json"
    proc = _run(tmp_path, "--workers", "2", "--out", str(out))
    assert proc.returncode == 0, _explain(proc)
    result = json.loads(out.read_text())

    assert result["schema"] == "stoke.bench.pipeline_throughput/1"
    assert result["mode"] == "compare"
    for key in ("cores", "python", "versions", "cpu_model"):
        assert key in result["machine"], key
    assert result["workload"]["crop_size"] == 128
    assert result["settings"]["statistic"] == "median"

    rows = {r["name"]: r for r in result["rows"]}
    assert list(rows) == list(EXPECTED_ROWS), "rows missing, renamed or reordered"
    measured = []
    for name, module in EXPECTED_ROWS.items():
        row = rows[name]
        if not _installed(module):
            assert row["status"] == "skipped" and module in row["note"], row
            continue
        assert row["status"] == "ok", f"{name}: {row['note']}"
        assert row["images_per_s"] > 0 and row["images_per_s_best"] >= row["images_per_s"]
        assert len(row["images_per_s_rounds"]) == result["settings"]["rounds"] == 1
        assert row["startup_s"] >= 0 and row["cpu_us_per_image"] >= 0
        assert row["leftover_processes"] == [], f"{name} left workers behind"
        assert row["workers"] == (1 if name in ("python-loop", "independent-loops x1") else 2)
        measured.append(row)

    # Same data and transform for everyone: the same batch layout from every loader.
    batch = result["settings"]["batch_size"]
    for row in measured:
        assert row["batch"]["x_shape"] == [batch, 128, 128, 3], row["name"]
        assert row["batch"]["x_dtype"] == "float32", row["name"]
        assert row["batch"]["y_shape"] == [batch], row["name"]
        assert row["batch"]["y_dtype"] == "int32", row["name"]

    assert rows["python-loop"]["ratio_to_loop"] == pytest.approx(1.0)
    peers = [r for r in measured if r["kind"] == "peer"]
    if peers:
        best = max(peers, key=lambda r: r["images_per_s"])
        assert result["summary"]["best_peer"] == best["name"]
        assert best["ratio_to_best_peer"] == pytest.approx(1.0)
    assert rows["stoke-process"]["ratio_to_loop"] > 0
    assert result["summary"]["stoke-process_ratio_to_machine"] == pytest.approx(
        rows["stoke-process"]["images_per_s"] / rows["independent-loops x2"]["images_per_s"])

    for name in EXPECTED_ROWS:
        assert name in proc.stdout, f"{name} is missing from the printed table"

    _draws_png(PLOT, out, tmp_path / "result.png")


@pytest.fixture
def bench(monkeypatch):
    """The benchmark script as a module (its pure parts: arguments and ratios)."""
    import importlib.util as util

    monkeypatch.syspath_prepend(str(SCRIPT.parent))
    spec = util.spec_from_file_location("pipeline_throughput_under_test", SCRIPT)
    module = util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look themselves up
    spec.loader.exec_module(module)
    return module


def _row(name, kind, workers, images_per_s):
    return {"name": name, "kind": kind, "workers": workers, "status": "ok",
            "images_per_s": images_per_s}


def test_ratios_use_the_loop_and_the_best_peer_only(bench):
    rows = [_row("python-loop", "baseline", 1, 1000.0), _row("stoke-process", "stoke", 2, 1800.0),
            _row("torch-dataloader", "peer", 2, 400.0), _row("grain-threads", "peer", 2, 900.0),
            _row("tf-native-ops", "reference", 2, 2400.0),
            {**_row("grain-processes", "peer", 2, None), "status": "skipped"}]
    summary = bench.summarise(rows)
    by_name = {r["name"]: r for r in rows}
    assert summary["best_peer"] == "grain-threads"  # the reference row is not a peer
    assert by_name["stoke-process"]["ratio_to_loop"] == pytest.approx(1.8)
    assert by_name["stoke-process"]["ratio_to_best_peer"] == pytest.approx(2.0)
    assert by_name["grain-processes"]["ratio_to_loop"] is None
    assert summary["stoke-process_ratio_to_best_peer"] == pytest.approx(2.0)


def test_scaling_efficiency_is_against_linear_from_the_fewest_workers(bench):
    rows = [_row("python-loop", "baseline", 1, 1000.0)]
    rows += [_row(f"stoke-process w={w}", "stoke", w, v)
             for w, v in ((1, 900.0), (2, 1800.0), (4, 3060.0))]
    summary = bench.summarise_scaling(rows)
    assert [r.get("efficiency_vs_linear") for r in rows] == [
        None, pytest.approx(1.0), pytest.approx(1.0), pytest.approx(0.85)]
    assert summary["max_workers"] == 4
    assert summary["efficiency_at_max_workers"] == pytest.approx(0.85)


def test_arguments_scale_with_workers_and_quick_is_small(bench):
    args = bench.parse_args(["--scaling", "8,1,2,8"])
    assert args.scaling == [1, 2, 8]
    assert args.batches == max(100, 25 * 8) and args.warmup_batches == 2 * 8 + 2
    quick = bench.parse_args(["--quick"])
    assert (quick.images, quick.batch_size, quick.rounds, quick.batches) == (32, 16, 1, 4)


def test_unknown_loader_is_refused_with_the_choices(tmp_path):
    proc = _run(tmp_path, "--only", "stoke-process,pytorch", timeout_s=300)
    assert proc.returncode == 2
    assert "unknown loader(s) pytorch" in proc.stderr
    assert "grain-processes" in proc.stderr  # the valid choices are listed


def test_scaling_against_the_machine_ceiling(bench):
    rows = [_row("python-loop", "baseline", 1, 1000.0)]
    for w, stoke_rate, machine_rate in ((1, 900.0, 1000.0), (4, 3060.0, 3400.0)):
        rows += [_row(f"stoke-process w={w}", "stoke", w, stoke_rate),
                 _row(f"independent-loops x{w}", "machine", w, machine_rate)]
    summary = bench.summarise_scaling(rows)
    by_name = {r["name"]: r for r in rows}
    assert by_name["stoke-process w=4"]["efficiency_vs_machine"] == pytest.approx(0.9)
    assert by_name["independent-loops x4"]["efficiency_vs_linear"] == pytest.approx(0.85)
    assert summary["efficiency_vs_machine_at_max_workers"] == pytest.approx(0.9)


def test_the_caption_step_keeps_the_batches(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(SCRIPT.parent))
    import numpy as np
    import workloads

    workload = workloads.Workload(files=4, image_size=40, crop_size=32)
    jpegs, labels = workloads.load_samples(workload, tmp_path)
    plain, captioned = workloads.Transform(workload), workloads.TransformWithCaption(workload, 50)
    for index in range(4):
        sample = (jpegs[index], labels[index])
        a = plain(sample, np.random.default_rng(index))
        b = captioned(sample, np.random.default_rng(index))
        np.testing.assert_array_equal(a[0], b[0])
        assert a[1] == b[1]
    assert workloads.tokenize_caption(3, 50) == workloads.tokenize_caption(3, 50)
    assert len(workloads.tokenize_caption(3, 50)) == 16


def test_one_maker_of_synthetic_jpegs(monkeypatch, tmp_path):
    """The benchmark's JPEG files and `stoke bench --example`'s are the same images, made by
    stoke.commands.examples.images; files are made once and decode to photo-sized images."""
    monkeypatch.syspath_prepend(str(SCRIPT.parent))
    import workloads

    from stoke.commands.bench import ExampleJpegs

    workload = workloads.Workload(files=3, image_size=48, crop_size=32)
    paths = workloads.ensure_jpegs(workload, tmp_path)
    stamps = [p.stat().st_mtime_ns for p in paths]
    assert [p.stat().st_mtime_ns for p in workloads.ensure_jpegs(workload, tmp_path)] == stamps
    assert not list(tmp_path.rglob("*.tmp"))
    example = ExampleJpegs(files=3, length=3, size=48)
    assert example.jpegs == [p.read_bytes() for p in paths]
    image = workloads.decode(example.jpegs[0])
    assert image.shape == (48, 48, 3) and image.std() > 10  # not a flat colour
    assert example.jpegs[0] != example.jpegs[1]


@pytest.mark.slow
@pytest.mark.parametrize("workload,x_shape", [("tabular", [16, 64]),
                                              ("large-arrays", [16, 224, 224, 3])])
def test_other_workloads_run_through_stoke_the_loop_and_the_peers(tmp_path, workload, x_shape):
    out = tmp_path / "result.json"
    rows = "python-loop,stoke-process,stoke-thread,tf.data-numpy_function,torch-dataloader," \
           "tf-native-ops"
    proc = _run(tmp_path, "--workload", workload, "--workers", "2", "--only", rows,
                "--out", str(out))
    assert proc.returncode == 0, _explain(proc)
    result = json.loads(out.read_text())
    assert result["workload"]["name"] == workload
    by_name = {r["name"]: r for r in result["rows"]}
    assert by_name["tf-native-ops"]["status"] == "skipped"  # a JPEG-only reference
    for row in result["rows"]:
        if row["name"] == "tf-native-ops" or row["status"] == "skipped":
            continue
        assert row["status"] == "ok", f"{row['name']}: {row['note']}"
        assert row["batch"]["x_shape"] == x_shape, row["name"]
        assert row["batch"]["x_dtype"] == "float32", row["name"]
        assert row["leftover_processes"] == [], row["name"]


def test_array_workloads_are_deterministic_per_sample(monkeypatch):
    monkeypatch.syspath_prepend(str(SCRIPT.parent))
    import numpy as np
    import workloads

    for name in ("tabular", "large-arrays"):
        workload = workloads.ArrayWorkload(name, distinct=8)
        samples, fn = workload.load(length=20), workload.transform()
        assert len(samples) == 20 and samples[17][1] == samples[9][1]  # 17 % 8 == 9 % 8
        a = fn(samples[3], workloads.sample_rng(0, 0, 3))[0].copy()
        b = fn(samples[3], workloads.sample_rng(0, 0, 3))[0]
        c = fn(samples[3], workloads.sample_rng(0, 1, 3))[0]
        np.testing.assert_array_equal(a, b)
        assert a.dtype == np.float32 and not np.array_equal(a, c)
    with pytest.raises(ValueError, match="unknown array workload"):
        workloads.ArrayWorkload("video", distinct=8)


@pytest.mark.slow
def test_worker_allocator_benchmark_runs_both_allocators(tmp_path):
    out = tmp_path / "allocator.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT.parent / "worker_allocator.py"), "--quick",
         "--maps", "temporaries,large-arrays", "--workers", "1", "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, _explain(proc)
    result = json.loads(out.read_text())
    assert result["schema"] == "stoke.bench.worker_allocator/1"
    assert [r["map"] for r in result["rows"]] == ["temporaries", "large-arrays"]
    for row in result["rows"]:
        assert row["glibc_default_samples_per_s"] > 0 and row["keep_freed_samples_per_s"] > 0
        assert row["ratio"] == pytest.approx(
            row["keep_freed_samples_per_s"] / row["glibc_default_samples_per_s"])


# -- the A/B script ---------------------------------------------------------------------------
AB = REPO / "benchmarks" / "ab_throughput.py"


@pytest.fixture
def ab(monkeypatch):
    """benchmarks/ab_throughput.py as a module (it runs as a script, not a package)."""
    from importlib import util

    monkeypatch.syspath_prepend(str(AB.parent))
    spec = util.spec_from_file_location("ab_throughput_under_test", AB)
    module = util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    return module


def test_ab_alternates_the_sides_and_pairs_the_rounds(ab):
    order = ab.schedule(["jpeg", "tabular"], 2)
    assert order == [(0, "jpeg", "A"), (0, "jpeg", "B"), (0, "tabular", "A"), (0, "tabular", "B"),
                     (1, "jpeg", "B"), (1, "jpeg", "A"), (1, "tabular", "B"), (1, "tabular", "A")]
    rates = {("A", 0): 100.0, ("B", 0): 110.0, ("A", 1): 200.0, ("B", 1): 180.0,
             ("A", 2): 150.0, ("B", 2): 150.0}
    visits = [{"round": r, "workload": "jpeg", "side": s, "images_per_s": v, "startup_s": 1.0}
              for (s, r), v in rates.items()]
    summary = ab.summarise(visits, ["jpeg"])["jpeg"]
    assert summary["ratio"] == pytest.approx(1.0)  # medians 150 and 150
    assert summary["ratio_rounds"] == pytest.approx([1.1, 0.9, 1.0])  # B / the same round's A
    assert (summary["ratio_min"], summary["ratio_max"]) == pytest.approx((0.9, 1.1))
    assert summary["within_spread"] is True
    assert summary["a_spread"] == pytest.approx((200 - 100) / 150)


def test_ab_refuses_a_tree_without_the_benchmark(tmp_path):
    proc = subprocess.run([sys.executable, str(AB), "--quick", "--a", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "has no benchmarks/pipeline_throughput.py" in proc.stderr


@pytest.mark.slow
def test_ab_quick_measures_each_tree_in_its_own_process_and_draws(tmp_path):
    out = tmp_path / "ab.json"
    proc = subprocess.run(
        [sys.executable, str(AB), "--quick", "--a", str(REPO), "--b", str(REPO),
         "--workloads", "tabular", "--rounds", "2", "--workers", "2",
         "--data-dir", str(tmp_path / "data"), "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, _explain(proc)
    result = json.loads(out.read_text())
    assert result["schema"] == "stoke.bench.ab_throughput/1"
    for side in ("A", "B"):
        assert Path(result["trees"][side]["stoke_file"]).is_relative_to(REPO)
    assert result["harness_differs"] == []
    assert [(v["round"], v["side"]) for v in result["visits"]] == [(0, "A"), (0, "B"),
                                                                   (1, "B"), (1, "A")]
    tabular = result["workloads"]["tabular"]
    assert len(tabular["a_per_s_rounds"]) == len(tabular["b_per_s_rounds"]) == 2
    assert tabular["ratio"] == pytest.approx(tabular["b_per_s"] / tabular["a_per_s"])
    assert tabular["ratio_min"] <= tabular["ratio_max"]
    assert all(v["leftover_processes"] == [] for v in result["visits"])
    if _installed("matplotlib"):
        assert out.with_suffix(".png").stat().st_size > 0


PLOT_ACCURACY = REPO / "benchmarks" / "plot_accuracy.py"


def _draws_png(plot_script: Path, results: Path, png: Path) -> None:
    """``plot_script`` draws ``results`` into the PNG ``png`` (skipped without matplotlib)."""
    if importlib.util.find_spec("matplotlib") is None:
        pytest.skip("matplotlib is not installed: plot not checked")
    plot = subprocess.run([sys.executable, str(plot_script), str(results), "-o", str(png)],
                          capture_output=True, text=True, timeout=120)
    assert plot.returncode == 0, _explain(plot)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_doctor_accuracy_results_draw_one_point_a_measured_row(tmp_path, monkeypatch):
    # a results file of doctor_accuracy.py as the benchmark wrote it (session 17, TensorFlow)
    results = REPO / "benchmarks" / "results" / "doctor_accuracy-2core-s17-tf.json"
    monkeypatch.syspath_prepend(str(PLOT_ACCURACY.parent))  # it imports common, as scripts do
    spec = importlib.util.spec_from_file_location("plot_accuracy_under_test", PLOT_ACCURACY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = json.loads(results.read_text())
    points = module.points(result)
    measured = [r for r in result["rows"] if r.get("measured_speedup")]
    assert len(points) == len(measured) > 0
    for point, row in zip(points, measured):
        assert point["measured"] == row["measured_speedup"]
        assert point["mark"] == ("ok" if row["within_tolerance"] else "off")
    assert any(p["mark"] == "off" and "sequence_float64" in p["label"] for p in points)
    # rows whose labels would overprint (around x1.00) share one label; far apart, each its own
    assert module.label_groups([(1.0, 1.0), (20.0, 20.0), (1.05, 1.0), (1.3, 1.6)], 0.7, 40.0) == [
        [0, 2], [1], [3]]
    _draws_png(PLOT_ACCURACY, results, tmp_path / "accuracy.png")
    # another benchmark's JSON is refused, with what it is
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"benchmark": "doctor_overhead", "rows": []}))
    refused = subprocess.run([sys.executable, str(PLOT_ACCURACY), str(other)],
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "not a doctor_accuracy result" in refused.stderr
