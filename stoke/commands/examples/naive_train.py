"""A training script written the way many are: a Python generator decodes and augments
JPEGs on the trainer's main thread, in float64, with no prefetch. The doctor's patient.

    python -m stoke.commands.examples.naive_train                 # the naive way
    python -m stoke.commands.examples.naive_train --feed stoke    # the same work, fed by stoke

Prints one JSON line at the end: images/s of the timed part.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from stoke.commands.examples.images import ensure_images, label_of

CROP = 96


def load_and_augment(path, rng):
    """Decode, random crop, flip, scale: the per-image work of the naive generator."""
    from PIL import Image

    image = np.asarray(Image.open(path).convert("RGB"), dtype=np.float64) / 255.0
    top, left = rng.integers(0, image.shape[0] - CROP + 1, size=2)
    image = image[top:top + CROP, left:left + CROP]
    if rng.random() < 0.5:
        image = image[:, ::-1]
    image = np.clip(image * rng.uniform(0.8, 1.2) + rng.normal(0, 0.02, image.shape), 0, 1)
    return image, label_of(path)


def naive_batches(paths, batch_size, seed=0):
    rng = np.random.default_rng(seed)
    while True:
        order = rng.permutation(len(paths))
        for start in range(0, len(order) - batch_size + 1, batch_size):
            samples = [load_and_augment(paths[i], rng) for i in order[start:start + batch_size]]
            yield np.stack([s[0] for s in samples]), np.array([s[1] for s in samples])


def read_file(path):
    with open(path, "rb") as f:
        return f.read()


def decode_sample(sample, rng):
    """stoke's version of the same work: runs in the workers, ships float32."""
    data, label = sample
    import io

    from PIL import Image

    image = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.float32) / 255.0
    top, left = rng.integers(0, image.shape[0] - CROP + 1, size=2)
    image = image[top:top + CROP, left:left + CROP]
    if rng.random() < 0.5:
        image = image[:, ::-1]
    noise = rng.normal(0, 0.02, image.shape).astype(np.float32)
    image = np.clip(image * np.float32(rng.uniform(0.8, 1.2)) + noise, 0, 1)
    return image, np.int32(label)


def build_model():
    import keras

    model = keras.Sequential([
        keras.Input((CROP, CROP, 3)),
        keras.layers.Conv2D(8, 3, strides=2, activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(10),
    ])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def _cpu_seconds() -> tuple[float, float, float]:
    """CPU seconds so far of this process, of its live child processes, and of everyone on
    the cores this process may run on (busy time)."""
    import os
    import resource

    import psutil

    me = psutil.Process()
    mine = sum(me.cpu_times()[:2])
    reaped = resource.getrusage(resource.RUSAGE_CHILDREN)  # workers that already exited
    children = reaped.ru_utime + reaped.ru_stime
    for child in me.children(recursive=True):
        try:
            children += sum(child.cpu_times()[:2])
        except psutil.Error:
            pass
    allowed = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    busy = 0.0
    for index, times in enumerate(psutil.cpu_times(percpu=True)):
        if allowed is None or index in allowed:
            busy += sum(times) - times.idle - getattr(times, "iowait", 0.0)
    return mine, children, busy


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--feed", choices=["naive", "stoke"], default="naive")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--workers", default="auto")
    args = parser.parse_args(argv)
    paths = [str(p) for p in ensure_images(args.images)]
    model = build_model()
    if args.feed == "naive":
        data = naive_batches(paths, args.batch_size)
    else:
        import stoke

        workers = args.workers if args.workers == "auto" else int(args.workers)
        data = (stoke.from_files(paths, labels=[label_of(p) for p in paths])
                .shuffle(seed=0).map(decode_sample).batch(args.batch_size, drop_remainder=True)
                .repeat(None).to_keras(workers=workers))
    warmup = 5
    model.fit(data, epochs=1, steps_per_epoch=warmup, verbose=0)
    cpu_before = _cpu_seconds()
    started = time.perf_counter()
    model.fit(data, epochs=1, steps_per_epoch=args.steps, verbose=0)
    seconds = time.perf_counter() - started
    cpu_after = _cpu_seconds()
    result = {"feed": args.feed, "images_per_s": args.steps * args.batch_size / seconds,
              "seconds": seconds,
              # cores used during the timed fit: this process, and its worker processes
              "trainer_cores": (cpu_after[0] - cpu_before[0]) / seconds,
              "worker_cores": (cpu_after[1] - cpu_before[1]) / seconds}
    busy = (cpu_after[2] - cpu_before[2]) / seconds  # every process, on our cores
    result["other_cores"] = max(0.0, busy - result["trainer_cores"] - result["worker_cores"])
    if hasattr(data, "tuning"):
        tuning = data.tuning()
        result["tuning"] = str(tuning)
        result["workers"] = tuning.workers
        result["executor"] = tuning.executor
    if hasattr(data, "close"):
        data.close()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
