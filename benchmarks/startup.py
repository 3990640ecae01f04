"""Start-up: how long ``fit`` waits for its first batch, when the feed is made before the
model (as scripts do), for a Sequence whose ``__getitem__`` calls Keras
(``keras.utils.to_categorical``), so that whoever runs it must import Keras and its backend.

Each row runs in a fresh Python process, as a user's script: ``import keras``; make the
feed; build and compile a small model (the set-up stoke's workers overlap with: they start
when the feed is made and import Keras meanwhile, in parallel); then ``fit`` for a few
steps. Measured: ``first_step_s``, from the start of ``fit`` to the end of its first step
(a callback), and ``setup_s``, the model's build and compile. The start-up column is
``first_step_s`` less the ``model-alone`` row's (the same model fed in-memory arrays: the
first step's own tracing and compilation), i.e. what the feed added to the first step. Each
process also times ``import stoke``, first thing (``import_stoke_s``; lazy: its public names
are imported when first used, here when the feed is made).

Rows:

- ``model-alone``: in-memory numpy arrays (no feed start-up at all);
- ``keras-no-workers``: the PyDataset read in the trainer's thread;
- ``keras-threads`` / ``keras-processes``: ``workers=W`` (``use_multiprocessing`` False/True);
- ``stoke-accelerate``: ``stoke.accelerate(seq)``, made before the model;
- ``stoke-accelerate-made-last``: the same, made right before ``fit`` (nothing to overlap:
  what start-up costs without the overlap);
- ``stoke-to_keras``: a stoke pipeline whose map calls ``keras.utils.to_categorical``,
  ``.to_keras()`` made before the model (``executor="auto"``: the trainer makes the first
  batches while the workers start);
- ``stoke-to_keras-process``: the same with ``executor="process"`` (every batch in a worker:
  the first waits for one to be up).

    KERAS_BACKEND=jax python benchmarks/startup.py --quick     # one round, a smoke run
    KERAS_BACKEND=jax python benchmarks/startup.py --rows model-alone,stoke-to_keras
    KERAS_BACKEND=jax python benchmarks/startup.py --rounds 3 --out benchmarks/results/startup-2core-jax.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # this checkout's stoke, installed or not
sys.path.insert(0, str(HERE))

import common  # noqa: E402
from common import interleaved, write_json  # noqa: E402

SCHEMA = "stoke.bench.startup/1"
ROWS = ("model-alone", "keras-no-workers", "keras-threads", "keras-processes",
        "stoke-accelerate", "stoke-accelerate-made-last", "stoke-to_keras",
        "stoke-to_keras-process")
BATCH, BATCHES, CLASSES, STEPS = 32, 64, 10, 4


# -- one row, in its own process ------------------------------------------------------------
def run_row(row: str, workers: int) -> dict:
    started = time.perf_counter()
    import stoke  # lazy: its names are imported when the feed is made

    import_stoke_s = time.perf_counter() - started
    import numpy as np

    started = time.perf_counter()
    import keras

    import_s = time.perf_counter() - started

    class LabelledSequence(keras.utils.PyDataset):
        """A tutorial-style Sequence: random images, labels one-hot by Keras."""

        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.rng = np.random.default_rng(0)

        def __len__(self):
            return BATCHES

        def __getitem__(self, index):
            x = np.random.default_rng(index).random((BATCH, 28, 28), dtype=np.float32)
            y = keras.utils.to_categorical(np.arange(BATCH) % CLASSES, CLASSES)
            return x, y

    def one_hot(sample):
        x, label = sample
        return x, keras.utils.to_categorical(label, CLASSES)

    def make_feed():
        if row == "model-alone":
            return None
        if row == "keras-no-workers":
            return LabelledSequence()
        if row == "keras-threads":
            return LabelledSequence(workers=workers)
        if row == "keras-processes":
            return LabelledSequence(workers=workers, use_multiprocessing=True)
        if row.startswith("stoke-accelerate"):
            return stoke.accelerate(LabelledSequence())
        n = BATCH * BATCHES
        data = np.random.default_rng(0).random((n, 28, 28), dtype=np.float32)
        executor = "process" if row == "stoke-to_keras-process" else "auto"
        return (stoke.from_arrays(data, np.arange(n) % CLASSES).map(one_hot).batch(BATCH)
                .repeat(None).to_keras(executor=executor))

    made = time.perf_counter()
    feed = None if row == "stoke-accelerate-made-last" else make_feed()
    made_s = time.perf_counter() - made

    setup = time.perf_counter()
    model = keras.Sequential([keras.Input((28, 28)), keras.layers.Flatten(),
                              keras.layers.Dense(128, activation="relu"),
                              keras.layers.Dense(CLASSES)])
    model.compile("adam", keras.losses.CategoricalCrossentropy(from_logits=True))
    setup_s = time.perf_counter() - setup
    if row == "stoke-accelerate-made-last":
        feed = make_feed()

    first = {}

    class FirstStep(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            first.setdefault("t", time.perf_counter())

    fit_started = time.perf_counter()
    if feed is None:
        x = np.random.default_rng(0).random((BATCH * STEPS, 28, 28), dtype=np.float32)
        y = keras.utils.to_categorical(np.arange(BATCH * STEPS) % CLASSES, CLASSES)
        model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, callbacks=[FirstStep()])
    else:
        model.fit(feed, epochs=1, steps_per_epoch=STEPS, verbose=0, callbacks=[FirstStep()])
    result = {"row": row, "import_stoke_s": import_stoke_s, "import_keras_s": import_s,
              "feed_made_s": made_s,
              "setup_s": setup_s, "first_step_s": first["t"] - fit_started}
    close = getattr(feed, "close", None)
    if close is not None:
        close()
    return result


# -- the comparison -------------------------------------------------------------------------
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=common.available_cores())
    parser.add_argument("--quick", action="store_true", help="one round")
    parser.add_argument("--rows", default=",".join(ROWS),
                        help="comma-separated rows to run (model-alone is always run: the "
                             "start-up column is measured against it)")
    parser.add_argument("--out", default=None, help="results JSON (default: results/startup-dev.json)")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # a row, in this process
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(run_row(args.one, args.workers)))
        return 0
    rounds = 1 if args.quick else args.rounds
    asked = [row.strip() for row in args.rows.split(",") if row.strip()]
    unknown = sorted(set(asked) - set(ROWS))
    if unknown:
        parser.error(f"unknown row(s) {', '.join(unknown)}; the rows are {', '.join(ROWS)}")
    rows_run = [row for row in ROWS if row == "model-alone" or row in asked]
    runs: dict[str, list[dict]] = {row: [] for row in rows_run}
    for round_index, row in interleaved(rows_run, rounds):
        out = subprocess.run([sys.executable, __file__, "--one", row, "--workers",
                              str(args.workers)], capture_output=True, text=True, timeout=600)
        if out.returncode != 0:
            sys.stderr.write(out.stderr[-3000:])
            raise SystemExit(f"row {row} failed with exit code {out.returncode}")
        result = json.loads(out.stdout.strip().splitlines()[-1])
        result["round"] = round_index
        runs[row].append(result)
        print(f"round {round_index} {row:28s} first step {result['first_step_s']:6.2f} s "
              f"(set-up {result['setup_s']:.2f} s)", flush=True)

    def median(row: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[row])

    alone = median("model-alone", "first_step_s")
    rows = []
    for row in rows_run:
        first = median(row, "first_step_s")
        rows.append({"row": row, "first_step_s": round(first, 3),
                     "import_stoke_s": round(median(row, "import_stoke_s"), 4),
                     "startup_s": round(max(0.0, first - alone), 3),
                     "setup_s": round(median(row, "setup_s"), 3)})
    print(f"\n{'row':28s} {'first step':>10s} {'start-up':>9s} {'set-up':>7s} "
          f"{'import stoke':>12s}")
    for r in rows:
        print(f"{r['row']:28s} {r['first_step_s']:9.2f}s {r['startup_s']:8.2f}s "
              f"{r['setup_s']:6.2f}s {r['import_stoke_s']:11.3f}s")
    record = {"schema": SCHEMA, "date": dt.datetime.now().isoformat(timespec="seconds"),
              "machine": common.machine_info(), "load_average": common.load_average(),
              "workers": args.workers, "rounds": rounds, "batch_size": BATCH,
              "keras_backend": os.environ.get("KERAS_BACKEND", "tensorflow"),
              "rows": rows, "runs": runs}
    out = args.out or HERE / "results" / "startup-dev.json"
    print(f"wrote {write_json(out, record)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
