"""A hand-written Keras ``Sequence``, as users write them: ``stoke.accelerate(seq)`` against
the same Sequence under Keras' own settings.

The Sequence (:class:`ImageSequence`) reads small JPEG and PNG files this script writes into
a temporary folder, one file per sample, decodes them with PIL, augments them in
numpy/Python inside ``__getitem__`` (random crop, flip, brightness and contrast, cutout; the
``python`` variant also jitters every row in a Python loop, the kind of code that holds the
GIL), and reshuffles its index array in ``on_epoch_end``. The ``ragged`` variant is a cheap
one instead (:class:`RaggedSequence`, about 1 ms a batch), where stoke's own cost per batch
shows.

Rows, each reading whole epochs exactly as ``fit`` does (Keras' ``PyDatasetAdapter``:
``on_epoch_begin``, the numpy iterator, ``on_epoch_end``):

- ``keras-no-workers``: the Sequence alone, read in the trainer's thread (the baseline);
- ``keras-threads``: ``workers=W`` (Keras' thread pool);
- ``keras-processes``: ``workers=W, use_multiprocessing=True`` (Keras' process pool, which
  it starts again every epoch);
- ``stoke-accelerate``: ``stoke.accelerate(seq)`` with W process workers;
- ``stoke-accelerate-auto``: ``stoke.accelerate(seq)`` with its defaults: the trainer makes
  the first batches and starts workers once they pay (``stoke.accelerate.worker_start``).

Method: all rows run in this one process, interleaved (each round visits every row; the
order rotates), each visit on a fresh Sequence. A visit reads ``--epochs`` epochs; the first
one includes starting the workers (``first_epoch_s``), the later ones give the throughput
(img/s over them; the median over rounds is reported, every round is in the JSON). Ratios
are against ``keras-no-workers`` and against the best Keras row.

    python benchmarks/accelerate_sequence.py              # the full comparison
    python benchmarks/accelerate_sequence.py --quick      # a smoke run
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # this checkout's stoke, installed or not
sys.path.insert(0, str(HERE))  # and the benchmarks' common module

import common  # noqa: E402
import keras  # noqa: E402
from common import interleaved, write_json  # noqa: E402

import stoke  # noqa: E402
from stoke.accelerate import accelerate  # noqa: E402

SCHEMA = "stoke.bench.accelerate_sequence/1"
RESULTS = HERE / "results" / "accelerate_sequence.json"
VARIANTS = ("images", "python", "ragged")


# -- the Sequence users write ------------------------------------------------------------
class ImageSequence(keras.utils.Sequence):
    """Loads, augments and batches images from files; reshuffles every epoch."""

    def __init__(self, paths, labels, batch_size=32, crop=112, python_jitter=False,
                 **kwargs):
        super().__init__(**kwargs)
        self.paths = list(paths)
        self.labels = np.asarray(labels)
        self.batch_size = batch_size
        self.crop = crop
        self.python_jitter = python_jitter
        self.indexes = np.arange(len(self.paths))
        np.random.shuffle(self.indexes)

    def __len__(self):
        return int(np.ceil(len(self.paths) / self.batch_size))

    def __getitem__(self, index):
        from PIL import Image

        chosen = self.indexes[index * self.batch_size:(index + 1) * self.batch_size]
        images = []
        for i in chosen:
            with Image.open(self.paths[i]) as image:
                array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
            images.append(self.augment(array))
        return np.stack(images), self.labels[chosen]

    def augment(self, image):
        height, width, _ = image.shape
        top = np.random.randint(0, height - self.crop + 1)
        left = np.random.randint(0, width - self.crop + 1)
        image = image[top:top + self.crop, left:left + self.crop]
        if np.random.rand() < 0.5:
            image = image[:, ::-1]
        image = (image - image.mean()) * np.random.uniform(0.8, 1.2) + image.mean()
        image = image + np.random.uniform(-0.1, 0.1)
        image = np.array(image)
        for _ in range(2):  # cutout
            y, x = np.random.randint(0, self.crop - 16, size=2)
            image[y:y + 16, x:x + 16] = 0.5
        if self.python_jitter:  # rows shifted one by one: Python-heavy, holds the GIL
            for row in range(self.crop):
                shift = np.random.randint(-2, 3)
                if shift:
                    image[row] = np.roll(image[row], shift, axis=0)
        return np.clip(image, 0.0, 1.0)

    def on_epoch_end(self):
        np.random.shuffle(self.indexes)


class RaggedSequence(keras.utils.Sequence):
    """A cheap ``__getitem__`` (about 1 ms on 2 cores): variable-length rows of Python lists,
    padded per batch with ``keras.utils.pad_sequences`` (the red-team's s05). Where the
    batch costs little, stoke's own per-batch cost is what a row shows."""

    def __init__(self, count, batch_size=64, seed=0, **kwargs):
        super().__init__(**kwargs)
        rng = np.random.default_rng(seed)
        self.rows = [rng.random((int(rng.integers(10, 120)), 8)).tolist() for _ in range(count)]
        self.targets = np.array([float(np.mean(row)) for row in self.rows], np.float32)
        self.batch_size = batch_size

    def __len__(self):
        return int(np.ceil(len(self.rows) / self.batch_size))

    def __getitem__(self, index):
        chosen = slice(index * self.batch_size, (index + 1) * self.batch_size)
        x = keras.utils.pad_sequences(self.rows[chosen], dtype="float32", padding="post")
        return x[..., None], self.targets[chosen]


def write_images(folder: Path, count: int, size: int, seed: int) -> tuple[list[str], np.ndarray]:
    """``count`` small photo-like images, alternately JPEG (quality 90) and PNG."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    paths = []
    yy, xx = np.mgrid[0:size, 0:size] / size
    for i in range(count):
        base = rng.random(3)
        slope = rng.normal(0, 0.5, size=(2, 3))
        image = base + yy[..., None] * slope[0] + xx[..., None] * slope[1]
        image = image + rng.normal(0, 0.04, size=(size, size, 3))
        pixels = (np.clip(image, 0, 1) * 255).astype(np.uint8)
        path = folder / (f"{i:05d}.jpg" if i % 2 == 0 else f"{i:05d}.png")
        if path.suffix == ".jpg":
            Image.fromarray(pixels).save(path, quality=90)
        else:
            Image.fromarray(pixels).save(path)
        paths.append(str(path))
    return paths, np.arange(count) % 10


# -- the rows -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Settings:
    images: int
    image_size: int
    crop: int
    batch_size: int
    workers: int
    epochs: int
    rounds: int
    seed: int


@dataclass
class Visit:
    """A dataset as ``fit`` gets it, and how to close it."""

    data: Any
    close: Callable[[], None] = lambda: None


def make_sequence(paths, labels, settings: Settings, variant: str, **keras_kwargs):
    np.random.seed(settings.seed)
    if variant == "ragged":
        return RaggedSequence(len(paths), seed=settings.seed, **keras_kwargs)
    return ImageSequence(paths, labels, settings.batch_size, settings.crop,
                         python_jitter=variant == "python", **keras_kwargs)


def build_rows(settings: Settings) -> dict[str, Callable[..., Visit]]:
    workers = settings.workers

    def no_workers(paths, labels, variant):
        return Visit(make_sequence(paths, labels, settings, variant, workers=1))

    def threads(paths, labels, variant):
        return Visit(make_sequence(paths, labels, settings, variant, workers=workers))

    def processes(paths, labels, variant):
        return Visit(make_sequence(paths, labels, settings, variant, workers=workers,
                                   use_multiprocessing=True))

    def stoke_accelerate(paths, labels, variant):
        accelerated = accelerate(make_sequence(paths, labels, settings, variant),
                                 workers=workers)
        return Visit(accelerated, accelerated.close)

    def stoke_accelerate_auto(paths, labels, variant):
        accelerated = accelerate(make_sequence(paths, labels, settings, variant))
        return Visit(accelerated, accelerated.close)

    return {"keras-no-workers": no_workers, "keras-threads": threads,
            "keras-processes": processes, "stoke-accelerate": stoke_accelerate,
            "stoke-accelerate-auto": stoke_accelerate_auto}


def read_epochs(data: Any, epochs: int) -> tuple[list[float], int]:
    """Read ``epochs`` epochs the way ``fit`` does; the seconds each took."""
    from keras.src.trainers.data_adapters.py_dataset_adapter import PyDatasetAdapter

    adapter = PyDatasetAdapter(data, shuffle=False)
    seconds = []
    images = 0
    sink = 0.0
    for _ in range(epochs):
        started = time.perf_counter()
        adapter.on_epoch_begin()
        images = 0
        for x, y in adapter.get_numpy_iterator():
            sink += float(x[0, 0, 0, 0]) + float(y[0])
            images += len(x)
        adapter.on_epoch_end()
        seconds.append(time.perf_counter() - started)
    if not np.isfinite(sink):
        raise RuntimeError("non-finite batches")
    return seconds, images


def measure(build, paths, labels, variant: str, epochs: int) -> dict[str, Any]:
    gc.collect()
    started = time.perf_counter()
    visit = build(paths, labels, variant)
    try:
        seconds, images_per_epoch = read_epochs(visit.data, epochs)
    finally:
        visit.close()
        del visit
        gc.collect()
    later = seconds[1:] or seconds
    return {
        "first_epoch_s": seconds[0],
        "setup_s": time.perf_counter() - started - sum(seconds),
        "epoch_s": seconds,
        "images_per_s": images_per_epoch * len(later) / sum(later),
    }


def run(settings: Settings, variants: list[str], rows_wanted: list[str] | None,
        log: Callable[[str], None]) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="stoke-bench-seq-"))
    try:
        log(f"writing {settings.images} images to {folder}")
        paths, labels = write_images(folder, settings.images, settings.image_size, settings.seed)
        rows = build_rows(settings)
        if rows_wanted:
            rows = {k: v for k, v in rows.items() if k in rows_wanted}
        results: dict[str, Any] = {}
        for variant in variants:
            rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in rows}
            for round_index, name in interleaved(list(rows), settings.rounds):
                result = measure(rows[name], paths, labels, variant, settings.epochs)
                rounds[name].append(result)
                log(f"{variant:<7} round {round_index + 1}/{settings.rounds}  {name:<21}"
                    f" {result['images_per_s']:8.0f} img/s   first epoch "
                    f"{result['first_epoch_s']:.2f} s")
            results[variant] = summarise(rounds)
        return results
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def summarise(rounds: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    rows = []
    for name, visits in rounds.items():
        rates = [v["images_per_s"] for v in visits]
        rows.append({
            "name": name,
            "images_per_s": statistics.median(rates),
            "images_per_s_rounds": rates,
            "first_epoch_s": statistics.median(v["first_epoch_s"] for v in visits),
            "epoch_s_rounds": [v["epoch_s"] for v in visits],
        })
    by_name = {r["name"]: r["images_per_s"] for r in rows}
    ratios: dict[str, Any] = {}
    baseline = by_name.get("keras-no-workers")
    keras_rows = {k: v for k, v in by_name.items() if k.startswith("keras-")}
    best_keras = max(keras_rows, key=keras_rows.get) if keras_rows else None
    for row in rows:
        if baseline:
            row["vs_no_workers"] = row["images_per_s"] / baseline
        if best_keras:
            row["vs_best_keras"] = row["images_per_s"] / keras_rows[best_keras]
    if "stoke-accelerate" in by_name:
        ratios = {"best_keras": best_keras,
                  "stoke_vs_no_workers": by_name["stoke-accelerate"] / baseline
                  if baseline else None,
                  "stoke_vs_best_keras": by_name["stoke-accelerate"] / keras_rows[best_keras]
                  if best_keras else None}
    return {"rows": rows, "ratios": ratios}


# -- output ---------------------------------------------------------------------------------
def machine_info() -> dict[str, Any]:
    machine = common.machine_info(("stoke", "keras", "numpy", "pillow"),
                                  keys=("cores", "cpu_model", "python", "versions"))
    return {**machine, "load_average_at_start": common.load_average(),
            "keras_backend": keras.backend.backend(), "stoke_version": stoke.__version__}


def print_table(results: dict[str, Any]) -> None:
    for variant, result in results.items():
        print(f"\n{variant}: {VARIANT_NOTES[variant]}")
        print(f"  {'row':<21} {'img/s':>8} {'x no-workers':>13} {'x best keras':>13} "
              f"{'first epoch':>12}")
        for row in result["rows"]:
            print(f"  {row['name']:<21} {row['images_per_s']:8.0f} "
                  f"{row.get('vs_no_workers', float('nan')):12.2f}x "
                  f"{row.get('vs_best_keras', float('nan')):12.2f}x "
                  f"{row['first_epoch_s']:11.2f}s")


VARIANT_NOTES = {
    "images": "decode + numpy augmentation in __getitem__",
    "python": "decode + numpy augmentation + a per-row Python loop (GIL-heavy)",
    "ragged": "pad_sequences over 64 Python lists in __getitem__ (about 1 ms a batch)",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    cores = common.available_cores()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=None, help="files (default 1024)")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--crop", type=int, default=112)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=cores, help="default: one per core")
    parser.add_argument("--epochs", type=int, default=None, help="per visit (default 3)")
    parser.add_argument("--rounds", type=int, default=None, help="default 3")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--only", default=None, help="rows, comma-separated")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="small sizes, one round")
    parser.add_argument("--output", default=str(RESULTS))
    args = parser.parse_args(argv)
    args.images = args.images or (192 if args.quick else 1024)
    args.epochs = args.epochs or (2 if args.quick else 3)
    args.rounds = args.rounds or (1 if args.quick else 3)
    if args.epochs < 2:
        parser.error("--epochs must be >= 2: the first epoch includes start-up")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = Settings(args.images, args.image_size, args.crop, args.batch_size, args.workers,
                        args.epochs, args.rounds, args.seed)
    variants = [v for v in args.variants.split(",") if v]
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        print(f"unknown variant(s) {sorted(unknown)}; choose from {VARIANTS}", file=sys.stderr)
        return 2
    only = args.only.split(",") if args.only else None

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    machine = machine_info()
    started = time.time()
    results = run(settings, variants, only, log)
    record = {
        "schema": SCHEMA,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "duration_s": round(time.time() - started, 1),
        "machine": machine,
        "settings": asdict(settings),
        "quick": args.quick,
        "variants": {v: {"description": VARIANT_NOTES[v], **results[v]} for v in results},
    }
    print_table(results)
    output = write_json(args.output, record)
    print(f"\nwrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
