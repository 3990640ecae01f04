"""Draw a results JSON of ``pipeline_throughput.py`` as a PNG (matplotlib; reads, never measures).

    python benchmarks/plot.py benchmarks/results/pipeline_throughput-HOST.json [-o out.png]

A comparison becomes horizontal bars: images/s per loader (the median over rounds; the
whisker spans the slowest to the fastest round), coloured by kind (baseline, stoke, peer,
reference), each labelled with its ratio to the plain loop; a dashed line marks the loop.
A ``--scaling`` result becomes a line of images/s against workers with the linear ideal
(the fewest-worker rate times the workers) and, where measured, the machine's ceiling (W
independent plain loops on W cores, no stoke), each point labelled with its efficiency vs
linear and vs the machine.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from common import plot_command, save_figure

COLOURS = {"baseline": "#8c8c8c", "stoke": "#e8590c", "peer": "#3b6ea8", "reference": "#b8c7d9",
           "machine": "#2b8a3e"}


def _subtitle(result: dict[str, Any]) -> str:
    machine, workload, settings = result["machine"], result["workload"], result["settings"]
    what = workload.get("describe") or (  # results written before other workloads existed
        f"{workload['image_size']}px JPEG -> crop {workload['crop_size']}, {workload['decoder']}")
    return (f"{machine['cores']} cores ({machine.get('cpu_model') or 'cpu'}), {what}, "
            f"batch {settings['batch_size']}, {settings['rounds']} rounds, {result['date'][:10]}")


def _unit(result: dict[str, Any]) -> str:
    return "images/s" if result["workload"].get("name", "jpeg") == "jpeg" else "samples/s"


def plot_compare(result: dict[str, Any], ax) -> None:
    rows = [r for r in result["rows"] if r["status"] == "ok" and r["images_per_s"]]
    skipped = [r for r in result["rows"] if r["status"] != "ok"]
    names = [r["name"] for r in rows]
    values = [r["images_per_s"] for r in rows]
    low = [r["images_per_s"] - min(r["images_per_s_rounds"]) for r in rows]
    high = [max(r["images_per_s_rounds"]) - r["images_per_s"] for r in rows]
    colours = [COLOURS.get(r["kind"], "#666666") for r in rows]
    positions = list(range(len(rows)))[::-1]  # first row on top
    ax.barh(positions, values, color=colours, xerr=[low, high], capsize=3,
            error_kw={"elinewidth": 0.8, "ecolor": "#333333"})
    ax.set_yticks(positions, names)
    for y, r in zip(positions, rows):
        label = f"{r['images_per_s']:,.0f}"
        if r.get("ratio_to_loop"):
            label += f"  ({r['ratio_to_loop']:.2f}x loop)"
        right = max([r["images_per_s"], *r["images_per_s_rounds"]])
        ax.text(right, y, "  " + label, va="center", fontsize=8)
    loop = result["summary"].get("loop_images_per_s")
    if loop:
        ax.axvline(loop, color=COLOURS["baseline"], linestyle="--", linewidth=1)
    ax.set_xlabel(f"{_unit(result)} (median over rounds; whiskers: slowest to fastest round)")
    ax.set_xlim(0, max([1.0] + [max(r["images_per_s_rounds"]) for r in rows]) * 1.4)
    if skipped:
        ax.text(0.99, 0.01, "not run: " + "; ".join(f"{r['name']} ({r['note']})" for r in skipped),
                transform=ax.transAxes, ha="right", va="bottom", fontsize=7, color="#555555")
    from matplotlib.patches import Patch

    kinds = [k for k in COLOURS if any(r["kind"] == k for r in rows)]
    ax.legend(handles=[Patch(color=COLOURS[k], label=k) for k in kinds], loc="lower right",
              fontsize=8, bbox_to_anchor=(1.0, 0.06) if skipped else None)


def plot_scaling(result: dict[str, Any], ax) -> None:
    rows = sorted((r for r in result["rows"] if r["status"] == "ok" and r["kind"] == "stoke"),
                  key=lambda r: r["workers"])
    if not rows:
        ax.text(0.5, 0.5, "no stoke rows measured", ha="center", transform=ax.transAxes)
        return
    workers = [r["workers"] for r in rows]
    values = [r["images_per_s"] for r in rows]
    per_worker = result["summary"]["per_worker_images_per_s"]
    ax.plot(workers, [w * per_worker for w in workers], linestyle="--", color="#8c8c8c",
            label="linear (fewest-worker rate x workers)")
    ceiling = sorted((r for r in result["rows"] if r["status"] == "ok"
                      and r["kind"] == "machine"), key=lambda r: r["workers"])
    if ceiling:
        ax.plot([r["workers"] for r in ceiling], [r["images_per_s"] for r in ceiling],
                marker="s", markersize=4, linestyle=":", color=COLOURS["machine"],
                label="machine ceiling: W independent plain loops, no stoke")
    ax.plot(workers, values, marker="o", color=COLOURS["stoke"], label="stoke, process executor")
    for w, v, r in zip(workers, values, rows):
        label = f"{r['efficiency_vs_linear']:.0%}"
        if r.get("efficiency_vs_machine") is not None:
            label += f" of linear\n{r['efficiency_vs_machine']:.0%} of machine"
        ax.annotate(label, (w, v), textcoords="offset points", xytext=(0, -10), ha="center",
                    va="top", fontsize=7 if ceiling else 8)
    loop = result["summary"].get("loop_images_per_s") or next(
        (r["images_per_s"] for r in result["rows"] if r["kind"] == "baseline"
         and r["status"] == "ok"), None)
    if loop:
        ax.axhline(loop, color=COLOURS["baseline"], linewidth=1, label="plain loop, 1 core")
    ax.set_xlabel("workers")
    ax.set_ylabel(f"{_unit(result)} (median over rounds)")
    ax.set_xticks(workers)
    ax.set_ylim(0, None)
    ax.legend(fontsize=8, loc="upper left")


def draw(result: dict[str, Any], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scaling = result.get("mode") == "scaling"
    height = 4.5 if scaling else 1.0 + 0.42 * len(result["rows"])
    fig, ax = plt.subplots(figsize=(10, height))
    (plot_scaling if scaling else plot_compare)(result, ax)
    title = "stoke scaling with workers" if scaling else "input pipeline throughput"
    ax.set_title(f"{title}\n{_subtitle(result)}", fontsize=10)
    ax.grid(axis="y" if scaling else "x", alpha=0.3)
    return save_figure(fig, out)


def main(argv: list[str] | None = None) -> int:
    return plot_command(argv, __doc__.splitlines()[0], "plot", "pipeline_throughput",
                        lambda data: str(data.get("schema", "")).startswith(
                            "stoke.bench.pipeline_throughput/"), draw)


if __name__ == "__main__":
    sys.exit(main())
