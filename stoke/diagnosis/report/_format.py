"""Words and numbers shared by the renderers: verdict headlines, units, the numbers table.

Renderers differ in markup only; what a number is called and how it is written lives here so
that the terminal and the HTML report say the same thing.
"""

from __future__ import annotations

from typing import Any

from stoke.diagnosis.judge.analysis import input_free_step_s
from stoke.diagnosis.judge.diagnosis import Diagnosis

VERDICT_COLOURS = {
    "input-bound": "#d9480f",
    "partly-input-bound": "#e67700",
    "compute-bound": "#2b8a3e",
    "overhead-bound": "#862e9c",
    "unknown": "#495057",
}

VERDICT_RICH_STYLES = {
    "input-bound": "bold white on red3",
    "partly-input-bound": "bold black on dark_orange",
    "compute-bound": "bold white on green4",
    "overhead-bound": "bold white on magenta",
    "unknown": "bold white on grey37",
}

# The doctor aims to cost less than this share of a step; above it the report says so.
DOCTOR_OVERHEAD_TARGET = 0.03

SEVERITY_COLOURS = {"high": "#c92a2a", "medium": "#e67700", "low": "#1971c2", "info": "#495057"}
SEVERITY_RICH_STYLES = {"high": "bold red", "medium": "bold dark_orange", "low": "bold blue", "info": "bold"}

VERDICT_MEANINGS = {
    "input-bound": "the accelerator waits for data: fix the input pipeline first",
    "partly-input-bound": "mostly the model's own work, but part of each step waits for data",
    "compute-bound": "the model's own work fills the step: the input keeps up",
    "overhead-bound": "host work (dispatch, Python, callbacks), not the device, fills the step",
    "unknown": "no training step was measured",
}


def rate(samples_per_s: float | None) -> str:
    return "not measured" if samples_per_s is None else f"{samples_per_s:,.0f} samples/s"


def ms(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    value = seconds * 1e3
    return f"{value:.2f} ms" if value < 10 else f"{value:.1f} ms"


def pct(fraction: float | None, digits: int = 0) -> str:
    return "n/a" if fraction is None else f"{100.0 * fraction:.{digits}f}%"


def speedup(multiplier: float | None) -> str:
    return "n/a" if multiplier is None else f"×{multiplier:.2f}" if multiplier < 10 else f"×{multiplier:.0f}"


def headline(diagnosis: Diagnosis) -> str:
    """One sentence under the verdict."""
    text = diagnosis.verdict_reason
    if diagnosis.verdict in ("input-bound", "partly-input-bound") and diagnosis.predicted_speedup:
        text += f"; if the input kept up: {speedup(diagnosis.predicted_speedup)}"
        if diagnosis.throughput and diagnosis.predicted_throughput:
            text += f" ({rate(diagnosis.throughput)} → {rate(diagnosis.predicted_throughput)})"
        prediction = diagnosis.prediction
        if prediction is not None and prediction.with_stoke_here is not None and diagnosis.cpu:
            text += (
                f"; with stoke on these {diagnosis.cpu.cores} cores: "
                f"{speedup(prediction.with_stoke_here)}"
            )
        if prediction is not None and prediction.confidence != "high":
            text += f" ({prediction.confidence} confidence: see Not measured)"
    return text


def wait_source_note(diagnosis: Diagnosis) -> str:
    """How the input wait was known, in words, when it was not timed ("" when it was)."""
    source = diagnosis.input_wait_source
    if source == "model-alone-estimate":
        used = diagnosis.steady.steps_used
        share = "" if diagnosis.wait_estimated_steps >= used else (
            f" for {diagnosis.wait_estimated_steps} of {used} steps, timed for the rest"
        )
        return (
            f"estimated{share}: step time minus the model-alone step; TensorFlow pulls the "
            "batch inside the compiled step, where it cannot be timed"
        )
    return {
        "probes": "estimated from the probes: this input's wait cannot be timed",
        "unmeasured": "not timed: this input's wait cannot be timed, and no probe bounds it",
    }.get(source, "")


def key_numbers(diagnosis: Diagnosis) -> list[tuple[str, str]]:
    """(label, value) rows of the numbers table, in reading order."""
    bound = diagnosis.bound
    steady = diagnosis.steady
    rows = [("Throughput (steady state)", rate(diagnosis.throughput))]
    source = wait_source_note(diagnosis)
    rows.append(
        ("Input wait", f"{pct(diagnosis.input_wait_fraction, 1)} of step time"
         + (f" ({source})" if source else ""))
    )
    if bound.step_s is not None:
        waiting = "waiting for input" + (" (estimated)" if source else "")
        rows.append(
            (
                "Step time",
                f"{ms(bound.step_s)} = {ms(bound.wait_s)} {waiting} + "
                f"{ms(bound.compute_s)} computing and dispatching (batch {_num(bound.batch_size)})",
            )
        )
    model_line = rate(diagnosis.model_alone)
    if bound.model_alone_step_s is not None:
        model_line += f" ({ms(bound.model_alone_step_s)} per batch)"
    rows.append(("Model alone (probe)", model_line))
    input_line = rate(diagnosis.input_alone)
    if bound.input_alone_step_s is not None:
        input_line += f" ({ms(bound.input_alone_step_s)} per batch)"
    rows.append(("Input alone (probe)", input_line))
    free_step_s = input_free_step_s(diagnosis.record) if diagnosis.record is not None else None
    if free_step_s is not None:
        rows.append(
            (
                "Input free (own steps)",
                f"{ms(free_step_s)} per step → {rate(bound.no_wait_throughput)}: the run's own "
                "fit loop fed a cached batch",
            )
        )
    rows.append(("Limited by", bound.limited_by))
    prediction = diagnosis.prediction
    if diagnosis.predicted_speedup is not None:
        rows.append(
            (
                "Predicted speedup",
                f"{speedup(diagnosis.predicted_speedup)}"
                + (f" → {rate(diagnosis.predicted_throughput)}" if diagnosis.predicted_throughput
                   else " (batch size not known: no samples/s)")
                + " if the input were no longer the bottleneck"
                + (
                    f" (at most {speedup(prediction.wait_cap)}: what removing the wait allows)"
                    if prediction is not None and prediction.capped
                    else ""
                ),
            )
        )
    if prediction is not None and prediction.shared_cores and prediction.with_stoke_here:
        shared = prediction.shared_cores
        rows.append(
            (
                "With stoke, these cores",
                f"{speedup(prediction.with_stoke_here)} → "
                f"{rate(shared['samples_per_s_on_these_cores'])}: "
                f"{_num(shared['cores_for_this_run'])} of {shared['cores']} cores for this run, "
                f"trainer {shared['trainer_cpu_ms_per_sample']:.3g} ms + input "
                f"{shared['input_cpu_ms_per_sample']:.3g} ms of CPU per sample "
                f"(limited by {shared['limited_by']})",
            )
        )
    if prediction is not None and prediction.unmeasured:
        rows.append(
            (
                "Not measured",
                f"{prediction.confidence} confidence: " + "; ".join(prediction.unmeasured),
            )
        )
    overhead, overhead_note = doctor_overhead(diagnosis)
    rows.append(("Doctor overhead", f"{pct(overhead, 1)} of the measured steps' time: {overhead_note}"))
    dropped = []
    if steady.warmup_dropped:
        record = diagnosis.record
        kept = record.input.kind == "generator" and "input_alone" in record.probes
        dropped.append(
            f"{len(steady.warmup_dropped)} warm-up"
            # the batches the input probe took from the generator are trained on afterwards
            + (" or fed the batches the input probe kept" if kept else "")
        )
    if steady.outliers_dropped:
        dropped.append(f"{len(steady.outliers_dropped)} compilation")
    rows.append(
        (
            "Steps measured",
            f"{steady.steps_used} of {steady.steps_total}"
            + (f" ({', '.join(dropped)} left out)" if dropped else ""),
        )
    )
    if diagnosis.cpu is not None:
        cpu = diagnosis.cpu
        rows.append(
            (
                "CPU",
                f"this run {cpu.self_cores:.1f} cores, other processes {cpu.other_cores:.1f}, "
                f"of {cpu.cores}",
            )
        )
    for gpu in diagnosis.gpus:
        rows.append(
            (
                f"GPU {gpu.index}",
                f"kernel-active {gpu.kernel_active_pct:.0f}% (median), memory peak "
                f"{100.0 * gpu.memory_used_fraction_peak:.0f}%",
            )
        )
    return rows


def doctor_overhead(diagnosis: Diagnosis) -> tuple[float | None, str]:
    """The doctor's cost as a share of the measured steps' wall time (its probes' wall time
    plus its hooks' time), and the sentence that splits it into the two."""
    record = diagnosis.record
    hooks = diagnosis.doctor_overhead_fraction
    total = hooks
    parts = []
    probes_s = record.overhead.probes_s if record is not None else None
    if isinstance(probes_s, int | float) and probes_s > 0:
        steps_wall = sum(s.step_s for s in record.steps)
        share = probes_s / steps_wall if steps_wall > 0 else None
        if share is not None:
            total = (hooks or 0.0) + share
        budget = record.overhead.probe_budget_s
        within = ""
        if isinstance(budget, int | float) and budget > 0:
            within = f", {'within' if probes_s <= budget else 'over'} their {budget:.1f} s budget"
            expected = record.overhead.expected_run_s
            if isinstance(expected, int | float) and expected > 0:
                within += f" (for a run of about {expected:.1f} s of steps)"
        shortened = [name for name, probe in record.probes.items() if probe.detail.get("shortened")]
        not_run = [name for name in (record.meta.probe_notes or {}) if name != "all"]
        parts.append(
            f"probes {probes_s:.1f} s of wall time"
            + (f" ({pct(share, 1)} of the measured steps' {steps_wall:.1f} s)" if share is not None else "")
            + within
            + ", out of sight of callbacks, progress bar and history"
            + (f"; shortened by the budget: {', '.join(_probe_words(shortened))}" if shortened else "")
            + (f"; not run: {', '.join(_probe_words(not_run))}" if not_run else "")
        )
    parts.append(
        f"hooks {pct(hooks, 1)} of step time"
        + (
            f" (above the {pct(DOCTOR_OVERHEAD_TARGET)} target: the numbers may be disturbed)"
            if hooks is not None and hooks > DOCTOR_OVERHEAD_TARGET
            else ""
        )
    )
    return total, "; ".join(parts)


def _probe_words(names: list[str]) -> list[str]:
    words = {"input_free": "input-free window", "input_alone": "input alone",
             "model_alone": "model alone"}
    return [words.get(name, name) for name in names]


def run_description(diagnosis: Diagnosis) -> list[tuple[str, str]]:
    """(label, value) rows about the run itself; every value comes from the user's run."""
    meta = diagnosis.record.meta
    rows = []
    script = meta.script
    if script:
        rows.append(("Script", str(script)))
    argv = meta.argv
    if argv:
        rows.append(("Command", " ".join(str(a) for a in argv) if isinstance(argv, list) else str(argv)))
    for label, value in (
        ("Backend", meta.backend),
        ("Keras", meta.keras_version),
        ("Python", meta.python),
        ("stoke", meta.stoke_version),
        ("Host", meta.hostname),
        ("Started", meta.started_at),
        ("Exit status", meta.exit_status),
    ):
        if value not in (None, ""):
            rows.append((label, str(value)))
    kind = diagnosis.record.input.kind
    if kind:
        rows.append(("Input", str(kind)))
    return rows


def evidence_text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    if isinstance(value, list):
        return ", ".join(evidence_text(v) for v in value) or "-"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {evidence_text(v)}" for k, v in value.items()) or "-"
    return str(value)


def _num(value: float | None) -> str:
    if value is None:
        return "?"
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"
