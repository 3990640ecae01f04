"""Check the device feed on a real accelerator: every batch that reaches the device equals
the batch of the plan, for the active Keras backend (KERAS_BACKEND), and lands on the GPU.

CI has no GPU; this is what we run on one. Exit status 0 when everything matched.

    KERAS_BACKEND=torch python benchmarks/device_feed_check.py
"""

from __future__ import annotations

import json
import sys

import numpy as np


def main() -> int:
    import keras

    import stoke

    backend = keras.backend.backend()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (300, 32, 32, 3), dtype=np.uint8)
    labels = np.arange(300, dtype=np.int32)
    pipe = stoke.from_arrays(images, labels).shuffle(1).batch(32)
    expected = [(np.array(x), np.array(y)) for x, y in pipe.iter(executor="inline", epoch=0)]

    def to_float(batch):
        x, y = batch
        return keras.ops.cast(x, "float32") / 255.0, y

    report = {"backend": backend, "batches": 0, "mismatches": 0, "devices": set()}
    with pipe.to_keras(workers=4, executor="process", ring_slots=3,
                       device_transform=to_float) as feed:
        if backend == "jax":
            batches = feed.get_jax_iterator()
        elif backend == "torch":
            batches = feed.get_torch_dataloader()
        else:
            batches = iter(feed.get_tf_dataset())
        held = list(batches)  # hold them all: the ring must not overwrite what was sent
    for (x, y), (ex, ey) in zip(held, expected):
        report["batches"] += 1
        device = getattr(x, "device", None) or getattr(x, "devices", lambda: None)()
        report["devices"].add(str(device))
        ok = np.allclose(keras.ops.convert_to_numpy(x), ex / 255.0, atol=1e-6) and \
            np.array_equal(keras.ops.convert_to_numpy(y), ey)
        report["mismatches"] += 0 if ok else 1
    report["devices"] = sorted(report["devices"])
    report["ok"] = report["mismatches"] == 0 and report["batches"] == len(expected)
    print(json.dumps(report))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
