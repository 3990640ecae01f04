"""model.fit throughput fed by stoke and by the peers, against the model alone.

One backend per process (Keras picks it at import): run it once with KERAS_BACKEND=jax and
once with KERAS_BACKEND=torch. For each feeder it trains the same small CNN on the JPEG
workload (decode -> crop 128 -> flip -> brightness -> float32, see ``workloads.py``) for a
warm-up fit (compilation, worker start-up) and then a timed fit of ``--steps`` steps, and
reports images/s, the share of the model-alone ceiling, and NVML kernel-active % (the share
of time any kernel ran) sampled during the timed fit. Feeders, interleaved over ``--rounds``:

- ``model-alone``: one batch already on the device, fed again and again (the ceiling);
- ``stoke``: ``pipe.to_keras(workers=W)`` (process workers, shared-memory ring, device prefetch);
- ``torch-dataloader``: ``DataLoader(num_workers=W, pin_memory=True, persistent_workers=True)``;
- ``pydataset-processes`` / ``pydataset-threads``: ``keras.utils.PyDataset(workers=W, ...)``;
- ``grain-threads``: grain's MapDataset with a thread read (when grain is installed);
- ``generator``: a plain Python generator on the main thread.

Also the host-to-device bandwidth of pageable and pinned copies of one batch (torch).

    KERAS_BACKEND=jax python benchmarks/fit_gpu.py --workers 12 --out benchmarks/results/fit_gpu-jax.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import workloads  # noqa: E402
from common import write_json  # noqa: E402


# -- the model -----------------------------------------------------------------------------
def build_model(width: int, image_size: int, classes: int):
    import keras

    layers = keras.layers
    inputs = keras.Input((image_size, image_size, 3))
    x = inputs
    for i, filters in enumerate((width, width * 2, width * 4, width * 4)):
        x = layers.Conv2D(filters, 3, strides=2 if i else 1, padding="same", activation="relu")(x)
        if i == 0:
            x = layers.MaxPooling2D()(x)
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(classes)(x)
    model = keras.Model(inputs, outputs)
    model.compile(keras.optimizers.SGD(0.01),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=True if keras.backend.backend() == "jax" else "auto")
    return model


# -- GPU sampling ---------------------------------------------------------------------------
class KernelActive:
    """NVML utilization.gpu ("kernel-active": share of time any kernel ran), sampled at 20 Hz."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        try:
            import pynvml

            pynvml.nvmlInit()
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(0)
            self._nvml = pynvml
        except Exception:  # noqa: BLE001 - no GPU, no numbers
            self._nvml = None

    def __enter__(self) -> KernelActive:
        if self._nvml is not None:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(float(self._nvml.nvmlDeviceGetUtilizationRates(self._handle).gpu))
            time.sleep(0.05)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.samples) if self.samples else None


# -- feeders ---------------------------------------------------------------------------------
class Setup:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.workload = workloads.Workload(files=args.files, image_size=args.image_size,
                                           crop_size=args.crop_size, classes=10)
        jpegs, labels = workloads.load_samples(self.workload, args.data_dir)
        self.samples = workloads.JpegSamples(jpegs, labels, length=args.length)
        self.transform = workloads.Transform(self.workload)
        self.batch_size = args.batch_size


def feed_model_alone(setup: Setup):
    import keras

    rng = np.random.default_rng(0)
    x, y = workloads.collate([setup.transform(setup.samples[i], rng)
                              for i in range(setup.batch_size)])
    y = (y % 10).astype(np.int32)
    if keras.backend.backend() == "jax":
        import jax

        x, y = jax.device_put(x), jax.device_put(y)
    else:
        import torch

        x, y = torch.as_tensor(x, device="cuda"), torch.as_tensor(y, device="cuda")

    def forever():
        while True:
            yield x, y

    return forever(), lambda: None


def feed_stoke(setup: Setup):
    import stoke

    pipe = (stoke.from_sequence(setup.samples).shuffle(seed=0)
            .map(setup.transform).map(_labels_mod_10).batch(setup.batch_size, drop_remainder=True))
    feed = pipe.to_keras(workers=setup.args.workers, executor="process", prefetch=3)
    return feed, feed.close


def _labels_mod_10(sample):
    x, y = sample
    return x, np.int32(y % 10)


def feed_generator(setup: Setup):
    def generate():
        rng = np.random.default_rng(0)
        index = 0
        while True:
            batch = [_labels_mod_10(setup.transform(setup.samples[(index + k) % len(setup.samples)], rng))
                     for k in range(setup.batch_size)]
            index += setup.batch_size
            yield workloads.collate(batch)

    return generate(), lambda: None


class BatchDataset:
    """index -> whole batch (PyDataset style), the same transform."""

    def __init__(self, setup: Setup) -> None:
        self.transformed = workloads.TransformedSamples(setup.samples, setup.transform)
        self.batch_size = setup.batch_size
        self.length = len(setup.samples) // setup.batch_size

    def batch(self, index: int):
        items = [_labels_mod_10(self.transformed[index * self.batch_size + k])
                 for k in range(self.batch_size)]
        return workloads.collate(items)


def _feed_pydataset(use_multiprocessing: bool):
    def make(setup: Setup):
        import keras

        class Batches(keras.utils.PyDataset):
            def __init__(self, inner: BatchDataset, **kw):
                super().__init__(**kw)
                self.inner = inner

            def __len__(self):
                return self.inner.length

            def __getitem__(self, index):
                return self.inner.batch(index)

        ds = Batches(BatchDataset(setup), workers=setup.args.workers,
                     use_multiprocessing=use_multiprocessing, max_queue_size=setup.args.workers * 2)
        return ds, lambda: None

    return make


def feed_torch_dataloader(setup: Setup):
    import torch.utils.data as data

    class Samples(data.Dataset):
        def __init__(self, inner):
            self.inner = inner

        def __len__(self):
            return len(self.inner)

        def __getitem__(self, i):
            return _labels_mod_10(self.inner[i])

    loader = data.DataLoader(
        Samples(workloads.TransformedSamples(setup.samples, setup.transform)),
        batch_size=setup.batch_size, shuffle=True, num_workers=setup.args.workers,
        pin_memory=True, persistent_workers=True, prefetch_factor=4, drop_last=True)
    return loader, lambda: None


def feed_grain_threads(setup: Setup):
    import grain

    transformed = workloads.TransformedSamples(setup.samples, setup.transform)
    dataset = (grain.MapDataset.range(len(setup.samples)).shuffle(seed=0)
               .map(lambda i: _labels_mod_10(transformed[i])).batch(setup.batch_size, drop_remainder=True)
               .to_iter_dataset(grain.ReadOptions(num_threads=setup.args.workers, prefetch_buffer_size=setup.args.workers * 4)))
    return dataset, lambda: None


FEEDERS: dict[str, Callable[[Setup], Any]] = {
    "model-alone": feed_model_alone,
    "stoke": feed_stoke,
    "torch-dataloader": feed_torch_dataloader,
    "pydataset-processes": _feed_pydataset(True),
    "pydataset-threads": _feed_pydataset(False),
    "grain-threads": feed_grain_threads,
    "generator": feed_generator,
}


def measure(name: str, setup: Setup, model, args: argparse.Namespace) -> dict[str, Any]:
    data, close = FEEDERS[name](setup)
    try:
        model.fit(data, epochs=1, steps_per_epoch=args.warmup_steps, verbose=0)
        with KernelActive() as gpu:
            started = time.perf_counter()
            model.fit(data, epochs=1, steps_per_epoch=args.steps, verbose=0)
            seconds = time.perf_counter() - started
        return {"feeder": name, "images_per_s": args.steps * setup.batch_size / seconds,
                "seconds": seconds, "kernel_active_pct": gpu.mean}
    finally:
        close()


def h2d_bandwidth(setup: Setup) -> dict[str, float]:
    """GB/s of one float32 batch copied to the GPU from pageable and from pinned memory."""
    try:
        import torch

        if not torch.cuda.is_available():
            return {}
    except ImportError:
        return {}
    nbytes = setup.batch_size * setup.args.crop_size ** 2 * 3 * 4
    pageable = torch.empty(nbytes // 4, dtype=torch.float32)
    pinned = torch.empty(nbytes // 4, dtype=torch.float32, pin_memory=True)
    out = {}
    for name, host in (("pageable", pageable), ("pinned", pinned)):
        for _ in range(3):
            host.to("cuda", non_blocking=True)
        torch.cuda.synchronize()
        started = time.perf_counter()
        for _ in range(20):
            host.to("cuda", non_blocking=True)
        torch.cuda.synchronize()
        out[f"{name}_GBps"] = 20 * nbytes / (time.perf_counter() - started) / 1e9
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 4))
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--warmup-steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--width", type=int, default=32, help="CNN width (filters of layer 1)")
    parser.add_argument("--files", type=int, default=1024)
    parser.add_argument("--length", type=int, default=200_000)
    parser.add_argument("--image-size", type=int, default=160)
    parser.add_argument("--crop-size", type=int, default=128)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--only", default=",".join(FEEDERS))
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)

    import keras

    backend = keras.backend.backend()
    setup = Setup(args)
    model = build_model(args.width, args.crop_size, 10)
    chosen = [n for n in args.only.split(",") if n]
    rows: dict[str, list[dict[str, Any]]] = {n: [] for n in chosen}
    for round_index in range(args.rounds):
        for name in chosen:
            try:
                row = measure(name, setup, model, args)
            except Exception as exc:  # noqa: BLE001 - a missing peer is a note, not a crash
                row = {"feeder": name, "error": f"{type(exc).__name__}: {exc}"[:300]}
            rows[name].append(row)
            print(f"[round {round_index}] {json.dumps(row)}", flush=True)
    summary = []
    ceiling = None
    for name, runs in rows.items():
        good = [r for r in runs if "images_per_s" in r]
        if not good:
            summary.append({"feeder": name, "error": runs[0].get("error")})
            continue
        best = max(good, key=lambda r: r["images_per_s"])
        if name == "model-alone":
            ceiling = best["images_per_s"]
        summary.append({"feeder": name, "images_per_s": best["images_per_s"],
                        "kernel_active_pct": best["kernel_active_pct"]})
    for row in summary:
        if ceiling and "images_per_s" in row:
            row["share_of_ceiling"] = row["images_per_s"] / ceiling
    result = {"benchmark": "fit_gpu", "backend": backend, "workers": args.workers,
              "batch_size": args.batch_size, "steps": args.steps, "width": args.width,
              "cores": os.cpu_count(), "workload": setup.workload.as_dict(),
              "date": time.strftime("%Y-%m-%d %H:%M:%S"), "rows": summary,
              "h2d": h2d_bandwidth(setup), "runs": rows}
    print(f"\n{'feeder':22s} {'img/s':>9s} {'of ceiling':>10s} {'kernel-active':>13s}")
    for row in summary:
        if "images_per_s" in row:
            share = row.get("share_of_ceiling")
            active = row.get("kernel_active_pct")
            print(f"{row['feeder']:22s} {row['images_per_s']:9.0f} "
                  f"{(f'{share:.0%}' if share else '-'):>10s} "
                  f"{(f'{active:.0f}%' if active is not None else '-'):>13s}")
        else:
            print(f"{row['feeder']:22s} skipped: {row['error']}")
    print("h2d:", result["h2d"])
    if args.out:
        write_json(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
