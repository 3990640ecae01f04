"""A/B throughput: two source trees of stoke, measured against each other in one run.

Did a change make stoke's process executor faster or slower? Give the tree before it (A) and
the tree after it (B): for each workload of ``pipeline_throughput.py`` (``jpeg``, ``tabular``,
``large-arrays``) this script measures the ``stoke-process`` row of each tree, alternating A
and B in rounds, and reports B/A with its spread.

Method:

- each visit is a fresh ``python TREE/benchmarks/pipeline_throughput.py --only stoke-process
  --rounds 1`` with ``PYTHONPATH=TREE``: the tree's own stoke and its own benchmark harness
  (its workload data, transform and timed window, ``benchmarks/README.md`` "Method"), in a
  process that shares no warm state with the other side. Before measuring, each tree is
  checked to import its own ``stoke`` (not an installed one), and the JSON records a hash of
  each side's harness files (``harness_differs`` names those that differ);
- rounds: every round visits every workload, A and B back to back, the order of A and B
  alternating from round to round (ABBA...), so drift on a shared machine falls on both;
- per workload: the median of each side's rounds, ``ratio`` = B median / A median, and the
  paired ratios of each round (B / the A of the same round); ``ratio_min`` .. ``ratio_max``
  is their spread, and ``within_spread`` says 1.0 lies in it (no difference the rounds can
  tell apart). More rounds narrow the spread: a claim wants 5 or more on a quiet machine.

    git archive 45420c7 | tar -x -C /tmp/ab_old
    python benchmarks/ab_throughput.py --a /tmp/ab_old --b .            # 5 rounds
    python benchmarks/ab_throughput.py --a /tmp/ab_old --b . --quick    # a smoke run
    python benchmarks/ab_throughput.py --plot-only benchmarks/results/ab_throughput-HOST.json

Writes ``benchmarks/results/ab_throughput-TAG.json`` and, with matplotlib, the PNG beside it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
import common  # noqa: E402

SCHEMA = "stoke.bench.ab_throughput/1"
WORKLOADS = ("jpeg", "tabular", "large-arrays")
ROW = "stoke-process"  # the row of pipeline_throughput.py that each visit measures
SIDES = ("A", "B")
HARNESS = ("pipeline_throughput.py", "workloads.py", "common.py")
COLOURS = {"A": "#8c8c8c", "B": "#e8590c"}


# -- the trees -------------------------------------------------------------------------------
def side_env(tree: Path) -> dict[str, str]:
    """The environment of a visit: this one, with ``PYTHONPATH`` the tree alone."""
    return {**os.environ, "PYTHONPATH": str(tree), "TF_CPP_MIN_LOG_LEVEL": "2"}


def describe_tree(tree: Path, timeout_s: float = 120.0) -> dict[str, Any]:
    """Where the tree's stoke imports from (it must be the tree's own), its git commit when
    it is a checkout, and a hash of its benchmark harness. Raises SystemExit with the reason
    when the tree cannot be measured."""
    script = tree / "benchmarks" / "pipeline_throughput.py"
    if not script.is_file():
        raise SystemExit(f"ab_throughput: {tree} has no benchmarks/pipeline_throughput.py; give "
                         "the root of a stoke source tree (e.g. `git archive REV | tar -x -C "
                         "/tmp/ab_old`).")
    done = subprocess.run([sys.executable, "-c", "import stoke; print(stoke.__file__)"],
                          env=side_env(tree), cwd=tree, capture_output=True, text=True,
                          timeout=timeout_s, check=False)
    if done.returncode != 0:
        raise SystemExit(f"ab_throughput: `import stoke` fails in {tree}:\n{done.stderr[-2000:]}")
    stoke_file = Path(done.stdout.strip().splitlines()[-1]).resolve()
    if tree.resolve() not in stoke_file.parents:
        raise SystemExit(f"ab_throughput: with PYTHONPATH={tree}, stoke imports from "
                         f"{stoke_file}, not from the tree; is {tree} a stoke source tree?")
    commit = subprocess.run(["git", "-C", str(tree), "rev-parse", "HEAD"], capture_output=True,
                            text=True, timeout=30, check=False)
    harness = {}
    for name in HARNESS:
        path = tree / "benchmarks" / name
        harness[name] = hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.is_file() else None
    return {
        "path": str(tree.resolve()),
        "stoke_file": str(stoke_file),
        "git_commit": commit.stdout.strip() if commit.returncode == 0 else None,
        "harness_sha256": harness,
    }


# -- one visit -------------------------------------------------------------------------------
def visit(tree: Path, workload: str, args: argparse.Namespace, scratch: Path, label: str
          ) -> dict[str, Any]:
    """One ``stoke-process`` measurement of ``workload`` with ``tree``'s code, in a fresh
    process; returns its images/s, start-up and CPU per image."""
    out = scratch / f"{label}.json"
    command = [sys.executable, str(tree / "benchmarks" / "pipeline_throughput.py"),
               "--workload", workload, "--only", ROW, "--rounds", "1",
               "--workers", str(args.workers), "--out", str(out)]
    if args.quick:
        command.append("--quick")
    if args.data_dir:
        command += ["--data-dir", str(args.data_dir)]
    started = time.perf_counter()
    try:
        done = subprocess.run(command, env=side_env(tree), cwd=tree, capture_output=True,
                              text=True, timeout=args.visit_timeout_s, check=False)
    except subprocess.TimeoutExpired:
        raise SystemExit(f"ab_throughput: {label} ran past --visit-timeout-s "
                         f"{args.visit_timeout_s:g}: {' '.join(command)}") from None
    if done.returncode != 0 or not out.is_file():
        raise SystemExit(f"ab_throughput: {label} failed (exit {done.returncode}): "
                         f"{' '.join(command)}\n--- stdout\n{done.stdout[-3000:]}\n"
                         f"--- stderr\n{done.stderr[-3000:]}")
    row = next(r for r in json.loads(out.read_text())["rows"] if r["loader"] == ROW)
    if row["status"] != "ok" or not row["images_per_s"]:
        raise SystemExit(f"ab_throughput: {label}: the {ROW} row is {row['status']}: {row['note']}")
    return {
        "images_per_s": row["images_per_s"],
        "startup_s": row["startup_s"],
        "cpu_us_per_image": row["cpu_us_per_image"],
        "leftover_processes": row["leftover_processes"],
        "wall_s": round(time.perf_counter() - started, 2),
    }


def schedule(workloads: list[str], rounds: int) -> list[tuple[int, str, str]]:
    """``(round, workload, side)`` in the order they run: every workload each round, A and B
    back to back, their order alternating from round to round."""
    order = []
    for round_index in range(rounds):
        sides = SIDES if round_index % 2 == 0 else SIDES[::-1]
        order += [(round_index, workload, side) for workload in workloads for side in sides]
    return order


# -- the summary -----------------------------------------------------------------------------
def summarise(visits: list[dict[str, Any]], workloads: list[str]) -> dict[str, dict[str, Any]]:
    """Per workload: each side's rates by round and median, B/A of the medians, the paired
    ratios of the rounds and their spread."""
    summary = {}
    for workload in workloads:
        rates: dict[str, dict[int, float]] = {side: {} for side in SIDES}
        startups: dict[str, list[float]] = {side: [] for side in SIDES}
        for v in visits:
            if v["workload"] == workload:
                rates[v["side"]][v["round"]] = v["images_per_s"]
                startups[v["side"]].append(v["startup_s"])
        paired = [rates["B"][r] / rates["A"][r] for r in sorted(rates["A"]) if r in rates["B"]]
        medians = {side: statistics.median(rates[side].values()) for side in SIDES}
        ratio = medians["B"] / medians["A"]
        summary[workload] = {
            "unit": "images/s" if workload == "jpeg" else "samples/s",
            "a_per_s_rounds": [rates["A"][r] for r in sorted(rates["A"])],
            "b_per_s_rounds": [rates["B"][r] for r in sorted(rates["B"])],
            "a_per_s": medians["A"],
            "b_per_s": medians["B"],
            "a_spread": _spread(list(rates["A"].values())),
            "b_spread": _spread(list(rates["B"].values())),
            "ratio": ratio,
            "ratio_rounds": paired,
            "ratio_min": min(paired),
            "ratio_max": max(paired),
            "within_spread": min(paired) <= 1.0 <= max(paired),
            "a_startup_s": statistics.median(startups["A"]),
            "b_startup_s": statistics.median(startups["B"]),
        }
    return summary


def _spread(values: list[float]) -> float:
    """(fastest - slowest) / median: how much one side's own rounds differ."""
    return (max(values) - min(values)) / statistics.median(values)


def print_summary(result: dict[str, Any]) -> None:
    print(f"\nB/A, stoke's process executor, {result['settings']['workers']} workers, "
          f"{result['settings']['rounds']} round(s)  (A: {result['trees']['A']['path']}, "
          f"B: {result['trees']['B']['path']})")
    print(f"{'workload':<14}{'A':>12}{'B':>12}{'B/A':>8}  {'rounds B/A':<20}{'A spread':>9}"
          f"{'B spread':>9}")
    for name, w in result["workloads"].items():
        print(f"{name:<14}{w['a_per_s']:>12,.0f}{w['b_per_s']:>12,.0f}{w['ratio']:>8.3f}  "
              f"{w['ratio_min']:.3f} .. {w['ratio_max']:.3f}{'':<6}{w['a_spread']:>9.1%}"
              f"{w['b_spread']:>9.1%}")


# -- the plot --------------------------------------------------------------------------------
def plot(result: dict[str, Any], out: Path) -> Path:
    """Two panels: each side's rate per workload (median bar, whiskers from the slowest to
    the fastest round), and B/A per workload (the median ratio, each round's paired ratio as
    a dot, a dashed line at 1.0)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["workloads"])
    fig, (rates_ax, ratio_ax) = plt.subplots(
        1, 2, figsize=(11, 1.6 + 0.9 * len(names)), gridspec_kw={"width_ratios": [3, 2]})
    positions = list(range(len(names)))[::-1]  # first workload on top
    for offset, side in ((0.2, "A"), (-0.2, "B")):
        key = side.lower()
        for y, name in zip(positions, names):
            w = result["workloads"][name]
            rounds = w[f"{key}_per_s_rounds"]
            top = max(r / w["a_per_s"] for r in [*w["a_per_s_rounds"], *w["b_per_s_rounds"]])
            median = w[f"{key}_per_s"] / w["a_per_s"]  # relative to A: workloads differ 1000x
            rates_ax.barh(y + offset, median, height=0.38, color=COLOURS[side],
                          label=side if name == names[0] else None,
                          xerr=[[median - min(rounds) / w["a_per_s"]],
                                [max(rounds) / w["a_per_s"] - median]],
                          capsize=3, error_kw={"elinewidth": 0.8, "ecolor": "#333333"})
            rates_ax.text(top * 1.02, y + offset, f"{w[f'{key}_per_s']:,.0f} {w['unit']}",
                          va="center", fontsize=8)
    rates_ax.set_yticks(positions, names)
    rates_ax.set_xlabel("rate relative to A's median (whiskers: slowest to fastest round)")
    rates_ax.set_xlim(0, 1.6)
    rates_ax.legend(fontsize=8, loc="lower right")
    rates_ax.grid(axis="x", alpha=0.3)
    for y, name in zip(positions, names):
        w = result["workloads"][name]
        ratio_ax.plot(w["ratio_rounds"], [y] * len(w["ratio_rounds"]), "o", color=COLOURS["B"],
                      alpha=0.45, markersize=5)
        ratio_ax.plot([w["ratio"]], [y], "D", color="#222222", markersize=7)
        ratio_ax.text(max([w["ratio"], *w["ratio_rounds"]]) + 0.01, y + 0.15,
                      f"{w['ratio']:.3f}", fontsize=8)
    ratio_ax.axvline(1.0, color=COLOURS["A"], linestyle="--", linewidth=1)
    ratio_ax.set_yticks(positions, names)
    ratio_ax.set_ylim(-0.7, len(names) - 0.3)
    ratio_ax.set_xlabel("B/A (diamond: of the medians; dots: each round)")
    ratio_ax.grid(axis="x", alpha=0.3)
    machine, settings = result["machine"], result["settings"]
    fig.suptitle(f"A/B: stoke's process executor, B/A throughput\n{machine['cores']} cores "
                 f"({machine.get('cpu_model') or 'cpu'}), {settings['workers']} workers, "
                 f"{settings['rounds']} rounds{', quick' if settings['quick'] else ''}, "
                 f"{result['date'][:10]}", fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def plot_if_possible(result: dict[str, Any], out: Path) -> None:
    if not common.installed("matplotlib"):
        print("no plot: matplotlib is not installed (it is in requirements-dev.txt)")
        return
    print(f"wrote {plot(result, out)}")


# -- main ------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    cores = common.available_cores()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--a", type=Path, help="tree A, the reference (e.g. /tmp/ab_old)")
    parser.add_argument("--b", type=Path, default=HERE.parent,
                        help="tree B, the change (default: this checkout)")
    parser.add_argument("--workloads", default=",".join(WORKLOADS),
                        help=f"comma-separated, of {', '.join(WORKLOADS)} (default: all)")
    parser.add_argument("--rounds", type=int, default=None, help="default 5; --quick: 1")
    parser.add_argument("--workers", type=int, default=cores,
                        help=f"stoke's process workers (default: the cores, {cores})")
    parser.add_argument("--quick", action="store_true",
                        help="pipeline_throughput's tiny sizes and one round: a smoke run")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="where the JPEGs are cached (pipeline_throughput's --data-dir)")
    parser.add_argument("--visit-timeout-s", type=float, default=None,
                        help="give up on a visit after this long (default 900; --quick: 300)")
    parser.add_argument("--tag", default=None, help="results file suffix (default: hostname)")
    parser.add_argument("--out", type=Path, default=None,
                        help="results JSON (default benchmarks/results/ab_throughput-TAG.json)")
    parser.add_argument("--plot-only", type=Path, default=None, metavar="JSON",
                        help="redraw the PNG of a saved result and exit")
    args = parser.parse_args(argv)
    if args.plot_only:
        return args
    if args.a is None:
        parser.error("--a (tree A) is required, e.g. --a /tmp/ab_old")
    args.workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    unknown = [w for w in args.workloads if w not in WORKLOADS]
    if unknown or not args.workloads:
        parser.error(f"unknown workload(s) {unknown}; choose from: {', '.join(WORKLOADS)}")
    args.rounds = args.rounds or (1 if args.quick else 5)
    if args.rounds < 1 or args.workers < 1:
        parser.error(f"--rounds and --workers must be >= 1. Received: rounds={args.rounds}, "
                     f"workers={args.workers}")
    args.visit_timeout_s = args.visit_timeout_s or (300.0 if args.quick else 900.0)
    args.a, args.b = args.a.resolve(), args.b.resolve()  # visits run in the tree's folder
    args.data_dir = args.data_dir.resolve() if args.data_dir else None
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.plot_only:
        result = json.loads(args.plot_only.read_text())
        if result.get("schema") != SCHEMA:
            print(f"ab_throughput: {args.plot_only} is not an A/B result (schema "
                  f"{result.get('schema')!r})", file=sys.stderr)
            return 2
        plot_if_possible(result, args.plot_only.with_suffix(".png"))
        return 0
    trees = {"A": args.a, "B": args.b}
    described = {side: describe_tree(tree) for side, tree in trees.items()}
    load_start = common.load_average()
    started = time.time()
    order = schedule(args.workloads, args.rounds)
    visits = []
    with tempfile.TemporaryDirectory(prefix="stoke-ab-") as scratch:
        for number, (round_index, workload, side) in enumerate(order, 1):
            label = f"r{round_index + 1}-{workload}-{side}"
            measured = visit(trees[side], workload, args, Path(scratch), label)
            visits.append({"round": round_index, "workload": workload, "side": side, **measured})
            print(f"[{number}/{len(order)}] round {round_index + 1}  {workload:<13} {side}  "
                  f"{measured['images_per_s']:>10,.0f}/s  start-up {measured['startup_s']:.2f} s",
                  flush=True)
    machine = common.machine_info()
    machine["loadavg_start"] = load_start
    machine["loadavg_end"] = common.load_average()
    result = {
        "schema": SCHEMA,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "duration_s": round(time.time() - started, 1),
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "machine": machine,
        "trees": described,
        "harness_differs": [name for name in HARNESS if described["A"]["harness_sha256"][name]
                            != described["B"]["harness_sha256"][name]],
        "settings": {
            "row": ROW, "workers": args.workers, "rounds": args.rounds, "quick": args.quick,
            "order": "every workload each round, A and B back to back, alternating AB / BA",
            "visit": "a fresh `TREE/benchmarks/pipeline_throughput.py --only stoke-process "
                     "--rounds 1` with PYTHONPATH=TREE",
        },
        "workloads": summarise(visits, args.workloads),
        "visits": visits,
    }
    print_summary(result)
    if result["harness_differs"]:
        print(f"note: the trees' {', '.join(result['harness_differs'])} differ: the ratio "
              "includes any change there to the workload or the timed window")
    tag = args.tag or socket.gethostname()
    out = args.out or HERE / "results" / f"ab_throughput-{tag}.json"
    common.write_json(out, result)
    print(f"wrote {out}")
    plot_if_possible(result, out.with_suffix(".png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
