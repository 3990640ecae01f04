"""Draw a results JSON of ``doctor_accuracy.py`` as a PNG (matplotlib; reads, never measures).

    python benchmarks/plot_accuracy.py benchmarks/results/doctor_accuracy-2core-s18-tf.json

One point a row: the speedup the doctor predicted against the one its fixed twin measured
(log axes), the diagonal and the ±tolerance band around it (the issue's ±30%); a whisker spans
the measured speedup of the fastest runs of each side (the row's noise). Green within
tolerance, red off, grey where the doctor predicted nothing. Each point is labelled with its
backend, case and error; points close together share one label, a line a row.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from common import plot_command, save_figure

COLOURS = {"ok": "#2b8a3e", "off": "#c92a2a", "none": "#8c8c8c"}


def _label(row: dict[str, Any]) -> str:
    case = str(row.get("case", "?")).removeprefix("wild:").removesuffix(".py")
    error = row.get("relative_error")
    return f"{row.get('backend', '?')} {case}" + (f" {error:+.0%}" if error is not None else "")


def points(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows that measured a speedup: (label, predicted or None, measured, fastest, mark)."""
    out = []
    for row in result.get("rows", []):
        measured = row.get("measured_speedup")
        if not measured:
            continue
        predicted = row.get("predicted_speedup")
        mark = "none" if predicted is None else ("ok" if row.get("within_tolerance") else "off")
        out.append({"label": _label(row), "predicted": predicted, "measured": measured,
                    "fastest": row.get("measured_speedup_fastest"), "mark": mark})
    return out


def label_groups(xy: list[tuple[float, float]], low: float, high: float,
                 wide: float = 0.35, high_: float = 0.025) -> list[list[int]]:
    """Rows whose labels would overprint (points closer than a label's width ``wide`` and
    height ``high_`` on the log axes, as fractions of the axis: rows around x1.00), in groups
    that share one label, a line a row, at the group's first point."""
    import math

    span = math.log10(high) - math.log10(low)
    groups: list[list[int]] = []
    anchors: list[tuple[float, float]] = []
    for index, (x, y) in enumerate(xy):
        fx = (math.log10(x) - math.log10(low)) / span
        fy = (math.log10(y) - math.log10(low)) / span
        for group, (ax_, ay) in zip(groups, anchors):
            if abs(fx - ax_) < wide and abs(fy - ay) < high_:
                group.append(index)
                break
        else:
            groups.append([index])
            anchors.append((fx, fy))
    return groups


def draw(result: dict[str, Any], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = points(result)
    if not rows:
        raise ValueError("no row measured a speedup: nothing to draw")
    tolerance = float(result.get("tolerance") or 0.3)
    values = [r["measured"] for r in rows] + [r["predicted"] for r in rows if r["predicted"]]
    values += [r["fastest"] for r in rows if r["fastest"]]
    low, high = min(values) / 1.3, max(values) * 1.3
    fig, ax = plt.subplots(figsize=(8, 7))
    line = [low, high]
    ax.plot(line, line, color="#444444", linewidth=1, label="predicted = measured")
    ax.fill_between(line, [v * (1 - tolerance) for v in line], [v * (1 + tolerance) for v in line],
                    color="#2b8a3e", alpha=0.12, label=f"within ±{tolerance:.0%}")
    for row in rows:
        predicted = row["predicted"] if row["predicted"] else 1.0
        colour = COLOURS[row["mark"]]
        if row["fastest"]:
            ax.plot(sorted([row["measured"], row["fastest"]]), [predicted, predicted],
                    color=colour, alpha=0.5, linewidth=1)
        ax.scatter([row["measured"]], [predicted], color=colour, s=30, zorder=3,
                   marker="o" if row["predicted"] else "x")
    for group in label_groups([(r["measured"], r["predicted"] or 1.0) for r in rows], low, high):
        first = rows[group[0]]
        one = len(group) == 1  # (a group's lines hang below its point, a row's sit above)
        ax.annotate("\n".join(rows[i]["label"] for i in group),
                    (first["measured"], first["predicted"] or 1.0), fontsize=7,
                    xytext=(4, 3) if one else (8, -5), textcoords="offset points",
                    va="bottom" if one else "top")
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_xscale("log")
    ax.set_yscale("log")
    for axis in (ax.xaxis, ax.yaxis):  # x1, x2, x5, x10, ...: speedups, not powers of ten
        axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        axis.set_major_formatter(FuncFormatter(lambda value, _: f"x{value:g}"))
        axis.set_minor_formatter(NullFormatter())
    ax.set_xlim(low, high)
    ax.set_ylim(low, high)
    ax.set_xlabel("measured speedup (fixed twin / plain run, median; whisker: fastest runs)")
    ax.set_ylabel("predicted speedup (stoke doctor)")
    machine = result.get("machine") or {}
    inside = sum(r["mark"] == "ok" for r in rows)
    ax.set_title(f"stoke doctor: predicted against measured, {inside} of {len(rows)} rows within "
                 f"±{tolerance:.0%}\n{machine.get('cpus', '?')} cores, "
                 f"load {', '.join(f'{v:.1f}' for v in result.get('load_average') or [])}",
                 fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="upper left")
    return save_figure(fig, out)


def main(argv: list[str] | None = None) -> int:
    return plot_command(argv, __doc__.splitlines()[0], "plot_accuracy", "doctor_accuracy",
                        lambda data: data.get("benchmark") == "doctor_accuracy", draw)


if __name__ == "__main__":
    sys.exit(main())
