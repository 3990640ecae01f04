"""Ray executor throughput: going through a Ray cluster against the local process executor.

Every row streams the same samples (:class:`workloads.JpegSamples`) through the same
plain-Python transform (:func:`workloads.transform`: decode, random crop, flip, brightness,
float32) in batches, and the trainer side touches each batch (no model). One Ray cluster on
this machine, made with ``ray.cluster_utils.Cluster``: a head with no CPU (where this script,
the "trainer", runs) and two worker nodes of one CPU each, so every batch crosses from a
worker node's object store to the head's, as it would across machines.

Rows:

- ``process-1``, ``process-2``: stoke's local process executor with 1 and 2 workers;
- ``ray-1node``, ``ray-2nodes``: stoke's Ray executor (Ray tasks), its tasks held to one
  worker node or free to use both. ``ray-1node / process-1`` is the cost of going through
  Ray at equal CPUs; ``ray-2nodes / ray-1node`` is the scaling from one node to two;
- ``ray-data-2nodes`` and ``ray-data-2nodes-reservation``: the same work as a Ray Data
  pipeline (``from_items(chunks).map_batches(...).iter_batches()``, order preserved), with
  Ray Data's per-operator resource reservation off and on: the alternative the Ray executor
  was measured against (see ``stoke/executors/ray.py``).

Method (as ``pipeline_throughput.py``): rows are interleaved, each round visits every row
once (the order rotates), each visit builds its loader fresh and times the first batch
(``startup_s``), warms up (at least ``--warmup`` batches and at least as long as start-up
took), then times ``--batches`` batches. img/s is the median over rounds (all rounds are in
the JSON). On a 2-core machine the trainer, Ray's own daemons and the workers share the two
cores, so expect Ray rows to be below ``process-2`` here; the point of Ray is more machines.

    python benchmarks/ray_throughput.py                # writes results/ray_throughput.json
    python benchmarks/ray_throughput.py --quick        # a smoke run
    python benchmarks/ray_throughput.py --plot         # also results/ray_throughput.png
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import common  # noqa: E402
import workloads  # noqa: E402
from common import Running, interleaved, touch, warm_up, write_json  # noqa: E402

import stoke  # noqa: E402
from stoke.executors.ray import RayPool  # noqa: E402

RESULTS = HERE / "results" / "ray_throughput.json"
OBJECT_STORE_BYTES = 300 * 2**20


# -- set-up --------------------------------------------------------------------------------
Settings = common.Window  # batch size, timed batches, warm-up batches, rounds, seed


@dataclass
class Bench:
    settings: Settings
    pipe: stoke.Pipeline
    nodes: list[Any]  # the cluster's worker nodes


def machine_info() -> dict[str, Any]:
    machine = common.machine_info(("stoke", "ray", "numpy", "simplejpeg", "pillow"),
                                  keys=("host", "cores", "cpu_model", "memory_gib", "python",
                                        "versions"))
    return {**machine, "load_average_at_start": common.load_average()}


def start_cluster(worker_nodes: int):
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "object_store_memory": OBJECT_STORE_BYTES, "include_dashboard": False})
    nodes = [cluster.add_node(num_cpus=1, object_store_memory=OBJECT_STORE_BYTES)
             for _ in range(worker_nodes)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)
    # The workload's classes live in this folder: send them by value, as a user's script.
    ray.cloudpickle.register_pickle_by_value(workloads)
    return cluster, nodes


# -- the rows ------------------------------------------------------------------------------
def stoke_process(workers: int) -> Callable[[Bench], Running]:
    def build(bench: Bench) -> Running:
        loader = bench.pipe.loader(executor="process", workers=workers)
        return Running(iter(loader.iter()), loader.close)

    return build


def stoke_ray(nodes: int) -> Callable[[Bench], Running]:
    def build(bench: Bench) -> Running:
        options = None
        if nodes < len(bench.nodes):
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            options = {"scheduling_strategy": NodeAffinitySchedulingStrategy(
                bench.nodes[0].node_id, soft=False)}
        from stoke.executors.options import EXECUTORS

        loader = bench.pipe.loader(executor="inline")
        if "ray" in EXECUTORS and options is None:
            loader = bench.pipe.loader(executor="ray", workers=nodes)
        else:  # until the loader routes executor="ray" (or for node pinning)
            loader.scheduler.resources.pool = RayPool(loader.program, nodes, task_options=options)
        return Running(iter(loader.iter()), loader.close)

    return build


def _run_chunk_for_ray_data(batch: dict[str, np.ndarray], program_box: list, epoch: int
                            ) -> dict[str, np.ndarray]:
    """One chunk of indices -> its images and labels (what a Ray Data user would write)."""
    from stoke.executors.ray import _program_of

    program = _program_of(program_box[0])
    images, labels = [], []
    for index in batch["chunk"][0]:
        image, label = program.run(int(index), epoch)
        images.append(image)
        labels.append(label)
    return {"image": np.stack(images), "label": np.asarray(labels, np.int32)}


def ray_data(reservation: bool) -> Callable[[Bench], Running]:
    def build(bench: Bench) -> Running:
        import ray
        from ray.data import DataContext

        context = DataContext.get_current()
        context.op_resource_reservation_enabled = reservation
        context.execution_options.preserve_order = True
        context.enable_progress_bars = False
        chunks = bench.pipe.plan_spec.chunks(0)
        program_box = [ray.put(bench.pipe.program)]
        dataset = (ray.data.from_items([{"chunk": c} for c in chunks],
                                       override_num_blocks=len(chunks))
                   .map_batches(_run_chunk_for_ray_data, batch_size=1, num_cpus=1,
                                fn_kwargs={"program_box": program_box, "epoch": 0}))
        stream = iter(dataset.iter_batches(batch_size=None, batch_format="numpy"))
        batches = ((b["image"], b["label"]) for b in stream)
        return Running(batches, batches.close)  # closing stops Ray Data's executor

    return build


ROWS: dict[str, tuple[str, Callable[[Bench], Running]]] = {
    "process-1": ("stoke process executor, 1 worker", stoke_process(1)),
    "process-2": ("stoke process executor, 2 workers", stoke_process(2)),
    "ray-1node": ("stoke Ray executor, tasks on 1 worker node (1 CPU)", stoke_ray(1)),
    "ray-2nodes": ("stoke Ray executor, 2 worker nodes (1 CPU each)", stoke_ray(2)),
    "ray-data-2nodes": ("Ray Data map_batches, 2 worker nodes, reservation off",
                        ray_data(False)),
    "ray-data-2nodes-reservation": ("Ray Data map_batches, 2 worker nodes, reservation on",
                                    ray_data(True)),
}


# -- measuring -----------------------------------------------------------------------------
def _batch_of_bytes(nbytes: int) -> np.ndarray:
    return np.ones(nbytes, np.uint8)  # written, so its pages are real


def transfer_ceiling(bench: Bench, batch_bytes: int, batches: int = 30) -> dict[str, Any]:
    """How fast Ray alone moves one batch's bytes from a worker node to this (head) node,
    with nothing computed: the most batches/s any Ray row can reach on this cluster."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    remote = ray.remote(num_cpus=1, scheduling_strategy=NodeAffinitySchedulingStrategy(
        bench.nodes[0].node_id, soft=False))(_batch_of_bytes)
    ray.get(remote.remote(batch_bytes))
    target = np.empty(batch_bytes, np.uint8)
    target[:] = 0
    started = time.perf_counter()
    in_flight = [remote.remote(batch_bytes) for _ in range(4)]
    for done in range(batches):
        ready, in_flight = ray.wait(in_flight, num_returns=1)
        target[:] = ray.get(ready[0])  # as the Ray executor does: one copy into the ring
        if done + len(in_flight) + 1 < batches:
            in_flight.append(remote.remote(batch_bytes))
    elapsed = time.perf_counter() - started
    return {"batch_bytes": batch_bytes, "batches_per_s": round(batches / elapsed, 1),
            "gib_per_s": round(batches * batch_bytes / elapsed / 2**30, 3),
            "images_per_s_ceiling": round(batches * bench.settings.batch_size / elapsed, 1)}


def measure_once(name: str, bench: Bench) -> dict[str, Any]:
    settings = bench.settings
    started = time.perf_counter()
    running = ROWS[name][1](bench)
    try:
        batches = running.batches
        touch(next(batches))
        startup_s = time.perf_counter() - started
        warmed, _ = warm_up(batches, settings, startup_s)
        timed_started = time.perf_counter()
        images = 0
        for _ in range(settings.batches):
            image, _label = batch = next(batches)
            touch(batch)
            images += len(image)
        elapsed = time.perf_counter() - timed_started
    finally:
        running.close()
    return {"startup_s": round(startup_s, 3), "warmup_batches": warmed,
            "images": images, "seconds": round(elapsed, 4),
            "images_per_s": round(images / elapsed, 1)}


def run(names: list[str], settings: Settings, workload: workloads.Workload) -> dict[str, Any]:
    import ray

    jpegs, labels = workloads.load_samples(workload)
    samples = workloads.JpegSamples(jpegs, labels, length=settings.stream_samples)
    pipe = (stoke.from_sequence(samples).shuffle(settings.seed)
            .map(workloads.Transform(workload)).batch(settings.batch_size))
    machine = machine_info()
    cluster, nodes = start_cluster(2)
    bench = Bench(settings, pipe, nodes)
    visits: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    try:
        batch_bytes = settings.batch_size * (workload.crop_size ** 2 * 3 * 4 + 4)
        ceiling = transfer_ceiling(bench, batch_bytes)
        print(f"Ray transfer alone, worker node -> head: {ceiling['gib_per_s']} GiB/s, "
              f"{ceiling['images_per_s_ceiling']} img/s at most", flush=True)
        for round_index, name in interleaved(names, settings.rounds):
            visit = measure_once(name, bench)
            visits[name].append(visit)
            print(f"round {round_index + 1}/{settings.rounds}  {name:28s} "
                  f"{visit['images_per_s']:8.1f} img/s  start-up {visit['startup_s']:.2f} s",
                  flush=True)
    finally:
        ray.shutdown()
        cluster.shutdown()
    rows = []
    for name in names:
        rates = [v["images_per_s"] for v in visits[name]]
        rows.append({"name": name, "description": ROWS[name][0],
                     "images_per_s": round(statistics.median(rates), 1),
                     "best_images_per_s": max(rates),
                     "startup_s": round(statistics.median(v["startup_s"] for v in visits[name]), 3),
                     "rounds": visits[name]})
    by_name = {r["name"]: r["images_per_s"] for r in rows}

    def ratio(a: str, b: str) -> float | None:
        return round(by_name[a] / by_name[b], 3) if a in by_name and b in by_name else None

    return {
        "benchmark": "ray_throughput",
        "when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine,
        "cluster": {"head_cpus": 0, "worker_nodes": 2, "cpus_per_worker_node": 1,
                    "object_store_bytes_per_node": OBJECT_STORE_BYTES},
        "workload": workload.as_dict(),
        "settings": {**settings.__dict__, "stream_batches": settings.stream_batches},
        "ray_transfer_ceiling": ceiling,
        "rows": rows,
        "ratios": {
            "ray_overhead_1cpu (ray-1node / process-1)": ratio("ray-1node", "process-1"),
            "ray_scaling (ray-2nodes / ray-1node)": ratio("ray-2nodes", "ray-1node"),
            "ray_vs_local_all_cores (ray-2nodes / process-2)": ratio("ray-2nodes", "process-2"),
            "ray_data_vs_ray_tasks (ray-data-2nodes / ray-2nodes)":
                ratio("ray-data-2nodes", "ray-2nodes"),
            "ray_data_reservation_on_vs_off": ratio("ray-data-2nodes-reservation",
                                                    "ray-data-2nodes"),
        },
    }


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(rows) + 1.5))
    names = [r["name"] for r in rows][::-1]
    ax.barh(names, [r["images_per_s"] for r in rows][::-1], color="#4c72b0")
    ax.set_xlabel("images / s (median over rounds)")
    ax.set_title(f"stoke through Ray vs local, {result['machine']['cores']} cores, "
                 f"batch {result['settings']['batch_size']}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--batches", type=int, default=30, help="timed batches per visit")
    parser.add_argument("--warmup", type=int, default=5, help="warm-up batches per visit")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--files", type=int, default=256, help="distinct JPEG files")
    parser.add_argument("--only", default="", help="comma-separated rows: " + ", ".join(ROWS))
    parser.add_argument("--quick", action="store_true", help="a smoke run (seconds)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--plot", action="store_true", help="also draw a PNG beside the JSON")
    args = parser.parse_args(argv)
    if args.quick:
        args.batches, args.warmup, args.rounds = 4, 1, 1
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(ROWS)
    unknown = [n for n in names if n not in ROWS]
    if unknown:
        parser.error(f"unknown rows {unknown}; choose from {', '.join(ROWS)}")
    settings = Settings(args.batch_size, args.batches, args.warmup, args.rounds)
    result = run(names, settings, workloads.Workload(files=args.files))
    write_json(args.out, result)
    print(json.dumps(result["ratios"], indent=2))
    print(f"wrote {args.out}")
    if args.plot:
        plot(result, args.out.with_suffix(".png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
