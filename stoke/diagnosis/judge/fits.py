"""The run's ``fit`` calls one by one: what each fed (batch size), how long it ran, and which of
its steps the doctor's figures count.

A script may call ``fit`` more than once: pretraining then fine-tuning with another batch
size, or one-epoch fits in a loop. The figures of a diagnosis (throughput, wait, prediction)
are taken over the steady steps of all of them (:func:`stoke.diagnosis.judge.analysis.steady_steps`);
this module says, per fit, what those figures are made of, so that a report never prints a
batch size averaged over fits (11.5 from 16 and 4) or leaves the reader to guess which fit a
figure comes from. Pure: a record and its steady state in, :class:`FitSummary` tuples out; no
figure of the analysis is recomputed here.

    fits = fit_summaries(record, analysis.steady)
    batch_size_words(fits)        # "16 in fit 1, 4 in fit 2" (or "16" when all agree)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from stoke.diagnosis.judge.analysis import SteadyState
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
    # their time spent waiting for input, timed or estimated per step (None: not measured)
    samples_per_s: float | None = None
    wait_fraction: float | None = None


def fit_summaries(
    record: RunRecord, steady: SteadyState, wait_measured: bool = True
) -> tuple[FitSummary, ...]:
    """Every fit of the run that recorded a step, in order. ``wait_measured``: False when
    the run's wait was neither timed nor estimated (then no fit has a wait share)."""
    counted = counted_steps(record.steps, steady)
    by_fit: dict[int, list[StepSample]] = {}
    for step in record.steps:
        by_fit.setdefault(step.fit, []).append(step)
    summaries = []
    for number, (_, steps) in enumerate(sorted(by_fit.items()), start=1):
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
                    sum(min(s.wait_used_s, s.step_s) for s in mine) / time_s
                    if (wait_measured and time_s > 0) else None
                ),
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
        and (s.epoch, s.step) not in left_out
        and s.t_s - s.step_s >= steady.t_start_s
        and s.t_s <= steady.t_end_s
    }


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
    it had one): ``"all 4 fits"``, ``"fit 1 only: fit 2's steps are not counted (...)"``."""
    used = counted_fits(fits)
    if len(fits) < 2 or not used:
        return ""
    if len(used) == len(fits):
        return f"all {len(fits)} fits"
    left = [fit for fit in fits if not fit.steps_counted]
    return (
        _names(used) + " only: " + _names(left)
        + ("'s steps are" if len(left) == 1 else "' steps are")
        + " not counted (warm-up, or outside the device-synchronised window)"
    )


def _names(fits: Sequence[FitSummary]) -> str:
    numbers = [str(fit.number) for fit in fits]
    if len(numbers) == 1:
        return f"fit {numbers[0]}"
    return "fits " + ", ".join(numbers[:-1]) + " and " + numbers[-1]
