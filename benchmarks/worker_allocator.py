"""Does keeping freed memory in the workers pay? stoke's process workers with glibc's default
malloc against ``STOKE_WORKER_MALLOC=keep`` (``stoke/executors/allocator.py``), in one run.

Three maps that differ in the large arrays they make per sample:

- ``jpeg``: the JPEG workload of ``pipeline_throughput.py`` (one 200 KB float32 array);
- ``large-arrays``: ``workloads.ArrayWorkload("large-arrays")`` (one 600 KB float32 array,
  normalised in place);
- ``temporaries``: 224x224x3 uint8 -> float32, ``/ 255`` into a new array, flip made
  contiguous: three 600 KB arrays per sample, as maps written without ``out=`` do.

Each (map, allocator) pair is visited once per round, interleaved with the order rotating;
each visit starts fresh workers (``STOKE_WORKER_MALLOC=keep`` in the environment they
inherit turns the setting on), skips the first batches, then times ``--batches`` batches.
Reported per map: samples/s with each allocator (median over rounds) and their ratio.

    python benchmarks/worker_allocator.py --rounds 3 --tag 2core
    python benchmarks/worker_allocator.py --quick        # a smoke run; the numbers mean nothing
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
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

SCHEMA = "stoke.bench.worker_allocator/1"
ALLOCATORS = ("glibc-default", "keep-freed")
MAPS = ("jpeg", "large-arrays", "temporaries")


def temporaries_transform(sample, rng: np.random.Generator):
    """Three fresh 600 KB arrays per sample: a cast, a division, a contiguous flip."""
    image, label = sample
    out = image.astype(np.float32) / 255.0
    if rng.random() < 0.5:
        out = out[:, ::-1]
    return np.ascontiguousarray(out, np.float32), label


def build(name: str, length: int, quick: bool):
    import stoke

    if name == "jpeg":
        workload = workloads.Workload(files=32 if quick else 512)
        jpegs, labels = workloads.load_samples(workload)
        source, fn, batch = workloads.JpegSamples(jpegs, labels, length), \
            workloads.Transform(workload), 64
    elif name == "large-arrays":
        workload = workloads.ArrayWorkload("large-arrays", 32 if quick else 256)
        source, fn, batch = workload.load(length), workload.transform(), 32
    else:
        distinct = 32 if quick else 256
        images = np.random.default_rng(0).integers(0, 256, (distinct, 224, 224, 3), np.uint8)
        labels = np.arange(distinct, dtype=np.int32) % 1000
        source = workloads.ArraySamples(images, labels, length)
        fn, batch = temporaries_transform, 32
    return stoke.from_sequence(source).shuffle(0).map(fn).batch(batch)


def visit(pipe, allocator: str, workers: int, skip: int, batches: int) -> float:
    """Fresh workers with ``allocator``; samples/s over ``batches`` after ``skip``."""
    if allocator == "keep-freed":
        os.environ["STOKE_WORKER_MALLOC"] = "keep"
    else:
        os.environ.pop("STOKE_WORKER_MALLOC", None)
    iterator = pipe.iter(executor="process", workers=workers, epoch=0)
    try:
        for _ in range(skip):
            next(iterator)
        started, samples = time.perf_counter(), 0
        for _ in range(batches):
            samples += len(next(iterator)[1])
        return samples / (time.perf_counter() - started)
    finally:
        iterator.close()
        os.environ.pop("STOKE_WORKER_MALLOC", None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=common.available_cores())
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batches", type=int, default=120, help="timed batches per visit")
    parser.add_argument("--maps", default=",".join(MAPS), help=f"of: {', '.join(MAPS)}")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one round")
    parser.add_argument("--tag", default=None)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    maps = [m.strip() for m in args.maps.split(",") if m.strip()]
    if unknown := [m for m in maps if m not in MAPS]:
        parser.error(f"unknown map(s) {', '.join(unknown)}; choose from: {', '.join(MAPS)}")
    rounds, batches, skip = (1, 3, 1) if args.quick else (args.rounds, args.batches, 10)
    length = 64 * (skip + batches + 4 * args.workers + 8)
    pipes = {name: build(name, length, args.quick) for name in maps}
    rates: dict[tuple[str, str], list[float]] = {}
    pairs = [(name, allocator) for name in maps for allocator in ALLOCATORS]
    for round_index, (name, allocator) in common.interleaved(pairs, rounds):
        rate = visit(pipes[name], allocator, args.workers, skip, batches)
        rates.setdefault((name, allocator), []).append(rate)
        print(f"round {round_index + 1}/{rounds}  {name:<13} {allocator:<14} {rate:>9,.0f} samples/s",
              flush=True)
    rows = []
    for name in maps:
        default, kept = (statistics.median(rates[(name, a)]) for a in ALLOCATORS)
        rows.append({"map": name, "glibc_default_samples_per_s": default,
                     "keep_freed_samples_per_s": kept, "ratio": kept / default,
                     "rounds": {a: rates[(name, a)] for a in ALLOCATORS}})
        print(f"{name:<13} glibc default {default:>9,.0f}  keep freed {kept:>9,.0f}  "
              f"x{kept / default:.2f}")
    result = {"schema": SCHEMA, "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "machine": common.machine_info(), "workers": args.workers, "rounds": rounds,
              "timed_batches": batches, "quick": args.quick, "rows": rows}
    tag = args.tag or socket.gethostname()
    out = Path(args.out) if args.out else HERE / "results" / f"worker_allocator-{tag}.json"
    common.write_json(out, result)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
