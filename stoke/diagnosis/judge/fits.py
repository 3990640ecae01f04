"""The run's ``fit`` calls one by one: what each fed (batch size), how long it ran, and which of
its steps the doctor's figures count.

A script may call ``fit`` more than once: pretraining then fine-tuning with another batch
size, or one-epoch fits in a loop. The figures of a diagnosis (throughput, wait, prediction)
are taken over the steady steps of all of them (:func:`stoke.diagnosis.judge.analysis.steady_steps`);
this module says, per fit, what those figures are made of, so that a report never prints a
batch size averaged over fits (11.5 from 16 and 4) or leaves the reader to guess which fit a
figure comes from. Pure: a record and its analysis in, :class:`FitSummary` tuples out; no
figure of the analysis is recomputed here (a fit's wait is the run's, counted over its steps).

    fits = fit_summaries(record, analysis)
    batch_size_words(fits)        # "16 in fit 1, 4 in fit 2" (or "16" when all agree)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from stoke.diagnosis.judge.analysis import Analysis, SteadyState, pipeline_handover_s
from stoke.diagnosis.record import RunRecord, StepSample


@dataclass(frozen=True)
class FitSummary:
    """One ``fit`` (or ``train_on_batch`` loop) of the run.

    ``number`` counts from 1, as the report names it ("fit 2"). ``batch_size``: the batch
    size of most of its steps (an epoch's last batch may be smaller), None when not recorded.
    ``steps``: its recorded steps; ``steps_counted``: those the diagnosis' figures count (the
    steady state: warm-up, compilations and steps outside the device-synchronised window
    are left out)."""

    number: int
    batch_size: int | None
    epochs: int
    steps: int
    steps_counted: int
    # over its counted steps: samples/s (None: batch sizes not recorded) and the share of
    # their time spent waiting for input, counted as the run's is (None: not known per step)
    samples_per_s: float | None = None
    wait_fraction: float | None = None
    seconds_counted: float = 0.0  # the wall time of its counted steps
    model: str | None = None  # the model it trained (meta.fit_models), when recorded
    # it trained another model than the probes measured: not judged (other_model_fits)
    other_model: bool = False


def fit_summaries(record: RunRecord, analysis: Analysis) -> tuple[FitSummary, ...]:
    """Every fit of the run that recorded a step, in order. Each fit's wait is its steps'
    waits as the analysis counts them (timed, or estimated where not timed; the handover
    taken off each timed wait) before the run-wide slowdown after each wait is added
    (``analysis.after_wait_s``, one figure for the whole run, not per fit): weighted by
    their time, the fits' waits make :func:`timed_wait_fraction`. No fit has one when the
    run's wait came from the probes, was not measured, or came from steps run with Keras' own
    pull (``analysis.in_graph_steps``)."""
    steady = analysis.steady
    counted = counted_steps(record.steps, steady)
    per_step = analysis.input_wait_source in ("measured", "model-alone-estimate") and (
        not analysis.in_graph_steps)  # (the run's wait is then not its timed steps')
    handover_s = pipeline_handover_s(record)

    def wait_s(step: StepSample) -> float:
        timed = max(0.0, step.wait_s - handover_s) if step.wait_timed else step.wait_used_s
        return min(timed, step.step_s)

    by_fit: dict[int, list[StepSample]] = {}
    for step in record.steps:
        by_fit.setdefault(step.fit, []).append(step)
    models = record.meta.fit_models or []
    summaries = []
    for number, (fit, steps) in enumerate(sorted(by_fit.items()), start=1):
        sizes = Counter(s.batch_size for s in steps if s.batch_size > 0)
        mine = [s for s in steps if (s.epoch, s.step) in counted]
        time_s = sum(s.step_s for s in mine)
        samples = sum(s.batch_size for s in mine)
        summaries.append(
            FitSummary(
                number=number,
                batch_size=max(sizes, key=lambda size: (sizes[size], size)) if sizes else None,
                epochs=len({s.epoch for s in steps}),
                steps=len(steps),
                steps_counted=len(mine),
                samples_per_s=samples / time_s if (samples > 0 and time_s > 0) else None,
                wait_fraction=(
                    min(1.0, sum(wait_s(s) for s in mine) / time_s)
                    if (per_step and time_s > 0) else None
                ),
                seconds_counted=time_s,
                model=models[fit] if fit < len(models) else None,
                other_model=fit in steady.other_model_fits,
            )
        )
    return tuple(summaries)


def counted_steps(steps: Sequence[StepSample], steady: SteadyState) -> set[tuple[int, int]]:
    """``(epoch, step)`` of the steps the steady state counts: neither warm-up nor a
    compilation, inside its window (as :func:`~stoke.diagnosis.judge.analysis.steady_steps`
    chose them)."""
    if not steady.steps_used or steady.t_start_s is None or steady.t_end_s is None:
        return set()
    left_out = set(steady.warmup_dropped) | set(steady.outliers_dropped)
    return {
        (s.epoch, s.step)
        for s in steps
        if s.step_s > 0
        and s.fit not in steady.other_model_fits
        and (s.epoch, s.step) not in left_out
        and s.t_s - s.step_s >= steady.t_start_s
        and s.t_s <= steady.t_end_s
    }


def timed_wait_fraction(analysis: Analysis) -> float | None:
    """The run's wait before the slowdown after each wait is added: what the fits' waits
    make, weighted by their time (None when the wait is not known per step)."""
    if analysis.input_wait_fraction is None or analysis.input_wait_source not in (
            "measured", "model-alone-estimate") or analysis.in_graph_steps:
        return None
    step_s = analysis.bound.step_s
    if not step_s or analysis.after_wait_s <= 0:
        return analysis.input_wait_fraction
    return max(0.0, analysis.input_wait_fraction - analysis.after_wait_s / step_s)


def counted_fits(fits: Sequence[FitSummary]) -> list[FitSummary]:
    """The fits whose steps the figures count."""
    return [fit for fit in fits if fit.steps_counted]


def batch_size_words(fits: Sequence[FitSummary]) -> str | None:
    """The batch size of the counted steps in words: ``"16"`` when every counted fit used it,
    ``"16 in fit 1, 4 in fit 2"`` when they differ; None when no batch size was recorded."""
    used = counted_fits(fits) or list(fits)
    sizes = {fit.batch_size for fit in used if fit.batch_size is not None}
    if not sizes:
        return None
    if len(sizes) == 1:
        return str(next(iter(sizes)))
    return ", ".join(
        f"{fit.batch_size} in fit {fit.number}" for fit in used if fit.batch_size is not None
    )


def figures_source(fits: Sequence[FitSummary]) -> str:
    """Which fits the figures come from, in words, when the run had more than one ("" when
    it had one): ``"all 4 fits"``, ``"fit 1 only: fit 2's steps are not counted (...)"``,
    ``"fit 1 only: fit 2 trained another model (cnn) than the probes measured (mlp): not
    judged"``."""
    used = counted_fits(fits)
    if len(fits) < 2 or not used:
        return ""
    if len(used) == len(fits):
        return f"all {len(fits)} fits"
    left = [fit for fit in fits if not fit.steps_counted and not fit.other_model]
    other = [fit for fit in fits if fit.other_model]
    reasons = []
    if left:
        reasons.append(
            _names(left) + ("'s steps are" if len(left) == 1 else "' steps are")
            + " not counted (warm-up, or outside the device-synchronised window)")
    if other:
        trained = sorted({fit.model for fit in other if fit.model})
        probed = sorted({fit.model for fit in used if fit.model})
        reasons.append(
            _names(other) + " trained another model"
            + (f" ({', '.join(trained)})" if trained else "")
            + " than the probes measured" + (f" ({', '.join(probed)})" if probed else "")
            + ": not judged")
    return _names(used) + " only: " + "; ".join(reasons)


def _names(fits: Sequence[FitSummary]) -> str:
    numbers = [str(fit.number) for fit in fits]
    if len(numbers) == 1:
        return f"fit {numbers[0]}"
    return "fits " + ", ".join(numbers[:-1]) + " and " + numbers[-1]
