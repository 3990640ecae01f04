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

Writes benchmarks/results/doctor_overhead.json (step time with/without, overhead %, and the
doctor's own estimate of its overhead from the record).
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
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
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
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0],
                    "nvidia_gpu": has_nvidia_gpu()},
        "rows": rows,
    })
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
