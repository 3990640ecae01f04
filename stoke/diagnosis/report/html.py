"""The HTML report: one self-contained file that opens offline, plots drawn as inline SVG.

No script, no CDN, no web font: the CSS is inline, the plots are SVG written here, and fix
snippets are coloured by Pygments (installed with rich) with inline styles. Everything that
comes from the user's run - script name, arguments, exception text, layer names, any string
in the record - goes through :func:`html.escape`, inside SVG text too.

    write_html(analyse(record), "doctor.html")

Plots: (a) each step split into waiting for input and computing, (b) GPU kernel-active and
host CPU (this run vs other processes) over time, (c) the bound: measured throughput against
the model alone, the input alone and the prediction.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from stoke.diagnosis.judge.diagnosis import DIAGNOSIS_SCHEMA_VERSION, Diagnosis
from stoke.diagnosis.judge.findings import Finding
from stoke.diagnosis.judge.words import ms, pct, rate, speedup
from stoke.diagnosis.report._format import (
    SEVERITY_COLOURS,
    VERDICT_COLOURS,
    doctor_overhead,
    evidence_text,
    headline,
    key_numbers,
    no_findings_text,
    run_description,
    unmeasured_wait_why,
    verdict_meaning,
    wait_source_note,
    wait_unmeasured,
)

WAIT_COLOUR = "#f08c00"
COMPUTE_COLOUR = "#1c7ed6"
MODEL_COLOUR = "#2b8a3e"
INPUT_COLOUR = "#e8590c"
PREDICTED_COLOUR = "#7048e8"
MEASURED_COLOUR = "#495057"
CPU_SELF_COLOUR = "#1c7ed6"
CPU_OTHER_COLOUR = "#c92a2a"
GPU_COLOURS = ("#2b8a3e", "#5c940d", "#087f5b", "#364fc7", "#a61e4d", "#e67700", "#0b7285", "#5f3dc4")

MAX_BARS = 200
MAX_LINE_POINTS = 600
CHART_WIDTH = 1000


def render_html(diagnosis: Diagnosis) -> str:
    """The whole report as one HTML string."""
    record = diagnosis.record
    script = record.meta.script or "training run"
    colour = VERDICT_COLOURS[diagnosis.verdict]
    sections = [
        _verdict_section(diagnosis, colour),
        _section("Where each step goes", _step_split_chart(diagnosis), _step_caption(diagnosis)),
        _section("The bound", _bound_chart(diagnosis), _numbers_table(diagnosis)),
        _section("Host and GPU over time", _system_chart(diagnosis), ""),
        _findings_section(diagnosis),
        _run_section(diagnosis),
    ]
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<title>stoke doctor · {_e(script)} · {_e(diagnosis.verdict)}</title>\n"
        f"<style>{_CSS}</style>\n</head>\n<body>\n<main>\n"
        f"<header><div class=\"brand\">stoke doctor</div><h1>{_e(script)}</h1></header>\n"
        + "\n".join(sections)
        + f"\n<footer>stoke doctor report · JSON schema version {DIAGNOSIS_SCHEMA_VERSION} · "
        f"run record schema version {_e(record.schema_version)}</footer>\n"
        "</main>\n</body>\n</html>\n"
    )


def write_html(diagnosis: Diagnosis, path: str | Path) -> Path:
    path = Path(path)
    path.write_text(render_html(diagnosis), encoding="utf-8")
    return path


# -- sections ----------------------------------------------------------------------------------


def _verdict_section(diagnosis: Diagnosis, colour: str) -> str:
    measured = diagnosis.steady.steps_used > 0
    throughput_note = "steady state" if measured else "no training step was measured"
    if measured and diagnosis.throughput is None:
        throughput_note = "the batch size was not recorded: step times only"
    if wait_unmeasured(diagnosis):
        wait_card = ("Input wait", "not measured", wait_source_note(diagnosis))
        speedup_card = ("Predicted speedup", "not predicted", "the wait it would remove was not measured")
    else:
        wait_card = (
            "Input wait",
            pct(diagnosis.input_wait_fraction, 1),
            ("of step time" if measured else "no training step was measured")
            + (" (estimated, not timed)" if wait_source_note(diagnosis) else ""),
        )
        speedup_card = (
            "Predicted speedup",
            speedup(diagnosis.predicted_speedup),
            f"→ {rate(diagnosis.predicted_throughput)}" if diagnosis.predicted_throughput else "",
        )
    cards = [("Throughput", rate(diagnosis.throughput), throughput_note), wait_card, speedup_card]
    prediction = diagnosis.prediction
    if prediction is not None and prediction.with_stoke_here is not None and diagnosis.cpu:
        cards.append(("With stoke, these cores", speedup(prediction.with_stoke_here),
                      f"{diagnosis.cpu.cores} cores shared by trainer and workers"))
    if prediction is not None and prediction.if_host_code_fixed is not None:
        cards.append(("Host code fixed", speedup(prediction.if_host_code_fixed),
                      f"{prediction.host_code_fix['step_words']} with the host layers stood "
                      "in (see host-op-in-model)"))
    if prediction is not None and prediction.unmeasured:
        cards.append(("Confidence", prediction.confidence, "; ".join(prediction.unmeasured)))
    if diagnosis.steady.steps_total:
        overhead, overhead_note = doctor_overhead(diagnosis)
        cards.append(("Doctor overhead", pct(overhead, 1), f"of the measured steps' time: {overhead_note}"))
    card_html = "".join(
        f"<div class=\"card\"><div class=\"card-label\">{_e(label)}</div>"
        f"<div class=\"card-value\">{_e(value)}</div><div class=\"card-note\">{_e(note)}</div></div>"
        for label, value, note in cards
    )
    error = diagnosis.record.meta.error
    error_html = (
        f"<div class=\"error\"><strong>The script ended with an error:</strong>"
        f"<pre>{_e(error)}</pre></div>"
        if error
        else ""
    )
    return (
        f"<section class=\"verdict\" style=\"border-left-color:{colour}\">"
        f"<span class=\"badge\" style=\"background:{colour}\">{_e(diagnosis.verdict)}</span>"
        f"<p class=\"meaning\">{_e(verdict_meaning(diagnosis))}</p>"
        f"<p class=\"headline\">{_e(headline(diagnosis))}</p>"
        f"<div class=\"cards\">{card_html}</div>{error_html}</section>"
    )


def _section(title: str, body: str, after: str) -> str:
    return f"<section><h2>{_e(title)}</h2>{body}{after}</section>"


def _numbers_table(diagnosis: Diagnosis) -> str:
    rows = "".join(
        f"<tr><th>{_e(label)}</th><td>{_e(value)}</td></tr>" for label, value in key_numbers(diagnosis)
    )
    return f"<table class=\"numbers\">{rows}</table>"


def _step_caption(diagnosis: Diagnosis) -> str:
    steady = diagnosis.steady
    if not steady.steps_used:
        return ""
    left_out = len(steady.warmup_dropped) + len(steady.outliers_dropped)
    if wait_unmeasured(diagnosis):
        text = (
            f"Each step whole (grey): the wait within it was not measured "
            f"({unmeasured_wait_why(diagnosis)}). {steady.steps_used} of {steady.steps_total} "
            "steps count"
        )
    else:
        text = (
            f"Stacked: waiting for the next batch (orange) and everything else in the step "
            f"(blue). {steady.steps_used} of {steady.steps_total} steps count"
        )
    text += f"; {left_out} faded ones are warm-up or compilation." if left_out else "."
    source = wait_source_note(diagnosis)
    if source and not wait_unmeasured(diagnosis):
        text += f" The wait is not timed: {source}."
    if model_alone_line_s(diagnosis) is not None:
        text += " The dashed green line is the model alone on a cached batch."
    elif diagnosis.bound.model_alone_step_s is not None:
        text += (" No model-alone line: the fits used different batch sizes, and the probe "
                 "timed one of them.")
    return f"<p class=\"caption\">{_e(text)}</p>"


def model_alone_line_s(diagnosis: Diagnosis) -> float | None:
    """The model alone's time per batch, as the step chart draws it; None when the fits used
    different batch sizes (one line cannot stand for all of them)."""
    if len({f.batch_size for f in diagnosis.fits if f.batch_size is not None}) > 1:
        return None
    return diagnosis.bound.model_alone_step_s


def _findings_section(diagnosis: Diagnosis) -> str:
    findings = diagnosis.findings
    if not findings:
        return _section("Findings", f"<p class=\"none\">{_e(no_findings_text(diagnosis))}</p>", "")
    items = "".join(_finding(number, f) for number, f in enumerate(findings, start=1))
    return _section(f"Findings ({len(findings)})", items, "")


def _finding(number: int, finding: Finding) -> str:
    colour = SEVERITY_COLOURS[finding.severity]
    gain = (
        f"<span class=\"gain\">expected {_e(speedup(finding.expected_gain))}</span>"
        if finding.expected_gain is not None
        else ""
    )
    evidence = "".join(
        f"<tr><th>{_e(key)}</th><td>{_e(evidence_text(value))}</td></tr>"
        for key, value in finding.evidence.items()
        if value is not None
    )
    return (
        f"<article class=\"finding\" style=\"border-left-color:{colour}\">"
        f"<h3><span class=\"num\">{number}.</span> "
        f"<span class=\"sev\" style=\"background:{colour}\">{_e(finding.severity)}</span> "
        f"<code>{_e(finding.id)}</code>{gain}</h3>"
        f"<p>{_e(finding.message)}</p>"
        f"<table class=\"evidence\">{evidence}</table>"
        f"<div class=\"fix-label\">Fix</div>{_highlight(finding.fix, finding.fix_language)}"
        "</article>"
    )


def _run_section(diagnosis: Diagnosis) -> str:
    rows = "".join(
        f"<tr><th>{_e(label)}</th><td>{_e(value)}</td></tr>"
        for label, value in run_description(diagnosis)
    )
    return _section("The run", f"<table class=\"numbers\">{rows}</table>", "")


def _highlight(code: str, language: str) -> str:
    try:
        from pygments import highlight
        from pygments.formatters import HtmlFormatter
        from pygments.lexers import get_lexer_by_name
    except ImportError:  # pragma: no cover - pygments comes with rich
        return f"<pre class=\"code\"><code>{_e(code)}</code></pre>"
    formatter = HtmlFormatter(noclasses=True, style="friendly", cssstyles="", prestyles="margin:0")
    return f"<div class=\"code\">{highlight(code, get_lexer_by_name(language), formatter)}</div>"


# -- plots -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Frame:
    """A plot area inside an SVG: data coordinates to pixels."""

    left: float
    top: float
    width: float
    height: float
    x_min: float
    x_max: float
    y_min: float
    y_max: float

    def x(self, value: float) -> float:
        span = (self.x_max - self.x_min) or 1.0
        return self.left + (value - self.x_min) / span * self.width

    def y(self, value: float) -> float:
        span = (self.y_max - self.y_min) or 1.0
        return self.top + self.height - (value - self.y_min) / span * self.height

    @property
    def bottom(self) -> float:
        return self.top + self.height

    @property
    def right(self) -> float:
        return self.left + self.width


def _step_split_chart(diagnosis: Diagnosis) -> str:
    record = diagnosis.record
    steps = sorted(record.steps, key=lambda s: (s.t_s, s.step))
    if not steps:
        return _empty_chart("No training step was measured.")
    left_out = set(diagnosis.steady.warmup_dropped) | set(diagnosis.steady.outliers_dropped)
    unmeasured = wait_unmeasured(diagnosis)
    step_colour = MEASURED_COLOUR if unmeasured else COMPUTE_COLOUR
    bin_size = max(1, math.ceil(len(steps) / MAX_BARS))
    bins = []
    for start in range(0, len(steps), bin_size):
        chunk = steps[start : start + bin_size]
        counted = [s for s in chunk if (s.epoch, s.step) not in left_out]
        used = counted or chunk
        wait_ms = sum(min(s.wait_used_s, s.step_s) for s in used) / len(used) * 1e3
        step_ms = sum(s.step_s for s in used) / len(used) * 1e3
        estimated = not all(s.wait_timed for s in used)
        bins.append((start, chunk[0], wait_ms, max(0.0, step_ms - wait_ms), bool(counted), estimated))
    steady_totals = [w + c for _, _, w, c, counted, _ in bins if counted] or [
        w + c for _, _, w, c, _, _ in bins
    ]
    y_top = _nice_ceiling(max(steady_totals) * 1.15)
    height = 300
    frame = _Frame(64, 28, CHART_WIDTH - 84, height - 28 - 44, 0, len(bins), 0, y_top)
    parts = [_svg_open(CHART_WIDTH, height, "Step time (the wait within it not measured)" if unmeasured
                       else "Step time split into waiting for input and computing")]
    parts.append(_y_grid(frame, "ms per step"))
    slot = frame.width / len(bins)
    gap = slot * 0.18 if slot > 4 else 0.0
    for index, (_, first, wait_ms, compute_ms, counted, estimated) in enumerate(bins):
        x = frame.x(index) + gap / 2
        bar_width = max(slot - gap, 0.6)
        opacity = "1" if counted else "0.35"
        wait_top = min(wait_ms, y_top)
        total_top = min(wait_ms + compute_ms, y_top)
        title = (
            f"step {first.step} (epoch {first.epoch}): "
            + (f"{wait_ms + compute_ms:.2f} ms, wait not measured" if unmeasured else
               f"wait {wait_ms:.2f} ms" + (" (estimated)" if estimated else "")
               + f", compute {compute_ms:.2f} ms")
            + ("" if counted else " - left out")
        )
        parts.append(
            f"<g opacity=\"{opacity}\"><title>{_e(title)}</title>"
            f"<rect x=\"{x:.2f}\" y=\"{frame.y(wait_top):.2f}\" width=\"{bar_width:.2f}\" "
            f"height=\"{frame.bottom - frame.y(wait_top):.2f}\" fill=\"{WAIT_COLOUR}\"/>"
            f"<rect x=\"{x:.2f}\" y=\"{frame.y(total_top):.2f}\" width=\"{bar_width:.2f}\" "
            f"height=\"{frame.y(wait_top) - frame.y(total_top):.2f}\" fill=\"{step_colour}\"/></g>"
        )
        if wait_ms + compute_ms > y_top:
            cx = x + bar_width / 2
            parts.append(
                f"<path d=\"M{cx - 4:.1f} {frame.top + 7:.1f} L{cx + 4:.1f} {frame.top + 7:.1f} "
                f"L{cx:.1f} {frame.top:.1f} Z\" fill=\"#212529\"/>"
                f"<text x=\"{cx + 6:.1f}\" y=\"{frame.top + 8:.1f}\" class=\"note\">"
                f"{_e(f'{wait_ms + compute_ms:,.0f} ms')}</text>"
            )
    previous = (bins[0][1].fit, bins[0][1].epoch)
    fits = diagnosis.fits
    for index, (_, first, *_rest) in enumerate(bins):
        if (first.fit, first.epoch) != previous:
            x = frame.x(index)
            # a new fit is named as the report names it ("fit 2"), an epoch by its number
            label = (f"fit {first.fit + 1}" if first.fit != previous[0] and len(fits) > 1
                     else f"epoch {first.epoch}")
            parts.append(
                f"<line x1=\"{x:.1f}\" x2=\"{x:.1f}\" y1=\"{frame.top}\" y2=\"{frame.bottom}\" "
                "stroke=\"#868e96\" stroke-dasharray=\"3 3\"/>"
                f"<text x=\"{x + 3:.1f}\" y=\"{frame.top + 20:.1f}\" class=\"note\">"
                f"{_e(label)}</text>"
            )
            previous = (first.fit, first.epoch)
    model_step_s = model_alone_line_s(diagnosis)
    if model_step_s is not None and model_step_s * 1e3 <= y_top:
        y = frame.y(model_step_s * 1e3)
        parts.append(
            f"<line x1=\"{frame.left}\" x2=\"{frame.right}\" y1=\"{y:.1f}\" y2=\"{y:.1f}\" "
            f"stroke=\"{MODEL_COLOUR}\" stroke-width=\"2\" stroke-dasharray=\"6 4\"/>"
            f"<text x=\"{frame.right - 4:.1f}\" y=\"{y - 5:.1f}\" text-anchor=\"end\" class=\"note halo\" "
            f"style=\"fill:{MODEL_COLOUR}\">{_e(f'model alone {ms(model_step_s)}')}</text>"
        )
    step_ticks = _nice_ticks(0, len(bins), 8)
    for tick in step_ticks:
        if tick > len(bins):
            continue
        index = min(int(tick), len(bins) - 1)
        label = bins[index][0] if tick < len(bins) else len(steps)
        parts.append(_x_tick(frame, frame.x(tick), f"{label}"))
    parts.append(
        f"<text x=\"{frame.left + frame.width / 2:.1f}\" y=\"{height - 6}\" text-anchor=\"middle\" "
        "class=\"axis\">training step</text>"
    )
    parts.append(
        _legend(
            frame.left,
            14,
            ([("step (wait not measured)", MEASURED_COLOUR)] if unmeasured
             else [("waiting for input", WAIT_COLOUR), ("computing", COMPUTE_COLOUR)])
            + ([("model alone", MODEL_COLOUR)] if model_step_s is not None else []),
        )
    )
    parts.append("</svg>")
    return "".join(parts)


def _system_chart(diagnosis: Diagnosis) -> str:
    samples = sorted(diagnosis.record.system, key=lambda s: s.t_s)
    if not samples:
        return _empty_chart("No host or GPU samples were recorded.")
    cores = diagnosis.cpu.cores if diagnosis.cpu else max(1, len(samples[0].cpu_per_core_pct))
    t_min, t_max = samples[0].t_s, samples[-1].t_s
    if t_max <= t_min:
        t_max = t_min + 1.0
    height = 300
    frame = _Frame(64, 28, CHART_WIDTH - 84, height - 28 - 44, t_min, t_max, 0, 100)
    parts = [_svg_open(CHART_WIDTH, height, "GPU kernel-active and CPU over time")]
    steady = diagnosis.steady
    if steady.t_start_s is not None and steady.t_end_s is not None:
        x0 = frame.x(max(t_min, steady.t_start_s))
        x1 = frame.x(min(t_max, steady.t_end_s))
        if x1 > x0:
            parts.append(
                f"<rect x=\"{x0:.1f}\" y=\"{frame.top}\" width=\"{x1 - x0:.1f}\" "
                f"height=\"{frame.height}\" fill=\"#f1f3f5\"/>"
            )
    parts.append(_y_grid(frame, "% (CPU: of all cores)"))
    series: list[tuple[str, str, list[tuple[float, float]]]] = []
    gpu_indices = sorted({g.index for s in samples for g in s.gpus})
    for position, index in enumerate(gpu_indices):
        points = [
            (s.t_s, g.kernel_active_pct) for s in samples for g in s.gpus if g.index == index
        ]
        series.append((f"GPU {index} kernel-active", GPU_COLOURS[position % len(GPU_COLOURS)], points))
    series.append(
        (
            "CPU, this run",
            CPU_SELF_COLOUR,
            [(s.t_s, min(100.0, s.cpu_self_pct / cores)) for s in samples],
        )
    )
    series.append(
        (
            "CPU, other processes",
            CPU_OTHER_COLOUR,
            [(s.t_s, min(100.0, s.cpu_other_pct / cores)) for s in samples],
        )
    )
    for name, colour, points in series:
        points = _decimate(points, MAX_LINE_POINTS)
        path = " ".join(f"{frame.x(t):.1f},{frame.y(max(0.0, v)):.1f}" for t, v in points)
        parts.append(
            f"<polyline points=\"{path}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" "
            f"stroke-linejoin=\"round\"><title>{_e(name)}</title></polyline>"
        )
        if len(points) == 1:
            t, v = points[0]
            parts.append(f"<circle cx=\"{frame.x(t):.1f}\" cy=\"{frame.y(v):.1f}\" r=\"3\" fill=\"{colour}\"/>")
    for tick in _nice_ticks(t_min, t_max, 8):
        if t_min <= tick <= t_max:
            parts.append(_x_tick(frame, frame.x(tick), f"{tick:g} s"))
    parts.append(
        f"<text x=\"{frame.left + frame.width / 2:.1f}\" y=\"{height - 6}\" text-anchor=\"middle\" "
        f"class=\"axis\">{_e(f'time since start (shaded: the steady steps; {cores} cores)')}</text>"
    )
    if not gpu_indices:
        parts.append(
            f"<text x=\"{frame.right - 4:.1f}\" y=\"{frame.top + 14:.1f}\" text-anchor=\"end\" "
            "class=\"note\">no NVIDIA GPU sampled</text>"
        )
    parts.append(_legend(frame.left, 14, [(name, colour) for name, colour, _ in series]))
    parts.append("</svg>")
    return "".join(parts)


def _bound_chart(diagnosis: Diagnosis) -> str:
    rows = [
        ("measured (this run)", diagnosis.throughput, MEASURED_COLOUR),
        ("model alone (probe)", diagnosis.model_alone, MODEL_COLOUR),
        ("input alone (probe)", diagnosis.input_alone, INPUT_COLOUR),
        ("predicted, input fixed", diagnosis.predicted_throughput, PREDICTED_COLOUR),
    ]
    known = [value for _, value, _ in rows if value]
    if not known:
        return _empty_chart("No throughput was measured.")
    row_height = 40
    height = 40 + row_height * len(rows) + 30
    label_width = 190
    frame = _Frame(
        label_width, 20, CHART_WIDTH - label_width - 150, row_height * len(rows), 0,
        _nice_ceiling(max(known) * 1.05), 0, len(rows),
    )
    parts = [_svg_open(CHART_WIDTH, height, "Throughput: measured, model alone, input alone, predicted")]
    for tick in _nice_ticks(0, frame.x_max, 6):
        if tick <= frame.x_max:
            x = frame.x(tick)
            parts.append(
                f"<line x1=\"{x:.1f}\" x2=\"{x:.1f}\" y1=\"{frame.top}\" y2=\"{frame.bottom}\" "
                "stroke=\"#e9ecef\"/>"
            )
            parts.append(_x_tick(frame, x, f"{tick:,.0f}"))
    for index, (label, value, colour) in enumerate(rows):
        y = frame.top + index * row_height + 8
        parts.append(
            f"<text x=\"{label_width - 10}\" y=\"{y + 17:.1f}\" text-anchor=\"end\" class=\"label\">"
            f"{_e(label)}</text>"
        )
        if value:
            width = max(1.0, frame.x(value) - frame.left)
            parts.append(
                f"<rect x=\"{frame.left}\" y=\"{y:.1f}\" width=\"{width:.1f}\" height=\"24\" "
                f"rx=\"3\" fill=\"{colour}\"><title>{_e(rate(value))}</title></rect>"
                f"<text x=\"{frame.left + width + 8:.1f}\" y=\"{y + 17:.1f}\" class=\"value\">"
                f"{_e(rate(value))}</text>"
            )
        else:
            parts.append(
                f"<text x=\"{frame.left + 8}\" y=\"{y + 17:.1f}\" class=\"note\">"
                f"{'not predicted' if colour == PREDICTED_COLOUR else 'not measured'}</text>"
            )
    parts.append(
        f"<text x=\"{frame.left + frame.width / 2:.1f}\" y=\"{height - 6}\" text-anchor=\"middle\" "
        "class=\"axis\">samples/s</text>"
    )
    parts.append("</svg>")
    return "".join(parts)


def _decimate(points: list[tuple[float, float]], limit: int) -> list[tuple[float, float]]:
    """At most ``limit`` points: consecutive points averaged in equal groups."""
    if len(points) <= limit:
        return points
    size = math.ceil(len(points) / limit)
    groups = [points[i : i + size] for i in range(0, len(points), size)]
    return [
        (sum(t for t, _ in group) / len(group), sum(v for _, v in group) / len(group))
        for group in groups
    ]


def _svg_open(width: int, height: int, title: str) -> str:
    return (
        f"<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {width} {height}\" "
        f"width=\"100%\" role=\"img\" aria-label=\"{_e(title)}\"><title>{_e(title)}</title>"
    )


def _empty_chart(message: str) -> str:
    return (
        f"{_svg_open(CHART_WIDTH, 60, message)}<text x=\"10\" y=\"35\" class=\"label\">"
        f"{_e(message)}</text></svg>"
    )


def _y_grid(frame: _Frame, label: str) -> str:
    parts = []
    for tick in _nice_ticks(frame.y_min, frame.y_max, 5):
        if frame.y_min <= tick <= frame.y_max:
            y = frame.y(tick)
            parts.append(
                f"<line x1=\"{frame.left}\" x2=\"{frame.right}\" y1=\"{y:.1f}\" y2=\"{y:.1f}\" "
                "stroke=\"#e9ecef\"/>"
                f"<text x=\"{frame.left - 6}\" y=\"{y + 4:.1f}\" text-anchor=\"end\" class=\"tick\">"
                f"{_e(f'{tick:g}')}</text>"
            )
    parts.append(
        f"<line x1=\"{frame.left}\" x2=\"{frame.left}\" y1=\"{frame.top}\" y2=\"{frame.bottom}\" "
        "stroke=\"#adb5bd\"/>"
        f"<line x1=\"{frame.left}\" x2=\"{frame.right}\" y1=\"{frame.bottom}\" y2=\"{frame.bottom}\" "
        "stroke=\"#adb5bd\"/>"
        f"<text transform=\"translate(14 {frame.top + frame.height / 2:.1f}) rotate(-90)\" "
        f"text-anchor=\"middle\" class=\"axis\">{_e(label)}</text>"
    )
    return "".join(parts)


def _x_tick(frame: _Frame, x: float, label: str) -> str:
    return (
        f"<line x1=\"{x:.1f}\" x2=\"{x:.1f}\" y1=\"{frame.bottom}\" y2=\"{frame.bottom + 4}\" "
        "stroke=\"#adb5bd\"/>"
        f"<text x=\"{x:.1f}\" y=\"{frame.bottom + 17}\" text-anchor=\"middle\" class=\"tick\">"
        f"{_e(label)}</text>"
    )


def _legend(x: float, y: float, entries: Sequence[tuple[str, str]]) -> str:
    parts = []
    for name, colour in entries:
        parts.append(
            f"<rect x=\"{x:.1f}\" y=\"{y - 9:.1f}\" width=\"12\" height=\"12\" rx=\"2\" fill=\"{colour}\"/>"
            f"<text x=\"{x + 17:.1f}\" y=\"{y + 1:.1f}\" class=\"legend\">{_e(name)}</text>"
        )
        x += 30 + 7.2 * len(name)
    return "".join(parts)


def _nice_step(span: float, count: int) -> float:
    raw = span / max(1, count)
    magnitude = 10 ** math.floor(math.log10(raw))
    for multiple in (1, 2, 2.5, 5, 10):
        if multiple * magnitude >= raw:
            return multiple * magnitude
    return 10 * magnitude


def _nice_ticks(low: float, high: float, count: int) -> list[float]:
    if not (math.isfinite(low) and math.isfinite(high)) or high <= low:
        return [low]
    step = _nice_step(high - low, count)
    first = math.ceil(low / step) * step
    return [first + i * step for i in range(int((high - first) / step + 1e-9) + 1)]


def _nice_ceiling(value: float) -> float:
    if value <= 0 or not math.isfinite(value):
        return 1.0
    step = _nice_step(value, 5)
    return math.ceil(value / step - 1e-9) * step


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


_CSS = """
*{box-sizing:border-box}
body{margin:0;background:#f8f9fa;color:#212529;
 font:15px/1.5 -apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,"Liberation Sans",sans-serif}
main{max-width:1080px;margin:0 auto;padding:24px 28px 48px}
header{margin-bottom:12px}
.brand{font-size:13px;letter-spacing:.08em;text-transform:uppercase;color:#868e96;font-weight:600}
h1{margin:2px 0 0;font-size:24px;word-break:break-all}
h2{font-size:18px;margin:0 0 12px}
section{background:#fff;border:1px solid #dee2e6;border-radius:8px;padding:18px 22px;margin:16px 0}
section.verdict{border-left:8px solid}
.badge{display:inline-block;color:#fff;font-weight:700;font-size:22px;padding:4px 14px;
 border-radius:6px;text-transform:uppercase;letter-spacing:.03em}
.meaning{font-size:17px;font-weight:600;margin:10px 0 2px}
.headline{margin:0 0 14px;color:#495057}
.cards{display:grid;grid-template-columns:repeat(4,1fr);gap:12px}
.card{background:#f1f3f5;border-radius:6px;padding:10px 14px}
.card-label{font-size:12px;text-transform:uppercase;color:#868e96;letter-spacing:.05em}
.card-value{font-size:24px;font-weight:700}
.card-note{font-size:13px;color:#495057}
.error{margin-top:14px;color:#c92a2a}
.error pre{white-space:pre-wrap;background:#fff5f5;padding:8px;border-radius:4px;color:#212529}
table{border-collapse:collapse}
table.numbers{margin-top:14px;width:100%}
table.numbers th{text-align:left;font-weight:500;color:#868e96;padding:3px 18px 3px 0;
 white-space:nowrap;vertical-align:top;width:1%}
table.numbers td{padding:3px 0;word-break:break-word}
.caption{color:#495057;font-size:13px;margin:6px 0 0}
svg text{font-family:inherit}
svg .tick{font-size:11px;fill:#868e96}
svg .axis{font-size:12px;fill:#495057}
svg .legend{font-size:12px;fill:#212529}
svg .label{font-size:13px;fill:#212529}
svg .value{font-size:13px;font-weight:600;fill:#212529}
svg .note{font-size:11px;fill:#495057}
svg .halo{paint-order:stroke;stroke:#fff;stroke-width:3px;stroke-linejoin:round;font-weight:600}
.finding{border-left:5px solid;padding:4px 0 8px 14px;margin:0 0 22px}
.finding h3{margin:0 0 6px;font-size:16px;display:flex;align-items:center;gap:8px;flex-wrap:wrap}
.finding .num{color:#868e96}
.sev{color:#fff;font-size:11px;text-transform:uppercase;padding:2px 7px;border-radius:4px;
 letter-spacing:.05em}
.gain{margin-left:auto;color:#2b8a3e;font-weight:700}
.finding p{margin:0 0 8px}
table.evidence{font-size:13px;margin-bottom:8px}
table.evidence th{text-align:left;font-weight:500;color:#868e96;padding:1px 14px 1px 0;
 font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,"Liberation Mono",monospace}
table.evidence td{padding:1px 0;word-break:break-word}
.fix-label{font-size:12px;text-transform:uppercase;color:#868e96;letter-spacing:.05em;margin-bottom:4px}
.code,pre.code{background:#f1f3f5;border-radius:6px;padding:10px 12px;overflow-x:auto;font-size:13px}
.code pre{margin:0;font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,"Liberation Mono",monospace}
.code .highlight{background:transparent!important}
.none{color:#2b8a3e;font-weight:600}
footer{color:#868e96;font-size:12px;text-align:center;margin-top:24px}
"""
