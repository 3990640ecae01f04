"""What ``cache()`` buys on the JPEG workload: epoch 1 (decode, then store) against epoch 2
(read the stored decoded image), the augmentation after ``cache()`` running every epoch.

    pipe = from_sequence(jpegs).map(decode).cache().shuffle(0).map(augment).batch(64)

Two augmentations after the cache (``--after``): ``uint8`` (random crop and flip, shipped
as uint8 to finish on the device, as the README recommends) and ``float32`` (the workload's
whole transform after the decode: crop, flip, brightness, float32). What ``cache()`` can
save is the decode; the augmentation after it still runs every epoch, so the heavier it is,
the smaller epoch 2's gain (``float32``: converting a 128x128x3 crop costs about what
decoding a 160px JPEG does).

Each round builds a fresh pipeline (an empty cache) and one loader, then times three whole
epochs on it; the uncached pipeline (decode and augment every epoch) is timed the same way
in the same round, as the reference. Reported: images/s per epoch (medians over rounds),
``epoch2_over_epoch1`` for the cached pipeline (the goal: >= 3x) and the cached epoch 2
against the uncached one. The same samples, the same augmentation, the same process workers.

    python benchmarks/cache_epochs.py --rounds 3 --tag 2core
    python benchmarks/cache_epochs.py --quick        # a smoke run; the numbers mean nothing
    python benchmarks/cache_epochs.py --plot benchmarks/results/cache_epochs-2core.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import socket
import statistics
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # `workloads` must import the same way in every worker
sys.path.insert(0, str(HERE.parent))  # and stoke from this checkout
import common  # noqa: E402
import workloads  # noqa: E402

SCHEMA = "stoke.bench.cache_epochs/1"
EPOCHS = 3
PIPELINES = ("cached", "uncached")
AFTER = ("uint8", "float32")


def decode(sample):
    jpeg, label = sample
    return workloads.decode(jpeg), label


class Augment:
    """The rest of the workload's transform after the decode: crop, flip (and brightness,
    float32 unless ``uint8``)."""

    def __init__(self, workload: workloads.Workload, uint8: bool) -> None:
        self.crop_size = workload.crop_size
        self.max_brightness_delta = workload.max_brightness_delta
        self.uint8 = uint8

    def __call__(self, sample, rng):
        image, label = sample
        image = workloads.random_crop_and_flip(image, rng, self.crop_size)
        if self.uint8:
            return np.ascontiguousarray(image), np.int32(label)
        delta = np.float32(rng.uniform(-self.max_brightness_delta, self.max_brightness_delta))
        out = image.astype(np.float32)
        out *= np.float32(1.0 / 255.0)
        out += delta
        return out, np.int32(label)


def build(kind: str, after: str, workload: workloads.Workload, jpegs, labels, batch: int):
    import stoke

    pipe = stoke.from_sequence(workloads.JpegSamples(jpegs, labels)).map(decode)
    if kind == "cached":
        pipe = pipe.cache()
    return pipe.shuffle(0).map(Augment(workload, after == "uint8")).batch(batch)


def visit(kind: str, after: str, workload, jpegs, labels, batch: int, workers: int
          ) -> list[float]:
    """images/s of each of EPOCHS whole epochs on one loader (a fresh cache)."""
    pipe = build(kind, after, workload, jpegs, labels, batch)
    rates = []
    with pipe.loader(workers=workers, executor="process") as loader:
        _ = loader.pool  # workers started and ready before the clock starts
        for epoch in range(EPOCHS):
            started, images = time.perf_counter(), 0
            for batch in loader.iter(epoch=epoch):
                common.touch(batch)
                images += len(batch[0])
            rates.append(images / (time.perf_counter() - started))
    if kind == "cached":
        pipe.source.store.close()
    return rates


def plot(result: dict, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    afters = list(result["after"])
    fig, axes = plt.subplots(1, len(afters), figsize=(5 * len(afters), 3.5), squeeze=False)
    width = 0.38
    for ax, after in zip(axes[0], afters):
        for shift, kind, colour in ((-width / 2, "uncached", "#8c8c8c"),
                                    (width / 2, "cached", "#e8590c")):
            rates = result["rows"][f"{kind}-{after}"]["images_per_s"]
            xs = [e + 1 + shift for e in range(len(rates))]
            ax.bar(xs, rates, width, color=colour, label=kind)
            for x, r in zip(xs, rates):
                ax.text(x, r, f"{r:,.0f}", ha="center", va="bottom", fontsize=8)
        ax.set_xticks(range(1, EPOCHS + 1), [f"epoch {e}" for e in range(1, EPOCHS + 1)])
        ax.set_ylabel("images/s")
        ratio = result["epoch2_over_epoch1"][after]
        ax.set_title(f"decode -> cache() -> {after} augment: epoch 2 = {ratio:.2f}x epoch 1",
                     fontsize=9)
        ax.legend()
    fig.suptitle(f"{result['workers']} process workers, {result['machine']['cores']} cores, "
                 f"{result['date'][:10]}{' (quick: numbers mean nothing)' if result['quick'] else ''}",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=common.available_cores())
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--files", type=int, default=2048, help="distinct JPEGs (one epoch)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--after", default=",".join(AFTER), help=f"of: {', '.join(AFTER)}")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one round")
    parser.add_argument("--tag", default=None)
    parser.add_argument("--out", default=None)
    parser.add_argument("--plot", default=None, metavar="JSON", help="only draw this result")
    args = parser.parse_args(argv)
    if args.plot:
        import json

        source = Path(args.plot)
        print(f"wrote {plot(json.loads(source.read_text()), source.with_suffix('.png'))}")
        return 0
    rounds, files = (1, 256) if args.quick else (args.rounds, args.files)
    workload = workloads.Workload(files=files)
    jpegs, labels = workloads.load_samples(workload)
    afters = [a.strip() for a in args.after.split(",") if a.strip()]
    if unknown := [a for a in afters if a not in AFTER]:
        parser.error(f"unknown --after {', '.join(unknown)}; choose from: {', '.join(AFTER)}")
    items = [(kind, after) for after in afters for kind in PIPELINES]
    rates: dict[str, list[list[float]]] = {f"{k}-{a}": [] for k, a in items}
    for round_index, (kind, after) in common.interleaved(items, rounds):
        epoch_rates = visit(kind, after, workload, jpegs, labels, args.batch, args.workers)
        rates[f"{kind}-{after}"].append(epoch_rates)
        print(f"round {round_index + 1}/{rounds}  {kind:<9} {after:<8}"
              + "  ".join(f"epoch {e + 1}: {r:>8,.0f} img/s" for e, r in enumerate(epoch_rates)),
              flush=True)
    rows = {name: {"images_per_s": [statistics.median(r[e] for r in runs)
                                    for e in range(EPOCHS)], "rounds": runs}
            for name, runs in rates.items()}
    gain = {a: rows[f"cached-{a}"]["images_per_s"][1] / rows[f"cached-{a}"]["images_per_s"][0]
            for a in afters}
    versus = {a: rows[f"cached-{a}"]["images_per_s"][1] / rows[f"uncached-{a}"]["images_per_s"][1]
              for a in afters}
    result = {"schema": SCHEMA,
              "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "machine": common.machine_info(), "workload": workload.as_dict(),
              "workers": args.workers, "rounds": rounds, "batch_size": args.batch,
              "quick": args.quick, "after": afters, "rows": rows,
              "epoch2_over_epoch1": gain, "cached_epoch2_over_uncached_epoch2": versus}
    for a in afters:
        print(f"{a:<8} cached: epoch 2 = {gain[a]:.2f}x epoch 1; {versus[a]:.2f}x the "
              "uncached epoch 2")
    tag = args.tag or socket.gethostname()
    out = Path(args.out) if args.out else HERE / "results" / f"cache_epochs-{tag}.json"
    common.write_results(out, result, plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
