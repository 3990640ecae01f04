"""Autotune against every fixed setting: does ``workers="auto"`` reach 0.9x the best?

Three workloads that differ in cost per sample, bytes per sample and GIL behaviour:

- ``python-heavy``: a tokenizer-like pure-Python loop per sample (holds the GIL; 64 int32
  out). Threads cannot run it in parallel; processes can.
- ``jpeg``: the JPEG workload of ``pipeline_throughput.py`` (``workloads.py``: decode with
  simplejpeg, which releases the GIL, random crop, flip, brightness, float32).
- ``large-arrays``: 224x224x3 uint8 images from memory (``from_arrays``: shared with process
  workers), cast to float32 / 255: 600 KB out per sample for almost no compute.

Every setting runs in this one process, interleaved: ``inline``, ``thread`` and ``process``
with each worker count (default 1..cores), and ``auto`` (``pipe.loader()``, nothing named).
Each round visits every setting once (the order rotates), with fresh workers: the first
batch is timed apart (start-up), then a warm-up (``--warmup`` s; for ``auto``, until its
tuning has settled, at most ``--settle-cap`` s), then ``--seconds`` timed. The consumer
touches one value per batch. Per setting, the median over rounds of:

- ``samples_per_s``: the timed window (for auto: after it settled) -- the goal compares this:
  auto >= 0.9x the best fixed setting;
- ``early_samples_per_s``: everything delivered from the first batch over ``--warmup +
  --seconds`` (for auto this includes its search; for the others, their warm-up): what a
  short run sees.

The first two batches of every visit are checksummed against ``inline``'s: tuning must not
change the data (``same_data``). With ``--fit-backends jax,torch``, also a model trained on the CPU inside ``model.fit``
(``run_fit_workload``): ``to_keras(workers="auto")`` against the sweep of fixed process
worker counts (1..cores+1), images/s of the timed fit. Results:
``benchmarks/results/autotune-TAG.json``;
``--plot`` also draws ``autotune-TAG.png`` (``--plot-only FILE...`` redraws saved runs).

    python benchmarks/autotune.py --quick --tag dev                 # a smoke run
    python benchmarks/autotune.py --tag 2core                       # every workload, 2 rounds
    python benchmarks/autotune.py --workloads jpeg --tag h100-jpeg  # one workload per run
    python benchmarks/autotune.py --workloads "" --fit-backends jax,torch --tag 2core-fit
    python benchmarks/autotune.py --plot-only benchmarks/results/autotune-h100-*.json \
        --out benchmarks/results/autotune-h100.png                  # one plot of several runs
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # `workloads` must import the same way in every worker
sys.path.insert(0, str(HERE.parent))  # and stoke from this checkout
import common  # noqa: E402
import workloads  # noqa: E402
from common import interleaved, write_json  # noqa: E402

SCHEMA = "stoke.bench.autotune/1"
GOAL = 0.9


# -- workloads ----------------------------------------------------------------------------
WORDS = tuple(
    "".join(chr(97 + (i * 7 + j * 13 + (i * j) % 5) % 26) for j in range(3 + i % 9))
    for i in range(2000)
)


class Tokenize:
    """Pure Python per sample: pick ``tokens`` pseudo-random words (an LCG seeded by the
    index), hash each character by character, keep the first 64 ids. Holds the GIL."""

    def __init__(self, tokens: int = 400) -> None:
        self.tokens = tokens

    def __call__(self, sample):
        index, label = sample
        state = (int(index) * 2654435761 + 1) % 2147483648
        ids = []
        for _ in range(self.tokens):
            state = (state * 1103515245 + 12345) % 2147483648
            word = WORDS[state % len(WORDS)]
            h = 7
            for ch in word:
                h = (h * 31 + ord(ch)) % 65521
            ids.append(h)
        return np.asarray(ids[:64], np.int32), label


def to_float(sample):
    """Little work on many bytes: uint8 image -> float32 in [0, 1]."""
    image, label = sample
    out = image.astype(np.float32)
    out *= np.float32(1 / 255)
    return out, label


@dataclass(frozen=True)
class Workload:
    name: str
    description: str
    build: Callable[[argparse.Namespace], Any]  # -> a batched stoke Pipeline


def build_python_heavy(args):
    import stoke

    n = 1 << 20
    return (stoke.from_arrays(np.arange(n, dtype=np.int64), np.arange(n, dtype=np.int32))
            .shuffle(0).map(Tokenize(args.tokens)).batch(args.batch_size))


def build_jpeg(args):
    import stoke

    workload = workloads.Workload(files=args.files)
    jpegs, labels = workloads.load_samples(workload, args.data_dir)
    samples = workloads.JpegSamples(jpegs, labels, length=1 << 20)
    return (stoke.from_sequence(samples).shuffle(0).map(workloads.Transform(workload))
            .batch(args.batch_size))


def build_large_arrays(args):
    import stoke

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.arrays, 224, 224, 3), dtype=np.uint8)
    labels = np.arange(args.arrays, dtype=np.int32)
    return (stoke.from_arrays(images, labels).shuffle(0).map(to_float)
            .batch(max(1, args.batch_size // 2)))


WORKLOADS = {
    "python-heavy": Workload("python-heavy", "pure-Python tokenizer loop per sample (GIL-bound)",
                             build_python_heavy),
    "jpeg": Workload("jpeg", f"JPEG decode ({workloads.DECODER}), crop, flip, brightness",
                     build_jpeg),
    "large-arrays": Workload("large-arrays", "224x224x3 uint8 -> float32 / 255 (600 KB out, "
                             "little compute)", build_large_arrays),
}


# -- measuring ----------------------------------------------------------------------------
def _touch(batch) -> float:
    x, y = batch[0], batch[1]
    return float(np.asarray(x).flat[0]) + float(np.asarray(y).flat[0])


def _checksum(batch) -> float:
    return float(np.asarray(batch[0], np.float64).sum()) + float(np.asarray(batch[1]).sum())


def _tree_cpu_s() -> dict[int, float]:
    """CPU seconds so far of this process and each live descendant, by pid (a worker that
    exits mid-window, e.g. a pool the tuner let go, must not make the sum go back)."""
    import psutil

    me = psutil.Process()
    seconds = {}
    for proc in (me, *me.children(recursive=True)):
        try:
            seconds[proc.pid] = sum(proc.cpu_times()[:2])
        except psutil.Error:
            pass
    return seconds


def _cpu_used(before: dict[int, float], after: dict[int, float]) -> float:
    return sum(max(0.0, s - before.get(pid, s)) for pid, s in after.items())


def visit(pipe, executor: str, workers, args) -> dict[str, Any]:
    """One setting, fresh workers: start-up, warm-up (auto: until settled), timed window."""
    gc.collect()
    started = time.perf_counter()
    loader = pipe.loader(workers=workers, executor=executor)
    rows = pipe.batch_size
    sink = 0.0
    try:
        iterator = loader.iter(epochs=None)
        first = next(iterator)
        first_at = time.perf_counter()
        checksum = _checksum(first)
        second = next(iterator)
        checksum += _checksum(second)
        sink += _touch(first) + _touch(second)
        delivered = 2 * rows
        horizon = args.warmup + args.seconds
        early_rows = None
        tuned = "auto" in (executor, workers)
        cap = first_at + max(args.settle_cap, args.warmup)
        while True:
            now = time.perf_counter()
            if now - first_at >= args.warmup and (
                    not tuned or iterator.tuning().settled or now >= cap):
                break
            sink += _touch(next(iterator))
            delivered += rows
            if early_rows is None and time.perf_counter() - first_at >= horizon:
                early_rows = delivered
        cpu_from = _tree_cpu_s()
        timed_from = time.perf_counter()
        timed_rows = 0
        while time.perf_counter() - timed_from < args.seconds:
            sink += _touch(next(iterator))
            timed_rows += rows
            delivered += rows
            if early_rows is None and time.perf_counter() - first_at >= horizon:
                early_rows = delivered
        timed_to = time.perf_counter()
        cpu_to = _tree_cpu_s()
        if early_rows is None:
            early_rows = delivered
        report = iterator.tuning()
    finally:
        loader.close()
    if not np.isfinite(sink):
        raise RuntimeError("non-finite values delivered")
    elapsed = timed_to - timed_from
    result = {
        "startup_s": first_at - started,
        "samples_per_s": timed_rows / elapsed,
        "early_samples_per_s": early_rows / horizon,
        "cpu_cores": _cpu_used(cpu_from, cpu_to) / elapsed,
        "checksum": checksum,
    }
    if tuned:
        result.update(chose=f"{report.executor} x {report.workers}",
                      settled=report.settled, settled_after_s=report.settled_after_s,
                      ring_slots=report.ring_slots,
                      decisions=[{"what": d.what, "choice": str(d.choice), "why": d.why,
                                  "at_s": d.at_s} for d in report.decisions],
                      trials=[{k: v for k, v in t.__dict__.items()} for t in report.trials])
    return result


def run_workload(workload: Workload, settings: list[tuple[str, Any]], args,
                 log: Callable[[str], None]) -> dict[str, Any]:
    pipe = workload.build(args)
    rounds: dict[str, list[dict[str, Any]]] = {_label(s): [] for s in settings}
    errors: dict[str, str] = {}
    started = time.time()
    for round_index, (executor, workers) in interleaved(settings, args.rounds):
        label = _label((executor, workers))
        if label in errors:
            continue
        try:
            result = visit(pipe, executor, workers, args)
        except Exception as exc:  # noqa: BLE001 - one broken setting must not stop the rest
            errors[label] = f"{type(exc).__name__}: {exc}"[:300]
            log(f"  {workload.name:<13} {label:<12} FAILED: {errors[label]}")
            continue
        rounds[label].append(result)
        extra = (f"  -> {result['chose']} (settled after {result['settled_after_s']} s)"
                 if "chose" in result else "")
        log(f"  {workload.name:<13} round {round_index + 1}/{args.rounds}  {label:<12} "
            f"{result['samples_per_s']:>10,.0f} samples/s{extra}")
    rows = []
    reference = None
    for executor, workers in settings:
        label = _label((executor, workers))
        visits = rounds[label]
        if not visits:
            rows.append({"name": label, "executor": executor, "workers": workers,
                         "status": "failed", "note": errors.get(label, "")})
            continue
        if executor == "inline":
            reference = visits[0]["checksum"]
        row = {
            "name": label, "executor": executor, "workers": workers, "status": "ok",
            "samples_per_s": statistics.median(v["samples_per_s"] for v in visits),
            "samples_per_s_rounds": [v["samples_per_s"] for v in visits],
            "early_samples_per_s": statistics.median(v["early_samples_per_s"] for v in visits),
            "startup_s": statistics.median(v["startup_s"] for v in visits),
            "cpu_cores": statistics.median(v["cpu_cores"] for v in visits),
            "checksums": [v["checksum"] for v in visits],
        }
        if executor == "auto":
            row.update(chose=[v["chose"] for v in visits],
                       settled_after_s=[v["settled_after_s"] for v in visits],
                       settled=[v["settled"] for v in visits],
                       ring_slots=[v["ring_slots"] for v in visits],
                       decisions=[v["decisions"] for v in visits],
                       trials=[v["trials"] for v in visits])
        rows.append(row)
    for row in rows:
        if row["status"] == "ok" and reference is not None:
            row["same_data"] = all(abs(c - reference) <= 1e-6 * max(1.0, abs(reference))
                                   for c in row["checksums"])
    return {"workload": workload.name, "description": workload.description,
            "batch_size": pipe.batch_size, "rows": rows, "summary": summarise(rows),
            "duration_s": round(time.time() - started, 1)}


def _label(setting) -> str:
    executor, workers = setting
    return executor if executor in ("auto", "inline") else f"{executor} x {workers}"


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    fixed = [r for r in rows if r["status"] == "ok" and r["executor"] != "auto"]
    auto = next((r for r in rows if r["executor"] == "auto" and r["status"] == "ok"), None)
    if not fixed:
        return {}
    best = max(fixed, key=lambda r: r["samples_per_s"])
    best_early = max(fixed, key=lambda r: r["early_samples_per_s"])
    summary = {"best_fixed": best["name"], "best_fixed_samples_per_s": best["samples_per_s"],
               "best_fixed_early": best_early["name"]}
    if auto is not None:
        ratio = auto["samples_per_s"] / best["samples_per_s"]
        summary.update(
            auto_samples_per_s=auto["samples_per_s"], auto_chose=auto["chose"],
            auto_ratio_to_best=ratio, goal=GOAL, goal_met=ratio >= GOAL,
            auto_early_ratio_to_best=auto["early_samples_per_s"]
            / best_early["early_samples_per_s"],
            auto_settled_after_s=auto["settled_after_s"],
            auto_rank=1 + sum(r["samples_per_s"] > auto["samples_per_s"] for r in fixed),
            settings_compared=len(fixed))
        chosen = {c for c in auto["chose"]}
        summary["auto_chose_fixed_rows"] = {
            c: next((r["samples_per_s"] for r in fixed if r["name"] == c), None) for c in chosen}
    summary["same_data"] = all(r.get("same_data", True) for r in rows if r["status"] == "ok")
    return summary


# -- a model trained on the CPU, in fit ---------------------------------------------------
def run_fit_workload(backend: str, args, log: Callable[[str], None]) -> dict[str, Any]:
    """``model.fit`` of the demo's CNN on the CPU, fed by ``to_keras`` (the demo's JPEG
    decode + augment): ``workers="auto"`` against every fixed process worker count (the
    sweep), each visit a fresh ``python -m stoke.commands.examples.naive_train`` (one backend per
    process; a warm-up fit, then ``--fit-steps`` timed steps), interleaved over rounds. The
    trainer and the workers share the cores: this is what the core budget is for."""
    import subprocess

    counts = sorted(set(args.worker_counts) | {args.cores + 1})
    settings = [("process", n) for n in counts] + [("auto", "auto")]
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3",
           "PYTHONPATH": os.pathsep.join(p for p in (str(HERE.parent),
                                                     os.environ.get("PYTHONPATH", "")) if p)}
    rounds: dict[str, list[dict[str, Any]]] = {_label(s): [] for s in settings}
    errors: dict[str, str] = {}
    started = time.time()
    for round_index, (executor, workers) in interleaved(settings, args.rounds):
        label = _label((executor, workers))
        command = [sys.executable, "-m", "stoke.commands.examples.naive_train", "--feed", "stoke",
                   "--steps", str(args.fit_steps), "--workers", str(workers)]
        out = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
        if out.returncode != 0:
            errors[label] = out.stderr.strip().splitlines()[-1][:300] if out.stderr else "?"
            log(f"  fit-cpu-{backend} {label:<12} FAILED: {errors[label]}")
            continue
        result = json.loads(out.stdout.strip().splitlines()[-1])
        rounds[label].append(result)
        chose = f"  -> {result['executor']} x {result['workers']}" if executor == "auto" else ""
        log(f"  fit-cpu-{backend} round {round_index + 1}/{args.rounds}  {label:<12} "
            f"{result['images_per_s']:>8,.0f} images/s{chose}")
    rows = []
    for executor, workers in settings:
        label = _label((executor, workers))
        visits = rounds[label]
        if not visits:
            rows.append({"name": label, "executor": executor, "workers": workers,
                         "status": "failed", "note": errors.get(label, "")})
            continue
        rate = statistics.median(v["images_per_s"] for v in visits)
        row = {"name": label, "executor": executor, "workers": workers, "status": "ok",
               "samples_per_s": rate, "samples_per_s_rounds": [v["images_per_s"] for v in visits],
               "early_samples_per_s": rate, "startup_s": 0.0,
               "cpu_cores": statistics.median(v["trainer_cores"] + v["worker_cores"]
                                              for v in visits),
               "trainer_cores": statistics.median(v["trainer_cores"] for v in visits)}
        if executor == "auto":
            row.update(chose=[f"{v['executor']} x {v['workers']}" for v in visits],
                       settled_after_s=[None for _ in visits], tuning=[v["tuning"] for v in visits])
        rows.append(row)
    return {"workload": f"fit-cpu-{backend}",
            "description": f"model.fit on the CPU ({backend}), the demo's CNN fed by to_keras",
            "batch_size": 32, "rows": rows, "summary": summarise(rows),
            "duration_s": round(time.time() - started, 1)}


# -- report -------------------------------------------------------------------------------
def print_workload(result: dict[str, Any]) -> None:
    summary = result["summary"]
    print(f"\n{result['workload']}: {result['description']} (batch {result['batch_size']})")
    best = summary.get("best_fixed_samples_per_s") or 1.0
    print(f"  {'setting':<12} {'samples/s':>11} {'vs best':>8} {'early/s':>10} "
          f"{'CPU':>5} {'start s':>8}  note")
    for row in result["rows"]:
        if row["status"] != "ok":
            print(f"  {row['name']:<12} {'failed':>11}  {row['note']}")
            continue
        note = ""
        if row["executor"] == "auto":
            note = f"chose {', '.join(row['chose'])}; settled after {row['settled_after_s']} s"
        if not row.get("same_data", True):
            note += " DATA DIFFERS FROM INLINE"
        print(f"  {row['name']:<12} {row['samples_per_s']:>11,.0f} "
              f"{row['samples_per_s'] / best:>7.2f}x {row['early_samples_per_s']:>10,.0f} "
              f"{row['cpu_cores']:>5.1f} {row['startup_s']:>8.2f}  {note}")
    if "auto_ratio_to_best" in summary:
        verdict = "meets" if summary["goal_met"] else "MISSES"
        print(f"  auto / best fixed ({summary['best_fixed']}): "
              f"{summary['auto_ratio_to_best']:.2f}x ({verdict} the {GOAL}x goal); "
              f"including its search (early): {summary['auto_early_ratio_to_best']:.2f}x; "
              f"rank {summary['auto_rank']} of {summary['settings_compared'] + 1}")


def plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [w for result in results for w in result["workloads"]]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.2), squeeze=False)
    for ax, workload in zip(axes[0], panels):
        rows = [r for r in workload["rows"] if r["status"] == "ok"]
        for kind, colour in (("thread", "#3b6ea8"), ("process", "#e8590c")):
            points = sorted((r["workers"], r["samples_per_s"]) for r in rows
                            if r["executor"] == kind)
            if points:
                ax.plot(*zip(*points), marker="o", color=colour, label=kind)
        inline = next((r for r in rows if r["executor"] == "inline"), None)
        if inline:
            ax.axhline(inline["samples_per_s"], color="#8c8c8c", linestyle="--", label="inline")
        auto = next((r for r in rows if r["executor"] == "auto"), None)
        if auto:
            chose = auto["chose"][0]
            workers = int(chose.split(" x ")[1])
            ratio = workload["summary"].get("auto_ratio_to_best", 0)
            ax.plot([workers], [auto["samples_per_s"]], marker="*", markersize=16,
                    color="#2b8a3e", linestyle="none",
                    label=f"auto: {', '.join(auto['chose'])} ({ratio:.2f}x best)")
        ax.set_title(f"{workload['workload']} (batch {workload['batch_size']})")
        ax.set_xlabel("workers")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_ylabel("samples/s (median over rounds)")
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=8, loc="lower right")
    machine = results[0]["machine"]
    fig.suptitle(f"stoke autotune vs every fixed setting: {machine['cores']} cores "
                 f"({machine.get('cpu_model') or 'cpu'}), {results[0]['date'][:10]}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"plot written to {path}")


# -- command line -------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    cores = common.available_cores()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workloads", default=",".join(WORKLOADS),
                        help=f"comma-separated, of {', '.join(WORKLOADS)}")
    parser.add_argument("--workers", default=None,
                        help=f"worker counts of the fixed settings (default 1..{cores})")
    parser.add_argument("--rounds", type=int, default=None, help="default 2; --quick: 1")
    parser.add_argument("--seconds", type=float, default=None,
                        help="timed seconds per visit (default 2; --quick: 0.5)")
    parser.add_argument("--warmup", type=float, default=None,
                        help="warm-up seconds per visit (default 1; --quick: 0.3)")
    parser.add_argument("--settle-cap", type=float, default=None,
                        help="auto's longest warm-up while it tunes (default 20 s; --quick: 8)")
    parser.add_argument("--batch-size", type=int, default=64,
                        help="python-heavy and jpeg; large-arrays uses half")
    parser.add_argument("--tokens", type=int, default=400, help="python-heavy: words per sample")
    parser.add_argument("--files", type=int, default=512, help="jpeg: distinct files")
    parser.add_argument("--arrays", type=int, default=512, help="large-arrays: distinct images")
    parser.add_argument("--data-dir", default=None, help="where the JPEGs are cached")
    parser.add_argument("--fit-backends", default="",
                        help="also the fit-on-CPU rows for these Keras backends (jax,torch)")
    parser.add_argument("--fit-steps", type=int, default=None,
                        help="timed fit steps per visit (default 200; --quick: 80)")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 1 round, short windows, workers 1 and the cores")
    parser.add_argument("--tag", default=None, help="results go to autotune-TAG.json")
    parser.add_argument("--out", default=None,
                        help="results file (overrides --tag); with --plot-only, the PNG")
    parser.add_argument("--plot", action="store_true", help="also draw autotune-TAG.png")
    parser.add_argument("--plot-only", nargs="+", metavar="JSON",
                        help="draw saved results (several files: one panel per workload)")
    args = parser.parse_args(argv)
    args.cores = cores
    args.rounds = args.rounds or (1 if args.quick else 2)
    args.seconds = args.seconds if args.seconds is not None else (0.5 if args.quick else 2.0)
    args.warmup = args.warmup if args.warmup is not None else (0.3 if args.quick else 1.0)
    args.settle_cap = args.settle_cap if args.settle_cap is not None else (8.0 if args.quick else 20.0)
    if args.workers:
        args.worker_counts = sorted({int(w) for w in args.workers.split(",")})
    else:
        args.worker_counts = sorted({1, cores}) if args.quick else list(range(1, cores + 1))
    args.fit_steps = args.fit_steps or (80 if args.quick else 200)
    args.fit_backend_names = [b.strip() for b in args.fit_backends.split(",") if b.strip()]
    names = [w.strip() for w in args.workloads.split(",") if w.strip()]
    unknown = [w for w in names if w not in WORKLOADS]
    if unknown:
        parser.error(f"unknown workload(s) {unknown}; choose from {', '.join(WORKLOADS)}")
    args.workload_names = names
    if args.quick:
        args.files, args.arrays, args.tokens = min(args.files, 64), min(args.arrays, 64), 60
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.plot_only:
        results = [json.loads(Path(p).read_text()) for p in args.plot_only]
        plot(results, Path(args.out) if args.out else Path(args.plot_only[0]).with_suffix(".png"))
        return 0
    tag = args.tag or os.uname().nodename
    out = Path(args.out) if args.out else HERE / "results" / f"autotune-{tag}.json"
    settings = ([("inline", 1)]
                + [(kind, n) for kind in ("thread", "process") for n in args.worker_counts]
                + [("auto", "auto")])
    machine = common.machine_info()
    machine["loadavg_start"] = common.load_average()
    print(f"autotune benchmark: {machine['cores']} cores, {len(settings)} settings x "
          f"{len(args.workload_names)} workloads x {args.rounds} rounds "
          f"(warm-up {args.warmup} s, timed {args.seconds} s)")
    started = time.time()
    results = []
    for name in args.workload_names:
        result = run_workload(WORKLOADS[name], settings, args, print)
        print_workload(result)
        results.append(result)
    for backend in args.fit_backend_names:
        result = run_fit_workload(backend, args, print)
        print_workload(result)
        results.append(result)
    machine["loadavg_end"] = common.load_average()
    record = {
        "schema": SCHEMA, "date": dt.datetime.now().isoformat(timespec="seconds"),
        "duration_s": round(time.time() - started, 1), "command": " ".join(sys.argv),
        "machine": machine, "goal": f"auto >= {GOAL}x the best fixed setting (timed window)",
        "settings": {"rounds": args.rounds, "seconds": args.seconds, "warmup_s": args.warmup,
                     "settle_cap_s": args.settle_cap, "worker_counts": args.worker_counts,
                     "batch_size": args.batch_size, "quick": args.quick,
                     "statistic": "median over rounds"},
        "workloads": results,
    }
    write_json(out, record, default=str)
    print(f"\nresults written to {out}")
    if args.plot:
        plot([record], out.with_suffix(".png"))
    missed = [r["workload"] for r in results if not r["summary"].get("goal_met", False)]
    same = all(r["summary"].get("same_data", True) for r in results)
    print("goal (auto >= 0.9x best fixed): " + ("met on every workload" if not missed else
                                                 f"missed on {', '.join(missed)}")
          + ("" if same else "; DATA DIFFERED between settings"))
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
