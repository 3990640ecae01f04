"""Record formats on the JPEG workload: stoke reading TFRecord, Parquet, ArrayRecord and
WebDataset tar shards against ``from_sequence`` over the same samples in memory, against
tf.data reading the same TFRecords (its parallel map with ``numpy_function``) and grain
reading the same ArrayRecords; and remote shards over HTTP with a per-request latency
against the same shards on local disk. Plus the time to the first batch of a
1,000,000-file ``from_files`` brace pattern.

The samples are the workload's JPEGs (``workloads.py``), written once per run into each
format (``--shards`` files each): TFRecord and ArrayRecord records are serialized
``tf.train.Example``s ``{image, label}`` (map: ``stoke.parse_example`` + the transform);
Parquet has columns ``image`` and ``label``; tar samples ``{key}.jpg`` and ``{key}.cls``.
Every stoke row runs ``--workers`` process workers, shuffled, batch 64; each visit starts
fresh workers, warms up (at least ``--skip`` batches and at least as long as start-up took:
``common.warm_up``), then times ``--batches`` batches; rows are visited
once per round, interleaved, the order rotating; medians over rounds. Goals (issue 15):
each format >= 0.9x its in-memory ``from_sequence`` row; HTTP at 20 ms/request >= 0.8x
local. The HTTP server is ``tests/core/formats_helpers.RangeServer`` (127.0.0.1, ranges), in
its own process.

    python benchmarks/formats_throughput.py --rounds 3 --tag 2core
    python benchmarks/formats_throughput.py --quick          # a smoke run; numbers mean nothing
    python benchmarks/formats_throughput.py --plot benchmarks/results/formats_throughput-X.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import os
import socket
import statistics
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # `workloads` must import the same way in every worker
sys.path.insert(0, str(HERE.parent))  # and stoke (and the tests' HTTP server) from this checkout
import common  # noqa: E402
import workloads  # noqa: E402

SCHEMA = "stoke.bench.formats_throughput/1"
BATCH = 64
# row -> (kind, the in-memory row it is compared with)
ROWS = {
    "memory-examples": ("baseline", None),
    "memory-jpegs": ("baseline", None),
    "tfrecord": ("stoke", "memory-examples"),
    "array_record": ("stoke", "memory-examples"),
    "parquet": ("stoke", "memory-jpegs"),
    "webdataset": ("stoke", "memory-jpegs"),
    "tfrecord-http": ("stoke", "tfrecord"),
    "webdataset-http": ("stoke", "webdataset"),
    "tf.data-tfrecord": ("peer", "tfrecord"),
    "grain-array_record": ("peer", "array_record"),
}


# -- maps (module level: workers import them from here) ------------------------------------
def example_transform(record, rng):
    import stoke

    example = stoke.parse_example(record)
    return workloads.transform((example["image"][0], np.int32(example["label"][0])), rng)


def row_transform(row, rng):
    return workloads.transform((row["image"], np.int32(row["label"])), rng)


def tar_transform(sample, rng):
    return workloads.transform((sample["jpg"], np.int32(int(sample["cls"]))), rng)


def jpeg_transform(sample, rng):
    return workloads.transform(sample, rng)


# -- data ----------------------------------------------------------------------------------
def write_formats(folder: Path, jpegs: list[bytes], labels: np.ndarray, shards: int) -> dict:
    """Every format's files for the same samples; returns what each row reads."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from array_record.python.array_record_module import ArrayRecordWriter

    from stoke.data.formats.example_proto import serialize_example
    from stoke.data.formats.tfrecord import write_tfrecord

    examples = [serialize_example({"image": j, "label": [int(y)]}) for j, y in zip(jpegs, labels)]
    parts = np.array_split(np.arange(len(jpegs)), shards)
    files: dict[str, list[str]] = {"tfrecord": [], "array_record": [], "parquet": [], "tar": []}
    for s, part in enumerate(parts):
        path = folder / f"train-{s:03d}.tfrecord"
        write_tfrecord(str(path), [examples[i] for i in part])
        files["tfrecord"].append(str(path))
        path = folder / f"train-{s:03d}.array_record"
        writer = ArrayRecordWriter(str(path), "group_size:1")
        for i in part:
            writer.write(examples[i])
        writer.close()
        files["array_record"].append(str(path))
        path = folder / f"train-{s:03d}.parquet"
        pq.write_table(pa.table({"image": [jpegs[i] for i in part],
                                 "label": labels[part].astype(np.int32)}), str(path),
                       row_group_size=256)
        files["parquet"].append(str(path))
        path = folder / f"shard-{s:03d}.tar"
        with tarfile.open(path, "w") as tar:
            for i in part:
                for ext, data in (("jpg", jpegs[i]), ("cls", str(int(labels[i])).encode())):
                    info = tarfile.TarInfo(f"{i:07d}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        files["tar"].append(str(path))
    return {"examples": examples, "files": files}


# -- rows ----------------------------------------------------------------------------------
def stoke_pipe(name: str, data: dict, jpegs, labels, url: str | None):
    import stoke

    files = data["files"]
    shards = len(files["tfrecord"])
    if name == "memory-examples":
        return stoke.from_sequence(data["examples"]).map(example_transform)
    if name == "memory-jpegs":
        return stoke.from_sequence(workloads.JpegSamples(jpegs, labels)).map(jpeg_transform)
    if name == "tfrecord":
        return stoke.from_tfrecord(files["tfrecord"]).map(example_transform)
    if name == "tfrecord-http":
        return stoke.from_tfrecord(f"{url}/train-{{000..{shards - 1:03d}}}.tfrecord").map(
            example_transform)
    if name == "array_record":
        return stoke.from_array_record(files["array_record"]).map(example_transform)
    if name == "parquet":
        return stoke.from_parquet(files["parquet"], columns=["image", "label"]).map(row_transform)
    if name == "webdataset":
        return stoke.from_webdataset(files["tar"]).map(tar_transform)
    if name == "webdataset-http":
        return stoke.from_webdataset(f"{url}/shard-{{000..{shards - 1:03d}}}.tar").map(
            tar_transform)
    raise KeyError(name)


def visit_stoke(pipe, workers: int, skip: int, batches: int) -> float:
    started = time.perf_counter()
    it = pipe.shuffle(0).batch(BATCH).repeat(None).iter(workers=workers, executor="process")
    try:
        return timed(it, skip, batches, started)
    finally:
        it.close()


def timed(batches_it, skip: int, batches: int, started: float) -> float:
    """The shared visit (``common.py``): the first batch (start-up), a warm-up of at least
    ``skip`` batches and at least as long as start-up took, then ``batches`` timed."""
    common.touch(next(batches_it))
    window = common.Window(BATCH, batches, skip, 1)
    common.warm_up(batches_it, window, time.perf_counter() - started)
    begun = time.perf_counter()
    for _ in range(batches):
        common.touch(next(batches_it))
    return batches * BATCH / (time.perf_counter() - begun)


def visit_tf_data(files: list[str], skip: int, batches: int) -> float:
    import tensorflow as tf

    started = time.perf_counter()
    spec = {"image": tf.io.FixedLenFeature([], tf.string),
            "label": tf.io.FixedLenFeature([1], tf.int64)}
    counter = iter(range(1 << 62))

    def python_part(jpeg, label):
        return workloads.transform((jpeg, np.int32(label[0])),
                                   workloads.sample_rng(0, 0, next(counter)))

    def load(record):
        parsed = tf.io.parse_single_example(record, spec)
        image, label = tf.numpy_function(python_part, [parsed["image"], parsed["label"]],
                                         (tf.float32, tf.int32), stateful=False)
        return image, label

    ds = (tf.data.TFRecordDataset(files, num_parallel_reads=tf.data.AUTOTUNE).repeat()
          .shuffle(1024, seed=0).map(load, num_parallel_calls=tf.data.AUTOTUNE)
          .batch(BATCH).prefetch(tf.data.AUTOTUNE))
    return timed(iter(ds), skip, batches, started)


def visit_grain(files: list[str], workers: int, skip: int, batches: int) -> float:
    import grain
    from array_record.python.array_record_data_source import ArrayRecordDataSource

    def fn(index_and_record):
        index, record = index_and_record
        return example_transform(record, workloads.sample_rng(0, 0, index))

    started = time.perf_counter()
    source = ArrayRecordDataSource(files)
    ds = (grain.MapDataset.source(source).shuffle(seed=0).repeat()
          .map_with_index(lambda i, r: (i, r)).map(fn).batch(BATCH)
          .to_iter_dataset(grain.ReadOptions(num_threads=workers, prefetch_buffer_size=4 * BATCH)))
    return timed(iter(ds), skip, batches, started)


def read_cost_us(pipe, samples: int = 512) -> float:
    """Microseconds to read one sample from the pipeline's source in this process (shuffled
    order, warm, best of 3): the per-sample cost of the format alone, no map, no workers;
    robust on a busy machine where rates are not."""
    source = pipe.source
    order = np.random.default_rng(0).permutation(len(source))[:samples]
    for i in order[:32]:
        source[int(i)]
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for i in order:
            source[int(i)]
        best = min(best, (time.perf_counter() - started) / len(order))
    return best * 1e6


def first_batch_million_files(folder: Path, workers: int) -> float:
    """Seconds from ``pipe.iter()`` to the first batch of a 1,000,000-file brace pattern
    (only the files the first batches read exist), process workers started included."""
    import stoke

    sub = folder / "million"
    sub.mkdir(exist_ok=True)
    for i in range(BATCH * (2 * workers + 4)):
        (sub / f"img-{i:07d}.bin").write_bytes(b"x" * 100)
    pipe = stoke.from_files(str(sub / "img-{0000000..0999999}.bin")).map(len).batch(BATCH)
    started = time.perf_counter()
    with pipe.iter(workers=workers, executor="process") as it:
        next(it)
    return time.perf_counter() - started


# -- plot ----------------------------------------------------------------------------------
def plot(result: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"baseline": "#8c8c8c", "stoke": "#e8590c", "peer": "#3b6ea8"}
    rows = [r for r in result["rows"] if r["status"] == "ok"]
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(rows) + 1.5))
    positions = list(range(len(rows)))[::-1]
    ax.barh(positions, [r["images_per_s"] for r in rows],
            color=[colours[r["kind"]] for r in rows])
    ax.set_yticks(positions, [r["name"] for r in rows])
    for y, r in zip(positions, rows):
        label = f"  {r['images_per_s']:,.0f}"
        if r.get("ratio"):
            label += f"  ({r['ratio']:.2f}x {r['compared_with']})"
        ax.text(r["images_per_s"], y, label, va="center", fontsize=8)
    ax.set_xlim(0, max(r["images_per_s"] for r in rows) * 1.7)
    ax.set_xlabel("images/s (median over rounds)")
    m = result["machine"]
    ax.set_title(f"record formats, JPEG workload: {m['cores']} cores, {result['workers']} "
                 f"workers, HTTP latency {result['latency_ms']} ms/request", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=120)


# -- main ----------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=common.available_cores())
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batches", type=int, default=60, help="timed batches per visit")
    parser.add_argument("--skip", type=int, default=8, help="batches before timing")
    parser.add_argument("--files", type=int, default=2048, help="distinct JPEGs written")
    parser.add_argument("--shards", type=int, default=16)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--only", default=None, help=f"rows, of: {', '.join(ROWS)}")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one round")
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
        args.rounds, args.batches, args.skip, args.files, args.shards = 1, 4, 1, 256, 4
    names = list(ROWS) if not args.only else [n.strip() for n in args.only.split(",")]
    if unknown := [n for n in names if n not in ROWS]:
        parser.error(f"unknown row(s) {', '.join(unknown)}; choose from: {', '.join(ROWS)}")
    from tests.core.formats_helpers import ServerProcess

    workload = workloads.Workload(files=args.files)
    jpegs, labels = workloads.load_samples(workload)
    rates: dict[str, list[float]] = {}
    index_s: dict[str, list[float]] = {}  # seconds to index (or open) the source
    read_us: dict[str, float] = {}  # microseconds to read one sample, in this process
    status: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="stoke-formats-") as tmp:
        folder = Path(tmp)
        data = write_formats(folder, jpegs, labels, args.shards)
        server = ServerProcess(folder, latency_s=args.latency_ms / 1000)
        with server as url:
            for round_index, name in common.interleaved(names, args.rounds):
                if status.get(name, "ok") != "ok":
                    continue
                try:
                    if name == "tf.data-tfrecord":
                        rate = visit_tf_data(data["files"]["tfrecord"], args.skip, args.batches)
                    elif name == "grain-array_record":
                        rate = visit_grain(data["files"]["array_record"], args.workers,
                                           args.skip, args.batches)
                    else:
                        started = time.perf_counter()
                        pipe = stoke_pipe(name, data, jpegs, labels, url)
                        len(pipe)  # indexing (shard-based formats), not part of the rate
                        index_s.setdefault(name, []).append(time.perf_counter() - started)
                        if name not in read_us and not name.endswith("-http"):
                            read_us[name] = read_cost_us(pipe)
                        rate = visit_stoke(pipe, args.workers, args.skip, args.batches)
                except ImportError as exc:
                    status[name] = f"skipped: {exc}"
                    print(f"{name}: {status[name]}")
                    continue
                rates.setdefault(name, []).append(rate)
                print(f"round {round_index + 1}/{args.rounds}  {name:<20} {rate:>9,.0f} img/s",
                      flush=True)
            first_batch_s = first_batch_million_files(folder, args.workers)
    print(f"first batch of a 1,000,000-file brace pattern: {first_batch_s:.2f} s")
    medians = {n: statistics.median(r) for n, r in rates.items()}
    rows = []
    for name in names:
        kind, against = ROWS[name]
        row = {"name": name, "kind": kind, "status": status.get(name, "ok"),
               "images_per_s": medians.get(name), "images_per_s_rounds": rates.get(name, []),
               "compared_with": against, "ratio": None,
               "index_s": statistics.median(index_s[name]) if name in index_s else None,
               "read_us_per_sample": read_us.get(name)}
        if name in medians and against in medians:
            row["ratio"] = medians[name] / medians[against]
            read = (f"read {read_us[name]:.1f} us/sample" if name in read_us else
                    "read cost not measured: one request at a time would time the latency")
            print(f"{name:<20} {medians[name]:>9,.0f} img/s  {row['ratio']:.2f}x {against}"
                  f"  ({read})")
        rows.append(row)
    result = {"schema": SCHEMA, "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "machine": common.machine_info(), "load_average": common.load_average(),
              "workload": workload.as_dict(),
              "workers": args.workers, "rounds": args.rounds, "timed_batches": args.batches,
              "shards": args.shards, "latency_ms": args.latency_ms, "quick": args.quick,
              "first_batch_million_files_s": first_batch_s,
              "rows": rows}
    tag = args.tag or socket.gethostname()
    out = Path(args.out) if args.out else HERE / "results" / f"formats_throughput-{tag}.json"
    common.write_results(out, result, plot)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
