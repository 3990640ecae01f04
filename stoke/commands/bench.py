"""``stoke bench``: how fast is a pipeline alone, with each executor and worker count?

    stoke bench mypkg.data:make_pipeline          # a Pipeline, or a function returning one
    stoke bench path/to/data.py:pipe --baseline path/to/data.py:MyPyDataset
    stoke bench --example --quick                 # the built-in JPEG workload

Each setting (``inline``; ``thread`` and ``process`` with 1..N workers; ``auto``) gets fresh
workers, its first batch is timed apart (start-up), then it warms up and is timed for
``--seconds``; the consumer only counts rows, so what is measured is the pipeline alone.
Reported per setting: samples/s, CPU cores busy (this process and its workers), memory
(proportional set size of this process and its workers, ring included) and start-up time;
then which setting wins and by how much, what ``auto`` chose, and, with ``--baseline``, how
stoke compares to the loader you use today (an iterable of batches: a ``PyDataset`` or
``Sequence``, a generator function, or any iterable). ``--json`` keeps the numbers.

This module owns the command and the built-in example; measuring protocols for claims
across machines live in ``benchmarks/`` (``benchmarks/autotune.py`` reuses :func:`measure`).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

SCHEMA = "stoke.bench/1"


# ======================================================================================
# The built-in example: photo-like JPEGs -> decode, crop, flip, brightness, float32
# ======================================================================================


class ExampleJpegs:
    """``samples[i] -> (jpeg bytes, int32 label)``: ``files`` synthetic photo-like JPEGs
    (:mod:`stoke.commands.examples.images`; quality 90), made in memory once and read
    round-robin for ``length`` samples. Picklable: the bytes travel with it."""

    def __init__(self, files: int = 256, length: int = 8192, size: int = 160, seed: int = 0):
        from stoke.commands.examples.images import encode_jpeg, photo_like

        try:
            self.jpegs = [encode_jpeg(photo_like(np.random.default_rng([seed, i]), size))
                          for i in range(files)]
        except ImportError as exc:
            raise SystemExit(f"stoke bench --example: {exc}") from None
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int):
        return self.jpegs[int(index) % len(self.jpegs)], np.int32(int(index) % 1000)


def _decode(jpeg: bytes) -> np.ndarray:
    try:
        import simplejpeg

        return simplejpeg.decode_jpeg(jpeg, colorspace="RGB")
    except ImportError:
        import io

        from PIL import Image

        return np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"))


def example_transform(sample, rng: np.random.Generator, crop: int = 128):
    """Decode, random crop, random flip, random brightness, float32 in [0, 1] (+ delta)."""
    jpeg, label = sample
    image = _decode(jpeg)
    top = int(rng.integers(0, image.shape[0] - crop + 1))
    left = int(rng.integers(0, image.shape[1] - crop + 1))
    image = image[top:top + crop, left:left + crop]
    if rng.random() < 0.5:
        image = image[:, ::-1]
    out = image.astype(np.float32)
    out *= np.float32(1 / 255)
    out += np.float32(rng.uniform(-0.2, 0.2))
    return out, label


def example_pipeline(files: int = 256, batch_size: int = 64):
    """The built-in workload: the shape of work of ``benchmarks/workloads.py`` (JPEG decode
    with a well-kept decoder, crop, flip, brightness), self-contained."""
    import stoke

    return (stoke.from_sequence(ExampleJpegs(files)).shuffle(seed=0)
            .map(example_transform).batch(batch_size))


# ======================================================================================
# Measuring
# ======================================================================================


@dataclass
class Measurement:
    """One setting (or the baseline) measured."""

    name: str
    executor: str
    workers: int | str
    samples_per_s: float | None = None
    cpu_cores: float | None = None
    memory_mib: float | None = None
    startup_s: float | None = None
    seconds: float = 0.0
    batches: int = 0
    chosen: str | None = None  # auto: what it settled on
    settled_after_s: float | None = None
    tuning: dict | None = None
    error: str | None = None


def _rows(batch: Any) -> int:
    leaf = batch
    while isinstance(leaf, (tuple, list, dict)):
        if not leaf:
            return 1
        leaf = next(iter(leaf.values())) if isinstance(leaf, dict) else leaf[0]
    shape = getattr(leaf, "shape", None)
    return int(shape[0]) if shape else 1


def _processes():
    import psutil

    me = psutil.Process()
    try:
        return [me, *me.children(recursive=True)]
    except psutil.Error:
        return [me]


def _cpu_seconds() -> dict[int, float]:
    import psutil

    seconds = {}
    for proc in _processes():
        try:
            times = proc.cpu_times()
            seconds[proc.pid] = times.user + times.system
        except psutil.Error:
            pass
    return seconds


def _memory_mib() -> float | None:
    import psutil

    total = 0
    for proc in _processes():
        try:
            info = proc.memory_full_info()
            total += getattr(info, "pss", info.rss)
        except psutil.Error:
            pass
    return total / 2**20 if total else None


def time_stream(batches: Iterator[Any], warmup_s: float, seconds: float,
                settled: Callable[[], bool] | None = None, settle_cap_s: float = 0.0,
                on_progress: Callable[[str, float], None] | None = None) -> dict[str, Any]:
    """Time an iterator of batches: the first batch (start-up), a warm-up of ``warmup_s``
    (longer, up to ``settle_cap_s``, until ``settled()``), then ``seconds`` measured."""
    started = time.perf_counter()
    next(batches)
    startup = time.perf_counter() - started
    warm_start = time.perf_counter()
    while True:
        now = time.perf_counter()
        if now - warm_start >= warmup_s and (
                settled is None or settled() or now - warm_start >= settle_cap_s):
            break
        next(batches)
        if on_progress is not None:
            on_progress("warming up", 0.0)
    cpu_before = _cpu_seconds()
    begin = time.perf_counter()
    rows = count = 0
    last_report = begin
    try:
        while (now := time.perf_counter()) - begin < seconds:
            rows += _rows(next(batches))
            count += 1
            if on_progress is not None and now - last_report > 0.2:
                last_report = now
                on_progress("measuring", rows / max(now - begin, 1e-9))
    except StopIteration:
        pass
    elapsed = max(time.perf_counter() - begin, 1e-9)
    cpu_after = _cpu_seconds()
    used = sum(max(0.0, s - cpu_before.get(pid, s)) for pid, s in cpu_after.items())
    return {"samples_per_s": rows / elapsed if count else None, "cpu_cores": used / elapsed,
            "memory_mib": _memory_mib(), "startup_s": startup, "seconds": elapsed,
            "batches": count}


def measure(pipeline, executor: str, workers: int | str, warmup_s: float = 1.0,
            seconds: float = 3.0, settle_cap_s: float = 20.0,
            on_progress: Callable[[str, float], None] | None = None) -> Measurement:
    """Measure ``pipeline`` with fresh workers of one setting (``"auto"`` allowed: its
    warm-up lasts until tuning settles, at most ``settle_cap_s``)."""
    tuned = "auto" in (executor, workers)
    name = ("auto" if tuned and executor == workers == "auto" else
            "inline" if executor == "inline" else f"{executor} x {workers}")
    loader = pipeline.loader(workers=workers, executor=executor)
    try:
        iterator = loader.iter(epochs=None)
        numbers = time_stream(iterator, warmup_s, seconds,
                              settled=(lambda: iterator.tuning().settled) if tuned else None,
                              settle_cap_s=settle_cap_s, on_progress=on_progress)
        result = Measurement(name, executor, workers, **numbers)
        if tuned:
            report = iterator.tuning()
            result.chosen = f"{report.executor} x {report.workers}"
            result.settled_after_s = report.settled_after_s
            result.tuning = report.as_dict()
        return result
    except Exception as exc:  # noqa: BLE001 - one failing setting must not end the run
        return Measurement(name, executor, workers, error=f"{type(exc).__name__}: {exc}")
    finally:
        loader.close()


def measure_baseline(source: Any, warmup_s: float, seconds: float,
                     on_progress: Callable[[str, float], None] | None = None) -> Measurement:
    """Measure the user's current loader: an iterable of batches."""
    try:
        numbers = time_stream(_baseline_batches(source), warmup_s, seconds,
                              on_progress=on_progress)
        return Measurement("your loader", "-", "-", **numbers)
    except Exception as exc:  # noqa: BLE001
        return Measurement("your loader", "-", "-", error=f"{type(exc).__name__}: {exc}")


def _baseline_batches(source: Any) -> Iterator[Any]:
    """Batches of ``source`` forever (re-iterated when it ends): through Keras' own adapter
    for a ``PyDataset`` (so its workers are used as in ``fit``), by index for a
    ``Sequence``, by calling a generator function, or by iterating."""
    while True:
        produced = False
        for batch in _one_pass(source):
            produced = True
            yield batch
        if not produced:
            raise ValueError("the baseline loader produced no batch")


def _one_pass(source: Any) -> Iterator[Any]:
    is_pydataset = any(c.__name__ == "PyDataset" for c in type(source).__mro__)
    if is_pydataset:
        try:
            from keras.src.trainers.data_adapters.py_dataset_adapter import PyDatasetAdapter
        except ImportError:
            PyDatasetAdapter = None  # noqa: N806
        if PyDatasetAdapter is not None:
            adapter = PyDatasetAdapter(source, shuffle=False)
            adapter.on_epoch_begin()
            try:
                yield from adapter.get_numpy_iterator()
            finally:
                adapter.on_epoch_end()
            return
    if hasattr(source, "__len__") and hasattr(source, "__getitem__"):
        for index in range(len(source)):
            yield source[index]
        return
    if callable(source):
        yield from source()
        return
    yield from source


# ======================================================================================
# The command
# ======================================================================================


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pipeline", nargs="?", metavar="MODULE:ATTR",
                        help="a stoke Pipeline, or a zero-argument function returning one "
                             "(module path or path/to/file.py)")
    parser.add_argument("--example", action="store_true",
                        help="measure the built-in JPEG workload (decode, crop, flip, brightness)")
    parser.add_argument("--baseline", metavar="MODULE:ATTR",
                        help="your current loader, an iterable of batches (PyDataset, Sequence, "
                             "generator function...), to compare with")
    parser.add_argument("--executors", default="thread,process",
                        help="executors to try, comma-separated (default: thread,process)")
    parser.add_argument("--workers", help="worker counts to try, e.g. 1,2,4 (default: 1 to "
                                          "the cores, thinned out above 8)")
    parser.add_argument("--seconds", type=float, help="timed seconds per setting (default 3)")
    parser.add_argument("--warmup", type=float, help="warm-up seconds per setting (default 1)")
    parser.add_argument("--quick", action="store_true",
                        help="a short run: fewer worker counts, short windows")
    parser.add_argument("--no-auto", action="store_true", help="skip the workers=\"auto\" row")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")


def main(args: argparse.Namespace) -> int:
    from rich.console import Console

    out = Console()
    if not out.is_terminal:
        out = Console(width=140)  # piped or captured: room for the whole table
    err = Console(stderr=True)
    if bool(args.example) == bool(args.pipeline):
        err.print("[red]stoke bench: give a pipeline (MODULE:ATTR) or --example, not both "
                  "and not neither.[/red] Example: stoke bench mypkg.data:make_pipeline")
        return 2
    from stoke.executors.host import available_cores

    cores = available_cores()
    try:
        executors = _executors(args.executors)
        workers = _worker_counts(args.workers, cores, args.quick)
    except ValueError as exc:
        err.print(f"[red]stoke bench: {exc}[/red]")
        return 2
    seconds = args.seconds if args.seconds is not None else (0.6 if args.quick else 3.0)
    warmup = args.warmup if args.warmup is not None else (0.3 if args.quick else 1.0)
    settle_cap = 6.0 if args.quick else 20.0
    try:
        if args.example:
            err.print("making the example JPEGs...")
            pipeline, what = example_pipeline(files=128 if args.quick else 256), "built-in JPEG example"
        else:
            pipeline, what = load_pipeline(args.pipeline), args.pipeline
        baseline = load_object(args.baseline) if args.baseline else None
    except Exception as exc:  # noqa: BLE001 - the user's import: say what and where
        err.print(f"[red]stoke bench: could not load it: {type(exc).__name__}: {exc}[/red]")
        return 2

    plan = [("inline", 1)] + [(e, n) for e in executors for n in workers]
    if not args.no_auto:
        plan.append(("auto", "auto"))
    results = _run(plan, pipeline, baseline, warmup, seconds, settle_cap, err)
    _print_table(out, results, what, cores)
    verdict = _verdict(results)
    for line in verdict:
        out.print(line)
    if args.json:
        record = {"schema": SCHEMA, "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
                  "pipeline": what, "cores": cores, "seconds": seconds, "warmup_s": warmup,
                  "rows": [asdict(r) for r in results], "verdict": verdict}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(record, indent=2, default=str))
        out.print(f"results written to {args.json}")
    return 0 if any(r.samples_per_s for r in results) else 1


def _executors(text: str) -> list[str]:
    chosen = [e.strip() for e in text.split(",") if e.strip()]
    wrong = [e for e in chosen if e not in ("thread", "process")]
    if wrong or not chosen:
        raise ValueError(f"--executors takes thread and/or process. Received: {text!r}")
    return chosen


def _worker_counts(text: str | None, cores: int, quick: bool) -> list[int]:
    if text:
        try:
            counts = sorted({int(w) for w in text.split(",") if w.strip()})
        except ValueError:
            raise ValueError(f"--workers takes positive integers, e.g. 1,2,4. Received: {text!r}") from None
        if not counts or counts[0] < 1:
            raise ValueError(f"--workers takes positive integers, e.g. 1,2,4. Received: {text!r}")
        return counts
    if quick:
        return sorted({1, min(2, cores), cores} if cores <= 4 else {1, cores // 2, cores})
    if cores <= 8:
        return list(range(1, cores + 1))
    return sorted({1, 2, 4, 6, 8, *range(12, cores, 4), cores})


def _run(plan, pipeline, baseline, warmup, seconds, settle_cap, err) -> list[Measurement]:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    results: list[Measurement] = []
    columns = (TextColumn("{task.description:<34}"), BarColumn(),
               TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn())
    with Progress(*columns, console=err, transient=False) as progress:
        task = progress.add_task("starting", total=len(plan) + (baseline is not None))

        def show(label):
            def update(phase: str, rate: float) -> None:
                tail = f" {rate:,.0f} samples/s" if rate else ""
                progress.update(task, description=f"{label}: {phase}{tail}")
            return update

        if baseline is not None:
            show("your loader")("starting", 0.0)
            results.append(measure_baseline(baseline, warmup, seconds, show("your loader")))
            progress.advance(task)
        for executor, workers in plan:
            label = executor if executor in ("auto", "inline") else f"{executor} x {workers}"
            show(label)("starting", 0.0)
            results.append(measure(pipeline, executor, workers, warmup, seconds, settle_cap,
                                   show(label)))
            progress.advance(task)
        progress.update(task, description="done")
    return results


def _print_table(out, results: list[Measurement], what: str, cores: int) -> None:
    from rich.table import Table

    best = max((r.samples_per_s or 0 for r in results if r.name != "your loader"), default=0)
    table = Table(title=f"stoke bench: {what} ({cores} cores)")
    for header in ("setting", "samples/s", "vs fastest", "CPU cores", "memory MiB",
                   "start-up s", "note"):
        table.add_column(header, justify="left" if header in ("setting", "note") else "right",
                         no_wrap=header != "note")
    for r in results:
        if r.error:
            table.add_row(r.name, "-", "-", "-", "-", "-", f"failed: {r.error[:60]}")
            continue
        note = ""
        if r.chosen:
            settle = (f", settled after {r.settled_after_s:.1f} s"
                      if r.settled_after_s is not None else ", still tuning")
            note = f"chose {r.chosen}{settle}"
        table.add_row(
            r.name, f"{r.samples_per_s:,.0f}" if r.samples_per_s else "-",
            f"{r.samples_per_s / best:.2f}x" if r.samples_per_s and best else "-",
            f"{r.cpu_cores:.1f}" if r.cpu_cores is not None else "-",
            f"{r.memory_mib:,.0f}" if r.memory_mib else "-",
            f"{r.startup_s:.2f}" if r.startup_s is not None else "-", note)
    out.print(table)


def _verdict(results: list[Measurement]) -> list[str]:
    ok = [r for r in results if r.samples_per_s and r.name != "your loader"]
    if not ok:
        return ["No setting delivered a batch; see the errors above."]
    fixed = [r for r in ok if r.name != "auto"]
    best = max(fixed or ok, key=lambda r: r.samples_per_s)
    lines = [f"Fastest: {best.name}, {best.samples_per_s:,.0f} samples/s."]
    others = []
    for kind in ("inline", "thread", "process"):
        rows = [r for r in fixed if r.executor == kind and r is not best]
        if rows:
            top = max(rows, key=lambda r: r.samples_per_s)
            others.append(f"{best.samples_per_s / top.samples_per_s:.2f}x {top.name}")
    if others:
        lines.append("That is " + ", ".join(others) + " (the best of each other kind).")
    auto = next((r for r in ok if r.name == "auto"), None)
    if auto is not None:
        settle = (f"settled after {auto.settled_after_s:.1f} s" if auto.settled_after_s
                  is not None else "still tuning when timed")
        lines.append(f"auto chose {auto.chosen} ({settle}): {auto.samples_per_s:,.0f} samples/s, "
                     f"{auto.samples_per_s / best.samples_per_s:.2f}x the fastest fixed setting.")
    mine = next((r for r in results if r.name == "your loader"), None)
    if mine is not None:
        if mine.samples_per_s:
            lines.append(f"Your loader: {mine.samples_per_s:,.0f} samples/s; stoke's fastest is "
                         f"{best.samples_per_s / mine.samples_per_s:.2f}x that.")
        else:
            lines.append(f"Your loader could not be measured: {mine.error}")
    return lines


# ======================================================================================
# Loading what the user names
# ======================================================================================


def load_object(spec: str) -> Any:
    """``package.module:attr`` or ``path/to/file.py:attr`` (dotted attrs allowed)."""
    if ":" not in spec:
        raise ValueError(f"expected MODULE:ATTR (e.g. mypkg.data:pipe). Received: {spec!r}")
    module_part, attr = spec.rsplit(":", 1)
    if module_part.endswith(".py") or os.sep in module_part:
        path = Path(module_part).resolve()
        if not path.exists():
            raise FileNotFoundError(f"no file {path}")
        # importable by name from its folder, so that process workers can import it too
        if str(path.parent) not in sys.path:
            sys.path.insert(0, str(path.parent))
        module = importlib.import_module(path.stem)
    else:
        if os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())
        module = importlib.import_module(module_part)
    obj: Any = module
    for name in attr.split("."):
        obj = getattr(obj, name)
    return obj


def load_pipeline(spec: str):
    """A :class:`~stoke.Pipeline` from ``spec``: the object itself, or what a zero-argument
    function returns."""
    from stoke.data.pipeline import Pipeline

    obj = load_object(spec)
    if not isinstance(obj, Pipeline) and callable(obj):
        obj = obj()
    if not isinstance(obj, Pipeline):
        raise TypeError(f"{spec} is a {type(obj).__name__}, not a stoke Pipeline (or a function "
                        "returning one). Build one with stoke.from_sequence(...).map(...).batch(...)")
    if obj.batch_size is None:
        raise ValueError(f"{spec} is not batched: add .batch(batch_size)")
    return obj
