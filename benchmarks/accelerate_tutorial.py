"""``stoke.accelerate`` on a tutorial-style Keras ``Sequence`` (the Stanford "DataGenerator"
pattern: ``np.empty`` float64 buffers filled per sample, ``np.random.shuffle`` of the
indexes in ``on_epoch_end``, ``to_categorical``, ``validation_data`` as a second Sequence,
a small conv model trained on the CPU, ``verbose=2``): ``model.fit(seq)`` against
``model.fit(stoke.accelerate(seq), validation_data=stoke.accelerate(val))``.

Issue 14's new-user try measured the stoke-fed run 2.7x *slower* on torch. This benchmark
measures both in one run, per backend, as a ratio: each visit runs the user's script in a
fresh process (``KERAS_BACKEND`` set in the script, as users do), rounds interleaved (the
order rotates), and reads the script's own timer over the epochs after the first (the
first holds compilation and the workers' start). ``ratio`` = plain s/epoch over stoke
s/epoch (> 1: stoke is faster), median over rounds; ``wall_ratio`` the same over each
script's whole wall time (start-up and the first epoch included); every visit is in the JSON.

    python benchmarks/accelerate_tutorial.py                       # torch, jax, tensorflow
    python benchmarks/accelerate_tutorial.py --backends torch --rounds 2 --epochs 4
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import common  # noqa: E402
from common import interleaved, machine_info, write_results  # noqa: E402

SCHEMA = "stoke.bench.accelerate_tutorial/1"
RESULTS = HERE / "results" / "accelerate_tutorial.json"
MODES = ("plain", "stoke")

SCRIPT = textwrap.dedent('''
    import os, sys, time, json
    os.environ["KERAS_BACKEND"] = sys.argv[1]
    MODE, EPOCHS = sys.argv[2], int(sys.argv[3])
    import numpy as np
    import keras

    class DataGenerator(keras.utils.Sequence):
        def __init__(self, list_IDs, labels, batch_size=32, dim=(32, 32), n_channels=1,
                     n_classes=10, shuffle=True, **kwargs):
            super().__init__(**kwargs)
            self.dim, self.batch_size, self.labels = dim, batch_size, labels
            self.list_IDs, self.n_channels, self.n_classes = list_IDs, n_channels, n_classes
            self.shuffle = shuffle
            self.on_epoch_end()

        def __len__(self):
            return int(np.floor(len(self.list_IDs) / self.batch_size))

        def __getitem__(self, index):
            indexes = self.indexes[index * self.batch_size:(index + 1) * self.batch_size]
            X = np.empty((self.batch_size, *self.dim, self.n_channels))
            y = np.empty((self.batch_size), dtype=int)
            for i, k in enumerate(indexes):
                ID = self.list_IDs[k]
                X[i,] = np.random.default_rng(ID).random((*self.dim, self.n_channels))
                y[i] = self.labels[ID]
            return X, keras.utils.to_categorical(y, num_classes=self.n_classes)

        def on_epoch_end(self):
            self.indexes = np.arange(len(self.list_IDs))
            if self.shuffle == True:  # noqa: E712 - as the tutorial writes it
                np.random.shuffle(self.indexes)

    class EpochTimes(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.times, self.batches = [], 0
        def on_epoch_begin(self, epoch, logs=None):
            self.t = time.perf_counter()
        def on_train_batch_end(self, batch, logs=None):
            self.batches += 1
        def on_epoch_end(self, epoch, logs=None):
            self.times.append(time.perf_counter() - self.t)

    labels = {i: i % 10 for i in range(1024)}
    train = DataGenerator(list(range(768)), labels)
    val = DataGenerator(list(range(768, 1024)), labels)
    model = keras.Sequential([
        keras.Input((32, 32, 1)),
        keras.layers.Conv2D(16, 3, activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(32, 3, activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(10, activation="softmax"),
    ])
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    if MODE == "stoke":
        import stoke
        train, val = stoke.accelerate(train), stoke.accelerate(val)
    timer = EpochTimes()
    model.fit(train, validation_data=val, epochs=EPOCHS, callbacks=[timer], verbose=0)
    workers = train.worker_count if MODE == "stoke" else None  # started by the end
    print("RESULT " + json.dumps({"epoch_s": timer.times, "batches": timer.batches,
                                  "workers": workers}))
''')


def visit(script: Path, backend: str, mode: str, epochs: int, timeout_s: float) -> dict:
    env = dict(os.environ, PYTHONPATH=str(HERE.parent), TF_CPP_MIN_LOG_LEVEL="3")
    started = time.perf_counter()
    done = subprocess.run([sys.executable, str(script), backend, mode, str(epochs)], env=env,
                          capture_output=True, text=True, timeout=timeout_s)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
    if done.returncode or not lines:
        return {"error": (done.stderr or done.stdout)[-2000:]}
    got = json.loads(lines[-1][len("RESULT "):])
    later = got["epoch_s"][1:]
    return {"epoch_s": got["epoch_s"], "batches": got["batches"], "workers": got.get("workers"),
            "s_per_epoch": statistics.median(later), "wall_s": time.perf_counter() - started}


def summarize(visits: list[dict]) -> dict:
    rows: dict[str, dict] = {}
    for v in visits:
        rows.setdefault(v["backend"], {}).setdefault(v["round"], {})[v["mode"]] = v
    out = {}
    for backend, rounds in rows.items():
        ratios = [r["plain"]["s_per_epoch"] / r["stoke"]["s_per_epoch"] for r in rounds.values()
                  if all("s_per_epoch" in r.get(m, {}) for m in MODES)]
        per_mode = {m: statistics.median([r[m]["s_per_epoch"] for r in rounds.values()
                                          if "s_per_epoch" in r.get(m, {})] or [float("nan")])
                    for m in MODES}
        # the whole script, start-up included (workers' imports, the first epoch)
        wall_ratios = [r["plain"]["wall_s"] / r["stoke"]["wall_s"] for r in rounds.values()
                       if all("wall_s" in r.get(m, {}) for m in MODES)]
        out[backend] = {"plain_s_per_epoch": per_mode["plain"],
                        "stoke_s_per_epoch": per_mode["stoke"],
                        "ratio": statistics.median(ratios) if ratios else None,
                        "ratios": ratios,
                        "wall_ratio": statistics.median(wall_ratios) if wall_ratios else None,
                        "wall_ratios": wall_ratios}
    return out


def plot(record: dict, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = record["summary"]
    backends = list(summary)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ratios = [summary[b]["ratio"] or 0.0 for b in backends]
    ax.bar(backends, ratios, color=["tab:green" if r >= 1 else "tab:red" for r in ratios])
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_ylabel("plain s/epoch ÷ stoke s/epoch")
    ax.set_title("stoke.accelerate on a tutorial Sequence (>1: stoke faster)", fontsize=9)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default="torch,jax,tensorflow")
    parser.add_argument("--epochs", type=int, default=5, help="per visit; the first is left out")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--timeout-s", type=float, default=240.0)
    parser.add_argument("--output", default=str(RESULTS))
    args = parser.parse_args(argv)
    if args.epochs < 2:
        parser.error("--epochs must be >= 2: the first epoch holds start-up")
    backends = [b for b in args.backends.split(",") if b]
    started, visits = time.time(), []
    with tempfile.TemporaryDirectory(prefix="stoke-bench-tutorial-") as folder:
        script = Path(folder) / "train.py"
        script.write_text(SCRIPT)
        items = [(b, m) for b in backends for m in MODES]
        for round_index, (backend, mode) in interleaved(items, args.rounds):
            got = visit(script, backend, mode, args.epochs, args.timeout_s)
            got.update(backend=backend, mode=mode, round=round_index,
                       load=common.load_average())
            print(f"round {round_index} {backend:10s} {mode:5s} "
                  f"{got.get('s_per_epoch', float('nan')):.3f} s/epoch "
                  f"{got.get('error', '')[-200:]}", file=sys.stderr, flush=True)
            visits.append(got)
    summary = summarize(visits)
    for backend, row in summary.items():
        print(f"{backend:10s} plain {row['plain_s_per_epoch']:.3f} s/epoch  stoke "
              f"{row['stoke_s_per_epoch']:.3f} s/epoch  ratio x{row['ratio'] or float('nan'):.2f}"
              f"  whole script x{row['wall_ratio'] or float('nan'):.2f}")
    record = {"schema": SCHEMA,
              "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "duration_s": round(time.time() - started, 1), "machine": machine_info(),
              "settings": vars(args), "summary": summary, "visits": visits}
    write_results(args.output, record, plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
