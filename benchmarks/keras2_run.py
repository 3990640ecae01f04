"""``stoke run`` on a Keras-2 ``fit_generator`` script against the same script converted by
hand to Keras 3 ``fit``, in one run: seconds per epoch of each, both as separate processes
(as users run them), rounds interleaved.

The script (written to a temporary folder) trains a small dense model on a plain Python
generator that makes each batch with some numpy work (``--batch-work-ms``); the Keras-2
version calls ``model.fit_generator(gen, steps_per_epoch=..., workers=4,
use_multiprocessing=True)``, the hand-converted one ``model.fit(gen, steps_per_epoch=...)``.
Each prints the wall time of every epoch (a callback); the first epoch (start-up, tracing)
is reported apart from the steady ones.

``--uneven-every N --uneven-ms M``: every N-th batch the generator also waits M ms (reads
its next file), the case a deeper prefetch absorbs; ``--before ROOT`` adds ``stoke run``
with the stoke of another source tree, in the same interleaved rounds (before/after).

    python benchmarks/keras2_run.py --out benchmarks/results/keras2_run.json
    python benchmarks/keras2_run.py --quick      # a smoke run: 1 round, 3 epochs
    git archive main | tar -x -C /tmp/before && python benchmarks/keras2_run.py \
        --batch-work-ms 0.2 --uneven-every 50 --uneven-ms 60 --before /tmp/before
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

import common

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = '''
import json, sys, time
import numpy as np
import keras

STEPS, EPOCHS, WORK_MS = {steps}, {epochs}, {work_ms}
UNEVEN_EVERY, UNEVEN_MS = {uneven_every}, {uneven_ms}


def batches(batch_size=64):
    rng = np.random.default_rng(0)
    made = 0
    while True:
        started = time.perf_counter()
        x = rng.random((batch_size, 256)).astype("float32")
        while (time.perf_counter() - started) * 1000 < WORK_MS:  # the user's own work
            x = np.tanh(x)
        made += 1
        if UNEVEN_EVERY and made % UNEVEN_EVERY == 0:  # now and then: the next file's read
            time.sleep(UNEVEN_MS / 1000)
        yield x, (x[:, 0] > 0.5).astype("int32")


class EpochTimes(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        print("EPOCH_S", time.perf_counter() - self.started, flush=True)


model = keras.Sequential([keras.Input((256,)), keras.layers.Dense(256, activation="relu"),
                          keras.layers.Dense(2, activation="softmax")])
model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
{call}
'''
KERAS2 = ("model.fit_generator(batches(), steps_per_epoch=STEPS, epochs=EPOCHS, workers=4,\n"
          "                    use_multiprocessing=True, callbacks=[EpochTimes()], verbose=0)")
KERAS3 = ("model.fit(batches(), steps_per_epoch=STEPS, epochs=EPOCHS, callbacks=[EpochTimes()],"
          " verbose=0)")


def run_once(kind: str, path: str, before_root: str | None = None) -> list[float]:
    """Run the script as ``kind`` ("stoke run", "stoke run (before)": stoke from
    ``before_root``, or "keras 3 by hand"); the wall seconds of each epoch."""
    stoke_run = kind.startswith("stoke run")
    command = [sys.executable, "-m", "stoke", "run", "--quiet", path] if stoke_run \
        else [sys.executable, path]
    root = before_root if kind == "stoke run (before)" else ROOT
    env = {**os.environ, "PYTHONPATH": root, "TF_CPP_MIN_LOG_LEVEL": "3"}
    # run from the root: `python -m stoke` imports stoke from the working folder first
    result = subprocess.run(command, env=env, cwd=root, capture_output=True, text=True,
                            timeout=900)
    if result.returncode != 0:
        raise SystemExit(f"{kind} failed:\n{result.stderr[-3000:]}")
    return [float(line.split()[1]) for line in result.stdout.splitlines()
            if line.startswith("EPOCH_S")]


def _run_rounds(args, folder: str) -> dict[str, list[list[float]]]:
    """Write both scripts into ``folder`` and run the interleaved rounds: each kind's epoch
    times, round by round."""
    paths = {}
    for kind, call in (("stoke run", KERAS2), ("keras 3 by hand", KERAS3)):
        path = os.path.join(folder, kind.replace(" ", "_") + ".py")
        with open(path, "w") as f:
            f.write(SCRIPT.format(steps=args.steps, epochs=args.epochs,
                                  work_ms=args.batch_work_ms, uneven_every=args.uneven_every,
                                  uneven_ms=args.uneven_ms, call=call))
        paths[kind] = path
    if args.before:
        paths["stoke run (before)"] = paths["stoke run"]
    epochs: dict[str, list[list[float]]] = {kind: [] for kind in paths}
    order = list(paths)
    for round_index in range(args.rounds):
        for kind in order[round_index % 2:] + order[:round_index % 2]:
            epochs[kind].append(run_once(kind, paths[kind], args.before))
    return epochs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--batch-work-ms", type=float, default=4.0)
    parser.add_argument("--uneven-every", type=int, default=0,
                        help="every N-th batch the generator also sleeps --uneven-ms (reads "
                             "its next file, say): uneven items, the same mean cost")
    parser.add_argument("--uneven-ms", type=float, default=0.0)
    parser.add_argument("--before", default=None, metavar="ROOT",
                        help="also run `stoke run` with the stoke of this source tree (e.g. "
                             "`git archive main | tar -x -C ROOT`), interleaved: before/after")
    parser.add_argument("--quick", action="store_true", help="1 round, 3 epochs, 20 steps")
    parser.add_argument("--out", default=None, help="JSON results (default: print only)")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.epochs, args.steps = 1, 3, 20
    with tempfile.TemporaryDirectory(prefix="stoke-keras2-run-") as folder:  # gone on Ctrl-C too
        epochs = _run_rounds(args, folder)
    rows = {}
    for kind, runs in epochs.items():
        steady = [t for run in runs for t in run[1:]]
        rows[kind] = {"first_epoch_s": [run[0] for run in runs],
                      "steady_epoch_s_median": statistics.median(steady),
                      "steady_epoch_s": steady}
    ratio = rows["stoke run"]["steady_epoch_s_median"] / \
        rows["keras 3 by hand"]["steady_epoch_s_median"]
    record = {"schema": "stoke.keras2_run/1", "machine": common.machine_info(),
              "settings": vars(args), "rows": rows,
              "stoke_run_over_by_hand": ratio}
    if args.before:
        record["after_over_before"] = rows["stoke run"]["steady_epoch_s_median"] / \
            rows["stoke run (before)"]["steady_epoch_s_median"]
    for kind, row in rows.items():
        print(f"{kind:16s} steady {row['steady_epoch_s_median']:.3f} s/epoch, first "
              f"{statistics.median(row['first_epoch_s']):.2f} s")
    print(f"stoke run / by hand: {ratio:.2f}x (below 1: stoke run is faster)")
    if args.before:
        print(f"stoke run now / before: {record['after_over_before']:.2f}x (below 1: faster)")
    if args.out:
        common.write_json(args.out, record)
    else:
        print(json.dumps({k: v for k, v in record.items() if k != "machine"})[:400])


if __name__ == "__main__":
    main()
