"""``stoke demo``: the whole story on a built-in example, in about a minute.

1. a naive Keras training run (a Python generator decoding JPEGs on the main thread, in
   float64), measured by the doctor: verdict, causes, fixes, predicted speedup;
2. the same training fed by stoke;
3. the input pipeline alone: one plain Python loop against stoke's workers;
4. the speedup reached on this machine, explained in one line (its cores, and who used
   them: the trainer, stoke's workers), next to the one the doctor predicted; a figure from
   another machine only as read from ``benchmarks/results/`` (that machine, that date).

Reports land in ``reports/`` (JSON and a single-file HTML).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--steps", type=int, default=150, help="training steps per run")
    parser.add_argument("--reports", default="reports", help="where the reports go")
    parser.add_argument("--backend", default=None,
                        help="Keras backend (default: KERAS_BACKEND, else jax)")


def _run_json(cmd: list[str], env: dict[str, str]) -> dict:
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    if out.returncode != 0:
        sys.stderr.write(out.stderr[-4000:])
        raise SystemExit(f"stoke demo: {' '.join(cmd)} failed with exit code {out.returncode}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def pipeline_alone(seconds: float = 4.0) -> dict[str, float]:
    """images/s of the example's decode+augment: one plain loop vs stoke's process workers."""
    import numpy as np

    import stoke
    from stoke.commands.examples.images import ensure_images, label_of
    from stoke.commands.examples.naive_train import decode_sample, read_file
    from stoke.executors.host import available_cores

    paths = [str(p) for p in ensure_images()]
    labels = [label_of(p) for p in paths]

    rng = np.random.default_rng(0)
    started, count = time.perf_counter(), 0
    while time.perf_counter() - started < seconds / 2:
        batch = [decode_sample((read_file(paths[i % len(paths)]), labels[i % len(paths)]), rng)
                 for i in range(count, count + 32)]
        np.stack([b[0] for b in batch])
        count += 32
    loop = count / (time.perf_counter() - started)

    pipe = (stoke.from_files(paths, labels=labels).shuffle(0).map(decode_sample)
            .batch(32).repeat(None))
    iterator = pipe.iter(workers=available_cores(), executor="process")
    try:
        next(iterator)
        started, count = time.perf_counter(), 0
        for _, y in iterator:
            count += len(y)
            if time.perf_counter() - started > seconds / 2:
                break
        fed = count / (time.perf_counter() - started)
    finally:
        iterator.close()
    return {"python_loop": loop, "stoke": fed, "workers": available_cores()}


def main(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    backend = args.backend or os.environ.get("KERAS_BACKEND") or "jax"
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
    reports = Path(args.reports)
    reports.mkdir(parents=True, exist_ok=True)
    python = sys.executable
    train = [python, "-m", "stoke.commands.examples.naive_train", "--steps", str(args.steps)]

    console.rule(f"[bold]stoke demo[/] — Keras on {backend}")
    with console.status("making the example images (once)"):
        from stoke.commands.examples.images import ensure_images

        ensure_images()

    console.print("\n[bold]1. The naive run, under the doctor[/]  "
                  f"(stoke doctor --steps {args.steps} -- python -m stoke.commands.examples.naive_train)")
    json_path, html_path = reports / "doctor.json", reports / "doctor.html"
    doctor = subprocess.run(
        [python, "-m", "stoke", "doctor", "--steps", str(args.steps + 5), "--json", str(json_path),
         "--html", str(html_path), "--", *train], env=env, timeout=900)
    diagnosis = json.loads(json_path.read_text()) if json_path.exists() else {}
    if doctor.returncode != 0 or not diagnosis:
        console.print(f"[red]the doctor exited with {doctor.returncode}[/]")

    console.print("\n[bold]2. The same training, naive and fed by stoke[/]")
    with console.status("training, naive"):
        naive = _run_json(train + ["--feed", "naive"], env)
    with console.status("training, fed by stoke"):
        fed = _run_json(train + ["--feed", "stoke"], env)
    console.print("\n[bold]3. The input pipeline alone[/]")
    with console.status("plain Python loop vs stoke"):
        alone = pipeline_alone()

    table = Table(title="what stoke changed", show_lines=False)
    table.add_column("")
    table.add_column("images/s", justify="right")
    table.add_column("vs naive", justify="right")
    table.add_row("training, naive generator", f"{naive['images_per_s']:,.0f}", "1.00x")
    speedup = fed["images_per_s"] / naive["images_per_s"]
    table.add_row("training, fed by stoke", f"{fed['images_per_s']:,.0f}", f"[bold]{speedup:.2f}x[/]")
    table.add_row("pipeline alone, plain loop", f"{alone['python_loop']:,.0f}", "")
    table.add_row(f"pipeline alone, stoke ({alone['workers']} workers)", f"{alone['stoke']:,.0f}",
                  f"{alone['stoke'] / alone['python_loop']:.2f}x loop")
    console.print(table)
    cores = alone["workers"]
    explained = who_uses_the_cores(naive, fed, cores)
    console.print(f"[bold]x{speedup:.2f}[/] on this machine: {explained}")
    predicted = diagnosis.get("predicted_speedup")
    verdict = diagnosis.get("verdict", "?")
    on_these_cores = next((f["evidence"].get("speedup_with_stoke_on_these_cores")
                           for f in diagnosis.get("findings", [])
                           if "speedup_with_stoke_on_these_cores" in f.get("evidence", {})), None)
    console.print(f"doctor's verdict: [bold]{verdict}[/]")
    if predicted:
        console.print(f"  bound if the input cost nothing: x{predicted:.2f}")
    if on_these_cores:
        console.print(f"  predicted with stoke on this machine's {cores} cores: "
                      f"x{on_these_cores:.2f}; measured: [bold]x{speedup:.2f}[/]")
    elsewhere = measured_elsewhere(backend)
    if elsewhere:
        console.print(f"  elsewhere: {elsewhere}")
    console.print(f"reports: {json_path}  {html_path}")
    (reports / "demo.json").write_text(json.dumps({
        "backend": backend, "naive": naive, "stoke": fed, "pipeline_alone": alone,
        "measured_speedup": speedup, "predicted_speedup": predicted,
        "predicted_with_stoke_on_these_cores": on_these_cores, "verdict": verdict,
        "cores": cores, "explained": explained, "elsewhere": elsewhere}, indent=1))
    return 0


def who_uses_the_cores(naive: dict, fed: dict, cores: int) -> str:
    """One line: the cores, and who used them in each run (measured CPU time)."""
    line = (f"{cores} cores. Naive: the trainer used {naive['trainer_cores']:.1f} of them "
            "(decoding and training in turn, on one thread).")
    if "workers" in fed:
        line += (f" stoke: the model {fed['trainer_cores']:.1f}, {fed['workers']} "
                 f"{fed.get('executor', 'process')} workers {fed['worker_cores']:.1f}")
        line += (" (the tuner gave them what the trainer left)." if fed["workers"] >= cores
                 else " (the tuner measured more workers deliver no more here).")
    others = max(naive.get("other_cores", 0.0), fed.get("other_cores", 0.0))
    if others >= 0.25:
        line += f" Other processes took up to {others:.1f} cores meanwhile: a busy machine."
    return line


def measured_elsewhere(backend: str, results: Path | None = None) -> str | None:
    """What stoke reached on another machine, read from ``benchmarks/results`` of this
    checkout (``fit_gpu-*.json`` for ``backend``), with that machine and date; None when
    there is no such file (an installed package ships no results)."""
    results = results or Path(__file__).resolve().parents[2] / "benchmarks" / "results"
    for path in sorted(results.glob("fit_gpu-*.json")):
        try:
            record = json.loads(path.read_text())
            if record.get("backend") != backend:
                continue
            rows = {row["feeder"]: row for row in record["rows"]}
            share = rows["stoke"]["share_of_ceiling"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        machine = record.get("machine") or {}
        where = machine.get("gpu") or machine.get("host") or path.stem.split("-")[1]
        cores = machine.get("cores") or record.get("cores")
        return (f"{where}, {cores} cores, {str(record.get('date', '?'))[:10]}: stoke fed "
                f"Keras at {share:.0%} of the model-alone rate ({path.name})")
    return None
