"""Words and numbers shared by the renderers: verdict headlines, units, the numbers table.

Renderers differ in markup only; what a number is called and how it is written lives here so
that the terminal and the HTML report say the same thing.
"""

from __future__ import annotations

import math
import re
from typing import Any

from stoke.diagnosis.judge.analysis import in_memory_input, input_free_step_s
from stoke.diagnosis.judge.diagnosis import Diagnosis
from stoke.diagnosis.judge.findings import below_input_free_window, conversion_site
from stoke.diagnosis.judge.fits import (
    FitSummary,
    batch_size_words,
    counted_fits,
    figures_source,
    timed_wait_fraction,
)
from stoke.diagnosis.judge.words import NOT_MEASURED, ms, pct, rate, speedup

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


def wait_unmeasured(diagnosis: Diagnosis) -> bool:
    """The run's wait was neither timed nor estimated: its share (0 in the numbers) is no
    measurement, and no figure may be printed for it."""
    return diagnosis.input_wait_source == "unmeasured" and diagnosis.steady.steps_used > 0


def unmeasured_wait_why(diagnosis: Diagnosis) -> str:
    """Why the wait is not known, in words (for a run whose wait was not measured)."""
    why = "this input's wait cannot be timed, and no probe bounds it"
    notes = diagnosis.record.meta.probe_notes or {} if diagnosis.record is not None else {}
    if notes.get("all"):
        why += f" (no probe ran: {notes['all']})"
    return why


def verdict_meaning(diagnosis: Diagnosis) -> str:
    """The verdict in words, under the badge; said as a guess when the wait was not measured."""
    if wait_unmeasured(diagnosis) and diagnosis.verdict in ("compute-bound", "overhead-bound"):
        return "as far as measured: the input's wait was not measured, so whether it keeps up is not known"
    return VERDICT_MEANINGS[diagnosis.verdict]


def no_findings_text(diagnosis: Diagnosis) -> str:
    """What the report says when no finding fired."""
    if diagnosis.verdict == "unknown":
        return "No findings."
    if wait_unmeasured(diagnosis):
        return "No findings in what was measured; the input's wait was not (see Not measured)."
    return "No findings: nothing in this run needs fixing."


def headline(diagnosis: Diagnosis) -> str:
    """One sentence under the verdict."""
    if wait_unmeasured(diagnosis):
        prediction = diagnosis.prediction
        confidence = prediction.confidence if prediction is not None else "low"
        return (
            f"the input's wait was not measured ({unmeasured_wait_why(diagnosis)}); the step takes "
            f"{ms(diagnosis.bound.step_s)} and no speedup is predicted ({confidence} confidence: "
            "see Not measured)"
        )
    text = diagnosis.verdict_reason
    waits = [fit for fit in counted_fits(diagnosis.fits) if fit.wait_fraction is not None]
    if len(waits) > 1 and max(f.wait_fraction for f in waits) - min(f.wait_fraction for f in waits) >= 0.05:
        timed = timed_wait_fraction(diagnosis)
        text += (
            " (over " + figures_source(diagnosis.fits)
            + (f"; the wait before that slowdown, {pct(timed)}, is " if diagnosis.after_wait_s > 0
               else ": ")
            + ", ".join(f"{pct(fit.wait_fraction)} in fit {fit.number}" for fit in waits) + ")"
        )
    if diagnosis.verdict in ("input-bound", "partly-input-bound") and diagnosis.predicted_speedup:
        text += f"; if the input kept up: {speedup(diagnosis.predicted_speedup)}"
        no_gain = no_gain_reason(diagnosis)
        if no_gain:
            text += f" ({no_gain})"
        elif diagnosis.throughput and diagnosis.predicted_throughput:
            text += f" ({rate(diagnosis.throughput)} → {rate(diagnosis.predicted_throughput)})"
        prediction = diagnosis.prediction
        if prediction is not None and prediction.with_stoke_here is not None and diagnosis.cpu:
            text += (
                f"; with stoke on these {diagnosis.cpu.cores} cores: "
                f"{speedup(prediction.with_stoke_here)}"
            )
        if prediction is not None and prediction.confidence != "high":
            text += f" ({prediction.confidence} confidence: see Not measured)"
    for words in (host_code_fix_words(diagnosis), recompile_words(diagnosis)):
        if words:
            text += f"; {words}"
    return text


def recompile_words(diagnosis: Diagnosis) -> str:
    """The step's compilations for new batch shapes, where they took much of the run (a
    step-recompiles finding of high severity: its fix saves 30% of the fits' time or more):
    the verdict is about the steady steps, and the red-team's s1 read COMPUTE-BOUND alone
    with 86% of its fit spent compiling. "" when not named."""
    finding = diagnosis.finding("step-recompiles")
    if finding is None or finding.severity != "high" or finding.expected_gain is None:
        return ""
    one_shape = finding.evidence["expected_gain_is_upper_bound"]
    return (
        f"but compiling the step again for new batch shapes took "
        f"{pct(finding.evidence['saved_share'])} of the fits' time (step-recompiles): "
        + ("at most " if one_shape else "")
        + f"{speedup(finding.expected_gain)} with " + ("one shape" if one_shape else "one batch size")
    )


def host_code_fix_words(diagnosis: Diagnosis) -> str:
    """The predicted gain of fixing host code in the model (host-op-in-model), as the headline
    and the numbers print it; "" when the model has none or it was not predicted."""
    prediction = diagnosis.prediction
    if prediction is None or prediction.if_host_code_fixed is None:
        return ""
    return f"with the host code in the model fixed (host-op-in-model): {speedup(prediction.if_host_code_fixed)}"


def no_gain_reason(diagnosis: Diagnosis) -> str:
    """Why a run that waits for its input is predicted no faster without the wait ("" when
    the prediction is above ×1.00): a verdict that blames the input never sits beside a
    ×1.00 without it."""
    gain = diagnosis.predicted_speedup
    if gain is None or gain >= 1.005:
        return ""
    prediction = diagnosis.prediction
    if prediction is not None and prediction.overlapped_producer:
        steps = diagnosis.in_graph_steps
        if steps:
            return (
                "no faster: one thread already makes the batches alongside the step; "
                f"{steps} of the run's steps timed with Keras' own pull took no longer than "
                "the step with the input made free"
            )
        return (
            "no faster: one thread already makes the batches alongside the step, and it "
            "takes as long as the step itself"
        )
    if (diagnosis.model_alone and diagnosis.throughput
            and diagnosis.model_alone <= 1.05 * diagnosis.throughput):
        return (
            f"no faster: the model alone makes {rate(diagnosis.model_alone)}, no more than the "
            f"run's {rate(diagnosis.throughput)}, so the model would still be the limit; the "
            "probes and the timed wait disagree (see Not measured)"
        )
    if diagnosis.input_is_limit is False and in_memory_input(diagnosis.record):
        # (a generator or PyDataset on the trainer's thread waits for its own work, not a
        # hand-over: the tutorial Sequence of movie-genre's keras_script.py, 2.4 ms waits
        # against 2.9 ms a batch alone)
        return (
            "no faster: the input alone is many times faster than the model, so the wait is the "
            "cost of handing each batch over, which every input pays"
        )
    return (
        "no faster: the step with the input made free, as measured, takes as long as the run's "
        "step; the wait is not what limits it"
    )


def wait_source_note(diagnosis: Diagnosis) -> str:
    """How the input wait was known, in words, when it was not timed ("" when it was)."""
    source = diagnosis.input_wait_source
    if diagnosis.in_graph_steps:
        return (
            f"from {diagnosis.in_graph_steps} of the run's steps run with Keras' own pull, "
            "against the step with the input made free (the doctor's own timed pull changes "
            "such a run's steps)"
        )
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
    fits = diagnosis.fits
    if diagnosis.verdict == "unknown" and not steady.steps_used:
        rows = [("Throughput (steady state)", "not measured: no training step was measured")]
    else:
        over = figures_source(fits)
        rows = [("Throughput (steady state)", (
            rate(diagnosis.throughput) if diagnosis.throughput is not None
            else "not measured: the batch size was not recorded (step times only)")
                 + (f" (over {over})" if over else ""))]
    if len(fits) > 1:
        rows.append(("Fits", fits_line(fits, diagnosis.after_wait_s > 0)))
    source = wait_source_note(diagnosis)
    if wait_unmeasured(diagnosis):
        rows.append(("Input wait", f"not measured: {unmeasured_wait_why(diagnosis)}"))
    elif diagnosis.input_wait_fraction is not None:
        rows.append(
            ("Input wait", f"{pct(diagnosis.input_wait_fraction, 1)} of step time"
             + (f" ({source})" if source else ""))
        )
    else:
        rows.append(("Input wait", "not measured: no training step was measured"))
    batch = batch_size_words(fits) or (_num(bound.batch_size) if bound.batch_size else None)
    batch_note = f" (batch {batch})" if batch else " (batch size not recorded)"
    if wait_unmeasured(diagnosis) and bound.step_s is not None:
        rows.append(("Step time", f"{ms(bound.step_s)}{batch_note}; how much of it waits for "
                     "input: not measured"))
    elif bound.step_s is not None and bound.wait_s is not None and bound.compute_s is not None:
        waiting = "waiting for input" + (" (estimated)" if source else "")
        rows.append(
            (
                "Step time",
                f"{ms(bound.step_s)} = {ms(bound.wait_s)} {waiting} + "
                f"{ms(bound.compute_s)} computing and dispatching{batch_note}",
            )
        )
    mixed_batches = len({f.batch_size for f in fits if f.batch_size is not None}) > 1
    model_line = rate(diagnosis.model_alone)
    if mixed_batches:
        model_line += _probe_batch(diagnosis, "model_alone")
    elif bound.model_alone_step_s is not None:
        model_line += f" ({ms(bound.model_alone_step_s)} per batch)"
    rows.append(("Model alone (probe)", model_line))
    input_line = rate(diagnosis.input_alone)
    if mixed_batches:
        input_line += _probe_batch(diagnosis, "input_alone")
    elif bound.input_alone_step_s is not None:
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
    if wait_unmeasured(diagnosis):
        rows.append(("Limited by", "not known: the input's wait was not measured"))
    elif not steady.steps_used:
        rows.append(("Limited by", "not known: no training step was measured"))
    else:
        rows.append(("Limited by", bound.limited_by))
    prediction = diagnosis.prediction
    if wait_unmeasured(diagnosis):
        rows.append(("Predicted speedup", "not predicted: the wait it would remove was not measured"))
    elif diagnosis.predicted_speedup is not None:
        no_gain = no_gain_reason(diagnosis) if diagnosis.verdict in (
            "input-bound", "partly-input-bound") else ""
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
                )
                + (f": {no_gain}" if no_gain else "")
                + (f" ({below})" if (below := below_input_free_window(diagnosis)) else ""),
            )
        )
    if prediction is not None and prediction.shared_cores and prediction.with_stoke_here:
        shared = prediction.shared_cores
        once = (shared.get("speedup_once_workers_run")
                if shared.get("accelerate_workers_start_in_a_long_run_after_batches") else None)
        rows.append(
            (
                "With stoke, these cores",
                (f"{speedup(prediction.with_stoke_here)} in this run, {speedup(once)} once "
                 "its workers run" if once is not None and once != prediction.with_stoke_here
                 else speedup(prediction.with_stoke_here))
                + f" → {rate(shared['samples_per_s_on_these_cores'])}: "
                f"{_num(shared['cores_for_this_run'])} of {shared['cores']} cores for this run, "
                f"trainer {shared['trainer_cpu_ms_per_sample']:.3g} ms + input "
                f"{shared['input_cpu_ms_per_sample']:.3g} ms of CPU per sample "
                f"(limited by {shared['limited_by']})",
            )
        )
    if prediction is not None and prediction.if_host_code_fixed is not None:
        fix = prediction.host_code_fix
        rows.append(
            (
                "Host code fixed (probe)",
                f"{speedup(prediction.if_host_code_fixed)} → {ms(fix['fixed_step_s'])} a step: "
                f"{fix['step_words']} with {', '.join(fix['stood_in'])} stood in by the identity "
                f"{ms(fix['compiled_step_s'])} + fit's loop {ms(fix['loop_s'])} + input "
                f"{ms(fix['input_s'])} (see host-op-in-model)",
            )
        )
    if prediction is not None and prediction.unmeasured:
        rows.append(
            (
                "Not measured",
                f"{prediction.confidence} confidence: " + "; ".join(prediction.unmeasured),
            )
        )
    if steady.steps_total:
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
    if steady.unsynced_trimmed:
        dropped.append(f"{steady.unsynced_trimmed} outside the device-synchronised window")
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


def _probe_batch(diagnosis: Diagnosis, name: str) -> str:
    """A probe's own time per batch and that batch's size, as it recorded them (the run's
    fits used several batch sizes: a time per batch needs its size)."""
    probe = diagnosis.record.probes.get(name)
    if probe is None:
        return ""
    detail = probe.detail
    seconds = detail.get("s_per_step", detail.get("s_per_batch"))
    size = detail.get("batch_size")
    if size is None and detail.get("samples") and probe.batches:
        size = detail["samples"] / probe.batches
    if not isinstance(seconds, int | float) or not isinstance(size, int | float) or size <= 0:
        return ""
    return f" ({ms(seconds)} per batch of {_num(size)})"


def fits_line(fits: tuple[FitSummary, ...], after_wait: bool = False) -> str:
    """Each fit in a few words: its batch size, epochs, steps and the steps counted, and the
    model it trained where the fits trained several (one not judged says so).
    ``after_wait``: the run's wait adds a slowdown after each wait that no fit's own does."""
    named = len({fit.model for fit in fits}) > 1  # several models: each fit's is named
    return f"{len(fits)}: " + "; ".join(
        f"fit {fit.number}"
        + (f" ({fit.model}" + (", not judged" if fit.other_model else "") + ")"
           if named and fit.model else "")
        + ": "
        + (f"batch {fit.batch_size}, " if fit.batch_size is not None else "")
        + f"{fit.epochs} epoch{'s' if fit.epochs != 1 else ''}, {fit.steps} steps, "
        + f"{fit.steps_counted} counted"
        + (
            " (" + ", ".join(
                part for part in (
                    rate(fit.samples_per_s) if fit.samples_per_s is not None else "",
                    f"{pct(fit.wait_fraction)} of it waiting"
                    if fit.wait_fraction is not None else "",
                ) if part
            ) + ")"
            if fit.steps_counted and (fit.samples_per_s is not None or fit.wait_fraction is not None)
            else ""
        )
        for fit in fits
    ) + ("; the fits' waits leave out the slowdown after each wait" if after_wait else "")


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
             "model_alone": "model alone", "compiled_step": "compiled step (host layers stood in)"}
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
    translated = keras2_calls_text(meta.keras2_conversions or [])
    if translated:
        rows.append(("Keras-2 calls", translated))
    return rows


def keras2_calls_text(conversions: list) -> str:
    """The Keras-2 calls the doctor ran as Keras 2 ran them (Keras 3 alone refuses them or
    reads them otherwise): ``fit_generator (train.py:31), fit(class_weight=) (train.py:40)``,
    with what that means; "" when there were none."""
    calls = []
    for conversion in conversions:
        if not isinstance(conversion, dict):
            continue
        # (the record keeps them as the text of a tuple of "name=value" texts)
        arguments = re.findall(r"['\"(,]\s*(\w+)=", str(conversion.get("legacy_arguments") or ""))
        method = str(conversion.get("method") or "fit")
        call = f"{method}({', '.join(a + '=' for a in arguments)})" if arguments else method
        calls.append(f"{call} ({conversion_site(conversion)})")
    if not calls:
        return ""
    return (", ".join(calls) + ": run as Keras 2 ran them (Keras 3 alone refuses them or reads "
            "them otherwise; `stoke run` runs them so)")


def evidence_text(value: Any) -> str:
    if isinstance(value, float):
        if not math.isfinite(value):
            return NOT_MEASURED
        return f"{value:,.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    if isinstance(value, list):
        return ", ".join(evidence_text(v) for v in value) or "-"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {evidence_text(v)}" for k, v in value.items()) or "-"
    return str(value)


def _num(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return NOT_MEASURED
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"
