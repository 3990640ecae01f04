"""What does the doctor cost the run it measures? The same script with and without
``stoke doctor``, interleaved, several rounds, per backend (issue 4: < 3% of step time).

The script is ``tests/scripts/doctor_known.py``; it times its own steady state (epochs after
the first, wall time per step) and prints it, so both sides are timed the same way, by the
script. Under the doctor the probes are off (``--no-probes``: they pause training on purpose
and are not overhead of the measurement) unless ``--with-probes``, in which case the probe
epoch is left out by the script's own timing only if it falls in the first epoch
(``--probe-after`` < steps per epoch).

    .venv/bin/python benchmarks/doctor_overhead.py                 # all backends, 3 rounds
    .venv/bin/python benchmarks/doctor_overhead.py --backends jax --rounds 5
    .venv/bin/python benchmarks/doctor_overhead.py --in-process --rounds 6

``--in-process`` takes the second interpreter out of the comparison: one process, one model,
blocks of ``fit`` alternately plain and under ``stoke.doctor()`` (the hooks and the host
sampler, as ``stoke doctor`` installs them). Separate processes differ in start-up and CPU
placement, which on a small shared machine moves sub-millisecond steps by up to +-30% either
way (measured: TensorFlow's fast step ran 30% *faster* under the doctor).

``--wall`` measures what a user sees (issue 14: the doctored run within 1.5x the plain run,
short scripts too): the whole command's wall time, ``python SCRIPT`` against ``stoke doctor
-- python SCRIPT`` (probes on, default options), interleaved, on short scripts of three input
kinds (``--workloads all``: also tf.data, a NumPy layer, ``fit_generator`` and a ~10 s
run; the names are in ``WALL_SCRIPTS``), with the doctor's own breakdown from each run's record: its start in the script's
process (``bootstrap_s``: importing stoke and the hooks), taking facts, each probe's wall time
and the budget it had (and the expected run it came from), the hooks, the sampled syncs,
finishing the record, and what is left outside the script's process (``stoke doctor``'s own
start, the report, the process exits) plus noise; and, from the record's phase marks
(``overhead.phases``, :mod:`stoke.diagnosis.measure.phases`), the run split in time
(``PHASE_SPANS``: stoke doctor's start and imports, the script process's bootstrap, the
script up to Keras, the fit up to the probes, the probes' span, the record, the script
process's exit, the report). The load average is recorded with each row: on a shared
machine, read the paired ratio, and the CPU ratio.

    .venv/bin/python benchmarks/doctor_overhead.py --wall --rounds 2
    .venv/bin/python benchmarks/doctor_overhead.py --wall --quick      # one script, one round
    .venv/bin/python benchmarks/doctor_overhead.py --wall --workloads all --backends jax,torch
    .venv/bin/python benchmarks/doctor_overhead.py --wall --workloads tfdata,generator-10s

Writes benchmarks/results/doctor_overhead.json (step time with/without, overhead %, and the
doctor's own estimate of its overhead from the record; ``--wall``: doctor_overhead-wall.json).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_json  # noqa: E402
from doctor_accuracy import BACKENDS, ROOT, has_nvidia_gpu, run_plain, run_under_doctor  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"

# Two runs: a ~1 ms step fed quickly (the doctor's per-step cost shows most) and a step of a
# few ms with a slow generator (the typical input-bound run).
WORKLOADS = {
    "fast-step": ["--load-ms", "0", "--width", "64", "--epochs", "4", "--steps-per-epoch", "100"],
    "input-bound": ["--load-ms", "5", "--width", "256", "--depth", "2", "--batch-size", "64",
                    "--epochs", "4", "--steps-per-epoch", "60"],
}


def run_doctored(backend: str, script_args: list[str], probes: bool) -> tuple[dict, dict]:
    """(the script's own KNOWN_RESULT, the doctor's report or {}) under ``stoke doctor``."""
    doctor_args = ["--probe-after", "5", "--probe-seconds", "0.5"] if probes else ["--no-probes"]
    report, known, tail = run_under_doctor(backend, doctor_args, script_args)
    if known is None:
        raise RuntimeError(f"{backend}: no result under the doctor\n{tail}")
    return known, report or {}


def measure(backend: str, name: str, script_args: list[str], rounds: int, probes: bool) -> dict:
    plain, doctored, self_estimates = [], [], []
    for round_index in range(rounds):
        # alternate which side goes first: drift on a shared machine falls on both
        order = ("plain", "doctor") if round_index % 2 == 0 else ("doctor", "plain")
        for side in order:
            if side == "plain":
                plain.append(run_plain(backend, script_args)["step_s"])
            else:
                result, report = run_doctored(backend, script_args, probes)
                doctored.append(result["step_s"])
                self_estimates.append(report.get("doctor_overhead_fraction"))
    plain_s = statistics.median(plain)
    doctor_s = statistics.median(doctored)
    # the paired ratio per round is less sensitive to slow drift than the ratio of medians
    paired = [d / p - 1.0 for p, d in zip(plain, doctored, strict=True)]
    return {
        "backend": backend,
        "workload": name,
        "args": script_args,
        "probes": probes,
        "rounds": rounds,
        "step_s_plain": plain_s,
        "step_s_doctor": doctor_s,
        "overhead_pct": 100.0 * (doctor_s / plain_s - 1.0),
        "overhead_pct_paired_median": 100.0 * statistics.median(paired),
        "doctor_self_estimate_pct": [None if e is None else 100.0 * e for e in self_estimates],
        "plain_step_s": plain,
        "doctor_step_s": doctored,
    }


def in_process_child(backend: str, workload: str, rounds: int) -> None:
    """``--in-process``: one process, one model, blocks of ``fit`` alternately plain and under
    ``stoke.doctor()`` (probes off, host sampling on); prints ``IN_PROCESS {json}``. Nothing
    differs between the sides but the doctor: no second interpreter, start-up or CPU placement,
    which on a small shared machine swing sub-millisecond steps by +-30% between processes."""
    import json

    import keras
    import numpy as np

    import stoke

    known = argparse.ArgumentParser()
    for flag, default in (("--load-ms", 0.0), ("--width", 32), ("--depth", 1),
                          ("--batch-size", 32), ("--epochs", 4), ("--steps-per-epoch", 40)):
        known.add_argument(flag, type=type(default), default=default)
    args = known.parse_args(WORKLOADS[workload])
    model = keras.Sequential([keras.Input((16,)),
                              *[keras.layers.Dense(args.width, activation="relu")
                                for _ in range(args.depth)],
                              keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="binary_crossentropy")
    rng = np.random.default_rng(0)

    def batches():
        while True:
            if args.load_ms > 0:
                time.sleep(args.load_ms / 1000)
            x = rng.normal(size=(args.batch_size, 16)).astype("float32")
            yield x, (x.sum(axis=1, keepdims=True) > 0).astype("float32")

    class EpochTimes(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            seconds.append(time.perf_counter() - self.started)

    def block(doctored: bool) -> float:
        seconds.clear()
        fit = lambda: model.fit(batches(), steps_per_epoch=args.steps_per_epoch,  # noqa: E731
                                epochs=3, verbose=0, callbacks=[EpochTimes()])
        if doctored:
            with stoke.doctor(probes=False):
                fit()
        else:
            fit()
        return statistics.median(seconds[1:]) / args.steps_per_epoch

    seconds: list[float] = []
    block(False)  # compile, warm caches
    plain, doctored = [], []
    for round_index in range(rounds):
        for side in ((False, True) if round_index % 2 == 0 else (True, False)):
            (doctored if side else plain).append(block(side))
    print("IN_PROCESS " + json.dumps({"plain": plain, "doctor": doctored}), flush=True)


def measure_in_process(backend: str, name: str, rounds: int) -> dict:
    import json
    import subprocess

    from doctor_accuracy import child_env

    out = subprocess.run([sys.executable, __file__, "--child", backend, name, str(rounds)],
                         env=child_env(backend), capture_output=True, text=True, timeout=900,
                         check=False)
    line = next((x for x in out.stdout.splitlines() if x.startswith("IN_PROCESS ")), None)
    if line is None:
        raise RuntimeError(f"{backend} {name}: no result\n{out.stderr[-1500:]}")
    data = json.loads(line.split(" ", 1)[1])
    plain, doctored = data["plain"], data["doctor"]
    paired = [d / p - 1.0 for p, d in zip(plain, doctored, strict=True)]
    plain_s, doctor_s = statistics.median(plain), statistics.median(doctored)
    return {"backend": backend, "workload": name, "args": WORKLOADS[name], "mode": "in-process",
            "probes": False, "rounds": rounds, "step_s_plain": plain_s, "step_s_doctor": doctor_s,
            "overhead_pct": 100.0 * (doctor_s / plain_s - 1.0),
            "overhead_pct_paired_median": 100.0 * statistics.median(paired),
            "doctor_self_estimate_pct": [], "plain_step_s": plain, "doctor_step_s": doctored}


# --wall: short scripts (a few seconds of training after the imports), one per input kind,
# and one of ~10 s: name -> (script, its arguments, the backends it is written for or None).
WILD = ROOT / "tests" / "scripts" / "doctor_wild"
WALL_SCRIPTS = {
    "generator": (ROOT / "tests" / "scripts" / "doctor_known.py", [], None),
    "arrays": (WILD / "arrays_in_memory.py", [], None),
    "sequence": (WILD / "sequence_float64.py", [], None),
    "tfdata": (WILD / "tfdata_plain.py", [], ("tensorflow",)),
    # JAX and torch cannot run np.sin on a traced tensor: the script fails in its first step,
    # with and without the doctor (what is timed then is how soon each says so)
    "numpy-layer": (WILD / "numpy_layer.py", [], None),
    # --keras3: fit() on the same plain generator (Keras 3 has no fit_generator: the plain run
    # of the Keras-2 call would fail; under the doctor the shim would translate it)
    "fit-generator": (WILD / "fit_generator.py", ["--keras3"], None),
    "generator-10s": (ROOT / "tests" / "scripts" / "doctor_known.py",
                      ["--epochs", "5", "--steps-per-epoch", "80"], None),
}
MAY_FAIL = {"numpy-layer"}  # a non-zero exit is what the script does, not a benchmark error
# the three of the last session's table (the default); "all" runs every script
WALL_DEFAULT = ("generator", "arrays", "sequence")
# what the --wall breakdown reads from each doctored run's record (overhead / meta)
BREAKDOWN = ("bootstrap_s", "facts_s", "probes_s", "probe_budget_s", "expected_run_s",
             "doctor_s_total", "sync_s_total", "calibration_s", "finish_s", "sampler_cpu_s")


def _timed(command: list[str], backend: str, may_fail: bool = False,
           timeout: float = 600) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds of the command and every process it waited for, exit code)."""
    import resource
    import subprocess

    from doctor_accuracy import child_env

    def cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_utime + usage.ru_stime

    cpu_before = cpu()
    started = time.perf_counter()
    out = subprocess.run(command, env=child_env(backend), capture_output=True, text=True,
                         timeout=timeout, check=False, cwd=str(ROOT))
    wall = time.perf_counter() - started
    cpu_s = cpu() - cpu_before
    if out.returncode != 0 and not may_fail:
        raise RuntimeError(f"{' '.join(command[-3:])}: exit {out.returncode}\n"
                           f"{out.stdout[-1500:]}{out.stderr[-1500:]}")
    return wall, cpu_s, out.returncode


def wall_once(backend: str, script: Path, script_args: list[str], doctored: bool,
              may_fail: bool = False) -> dict:
    """One run's wall time; doctored: with the record's breakdown."""
    import json
    import tempfile

    if not doctored:
        wall, cpu_s, exit_code = _timed([sys.executable, str(script), *script_args], backend,
                                        may_fail)
        return {"wall_s": wall, "cpu_s": cpu_s, "exit_code": exit_code}
    with tempfile.TemporaryDirectory(prefix="doctor-wall-") as folder:
        record_path = Path(folder) / "record.json"
        launched = time.time()
        wall, cpu_s, exit_code = _timed([sys.executable, "-m", "stoke", "doctor", "--record",
                                  str(record_path), "--", sys.executable, str(script),
                                  *script_args], backend, may_fail)
        ended = time.time()
        # --record: stoke doctor's copy of the record, saved once the script's process ended
        # (with its marks from both processes: stoke.diagnosis.measure.phases), before the report
        saved = record_path.stat().st_mtime
        record = json.loads(record_path.read_text())
    overhead, meta = record.get("overhead", {}), record.get("meta", {})
    row = {"wall_s": wall, "cpu_s": cpu_s, "exit_code": exit_code, "script_s": meta.get("duration_s"),
           **{key: overhead.get(key) for key in BREAKDOWN},
           "probe_s_each": overhead.get("probe_s_each") or {},
           "probe_notes": meta.get("probe_notes") or {},
           "shortened": sorted(name for name, probe in (record.get("probes") or {}).items()
                               if "shortened" in (probe.get("detail") or {})),
           "probes_run": sorted(record.get("probes") or {}),
           "steps": len(record.get("steps") or []),
           "phases_s": phase_durations(overhead.get("phases") or {}, launched, ended)}
    inside = (row["bootstrap_s"] or 0.0) + (row["script_s"] or 0.0)
    row["outside_script_process_s"] = wall - inside  # stoke doctor's start, report, exits
    row["after_record_s"] = ended - saved  # the report and stoke doctor's exit
    return row


# what --wall splits a doctored run into, from the record's phase marks
# (stoke.diagnosis.measure.phases): name -> (from, to); "launch" and "end" are the command's
# start and end, as the benchmark saw them
PHASE_SPANS = {
    "doctor_start": ("launch", "doctor_started"),  # exec of stoke doctor's interpreter
    "doctor_imports": ("doctor_started", "child_spawned"),  # stoke doctor's own imports
    "child_bootstrap": ("child_spawned", "script_started"),  # the script's process: the doctor's imports
    "script_imports": ("script_started", "keras_imported"),  # the script up to Keras (its own)
    "hooks": ("keras_imported", "hooks_installed"),
    "to_fit": ("hooks_installed", "fit_attached"),
    "fit_to_probes": ("fit_attached", "probes_started"),
    "probe_span": ("probes_started", "probes_ended"),
    "after_probes": ("probes_ended", "script_ended"),
    "finish": ("script_ended", "record_ready"),
    # writing the record, then the interpreter's teardown (which the plain run pays too)
    "child_exit": ("record_ready", "child_exited"),
    "reap_and_load": ("child_exited", "record_loaded"),
    "report_and_exit": ("record_loaded", "end"),
}


def phase_durations(phases: dict, launched: float, ended: float) -> dict:
    """Seconds of each span of :data:`PHASE_SPANS` the record's marks allow (None: a mark missing)."""
    marks = {**phases, "launch": launched, "end": ended}
    spans = {}
    for name, (start, stop) in PHASE_SPANS.items():
        a, b = marks.get(start), marks.get(stop)
        spans[name] = None if a is None or b is None else b - a
    return spans


def _median(values):
    numbers = [v for v in values if isinstance(v, int | float)]
    return statistics.median(numbers) if numbers else None


def measure_wall(backend: str, name: str, rounds: int) -> dict:
    script, script_args, _ = WALL_SCRIPTS[name]
    plain, doctored = [], []
    load_before = os.getloadavg()
    for round_index in range(rounds):
        order = (False, True) if round_index % 2 == 0 else (True, False)
        for side in order:
            (doctored if side else plain).append(
                wall_once(backend, script, script_args, side, may_fail=name in MAY_FAIL))
    ratios = [d["wall_s"] / p["wall_s"] for p, d in zip(plain, doctored, strict=True)]
    breakdown = {key: _median(d.get(key) for d in doctored)
                 for key in ("script_s", "outside_script_process_s", "after_record_s",
                             *BREAKDOWN)}
    each_names = sorted({n for d in doctored for n in d["probe_s_each"]})
    breakdown["probe_s_each"] = {n: _median(d["probe_s_each"].get(n) for d in doctored)
                                 for n in each_names}
    breakdown["phases_s"] = {n: _median(d["phases_s"].get(n) for d in doctored)
                             for n in PHASE_SPANS}
    return {
        "backend": backend, "workload": name, "mode": "wall", "script": str(script.relative_to(ROOT)),
        "script_args": script_args, "exit_codes": sorted({r["exit_code"] for r in plain + doctored}),
        "rounds": rounds, "plain_wall_s": _median(p["wall_s"] for p in plain),
        "doctor_wall_s": _median(d["wall_s"] for d in doctored),
        "ratio_paired_median": statistics.median(ratios), "ratios": ratios,
        # CPU seconds of both commands (and their children): less moved by other users' load
        # than wall time; their ratio is near the idle-machine wall ratio for a CPU-bound run
        "plain_cpu_s": _median(p["cpu_s"] for p in plain),
        "doctor_cpu_s": _median(d["cpu_s"] for d in doctored),
        "cpu_ratio_paired_median": statistics.median(
            d["cpu_s"] / p["cpu_s"] for p, d in zip(plain, doctored, strict=True)),
        "extra_s": _median(d["wall_s"] - p["wall_s"] for p, d in zip(plain, doctored, strict=True)),
        "breakdown_median": breakdown,
        "probes_run": doctored[-1]["probes_run"], "shortened": doctored[-1]["shortened"],
        "probe_notes": doctored[-1]["probe_notes"],
        "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
        "plain_runs": plain, "doctor_runs": doctored,
    }


def _print_wall(row: dict) -> None:
    b = row["breakdown_median"]

    def f(value):
        return "-" if value is None else f"{value:.2f}"

    each = " ".join(f"{k}={f(v)}" for k, v in b["probe_s_each"].items())
    print(f"{row['backend']:10s} {row['workload']:13s} plain {row['plain_wall_s']:6.2f} s  doctor "
          f"{row['doctor_wall_s']:6.2f} s  x{row['ratio_paired_median']:.2f} (paired median; "
          f"load {row['loadavg_before'][0]:.1f}->{row['loadavg_after'][0]:.1f}); CPU "
          f"{row['plain_cpu_s']:.2f} -> {row['doctor_cpu_s']:.2f} s x{row['cpu_ratio_paired_median']:.2f}\n"
          f"    extra {f(row['extra_s'])} s: bootstrap {f(b['bootstrap_s'])}, facts "
          f"{f(b['facts_s'])}, probes {f(b['probes_s'])} [{each}] (budget "
          f"{f(b['probe_budget_s'])} of expected {f(b['expected_run_s'])}), hooks "
          f"{f(b['doctor_s_total'])}, syncs {f(b['sync_s_total'])}, finish {f(b['finish_s'])}, "
          f"outside the script's process {f(b['outside_script_process_s'])} (of which after "
          f"stoke doctor saved the record {f(b['after_record_s'])}: report, exit) (script itself "
          f"{f(b['script_s'])}); shortened {row['shortened']}; not run "
          f"{sorted(row['probe_notes'])}\n    phases (median s): "
          + ", ".join(f"{k} {f(v)}" for k, v in b["phases_s"].items()), flush=True)


def main() -> int:
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        in_process_child(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--with-probes", action="store_true")
    parser.add_argument("--in-process", action="store_true",
                        help="both sides in one process, alternating blocks of fit (default "
                        "out: results/doctor_overhead-inprocess.json)")
    parser.add_argument("--wall", action="store_true",
                        help="the whole command's wall time, plain vs stoke doctor (probes on), "
                        "on short scripts, with the doctor's breakdown (default out: "
                        "results/doctor_overhead-wall.json)")
    parser.add_argument("--quick", action="store_true",
                        help="--wall: one script (generator), one round")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if args.wall:
        return main_wall(args)
    if args.out is None:
        args.out = str(RESULTS / ("doctor_overhead-inprocess.json" if args.in_process
                                  else "doctor_overhead.json"))
    rows = []
    for backend in [b for b in args.backends.split(",") if b]:
        for name in [w for w in args.workloads.split(",") if w]:
            started = time.perf_counter()
            try:
                row = (measure_in_process(backend, name, args.rounds) if args.in_process
                       else measure(backend, name, WORKLOADS[name], args.rounds, args.with_probes))
            except Exception as error:
                row = {"backend": backend, "workload": name, "error": repr(error)[-1500:]}
            row["wall_s"] = time.perf_counter() - started
            rows.append(row)
            if "error" in row:
                print(f"{backend:10s} {name:12s} ERROR {row['error'][:300]}", flush=True)
                continue
            print(
                f"{backend:10s} {name:12s} plain {row['step_s_plain'] * 1e3:7.3f} ms  doctor "
                f"{row['step_s_doctor'] * 1e3:7.3f} ms  overhead {row['overhead_pct']:+.1f}% "
                f"(paired median {row['overhead_pct_paired_median']:+.1f}%, doctor's own "
                f"estimate {row['doctor_self_estimate_pct']})",
                flush=True,
            )
    out = write_json(args.out, {
        "benchmark": "doctor_overhead",
        "target_pct": 3.0,
        "machine": this_machine(),
        "rows": rows,
    })
    print(f"written {out}")
    return 0


def this_machine() -> dict:
    return {"cpus": os.cpu_count(), "python": sys.version.split()[0],
            "nvidia_gpu": has_nvidia_gpu()}


def main_wall(args) -> int:
    names = [w for w in args.workloads.split(",") if w]
    if args.quick:
        names = ["generator"]
    elif args.workloads == ",".join(WORKLOADS):
        names = list(WALL_DEFAULT)
    elif names == ["all"]:
        names = list(WALL_SCRIPTS)
    rounds = 1 if args.quick else args.rounds
    rows = []
    for backend in [b for b in args.backends.split(",") if b]:
        for name in names:
            if WALL_SCRIPTS[name][2] and backend not in WALL_SCRIPTS[name][2]:
                continue
            started = time.perf_counter()
            try:
                row = measure_wall(backend, name, rounds)
            except Exception as error:
                row = {"backend": backend, "workload": name, "error": repr(error)[-1500:]}
                print(f"{backend:10s} {name:9s} ERROR {row['error'][:600]}", flush=True)
            else:
                _print_wall(row)
            row["bench_wall_s"] = time.perf_counter() - started
            rows.append(row)
    out = write_json(args.out or str(RESULTS / "doctor_overhead-wall.json"), {
        "benchmark": "doctor_overhead --wall",
        "target_ratio": 1.5,
        "machine": this_machine(),
        "rows": rows,
    })
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
