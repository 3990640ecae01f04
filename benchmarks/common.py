"""What the benchmark scripts share: the record of the machine, the timed visit, the results file.

What it owns:

- the environment: :func:`available_cores`, :func:`installed`, :func:`version`, and
  :func:`machine_info` (host, cores, CPU model, memory, Python, package versions: each script
  names the fields its schema records) with :func:`load_average`;
- the visit protocol of the throughput scripts (``benchmarks/README.md``, "Method"):
  :class:`Window` (batch size, timed batches, warm-up, rounds), :class:`Running` (a built
  loader's batches and how to close it), :func:`touch` (what a trainer does to a batch at the
  least), :func:`warm_up` (at least N batches and at least as long as start-up took) and
  :func:`interleaved` (every row once per round, the order rotating);
- :func:`write_json`, how every script writes its results (:func:`write_results`: with its
  plot), and :func:`plot_command` and :func:`save_figure`, how a plotting script reads them
  back and draws them.

What it leaves to others: the workload (data and transform) is ``workloads.py``; each script
owns its rows, its statistics and its JSON schema. Nothing here imports a framework
(TensorFlow, JAX, torch, Ray, Keras), so any script can import it first.

The scripts run as ``python benchmarks/X.py`` and import this module as ``common``, the way
they import ``workloads``.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import platform
import socket
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")

# -- the environment -----------------------------------------------------------------------
# A package recorded under a name that is not its one distribution: the first one installed.
DISTRIBUTIONS = {"tensorflow": ("tensorflow-cpu", "tensorflow")}

# Every field machine_info knows, in the order a record lists them.
MACHINE_KEYS = ("host", "cores", "logical_cpus", "cpu_model", "memory_gib", "python",
                "platform", "versions", "keras_backend")
# The packages whose versions a throughput record lists by default: stoke and its peers.
PACKAGES = ("stoke", "numpy", "simplejpeg", "pillow", "tensorflow", "keras", "torch", "grain",
            "jax")


def available_cores() -> int:
    """The cores this process may run on (its affinity), which is what workers can use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS
        return os.cpu_count() or 1


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def version(*distributions: str) -> str | None:
    """The version of the first of ``distributions`` that is installed, else None."""
    for distribution in distributions:
        try:
            return importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def versions(packages: Iterable[str]) -> dict[str, str | None]:
    """``{package: version or None}``; a package is its distribution (see DISTRIBUTIONS)."""
    return {name: version(*DISTRIBUTIONS.get(name, (name,))) for name in packages}


def cpu_model() -> str:
    model = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f
                          if line.startswith("model name")), model)
    except OSError:
        pass
    return model


def _memory_gib() -> float:
    import psutil

    return round(psutil.virtual_memory().total / 2**30, 1)


def machine_info(packages: Iterable[str] = PACKAGES, keys: Sequence[str] = MACHINE_KEYS
                 ) -> dict[str, Any]:
    """The machine a result was measured on: ``keys`` of :data:`MACHINE_KEYS` (each script's
    schema records its own set), ``versions`` of ``packages``. ``keras_backend`` is the one
    ``KERAS_BACKEND`` names (Keras is not imported here)."""
    fields: dict[str, Callable[[], Any]] = {
        "host": socket.gethostname,
        "cores": available_cores,
        "logical_cpus": os.cpu_count,
        "cpu_model": cpu_model,
        "memory_gib": _memory_gib,
        "python": platform.python_version,
        "platform": platform.platform,
        "versions": lambda: versions(packages),
        "keras_backend": lambda: os.environ.get("KERAS_BACKEND", "tensorflow (default)"),
    }
    unknown = [k for k in keys if k not in fields]
    if unknown:
        raise ValueError(f"machine_info knows {', '.join(MACHINE_KEYS)}. Received: {unknown}")
    return {key: fields[key]() for key in keys}


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (how quiet the machine was), or None."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):  # pragma: no cover - not on Linux/macOS
        return None


# -- the timed visit -----------------------------------------------------------------------
@dataclass(frozen=True)
class Window:
    """How each visit of a loader is timed: after the first batch (start-up), a warm-up of at
    least ``warmup_batches`` batches and at least as long as start-up took, then
    ``batches`` timed batches of ``batch_size``; ``rounds`` visits per row."""

    batch_size: int
    batches: int  # timed batches per visit
    warmup_batches: int  # after the first batch, before timing
    rounds: int
    seed: int = 0

    @property
    def max_warmup_batches(self) -> int:
        """The time-based warm-up stops here at the latest."""
        return max(self.warmup_batches, 10 * (self.warmup_batches + self.batches))

    @property
    def stream_batches(self) -> int:
        """Batches in the stream every loader is given: more than any visit reads."""
        return 1 + self.max_warmup_batches + self.batches

    @property
    def stream_samples(self) -> int:
        return self.stream_batches * self.batch_size


@dataclass
class Running:
    """A built loader: its batches, and how to shut it down."""

    batches: Iterator[Any]
    close: Callable[[], None] = lambda: None


def touch(batch: Any) -> float:
    """What a trainer does to a batch at the least: read it (one image and one label)."""
    x, y = batch[0], batch[1]
    return float(np.asarray(x[0]).sum()) + float(np.asarray(y[0]))


def warm_up(batches: Iterator[Any], window: Window, startup_s: float) -> tuple[int, float]:
    """Read and touch batches after the first: at least ``window.warmup_batches`` and at least
    ``startup_s`` of wall time, at most ``window.max_warmup_batches``. Whatever the workers
    made ahead while the first batch was awaited is drained by then. Returns (batches read,
    the sum of what :func:`touch` read)."""
    started = time.perf_counter()
    count, sink = 0, 0.0
    while count < window.max_warmup_batches and (
            count < window.warmup_batches or time.perf_counter() - started < startup_s):
        sink += touch(next(batches))
        count += 1
    return count, sink


def interleaved(items: Sequence[T], rounds: int) -> Iterator[tuple[int, T]]:
    """``(round index, item)``: each round visits every item once, in an order that rotates by
    one from round to round, so that drift on a shared machine falls on every item alike."""
    items = list(items)
    for round_index in range(rounds):
        shift = round_index % max(1, len(items))
        for item in items[shift:] + items[:shift]:
            yield round_index, item


# -- results -------------------------------------------------------------------------------
def write_json(path: str | os.PathLike, record: Any,
               default: Callable[[Any], Any] | None = None) -> Path:
    """Write a results record (indented, with a final newline), making its folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2, default=default) + "\n")
    return path


def write_results(path: str | os.PathLike, record: Any,
                  plot: Callable[[Any, Path], Any] | None = None) -> Path:
    """Write a benchmark's results record (:func:`write_json`) and, given ``plot(record,
    png_path)``, its plot beside it (said and skipped when matplotlib is missing)."""
    path = write_json(path, record)
    print(f"wrote {path}")
    if plot is not None:
        png = Path(path).with_suffix(".png")
        try:
            plot(record, png)
            print(f"wrote {png}")
        except ImportError:
            print("matplotlib is not installed: no plot")
    return path


def plot_command(argv: list[str] | None, description: str, tool: str, kind: str,
                 is_kind: Callable[[dict], bool], draw: Callable[[dict, Path], Path]) -> int:
    """The command line of a plotting script (``tool RESULTS [-o PNG]``): reads a ``kind``
    results JSON (``is_kind`` tells one), draws it with ``draw(result, png)`` beside it or at
    ``-o``; 2 after saying on stderr why not (unreadable, another kind, no matplotlib, nothing
    to draw: ``draw`` raised ValueError)."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("results", help=f"a JSON written by {kind}.py")
    parser.add_argument("-o", "--out", default=None, help="PNG path (default: beside the JSON)")
    args = parser.parse_args(argv)
    path = Path(args.results)
    try:
        result = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        print(f"{tool}: cannot read {path}: {exc}", file=sys.stderr)
        return 2
    if not isinstance(result, dict) or not is_kind(result):
        print(f"{tool}: {path} is not a {kind} result.", file=sys.stderr)
        return 2
    if not importlib.util.find_spec("matplotlib"):
        print(f"{tool}: matplotlib is not installed; `pip install matplotlib` (it is in "
              "requirements-dev.txt).", file=sys.stderr)
        return 2
    try:
        out = draw(result, Path(args.out) if args.out else path.with_suffix(".png"))
    except ValueError as exc:
        print(f"{tool}: {path}: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


def save_figure(fig, out: Path) -> Path:
    """A matplotlib figure laid out and written to ``out`` (its folder made), then closed."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
