"""Time to the first batch of a shard-based source (TFRecord) against its number of shards:
does the first batch wait for every shard to be indexed (``index="eager"``) or only for the
shards it reads (``index="lazy"``, the default past 1,024 shards)?

Two families of rows, each a line over the shard count, measured in one run:

- ``brace-lazy``: ``from_tfrecord("part-{000000..N-1}.tfrecord")``, not shuffled, for N up
  to 1,000,000; only the files the first batches read exist (a brace pattern is never
  listed), so N costs nothing to write;
- ``glob-eager`` / ``glob-lazy``: a glob over N real one-chunk files, shuffled (the first
  shards are anywhere in the list), indexed all at once or lazily.

Each point: ``pipe.iter()`` with fresh process workers to the first batch, seconds (median
over ``--rounds``). The ratios printed and saved are each row's time at its largest N over
its time at its smallest N: about 1 means the first batch does not depend on the shard
count. Goal (issue 15): the first batch of a 1,000,000-file source within 2 s.

    python benchmarks/first_batch.py --rounds 3 --tag 2core
    python benchmarks/first_batch.py --quick          # a smoke run; numbers mean little
    python benchmarks/first_batch.py --plot benchmarks/results/first_batch-X.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))  # stoke from this checkout
import common  # noqa: E402

SCHEMA = "stoke.bench.first_batch/1"
BATCH = 32
RECORDS_PER_FILE = 8
RECORD_BYTES = 200


def record_id(record):
    return int(bytes(record[:8]).decode())


def write_files(folder: Path, count: int, width: int) -> None:
    from stoke.data.formats.tfrecord import write_tfrecord

    folder.mkdir(parents=True, exist_ok=True)
    for shard in range(count):
        records = [f"{shard * RECORDS_PER_FILE + r:08d}".encode().ljust(RECORD_BYTES, b".")
                   for r in range(RECORDS_PER_FILE)]
        write_tfrecord(str(folder / f"part-{shard:0{width}d}.tfrecord"), records)


def first_batch_s(pipe, workers: int) -> float:
    started = time.perf_counter()
    with pipe.iter(workers=workers, executor="process") as it:
        batch = next(it)
    elapsed = time.perf_counter() - started
    assert len(batch) == BATCH
    return elapsed


def visit(row: str, count: int, folders: dict, workers: int) -> float:
    import stoke

    if row == "brace-lazy":
        pattern = str(folders["brace"] / f"part-{{000000..{count - 1:06d}}}.tfrecord")
        pipe = stoke.from_tfrecord(pattern, index="lazy").map(record_id).batch(BATCH)
    else:
        index = row.split("-")[1]
        pipe = stoke.from_tfrecord(str(folders[count] / "part-*.tfrecord"), index=index,
                                   buffer_size=64).shuffle(1).map(record_id).batch(BATCH)
    return first_batch_s(pipe, workers)


def plot(result: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for row, points in result["rows"].items():
        counts = sorted(points, key=int)
        ax.plot([int(c) for c in counts], [points[c] for c in counts], marker="o",
                label=f"{row} ({result['ratios'][row]:.2f}x from fewest to most shards)")
    ax.set_xscale("log")
    ax.set_ylim(bottom=0)
    ax.set_xlabel("shards (files)")
    ax.set_ylabel("seconds to the first batch (median)")
    m = result["machine"]
    ax.set_title(f"first batch vs shard count: {m['cores']} cores, {result['workers']} "
                 "process workers", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=min(2, common.available_cores()))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--glob-counts", default="100,1000,10000")
    parser.add_argument("--brace-counts", default="100,10000,1000000")
    parser.add_argument("--quick", action="store_true", help="small counts, one round")
    parser.add_argument("--tag", default=None)
    parser.add_argument("--out", default=None)
    parser.add_argument("--plot", default=None, help="draw this result JSON and exit")
    args = parser.parse_args(argv)
    if args.plot:
        path = Path(args.plot)
        plot(json.loads(path.read_text()), path.with_suffix(".png"))
        print(f"wrote {path.with_suffix('.png')}")
        return 0
    if args.quick:
        args.rounds, args.glob_counts = 1, "100,2000"
    glob_counts = [int(c) for c in args.glob_counts.split(",")]
    brace_counts = [int(c) for c in args.brace_counts.split(",")]
    points = [("brace-lazy", c) for c in brace_counts]
    points += [(row, c) for c in glob_counts for row in ("glob-eager", "glob-lazy")]
    times: dict[str, dict[int, list[float]]] = {}
    with tempfile.TemporaryDirectory(prefix="stoke-first-batch-") as tmp:
        folders: dict = {"brace": Path(tmp) / "brace"}
        # the brace rows read shard after shard: these files cover the batches in flight
        write_files(folders["brace"], 64, width=6)
        for count in glob_counts:
            folders[count] = Path(tmp) / f"glob-{count}"
            write_files(folders[count], count, width=7)
        for round_index, (row, count) in common.interleaved(points, args.rounds):
            seconds = visit(row, count, folders, args.workers)
            times.setdefault(row, {}).setdefault(count, []).append(seconds)
            print(f"round {round_index + 1}/{args.rounds}  {row:<11} {count:>9,} shards  "
                  f"{seconds:6.2f} s", flush=True)
    rows = {row: {str(c): statistics.median(t) for c, t in sorted(by_count.items())}
            for row, by_count in times.items()}
    ratios = {}
    for row, by_count in rows.items():
        counts = sorted(by_count, key=int)
        ratios[row] = by_count[counts[-1]] / by_count[counts[0]]
        print(f"{row:<11} {by_count[counts[0]]:.2f} s at {int(counts[0]):,} shards, "
              f"{by_count[counts[-1]]:.2f} s at {int(counts[-1]):,}: {ratios[row]:.2f}x")
    result = {"schema": SCHEMA,
              "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "machine": common.machine_info(), "load_average": common.load_average(),
              "workers": args.workers, "rounds": args.rounds, "quick": args.quick,
              "batch": BATCH, "records_per_file": RECORDS_PER_FILE,
              "rows": rows, "ratios": ratios}
    tag = args.tag or socket.gethostname()
    out = Path(args.out) if args.out else HERE / "results" / f"first_batch-{tag}.json"
    common.write_results(out, result, plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
