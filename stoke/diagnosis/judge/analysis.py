"""From a run record to the numbers of a diagnosis: the verdict and what stands behind it.

This module owns the arithmetic of the doctor: which steps count (the steady state), how much
of a step is spent waiting for input, the bound the two probes give, the speedup predicted
if the input stopped being the bottleneck, and the verdict. It is the first step of a one-way
chain: the numbers (:class:`Analysis`) are read by the findings
(:mod:`stoke.diagnosis.judge.findings`: causes, evidence, fixes), and both make the
:class:`~stoke.diagnosis.judge.diagnosis.Diagnosis` (:func:`~stoke.diagnosis.judge.diagnosis.analyse`);
nothing here knows a finding. Everything here is pure: a
:class:`~stoke.diagnosis.record.RunRecord` in, an :class:`Analysis` out, no Keras, no clock.

    numbers = analyse_run(RunRecord.load("run.json"))
    numbers.verdict                # "input-bound"
    numbers.predicted_speedup      # 3.4

**Steady state.** Steps are taken in time order. Steps the probes flagged ``warmup`` (the first
steps of each ``fit``: tracing, compilation, worker start-up) are dropped; in a record without
flags, the first ``WARMUP_STEPS`` steps of the first epoch are. Of the rest, a step whose
compute time (``step_s - wait_s``) exceeds both ``COMPILE_OUTLIER_FACTOR`` times the median
and the median plus ``COMPILE_OUTLIER_MIN_S`` (for a step synchronised with the device, that
limit times the steps since the previous synchronised one: it carries their queued device
work) is a (re)compilation - the last, smaller batch of
an epoch triggers one on JAX and TensorFlow - and is dropped too, unless such steps are more
than ``MAX_OUTLIER_SHARE`` of the run, in which case they are the run and stay. Waits at the
start of later epochs stay in: the user pays them every epoch (a DataLoader starting its workers
there: its cost beyond a steady step's is the run's side of the prediction, kept or not:
:func:`epoch_start_input_s`). When steps were synchronised
with the device now and then (``StepSample.synced``), only the window from the first synced
step's end to the last synced step's end is kept (if it holds at least half the steps): under
asynchronous dispatch that is the window whose sums are exact.

**Verdict** (XProf's vocabulary and thresholds, over the steady state):
``input_wait_fraction = sum(wait_s) / sum(step_s)``, the waits including what the trainer's
work right after each wait takes beyond its back-to-back time (:func:`after_wait_slowdown_s`)
or, where the input's workers share a CPU-trained model's cores, the step's time beyond the
input-free window's (:func:`shared_cores_slowdown_s`), and not the part of them the model's
own work ran through (the model alone takes longer than the step less its wait: asynchronous
dispatch, :func:`wait_behind_model_s`); at least 20% ->
``input-bound``; 5-20% -> ``partly-input-bound``; below 5% -> ``compute-bound``, or
``overhead-bound`` when the measurements show that host work, not the device, fills the step (see :func:`overhead_signals`). ``unknown`` when the record holds no usable step.

**Predicted speedup** if the input were no longer the bottleneck. A step takes about
``max(model, input) + exposed overhead``; with the input hidden, what is left is the time the
trainer spends not waiting, and never less than the model needs on its own::

    no_wait_step_s    = the input-free window's step     # measured, when it ran and is
                                                        # no longer than the run's step, else
                      = typical (step_s - wait_s)       # see no_wait_step_s: mean or median
    model_step_s      = batch_size / model_alone        # the model-alone probe, if run
    handover_s        = the wait less the generator's own time, or that hand-over timed
                        back to back in the window (see handover_s_per_step)
    predicted_step_s  = max(no_wait_step_s, model_step_s) + handover_s
    epoch_s           = work that recurs once an epoch outside the steps' waits, a step
                        (see epoch_overhead_s_per_step): paid before and after the fix
    start_s           = a DataLoader starting its workers at each epoch's first step, a
                        step (see epoch_start_input_s): before the fix only
    predicted_speedup = max(1.0, (steady step_s + epoch_s + start_s)
                                 / (predicted_step_s + epoch_s))
    predicted_throughput = throughput * predicted_speedup
    # i.e. predicted_throughput = min(no-wait throughput, model_alone), less the handover
    # (and the epoch's own work)

When the probes time the no-wait step longer than the run's own mean step (which also waited:
impossible in a steady run, so the load changed between them, :func:`probes_disagree`), the
prediction is the timed wait's own, ``1 / (1 - wait)``, with lowered confidence: never a x1.00
under a verdict that reads a wait.

When one tf.data thread makes the batches alongside the step (TensorFlow wrapping a PyDataset
or generator), Keras overlaps the two, and the speedup is never above the run's step with
Keras' own pull (timed on a few of its steps, else ``max(no-wait step, input alone per
batch)``) over the no-wait step (:func:`overlapped_producer`).

The input-free window (:mod:`stoke.diagnosis.measure.input_free`) times a few of the run's own
steps fed a cached batch: everything ``fit`` does per step but the input, the quantity the
prediction needs, back to back (the fit loop's own time and the hand-over too, which the run's
steps only show right after their waits: several times slower there for a tiny model). Without it the no-wait step comes from the run's steps less their waits,
which runs long right after long waits (cold caches, idle cores) - several times too long for
small models. Without the model-alone probe the no-wait estimate stands alone; on backends that dispatch
asynchronously (JAX, TensorFlow) the device may run during the wait, so the compute time of
steps measured after a device sync (``StepSample.synced``) is used when it is longer. Working
in step time also holds when batch sizes were not recorded.

**A ready batch is not a wait.** On TensorFlow the doctor times its own eager pull and takes
off the floor (a trivial pipeline's ready pull); the run's own pipeline may take longer to hand
over a batch it has ready (Keras' array adapter: ~0.1 ms more), and that difference
(:func:`pipeline_handover_s`, from the input-alone probe) comes off each timed wait too. A
generator's or PyDataset's batch crosses Keras' ``from_generator`` pipeline (a ``py_function``)
every step, a pre-made one too: that hand-over (:func:`generator_handover_s`) comes off each
timed wait and stays in the predicted step.

**Unmeasurable wait.** Each step counts its timed wait where it was timed and the estimate
where it was not (:attr:`~stoke.diagnosis.record.StepSample.wait_used_s`: TensorFlow pulling
inside the compiled loop, estimated after the run as step time less the model-alone step);
``input_wait_source`` is then ``"model-alone-estimate"`` and ``wait_estimated_steps`` counts
those steps. When a step's wait is neither timed nor estimated, or the record says
``input.wait_measured is False`` or ``input.wait_method == "none"`` (a native tf.data
pipeline's ``next()`` runs inside a ``tf.function``), the wait's share is estimated from the
probes (:func:`wait_fraction_from_probes`, source ``"probes"``), or not known
(``"unmeasured"``). Every source but ``"measured"`` is named in the verdict's reason and
lowers the prediction's confidence.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from stoke.diagnosis.record import (
    BACKGROUND_PRODUCERS,
    FROM_GENERATOR_INPUT_KINDS,
    RunRecord,
    StepSample,
    SystemSample,
    input_shares_the_cores,
)

VERDICTS = ("input-bound", "partly-input-bound", "compute-bound", "overhead-bound", "unknown")

# XProf: input wait of at least 20% of the step is input-bound, 5-20% partly.
INPUT_BOUND_WAIT_FRACTION = 0.20
PARTLY_INPUT_BOUND_WAIT_FRACTION = 0.05

WARMUP_STEPS = 2
COMPILE_OUTLIER_FACTOR = 10.0
COMPILE_OUTLIER_MIN_S = 0.2
MAX_OUTLIER_SHARE = 0.10

# overhead-bound: the device (or the model on its own) accounts for less than this share of
# the step although the trainer is not waiting for input.
OVERHEAD_DEVICE_SHARE = 0.5

# Removing a wait of w can make a step at most 1/(1 - w) faster; the input-free window may
# find the trainer's own work a little faster still (warm caches once it stops waiting), so
# the prediction may exceed that by this factor and no more (issue 14: <= 1.3/(1 - wait)).
WAIT_CAP_MARGIN = 1.3
# The input alone is "the limit" only when it makes fewer than this many times the samples/s
# the model takes without waiting; 5x faster and the wait has another cause.
INPUT_LIMIT_FACTOR = 5.0
# The probes' no-wait step may come out this much longer than the run's mean step (timing
# noise) before they are said to contradict the run (probes_disagree).
PROBE_DISAGREEMENT = 1.10


@dataclass(frozen=True)
class SteadyState:
    """Which steps the numbers are computed over, and why the others were left out."""

    steps_total: int
    steps_used: int
    warmup_dropped: tuple[tuple[int, int], ...] = ()  # (epoch, step) of each
    outliers_dropped: tuple[tuple[int, int], ...] = ()  # (epoch, step): compilations
    unsynced_trimmed: int = 0  # steps outside the first-to-last synced step window
    t_start_s: float | None = None  # the steady window, in record time
    t_end_s: float | None = None
    # fits (StepSample.fit) of models other than the one the probes measured: not judged
    # (other_model_fits)
    other_model_fits: tuple[int, ...] = ()


@dataclass(frozen=True)
class Bound:
    """Where a steady step's time goes, and what the probes say each side could do alone.

    ``limited_by`` is ``"input"``, ``"model"``, ``"overhead"`` or ``"unknown"``. Per-step
    times are means over the steady state; probe times are per batch of ``batch_size``.
    """

    limited_by: str
    batch_size: float | None
    step_s: float | None
    wait_s: float | None
    compute_s: float | None
    model_alone_step_s: float | None = None
    input_alone_step_s: float | None = None
    no_wait_throughput: float | None = None


@dataclass(frozen=True)
class CpuSummary:
    """Host load over the steady window, in cores (1.0 = one core fully busy)."""

    cores: int
    self_cores: float  # median, this run and its children
    other_cores: float  # median, every other process on the machine
    busy_fraction: float  # median share of all cores busy (0-1)
    samples: int


@dataclass(frozen=True)
class GpuSummary:
    """One GPU over the steady window."""

    index: int
    kernel_active_pct: float  # median of NVML's utilization.gpu
    memory_used_fraction_peak: float
    memory_total_bytes: int
    samples: int


@dataclass(frozen=True)
class Prediction:
    """The one model behind every speedup the doctor prints (headline, findings, JSON).

    ``if_input_free``: the step with the input made free (the input-free window, else the
    steps less their waits), never faster than the model alone, and never more than
    ``WAIT_CAP_MARGIN / (1 - wait)`` (``capped`` says it was cut there). ``with_stoke_here``:
    what stoke's workers can reach on the cores this run may use, sharing them with the
    trainer (``shared_cores`` holds the numbers: cores, taken by others, the trainer's and the
    input's CPU seconds per sample and where each came from). ``overlapped_producer``: when a
    tf.data thread makes the batches alongside the step, the step Keras really runs and the
    speedup that follows (:func:`overlapped_producer`), which ``if_input_free`` never
    exceeds. ``if_host_code_fixed``: with host code in the model, what its fix (the layer on
    the device, the step compiled) wins, the compiled-step probe's step against the run's
    (:func:`host_code_fix_prediction`; ``host_code_fix`` holds the numbers, or why there is
    none): a model fix, not the input's, so neither capped by the wait nor in the verdict. ``epoch_overhead_s_per_step``: work that recurs once an epoch outside the steps' waits, spread
    over the epoch's steps (:func:`epoch_overhead_s_per_step`), in the step before and after
    every fix; ``epoch_start_input_s_per_step``: the input's cost at the epochs' first
    steps beyond a steady step's, spread the same way (:func:`epoch_start_input_s`), in the
    step before the fix only, and ``epoch_start_in_mean_s_per_step`` the part of the steady
    steps' mean it makes. ``unmeasured``: the figures the prediction had to do without, each in words with what that costs; ``confidence``
    ("high", "medium", "low") falls with each.
    """

    if_input_free: float | None
    with_stoke_here: float | None
    wait_cap: float | None
    capped: bool
    confidence: str
    unmeasured: tuple[str, ...] = ()
    shared_cores: dict[str, Any] = field(default_factory=dict)
    overlapped_producer: dict[str, Any] = field(default_factory=dict)
    # host code in the model (host-op-in-model): the gain of its fix, from the compiled-step
    # probe (host_code_fix_prediction), and its numbers, or {"not_predicted": why}
    if_host_code_fixed: float | None = None
    host_code_fix: dict[str, Any] = field(default_factory=dict)
    # seconds a step of work that recurs once an epoch outside its steps' waits (a worker pool
    # started again, the epoch's iterator, epoch-end callbacks and validation), spread over the
    # epoch's steps: paid after any input fix too (epoch_overhead_s_per_step)
    epoch_overhead_s_per_step: float = 0.0
    # the part of it the step the prediction starts from (``Bound.step_s``) holds already: the
    # epochs' first steps among the steady ones (0.0 where that step came from steps inside
    # an epoch: the steps with Keras' own pull)
    epoch_overhead_in_mean_s_per_step: float = 0.0
    # seconds a step: the input's cost at the epochs' first steps beyond a steady step's (a
    # DataLoader starting its workers again), over the epoch's steps (in the step before the
    # fix only), and the part of the steady steps' mean it makes: epoch_start_input_s
    epoch_start_input_s_per_step: float = 0.0
    epoch_start_in_mean_s_per_step: float = 0.0


@dataclass(frozen=True)
class Analysis:
    """The numbers of one run: verdict, steady state, bound, prediction, host and GPU load.
    Build it with :func:`analyse_run`; findings (:mod:`stoke.diagnosis.judge.findings`) read it,
    and :class:`stoke.diagnosis.judge.diagnosis.Diagnosis` adds them to it."""

    verdict: str
    verdict_reason: str
    input_wait_fraction: float | None
    throughput: float | None  # samples/s, steady state; None when batch sizes are unknown
    predicted_throughput: float | None
    predicted_speedup: float | None  # >= 1.0 whenever there are steps
    model_alone: float | None  # samples/s, probe
    input_alone: float | None  # samples/s, probe
    bound: Bound
    steady: SteadyState
    cpu: CpuSummary | None
    gpus: tuple[GpuSummary, ...]
    doctor_overhead_fraction: float | None
    overhead_signals: tuple[str, ...] = ()
    # "measured" (timed), "model-alone-estimate" (some steps' waits not timed but estimated
    # after the run: StepSample.wait_estimated_s), "probes" (estimated here, see
    # wait_fraction_from_probes), "unmeasured"
    input_wait_source: str = "measured"
    wait_estimated_steps: int = 0  # steady steps whose wait is an estimate, not timed
    prediction: Prediction | None = None
    # the input alone makes fewer than INPUT_LIMIT_FACTOR x the no-wait samples/s (None: the
    # input-alone probe did not run, so it is not known)
    input_is_limit: bool | None = None
    # seconds a step, counted in the wait: the trainer's work right after a wait beyond its
    # back-to-back time (after_wait_slowdown_s)
    after_wait_s: float = 0.0
    # seconds a step, counted in the wait: the trainer's work beyond its input-free time where
    # the input's workers share a CPU-trained model's cores (shared_cores_slowdown_s)
    shared_cores_s: float = 0.0
    # seconds a step, taken out of the timed wait: the model's own work ran through them
    # (wait_behind_model_s)
    wait_behind_model_s: float = 0.0
    # the run's step, wait and throughput came from this many of its steps run with Keras'
    # own pull (TensorFlow, a tf.data-thread producer: overlapped_producer), not from the
    # steps the doctor timed; 0 when not
    in_graph_steps: int = 0

    @property
    def input_wait_pct(self) -> float | None:
        return None if self.input_wait_fraction is None else 100.0 * self.input_wait_fraction

    @property
    def model_rate(self) -> float | None:
        """The samples/s the model takes batches at (:func:`model_take_rate`)."""
        return model_take_rate(self.bound.no_wait_throughput if self.bound else None,
                               self.model_alone)


def model_take_rate(no_wait_throughput: float | None, model_alone: float | None) -> float | None:
    """The samples/s the model takes batches at: its no-wait rate in the run or alone,
    whichever is lower (None when neither was measured). The input is the limit only when it
    makes fewer than that."""
    rates = [rate for rate in (no_wait_throughput, model_alone) if rate]
    return min(rates) if rates else None


def other_model_fits(record: RunRecord) -> tuple[int, ...]:
    """The fits (``StepSample.fit``) that trained another model than the fit the probes and
    the input-free window measured (``meta.probed_fit``, ``meta.fit_models``): their steps
    are left out of every figure, which the probes' model-alone and input-free steps would
    otherwise be set against. The red-team's s03_two_models.py (a function that fits an MLP
    on a generator, then a CNN on arrays): "x2.96 if the input kept up" for both, from the
    MLP's probes, where a fix of the MLP's input measured x1.18 on the whole run (the CNN's
    fit, 1% waiting, unchanged). () when the probes did not run in a fit, or every fit
    trained one model."""
    meta = record.meta
    fits, probed = meta.fit_models, meta.probed_fit
    if not fits or probed is None or probed >= len(fits) or fits[probed] is None:
        return ()
    return tuple(number for number, label in enumerate(fits)
                 if label is not None and label != fits[probed])


def steady_steps(steps: Sequence[StepSample]) -> tuple[list[StepSample], SteadyState]:
    """The steps that describe the run once it is warm (see the module docstring)."""
    ordered = sorted((s for s in steps if s.step_s > 0), key=lambda s: (s.t_s, s.step))
    if not ordered:
        return [], SteadyState(steps_total=len(steps), steps_used=0)
    flagged = [s for s in ordered if s.warmup]
    if flagged and len(flagged) < len(ordered):
        warmup = flagged  # the probes know which steps traced or compiled
    else:
        first_epoch = ordered[0].epoch
        warmup_budget = min(WARMUP_STEPS, len(ordered) // 2)
        warmup = [s for s in ordered if s.epoch == first_epoch][:warmup_budget]
    warmup_ids = {id(s) for s in warmup}
    candidates = [s for s in ordered if id(s) not in warmup_ids]
    # steps the backend compiled in, as it said (JAX: a new batch shape), are compilations
    # however many (the red-team's s04_padded_batch.py: more than MAX_OUTLIER_SHARE of them)
    compiled = [s for s in candidates if s.compiled_s > 0]
    median_compute = statistics.median(
        _compute_s(s) for s in ([s for s in candidates if s.compiled_s <= 0] or candidates))
    limit = max(COMPILE_OUTLIER_FACTOR * median_compute, median_compute + COMPILE_OUTLIER_MIN_S)
    outliers = [s for s, span in _sync_spans(candidates) if _compute_s(s) > limit * span]
    if len(outliers) > MAX_OUTLIER_SHARE * len(candidates):
        outliers = []  # that many slow steps are the run itself, not compilations
    outliers += [s for s in compiled if s not in outliers]
    outlier_ids = {id(s) for s in outliers}
    kept = [s for s in candidates if id(s) not in outlier_ids]
    kept, trimmed = _between_syncs(kept)
    steady = SteadyState(
        steps_total=len(steps),
        steps_used=len(kept),
        warmup_dropped=tuple((s.epoch, s.step) for s in warmup),
        outliers_dropped=tuple((s.epoch, s.step) for s in outliers),
        unsynced_trimmed=trimmed,
        t_start_s=min(s.t_s - s.step_s for s in kept),
        t_end_s=max(s.t_s for s in kept),
    )
    return kept, steady


def _sync_spans(steps: Sequence[StepSample]) -> list[tuple[StepSample, int]]:
    """Each step with the number of steps whose device work it may carry: 1 for an unsynced
    step; for a synced step, the steps since the previous synced one (itself included). Under
    asynchronous dispatch a synced step waits for all the work queued since the last sync: a
    compute-bound JAX run shows 0.4 ms steps and one 1 s step every 0.25 s, which is the run,
    not a compilation."""
    spans = []
    since_sync = 0
    for step in steps:
        since_sync += 1
        spans.append((step, since_sync if step.synced else 1))
        if step.synced:
            since_sync = 0
    return spans


def _between_syncs(kept: list[StepSample]) -> tuple[list[StepSample], int]:
    """Under asynchronous dispatch only a window from one synced step's end to another's is
    timed exactly (before it the device may still run older work, after it work is queued but
    not done). Keep that window when there is one and it holds at least half the steps."""
    synced = [i for i, s in enumerate(kept) if s.synced]
    if len(synced) < 2:
        return kept, 0
    window = kept[synced[0] + 1 : synced[-1] + 1]
    if len(window) < len(kept) / 2:
        return kept, 0
    return window, len(kept) - len(window)


def overhead_signals(
    record: RunRecord,
    throughput: float | None,
    step_s: float | None,
    gpus: Sequence[GpuSummary],
) -> tuple[str, ...]:
    """Measured reasons to believe host work, not the device, fills the step.

    Each signal is a sentence with its numbers; any one is enough for ``overhead-bound``
    when the run is not waiting for input:

    - the model-alone probe found a batch-size-independent cost per step
      (``detail["fixed_s_per_step"]``) of at least half the steady step: the step is mostly
      fixed per-step cost (dispatch, Python), not work that grows with the batch;
    - the model-alone probe measured the device time of a step (``detail["device_s_per_batch"]``)
      at less than half the steady step;
    - the run reaches less than half the model-alone throughput: the step is more than twice
      what the model needs on a cached batch, and the rest is neither input wait nor the
      model (callbacks, logging, Python around the step, synchronisation);
    - on a GPU run, the busiest GPU ran kernels less than half the time (NVML kernel-active).
    """
    signals: list[str] = []
    model_probe = record.probes.get("model_alone")
    detail = model_probe.detail if model_probe is not None else {}
    fixed_s = as_number(detail.get("fixed_s_per_step"))
    if fixed_s is not None and step_s and fixed_s >= OVERHEAD_DEVICE_SHARE * step_s:
        signals.append(
            f"fixed per-step cost {fixed_s * 1e3:.2f} ms is {fixed_s / step_s:.0%} of the "
            f"{step_s * 1e3:.2f} ms step"
        )
    device_s = as_number(detail.get("device_s_per_batch"))
    if device_s is not None and step_s and device_s < OVERHEAD_DEVICE_SHARE * step_s:
        signals.append(
            f"the device works {device_s * 1e3:.2f} ms of the {step_s * 1e3:.2f} ms step "
            f"({device_s / step_s:.0%})"
        )
    model_alone = _probe_rate(record, "model_alone")
    if model_alone and throughput and throughput < OVERHEAD_DEVICE_SHARE * model_alone:
        signals.append(
            f"the run makes {throughput:,.0f} samples/s, {throughput / model_alone:.0%} of the "
            f"{model_alone:,.0f} samples/s the model reaches alone on a cached batch"
        )
    gpus_used = as_number(record.env.gpus_used)
    model_on_cpu = record.model.device == "cpu" or gpus_used == 0
    if gpus and not model_on_cpu:
        busiest = max(gpus, key=lambda g: g.kernel_active_pct)
        if busiest.kernel_active_pct < 100.0 * OVERHEAD_DEVICE_SHARE:
            signals.append(
                f"GPU {busiest.index} ran kernels {busiest.kernel_active_pct:.0f}% of the time "
                "(NVML kernel-active) while the trainer was not waiting for input"
            )
    return tuple(signals)


def no_wait_step_s(kept: Sequence[StepSample], wait_fraction: float) -> float:
    """The typical time of a step spent not waiting for input: what a step would take if the
    input were free, before the model-alone bound.

    The mean when the trainer barely waits (below 5%: then there is nothing to remove). When
    it does wait, the median: the trainer's own work right after a long wait runs slower (cold
    caches, a core that went idle, GIL hand-offs with loader threads), and that inflation
    leaves with the wait; the median is robust to it, the mean is not. Measured on a JAX run
    fed by a 20 ms generator: mean 0.95 ms, median 0.79 ms, and 0.48 ms once the wait was gone.
    """
    if not kept:
        return 0.0
    computes = [_compute_s(s) for s in kept]
    if wait_fraction < PARTLY_INPUT_BOUND_WAIT_FRACTION:
        return statistics.fmean(computes)
    return statistics.median(computes)


def probes_disagree(no_wait_step_s: float, step_s: float, wait_fraction: float) -> str | None:
    """Why the prediction cannot be trusted when the probes (the input-free window, the model
    alone) timed the step with the input made free longer than the run's own mean step,
    although those steps also waited for input: in a steady run that cannot be (each step
    holds the trainer's and the device's work, the wait on top), so the probes and the steps
    ran under different conditions - the machine's load changed between them, other processes
    took the cores. A x1.0 from them would not be a measured "no gain", and would contradict
    a verdict read from the same wait: the prediction falls back on the wait the run timed,
    ``1 / (1 - wait)`` (what removing exactly that wait wins), says so, and its confidence
    falls. ``PROBE_DISAGREEMENT`` leaves room for the timing noise of probes a few hundred
    steps long. None when they agree or the run barely waits (nothing to predict)."""
    if wait_fraction < PARTLY_INPUT_BOUND_WAIT_FRACTION or not step_s:
        return None
    if no_wait_step_s <= PROBE_DISAGREEMENT * step_s:
        return None
    return (
        f"the step with the input made free: the probes timed it at {no_wait_step_s * 1e3:.2f} "
        f"ms, longer than this run's own {step_s * 1e3:.2f} ms steps that also waited for "
        "input (the machine's load changed between them): the gain is taken as the timed "
        "wait's own, 1/(1 - wait)"
    )


def input_slower_than_run(
    input_step_s: float | None, step_s: float, wait_fraction: float,
    background_producers: bool = False,
) -> str | None:
    """Why the probes cannot be trusted when the input-alone probe made a batch more slowly
    than the run took for a whole step (beyond ``PROBE_DISAGREEMENT``): the run cannot go
    faster than its own input, so the probes ran under heavier load than the steps, and the
    model-alone and input-free figures taken with them too (TensorFlow on loaded cores: 32.7
    ms steps, 71% waiting, the input alone 43.5 ms a batch, the model alone 33.2 ms: a x1.0
    under "input-bound"). None when it agrees, was not measured, or the run barely waits; and
    where the training's own input runs in ``background_producers`` (a ``PyDataset``'s or
    ``DataLoader``'s workers): the probe's fresh iterator starts workers of its own while the
    training's keep filling their queue, the two share the cores (threads, the GIL too), so
    the probe is slower than the run's input by its making, not by a change of load (JAX, two
    threads augmenting batches: 15.1 ms a batch alone against the run's 9.1 ms steps, at
    load 1; the fixed twin ran x1.69, the wait's own 1/(1 - wait) said x1.15)."""
    if (input_step_s is None or background_producers
            or wait_fraction < PARTLY_INPUT_BOUND_WAIT_FRACTION
            or not step_s or input_step_s <= PROBE_DISAGREEMENT * step_s):
        return None
    return (
        f"the input alone: the probe made a batch in {input_step_s * 1e3:.2f} ms, longer than "
        f"this run's own {step_s * 1e3:.2f} ms steps (the machine's load changed between them, "
        "and the other probes ran under it too): the gain is taken as the timed wait's own, "
        "1/(1 - wait)"
    )


def window_contradicts_run(
    input_free_s: float | None, step_s: float, wait_fraction: float
) -> str | None:
    """Why the input-free window cannot stand for the step with the input made free: it timed
    that step longer than the run's own mean step, which also waited for its input
    (:func:`probes_disagree`: the machine's load changed between the two). The prediction
    then falls back on the run's own steps less their waits, bounded by the model alone,
    timed in the same steps as the wait the verdict reads (a window taken as it is printed
    x1.00 under "input-bound": JAX, the tutorial Sequence, 31% wait, x1.49 on its fixed
    twin). None when the window agrees with the run, or did not run."""
    if input_free_s is None or probes_disagree(input_free_s, step_s, wait_fraction) is None:
        return None
    return (
        f"the step with the input made free: the input-free window timed it at "
        f"{input_free_s * 1e3:.2f} ms, longer than this run's own {step_s * 1e3:.2f} ms steps "
        "that also waited for input (the machine's load changed between them): taken as the "
        "steps less their waits instead"
    )


# the least steps with Keras' own pull (measure.in_graph_steps) whose median is taken as the
# run's step; fewer (a fit that ended during them) leave the step to the model below
MIN_IN_GRAPH_STEPS = 4


def overlapped_producer(
    record: RunRecord, no_wait_step_s: float, batch_size: float | None,
    input_alone: float | None, cpu: CpuSummary | None = None, step_s: float | None = None,
) -> dict[str, Any] | None:
    """The step Keras really runs when one tf.data thread makes the batches alongside it
    (TensorFlow's ``from_generator`` around a PyDataset or generator: ``input.producer ==
    "tf.data-thread"``, off the trainer's thread), and the speedup of making the input free.

    Keras pulls inside its compiled step: while the step runs (outside the GIL), the thread
    makes the next batch, so a step takes ``max(no-wait step, the input alone per batch)``
    and freeing the input wins ``that / no-wait step``. The doctor's own eager pull returns
    to Python after each batch and must take the GIL back from that thread: it times a wait
    Keras' in-graph pull does not pay (the tutorial Sequence on TensorFlow: 34% "wait" and
    x1.88 predicted, x1.00 measured on its fixed twin). The two overlap only as far as the
    cores allow: when the trainer's CPU per step (the input-free window's) and the input's
    (the input-alone probe's) are measured, the step is also at least their sum over the
    cores other processes leave (``cpu``), and never more than the run's own ``step_s`` on
    that account (it already ran them on these cores).

    That model missed the GIL the two share: the tutorial Sequence of the corpus
    (``sequence_float64.py``, 2 cores) was predicted a 2.7 ms step, x1.00, where its plain runs
    took 3.2-3.9 ms and its fixed twin 2.3-2.9 ms (x1.37). Where the doctor timed a few of
    the run's steps with Keras' own pull (``input.tf_in_graph_step_s``, at least
    :data:`MIN_IN_GRAPH_STEPS`: :mod:`stoke.diagnosis.measure.in_graph_steps`), their median
    is the step instead, measured (never above the doctor's own mean ``step_s``, never below
    the input alone per batch), and the speedup that over the no-wait step (at least 1).
    None when another producer makes the batches, or neither those steps nor the input alone
    were measured."""
    inputs = record.input
    if inputs.producer != "tf.data-thread" or inputs.main_thread is not False or no_wait_step_s <= 0:
        return None
    in_graph = [float(s) for s in inputs.tf_in_graph_step_s or () if as_number(s)]
    input_step_s = batch_size / input_alone if (input_alone and batch_size) else None
    if len(in_graph) >= MIN_IN_GRAPH_STEPS:
        # measured: the run's own steps as Keras runs them, its pull inside the step. Never
        # slower than the doctor's own steps, whose eager pull only adds to the same step (a
        # compute-bound run's 4 such steps took 39.0 ms on a moment's load, against 27.7 ms
        # for its other steps and 30.4 ms input-free: "input-bound" for an input that was
        # ready at every pull), and never faster than the thread makes a batch alone
        # (batches it stocked while the doctor's slower steps ran go first:
        # image_directory.py's 6 such steps, 8.0-19.8 ms, median 12.4, its input alone 13.2)
        median_s = statistics.median(in_graph)
        keras_step_s = min(max(median_s, input_step_s or 0.0), step_s or float("inf"))
        return {
            "input_s_per_batch": input_step_s,
            "no_wait_step_s": no_wait_step_s,
            "cores_step_s": None,
            "in_graph_median_s": median_s,
            "in_graph_steps": len(in_graph),
            "keras_step_s": keras_step_s,
            "speedup": max(1.0, keras_step_s / no_wait_step_s),
            "limited_by": "measured: the run's steps with Keras' own pull",
        }
    if input_step_s is None:
        return None
    keras_step_s = max(no_wait_step_s, input_step_s)
    limited_by = "input" if input_step_s > no_wait_step_s else "model and loop"
    free_probe, input_probe = record.probes.get("input_free"), record.probes.get("input_alone")
    trainer_cpu_s = as_number(free_probe.detail.get("cpu_s_per_step")) if free_probe else None
    input_cpu_s = as_number(input_probe.detail.get("cpu_s_per_sample")) if input_probe else None
    cores_step_s = None
    if cpu is not None and trainer_cpu_s is not None and input_cpu_s is not None:
        cores_free = max(0.5, cpu.cores - cpu.other_cores)
        cores_step_s = (trainer_cpu_s + input_cpu_s * batch_size) / cores_free
        if step_s:
            cores_step_s = min(cores_step_s, step_s)
        if cores_step_s > keras_step_s:
            keras_step_s, limited_by = cores_step_s, "the cores, shared by the step and the input"
    return {
        "input_s_per_batch": input_step_s,
        "no_wait_step_s": no_wait_step_s,
        "cores_step_s": cores_step_s,
        "keras_step_s": keras_step_s,
        "speedup": keras_step_s / no_wait_step_s,
        "limited_by": limited_by,
    }


def probed_fit_batch_size(kept: Sequence[StepSample], record: RunRecord) -> float:
    """The mean batch of the steady steps of the fit the probes ran in (``meta.probed_fit``),
    which the steps with Keras' own pull ran in too: a script whose fits differ in batch size
    (16, then 4) divides that fit's batch, not the run's mean, by those steps' time. The
    run's mean batch where that fit is not recorded or kept no step."""
    probed = record.meta.probed_fit
    sizes = [s.batch_size for s in kept if s.batch_size > 0 and (probed is None or s.fit == probed)]
    if not sizes:
        sizes = [s.batch_size for s in kept if s.batch_size > 0]
    return statistics.fmean(sizes) if sizes else 0.0


def keras_pull_untimed(record: RunRecord) -> str | None:
    """Where one tf.data thread makes the batches (:func:`overlapped_producer`) and the run's
    steps with Keras' own pull were not timed (fewer than :data:`MIN_IN_GRAPH_STEPS`): what
    the prediction did without, in the report's words, with why (``input.tf_in_graph_skipped``:
    an epoch of unknown length, epochs too short, probes early in the fit). The doctor's own
    eager pull then stands for Keras' in-graph one, which can move the wait either way
    (sequence_float64.py: 39% timed, x1.00 modelled, x1.37 measured; cpu_slow_generator.py:
    4.9% timed, 31% with Keras' pull). None where those steps were timed, another producer
    makes the batches, or the run's own pull is the doctor's (a tf.data pipeline on JAX)."""
    inputs = record.input
    if (inputs.producer != "tf.data-thread" or inputs.main_thread is not False
            or inputs.wait_method != "timed-next-outside-graph"):
        return None  # (JAX and torch pull in Python as the doctor does: nothing to miss)
    timed = len(inputs.tf_in_graph_step_s or ())
    if timed >= MIN_IN_GRAPH_STEPS:
        return None
    why = (f"only {timed} timed, the fit ended during them" if timed
           else inputs.tf_in_graph_skipped or "not run; why not recorded")
    return (
        f"the run's steps as Keras runs them, the batch pulled inside its step ({why}): the "
        "doctor's own pull returns to Python after each batch and shares the GIL with the "
        "thread making the next, so the wait and the step it timed may not be the run's"
    )


def after_wait_slowdown_s(
    kept: Sequence[StepSample], wait_fraction: float, input_free_s: float | None
) -> float:
    """Per step, how much longer the trainer's own work runs right after a wait than back to
    back: the steps' mean time not waiting less the input-free window's step, which times the
    same work fed a ready batch (the mean, as the wait's share is a ratio of sums: the cap
    1.3/(1 - wait) then never cuts the window's prediction). After a wait the trainer
    starts cold: its caches were used by the input code or other processes, the runtime's
    worker threads went to sleep and must be woken, on a busy machine its core was given away.
    That cost is the input's (a free input leaves none), though it lands inside the step, not
    in the timed ``next()``: measured on JAX, a 20 ms generator before a 0.14 ms model: 2.9 ms
    a step not waiting against 0.6 ms back to back (a loaded 2-core machine); 0.43 against
    0.21 ms quiet, where the fixed twin ran x99.8 against the x62.8 the timed wait allowed.
    Only for a run the timed wait alone makes input-bound (at least 20%): on a run that waits
    little, a window timed at a quieter moment than the steps would turn load into "wait"
    and the verdict with it; and never more than the mean timed wait itself (a cold start
    costs less than the idle time behind it). 0.0 otherwise, or when the window did not run."""
    if not input_free_s or wait_fraction < INPUT_BOUND_WAIT_FRACTION or not kept:
        return 0.0
    mean_wait_s = statistics.fmean(min(s.wait_used_s, s.step_s) for s in kept)
    mean_not_waiting_s = statistics.fmean(_compute_s(s) for s in kept)
    return min(mean_wait_s, max(0.0, mean_not_waiting_s - input_free_s))


def shared_cores_slowdown_s(
    record: RunRecord, kept: Sequence[StepSample], input_free_s: float | None
) -> float:
    """Per step, how much longer the trainer's own work runs in the run than in the input-free
    window, where the input's workers share the cores of a model trained on the CPU
    (:func:`~stoke.diagnosis.record.input_shares_the_cores`): the steps' mean time not waiting less the window's step.
    The workers fill Keras' queue ahead of the trainer, so it barely waits, but their NumPy
    work takes the cores (and, as threads, the GIL) the step needs: that is the input's cost
    too, counted as the shared cores' wait. Measured on JAX, two threads augmenting batches
    for a small conv net (the wild corpus' pydataset_threads.py, quiet): steps of 9.1 ms
    waiting 1.2 ms, 7.9 ms not waiting against 5.0 ms in the window; the fixed twin ran x1.69
    where the timed wait (13%) allowed x1.15. Only where :func:`after_wait_slowdown_s` does not
    apply (it covers a run the timed wait makes input-bound); 0.0 otherwise, or when the
    window did not run."""
    if (not input_free_s or not kept
            or not input_shares_the_cores(record.model.device, record.input.producer,
                                          record.input.tf_data_parallel_map)):
        return 0.0
    mean_not_waiting_s = statistics.fmean(_compute_s(s) for s in kept)
    return max(0.0, mean_not_waiting_s - input_free_s)


def asynchronous_dispatch(record: RunRecord) -> bool:
    """Whether the trainer's thread only queues a step and goes on while the device runs it:
    JAX, TensorFlow's compiled steps, and any backend on a GPU; not torch on the CPU, nor
    TensorFlow run eagerly on the CPU, whose steps return when their work is done."""
    if record.model.device == "gpu":
        return True
    if record.meta.backend == "tensorflow":
        return record.model.run_eagerly is not True
    return record.meta.backend == "jax"


def wait_behind_model_s(
    step_s: float, wait_s: float, model_step_s: float, input_step_s: float | None = None
) -> float:
    """Per step, the part of the timed wait during which the model's own work ran: the
    model alone (on a cached batch, the model-alone probe) takes longer than the step less its
    wait, so at least that much of its work went on while the trainer waited. Under
    asynchronous dispatch (JAX, TensorFlow, a GPU) the trainer's thread only queues the step
    and goes on to pull the next batch while the device works through the queue: that pull
    is timed as a wait, but the device never stood still, and a free input gains nothing by
    it. Measured on JAX, a compute-bound run (a 0.2 ms generator before an 18 ms model):
    5.0% "wait", 8.8 ms steps against 17.6 ms for the model alone, x1.01 on the fixed twin.
    Only the excess counts (``model_step_s - (step_s - wait_s)``, never more than the wait):
    the exposed share left is ``1 - model_step_s / step_s``, the very share the prediction
    (``step_s / max(no-wait step, model step)``) gains, so the verdict and the headline
    agree. 0.0 when the model alone fits in the time not waiting, or was not measured; not
    applied where dispatch is synchronous (:func:`asynchronous_dispatch`: there a model alone
    slower than the step is a probe timed under other load, :func:`probes_disagree`).

    Only where the model is the longer of the two sides: a step under asynchronous dispatch
    takes about ``max(the trainer's thread, the device)``, so the device's work hides the
    wait only when the model alone takes longer than the input alone makes a batch
    (``input_step_s``, the input-alone probe); when the input takes as long or longer, it is
    the critical path and the wait stays as timed (TensorFlow on loaded cores: a 30 ms
    generator, 71% wait, the model alone timed at 33 ms, about the step, under heavier load,
    the input alone at 43 ms a batch: still input-bound). 0.0 too when the input alone was
    not measured: which side is longer is then not known.

    A model alone longer than the whole step (beyond ``PROBE_DISAGREEMENT``) contradicts the
    run (the probe ran under heavier load, or the steps' sum came out short): it is believed
    only when the input alone also makes a batch in less than the trainer waited for it, so
    that the input cannot be what it waited for (TensorFlow, a CPU-heavy generator on loaded
    cores: the model alone timed at 8.1 ms against 3.0 ms steps, the input alone at 3.4 ms a
    batch, 0.9 ms waits: the wait stays)."""
    if model_step_s <= 0 or wait_s <= 0 or step_s <= 0:
        return 0.0
    if input_step_s is None or input_step_s >= model_step_s:
        return 0.0
    if model_step_s > PROBE_DISAGREEMENT * step_s and input_step_s >= wait_s:
        return 0.0
    excess = model_step_s - (step_s - wait_s)
    if excess <= 1e-9 * step_s:  # equal, to the rounding of the probe's samples/s
        return 0.0
    return min(wait_s, excess)


def handover_s_per_step(record: RunRecord, wait_s_per_step: float) -> float:
    """The part of each step's wait that is not the user's input code: Keras taking in a batch
    the input has made (converting it to tensors, copying it to the device). A fixed or faster
    input still pays it every step, stoke's batches too; the input-free window and the
    model-alone probe do not (they reuse a batch already taken in), so the predicted step adds
    it back.

    Known when the user's generator runs on the trainer's thread inside the timed ``next()``
    (``input.main_thread``, ``wait_method == "timed-next"``): the wait is then the generator's
    own time (``input.generator_s_per_batch``, timed around each of its ``next()`` calls) plus
    this, one after the other. Measured on torch, a 15 ms generator (the wild corpus'
    fit_generator.py): wait 16.99 ms, generator 16.36 ms; x7.27 predicted without the 0.63 ms,
    x6.19 with it, x5.76 measured on its fixed twin. 0.0 otherwise (another
    thread makes the batches, or the wait is not timed on the trainer's ``next()``: TensorFlow
    charges its own ready-pull floor inside the window instead).

    The wait less the generator's time is the hand-over taken right after the generator's
    work, cold (issue 14: the trainer's own work ran 2-3x slower after a 20 ms wait than back
    to back). The input-free window times it warm, back to back, on the same input path
    (``detail["handover_s"]``, :mod:`stoke.diagnosis.measure.handover`): a fixed input pays
    that, so it stands where measured (never more than the cold figure)."""
    inputs = record.input
    generator_s = generator_s_per_step(record)
    if (generator_s is None or inputs.main_thread is not True
            or inputs.wait_method != "timed-next"):
        return 0.0
    after_wait_s = max(0.0, min(wait_s_per_step, wait_s_per_step - generator_s))
    window = record.probes.get("input_free")
    warm_s = as_number(window.detail.get("handover_s")) if window is not None else None
    return after_wait_s if warm_s is None else min(after_wait_s, max(0.0, warm_s))


def generator_s_per_step(record: RunRecord) -> float | None:
    """The user's generator's own time per step (one call of the train function), or None
    when not timed: ``input.generator_s_per_batch`` is timed around each of its ``next()``
    calls, one batch each, and a step takes ``steps_per_execution`` of them. Counted per
    batch against a step's wait, a JAX run with ``steps_per_execution=4`` and a 0.88 ms
    generator (the wild corpus' dict_generator.py) kept 3.0 ms of its 4.3 ms wait as
    hand-over: x1.15 predicted, x2.05 measured on its fixed twin."""
    generator_s = as_number(record.input.generator_s_per_batch)
    if generator_s is None:
        return None
    return generator_s * max(1, int(as_number(record.model.steps_per_execution) or 1))


def host_code_fix_prediction(
    record: RunRecord, step_s: float | None, wait_s: float, batch_size: float | None,
    input_alone: float | None, input_is_limit: bool | None = None, epoch_s: float = 0.0,
) -> dict[str, Any]:
    """What fixing the host code in the model wins (``host-op-in-model``: the layer moved onto
    the device, the step compiled), from the compiled-step probe
    (:mod:`stoke.diagnosis.measure.compiled_step`: the step with the host layers stood in by
    the identity, compiled as Keras compiles it once ``run_eagerly`` is off)::

        fixed_step_s = compiled step + the fit loop's own time per step (the run's)
                       + the input's time per step
        fixed_step_s = max(fixed_step_s, the input alone per batch)  # never past the input
        speedup      = max(1, (the run's mean step + epoch_s) / (fixed_step_s + epoch_s))

    The input's time per step: the run's wait; on TensorFlow, where the compiled step pulls
    inside its graph, plus the pipeline's ready pull (the input-alone probe's
    ``ready_pull_s``, else the floor: the doctor's timed wait leaves it out), and without the
    wait when the input alone is many times faster than the model (``input_is_limit`` False):
    that wait was the eager ``next()`` handing a ready batch over on loaded cores, which the
    in-graph pull does not pay (numpy_layer.py at load 14: 6.1 ms "wait" an eager step, the
    input alone 2.8 ms a batch).

    On torch Keras does not compile (``jit_compile="auto"`` is eager there): the fix removes
    the host round trip only, and the probe times the same eager step without it. Then the
    model-alone probe, timed just before on the same batch with the host code in, is the
    step to compare it with: the run's step less its loop and input is scaled by their ratio
    (``"compared_with": "model-alone probe"``), so a load that changed between the run and
    the probes is not read as a gain (numpy_convert_layer.py at load 15: the run's step 141
    ms, the probes 100 ms with the host code and 109 ms without: x1.27 from the run, x1.00
    from the probes).

    Returns the numbers with ``speedup``, or ``{"not_predicted": why}`` when the model has
    host code but the probe did not run; ``{}`` when the model has none."""
    if not record.model.host_ops:
        return {}
    probe = record.probes.get("compiled_step")
    compiled_s = as_number(probe.detail.get("s_per_step")) if probe is not None else None
    if not compiled_s or not step_s:
        why = (record.meta.probe_notes or {}).get("compiled_step") or (
            "the compiled-step probe did not run" if step_s else "no step was measured")
        return {"not_predicted": why}
    loop_s = as_number(probe.detail.get("loop_s_per_step")) or 0.0
    input_s = max(0.0, wait_s)
    if record.meta.backend == "tensorflow":
        alone = record.probes.get("input_alone")
        ready = as_number(alone.detail.get("ready_pull_s")) if alone is not None else None
        pull_s = ready if ready is not None else (as_number(record.input.tf_pull_floor_s) or 0.0)
        input_s = pull_s + (0.0 if input_is_limit is False else input_s)
    fixed_step_s = compiled_s + loop_s + input_s
    compared_with = "the run's step"
    model_probe = record.probes.get("model_alone")
    eager_s = as_number(model_probe.detail.get("s_per_step")) if model_probe is not None else None
    if record.meta.backend == "torch" and not probe.detail.get("jit_compile") and eager_s:
        model_s = max(0.0, step_s - loop_s - input_s)
        fixed_step_s = model_s * min(1.0, compiled_s / eager_s) + loop_s + input_s
        compared_with = "model-alone probe"
    input_step_s = batch_size / input_alone if (batch_size and input_alone) else None
    limited_by = "the compiled step and fit's loop"
    if input_step_s is not None and input_step_s > fixed_step_s:
        fixed_step_s, limited_by = input_step_s, "the input alone"
    return {
        # the work that recurs once an epoch (epoch_s a step) is paid before and after
        "speedup": max(1.0, (step_s + epoch_s) / (fixed_step_s + epoch_s)),
        "step_s": step_s,
        "fixed_step_s": fixed_step_s,
        "compiled_step_s": compiled_s,
        "loop_s": loop_s,
        "input_s": input_s,
        "limited_by": limited_by,
        "compared_with": compared_with,
        # how the probe ran the fixed step, in words (torch: Keras does not compile it)
        "step_words": ("the same eager step" if compared_with == "model-alone probe"
                       else "the step compiled"),
        "stood_in": list(probe.detail.get("stood_in") or []),
        "jit_compile": probe.detail.get("jit_compile"),
        "shortened": probe.detail.get("shortened"),
    }


def epoch_overhead_s_per_step(
    steps: Sequence[StepSample], kept: Sequence[StepSample],
    restarts: tuple[float, float] = (0.0, 0.0), first_step_is_input: bool = False,
) -> tuple[float, float]:
    """Work that recurs once an epoch and that no fix of the input removes, in seconds a step,
    and the part of it the steady steps' mean already holds.

    For each epoch after the first of its ``fit`` (the first boundary holds one-time work:
    compilation, the first metrics): the time between the previous epoch's last step and this
    epoch's first (epoch-end callbacks, validation, the next epoch's iterator), plus what its
    first step took beyond the steady steps' time less their waits (a ``PyDataset`` with
    ``use_multiprocessing`` starts a new worker pool each epoch), over the epoch's steps; the
    median over such epochs (0.0 with none: a run of two epochs or less). A first step's wait
    is the input's and stays out (a tf.data map refilling at an epoch's start is removed by
    its fix). The second figure: the extra time of the epochs' first steps (after the fit's
    first epoch) that the steady steps kept, over the steady steps: the mean step holds it
    once already.

    Each boundary's figure is capped by the fit's first boundary's: work that recurs every
    epoch is there too (beside the one-time work), and a pause that came once (a garbage
    collection, something else on the machine) is not. The doctor's 60 steps often hold a
    single later boundary: tfdata_py_function.py's, quiet, had a first step of 268 ms (47 ms
    of it waiting) against 49 ms steps and a first boundary of 5 ms: 11.2 ms a step of
    "epoch work" on both sides, x4.19 predicted against x15.6 measured on its fixed twin,
    whose epochs hold 15-25 ms each. custom_train_step_jax.py (60 steps doctored, 20 an
    epoch): 0.24 s at the third epoch's first step in two doctor runs, read as 11.5 ms a step
    of recurring work, x4.70 predicted, where the first boundary took 74 ms; doctored for 120
    steps, such steps came at 2 of 4 boundaries.

    pydataset_io.py (a 4-process pool, 16 steps an epoch, ~0.2 s to start the pool again
    each epoch) was predicted x2.35-x5.27 against x1.34-x1.51 measured on its fixed twins:
    the run's mean step held the restarts, the input-free window's step did not.

    ``restarts``: what making new iterators over the user's ``tf.data`` pipeline costs at a
    boundary, in its gap and in its first step (:func:`input_restarts_s`): the input's work,
    which a free input does not pay. Each boundary's gap and first-step extra are taken down
    by that much. Where the whole first step is the input's
    (``first_step_is_input``, :func:`loader_restarts_workers`: a ``DataLoader`` starting
    its workers), its extra is left out (:func:`epoch_start_input_s` counts it). custom_train_step.py (a shuffle over file names, a
    ``py_function`` map, 20 steps an epoch): 10-13 ms of gap and 12 ms of first-step extra at
    each boundary, 0.89 ms a step of "epoch work"; its pipeline's iterator took 8-12 ms to
    make, the fixed twin's (cached) 0.7 ms, whose whole epoch took 27 ms."""
    if not kept:
        return 0.0, 0.0
    steady_busy_s = statistics.median(_compute_s(s) for s in kept)
    kept_ids = {id(s) for s in kept}
    epochs, first_of_fit = _epochs_by_fit(steps)
    ordered = list(epochs)
    per_step, in_mean_s = [], 0.0
    first_boundary_s: dict[int, float] = {}  # per fit: its first boundary's figure, a bound
    for previous, current in zip(ordered, ordered[1:]):
        if previous[0] != current[0]:
            continue
        last, first = epochs[previous][-1], epochs[current][0]
        gap_s = max(0.0, (first.t_s - first.step_s) - last.t_s - restarts[0])
        extra_s = 0.0 if first_step_is_input else max(
            0.0, _compute_s(first) - steady_busy_s - restarts[1])
        if id(first) in kept_ids:
            in_mean_s += extra_s  # any epoch's first step the mean holds
        figure_s = (gap_s + extra_s) / max(len(epochs[previous]), len(epochs[current]))
        if previous[1] == first_of_fit[previous[0]]:
            first_boundary_s[previous[0]] = figure_s
        else:
            per_step.append(min(figure_s, first_boundary_s.get(previous[0], figure_s)))
    if not per_step:
        return 0.0, 0.0
    return statistics.median(per_step), in_mean_s / len(kept)


def _epochs_by_fit(
    steps: Sequence[StepSample],
) -> tuple[dict[tuple[int, int], list[StepSample]], dict[int, int]]:
    """Each ``(fit, epoch)``'s steps in time order, keyed in that order, and each fit's
    first epoch (the one whose first step holds the compilation)."""
    epochs: dict[tuple[int, int], list[StepSample]] = {}
    for step in sorted(steps, key=lambda s: (s.t_s, s.step)):
        epochs.setdefault((step.fit, step.epoch), []).append(step)
    epochs = dict(sorted(epochs.items()))
    first_of_fit: dict[int, int] = {}
    for fit, epoch in epochs:
        first_of_fit.setdefault(fit, epoch)
    return epochs, first_of_fit


def loader_restarts_workers(record: RunRecord) -> bool:
    """A torch ``DataLoader`` with worker processes and no ``persistent_workers``: Keras makes
    a new iterator over it each epoch, which starts new workers (inside the epoch's first
    step, outside its timed wait) and waits for their first batches. That first step's cost
    beyond a steady step's is the input's: a free input does not pay it."""
    inputs = record.input
    return (inputs.kind == "torch_dataloader" and bool(inputs.torch_num_workers)
            and inputs.torch_persistent_workers is False)


def epoch_start_input_s(
    steps: Sequence[StepSample], kept: Sequence[StepSample],
) -> tuple[float, float]:
    """Where each epoch's first step is the input's (:func:`loader_restarts_workers`), what
    it costs beyond a steady step (its wait beyond a steady wait, its work beyond a steady
    step's work), in seconds a step. Two figures: the median over the boundaries after each
    ``fit``'s first epoch (whose first step holds the compilation) of that cost over the
    epoch's steps, 0.0 with none; and the part of the steady steps' mean it makes (the first
    steps they kept: their cost over the steady steps), to take off the mean before adding
    the first figure back.

    A free input does not pay it, so a fix of the input takes it off the run's epochs
    (:func:`analyse_run`). Other inputs' first steps are left as they were: a ``PyDataset``
    starting its pool again pays that after its fixed twin's fix too
    (:func:`epoch_overhead_s_per_step`). The red-team's a19 (a ``DataLoader`` over a
    TensorDataset, 2 workers, not persistent, JAX, 2 cores, 64 steps of 1-2 ms an epoch):
    each epoch's first step waited 40-65 ms and took 23-30 ms of work more, starting the
    workers; read as work that recurs after any fix (:func:`epoch_overhead_s_per_step`), a19
    was predicted x5.6-6.0 against x10.8-16.6 on its fixed twin (arrays), and
    ``persistent_workers=True`` alone measured x1.45."""
    if not kept:
        return 0.0, 0.0
    steady_wait_s = statistics.median(min(s.wait_used_s, s.step_s) for s in kept)
    steady_busy_s = statistics.median(_compute_s(s) for s in kept)
    kept_ids = {id(s) for s in kept}
    epochs, first_of_fit = _epochs_by_fit(steps)
    per_step, in_mean_s = [], 0.0
    for (fit, epoch), epoch_steps in epochs.items():
        if epoch == first_of_fit[fit]:
            continue
        first = epoch_steps[0]
        cost_s = (max(0.0, min(first.wait_used_s, first.step_s) - steady_wait_s)
                  + max(0.0, _compute_s(first) - steady_busy_s))
        per_step.append(cost_s / len(epoch_steps))
        if id(first) in kept_ids:
            in_mean_s += cost_s
    if not per_step:
        return 0.0, 0.0
    return statistics.median(per_step), in_mean_s / len(kept)


def input_restarts_s(record: RunRecord) -> tuple[float, float]:
    """Seconds the user's ``tf.data`` pipeline takes to start over at an epoch's boundary on
    TensorFlow, in the boundary's gap and in the next epoch's first step: the input-alone
    probe's ``detail["iterator_start_s"]``
    (:func:`stoke.diagnosis.measure.tf_pulls.iterator_start_seconds`) for each new iterator
    Keras makes there (``EpochIterator._enumerate_iterator``, Keras 3.15): with no
    ``steps_per_epoch``, one as the next epoch starts, and, for a dataset of known length,
    one more in the gap once the epoch took all its batches; with ``steps_per_epoch``, that
    one in the gap only where each epoch reads the whole dataset, else none (the iterator
    runs on). (0.0, 0.0) for other inputs (Keras' own pipelines over arrays or
    a generator start over on a fixed input too) or when not measured."""
    probe = record.probes.get("input_alone")
    inputs = record.input
    if probe is None or inputs.kind != "tf.data":
        return 0.0, 0.0
    start_s = as_number(probe.detail.get("iterator_start_s")) or 0.0
    if inputs.steps_per_epoch:
        # the iterator runs on, and is made again in the gap only where each epoch reads
        # the whole dataset
        return (start_s if restarts_each_epoch(record) else 0.0), 0.0
    return (start_s if inputs.num_batches else 0.0), start_s


def restarts_each_epoch(record: RunRecord) -> bool:
    """Whether Keras makes a new iterator over the run's input for each epoch
    (``EpochIterator._enumerate_iterator``, Keras 3.15): as each epoch starts without
    ``steps_per_epoch``; with it, once the epoch has read the input's known ``num_batches``
    (at the epoch's end where ``steps_per_epoch`` is at least that). Either way the next
    epoch's first pull is a new iterator's first."""
    inputs = record.input
    if not inputs.steps_per_epoch:
        return True
    return bool(inputs.num_batches) and inputs.steps_per_epoch >= inputs.num_batches


def input_free_step_s(record: RunRecord) -> float | None:
    """The step time of the input-free window (:mod:`stoke.diagnosis.measure.input_free`), per
    train-function call, when it ran: its ``s_per_step``, less the device work it counts twice
    under asynchronous dispatch (:func:`queued_work_in_loop_s`)."""
    probe = record.probes.get("input_free")
    if probe is None:
        return None
    value = as_number(probe.detail.get("s_per_step"))
    if not value or value <= 0:
        return None
    return value - queued_work_in_loop_s(record, probe.detail)


def queued_work_in_loop_s(record: RunRecord, detail: dict) -> float:
    """The part of the window's loop that is the model's own work, already in its calls.

    The window adds to its calls (timed back to back from a device sync to a device sync: the
    model's whole work) the fit loop's own time per step, read off the run's steps as step
    time less wait less the train function's call (``detail["loop_s_per_step"]``). Under
    asynchronous dispatch (:func:`asynchronous_dispatch`) a run's call may only queue the
    step and return (``detail["call_s_after_wait"]`` shorter than the window's call,
    ``detail["call_s_per_step"]``): the step's work then finishes outside the call, where the
    loop blocks on it, and the loop holds it a second time. Measured on JAX, a PyDataset on
    the trainer's thread (the wild corpus' pydataset_workers.py): calls of 0.33 ms in the run
    against 2.91 ms back to back, a 3.31 ms loop, the window's step 6.21 ms (x1.15 predicted)
    against 3.6-3.9 ms for the fixed twin (x2.01 measured); less the 2.58 ms queued, 3.63 ms.
    That excess of the window's call over the run's, never more than the loop; 0.0 where
    dispatch is synchronous (there a shorter call in the run is timing noise, not queued
    work) or a figure is missing."""
    if not asynchronous_dispatch(record):
        return 0.0
    call_s = as_number(detail.get("call_s_per_step"))
    call_in_run_s = as_number(detail.get("call_s_after_wait"))
    loop_s = as_number(detail.get("loop_s_per_step"))
    if not call_s or not call_in_run_s or not loop_s or call_in_run_s <= 0:
        return 0.0
    return max(0.0, min(loop_s, call_s - call_in_run_s))


def _synced_compute_s(kept: Sequence[StepSample], wait_fraction: float) -> float:
    """Steps timed after a device sync include the device work the wait may hide under
    asynchronous dispatch: without a model-alone probe they bound the no-wait step from below."""
    synced = [s for s in kept if s.synced]
    return no_wait_step_s(synced, wait_fraction) if synced else 0.0


def wait_fraction_from_probes(
    throughput: float | None,
    model_alone: float | None,
    input_alone: float | None,
    prefetch: bool | None,
) -> float | None:
    """The input wait when it cannot be timed (a native tf.data pipeline runs its ``next()``
    inside a ``tf.function``), from the probes, as a share of the step.

    Per sample, the input costs ``1/input_alone`` and the model ``1/model_alone``. Without
    prefetch they run one after the other, so the wait is the whole input cost:
    ``throughput / input_alone``. With prefetch they overlap, and only the input's excess over
    the model shows: ``throughput / input_alone - throughput / model_alone``. Clamped to 0-1;
    ``None`` when the probes needed are missing.
    """
    if not throughput or not input_alone:
        return None
    if prefetch is False:
        estimate = throughput / input_alone
    elif model_alone:
        estimate = throughput / input_alone - throughput / model_alone
    else:
        return None
    return min(1.0, max(0.0, estimate))


def summarise_cpu(record: RunRecord, samples: Sequence[SystemSample]) -> CpuSummary | None:
    if not samples:
        return None
    cores = as_number(record.meta.cpu_count) or max(len(s.cpu_per_core_pct) for s in samples)
    cores = max(1, int(cores))
    busy = [
        (sum(s.cpu_per_core_pct) / (100.0 * len(s.cpu_per_core_pct)))
        if s.cpu_per_core_pct
        else (s.cpu_self_pct + s.cpu_other_pct) / (100.0 * cores)
        for s in samples
    ]
    return CpuSummary(
        cores=cores,
        self_cores=statistics.median(s.cpu_self_pct for s in samples) / 100.0,
        other_cores=statistics.median(s.cpu_other_pct for s in samples) / 100.0,
        busy_fraction=min(1.0, statistics.median(busy)),
        samples=len(samples),
    )


def summarise_gpus(samples: Sequence[SystemSample]) -> tuple[GpuSummary, ...]:
    by_index: dict[int, list] = {}
    for sample in samples:
        for gpu in sample.gpus:
            by_index.setdefault(gpu.index, []).append(gpu)
    summaries = []
    for index in sorted(by_index):
        readings = by_index[index]
        total = max(g.memory_total_bytes for g in readings)
        summaries.append(
            GpuSummary(
                index=index,
                kernel_active_pct=statistics.median(g.kernel_active_pct for g in readings),
                memory_used_fraction_peak=(
                    max(g.memory_used_bytes for g in readings) / total if total else 0.0
                ),
                memory_total_bytes=total,
                samples=len(readings),
            )
        )
    return tuple(summaries)


def doctor_overhead_fraction(record: RunRecord) -> float | None:
    """The doctor's own cost as a share of step time: as the probes reported it, else derived."""
    overhead = record.overhead
    fraction = as_number(overhead.fraction_of_step)
    if fraction is not None:
        return fraction
    step_times = [s.step_s for s in record.steps if s.step_s > 0]
    if not step_times:
        return None
    per_step = as_number(overhead.doctor_s_per_step)
    if per_step is not None:
        return per_step / statistics.fmean(step_times)
    total = as_number(overhead.doctor_s_total)
    if total is not None:
        return total / sum(step_times)
    return None


def in_memory_input(record: RunRecord) -> bool:
    """Arrays in memory, or a tf.data pipeline with no map and no Python in it."""
    inputs = record.input
    kind = inputs.kind
    if kind == "arrays":
        return True
    if kind == "tf.data":
        has_map = bool(inputs.tf_data_map_parallelism) or inputs.tf_data_parallel_map is not None
        return not has_map and not inputs.tf_data_py_function
    return False


# -- internals -------------------------------------------------------------------------------


def pipeline_handover_s(record: RunRecord) -> float:
    """Seconds of each timed TensorFlow wait that are the pipeline handing over a batch it
    had ready, not waiting: the run's own pipeline's ready pull (the input-alone probe's
    ``detail["ready_pull_s"]``, :mod:`stoke.diagnosis.measure.tf_pulls`) less the floor the
    recorder already took off each wait (``input.tf_pull_floor_s``, a trivial pipeline's).
    Keras' array adapter pipeline hands a ready batch over ~0.1 ms slower than the floor: on
    a 1 ms step, 10% "wait" that no input fix removes. A generator's or PyDataset's pipeline
    (Keras' ``from_generator``) is not the probe's to pull: its ready pull is measured at the
    first step (:func:`generator_handover_s`). 0.0 when not measured, or the waits were not
    timed by the doctor's eager pull."""
    floor = as_number(record.input.tf_pull_floor_s)
    probe = record.probes.get("input_alone")
    ready = as_number(probe.detail.get("ready_pull_s")) if probe is not None else None
    if floor is None or ready is None or record.input.wait_method != "timed-next-outside-graph":
        return generator_handover_s(record)
    return max(0.0, ready - floor)


def generator_handover_s(record: RunRecord) -> float:
    """Seconds each step pays on TensorFlow to take a generator's (or PyDataset's) batch in
    through Keras' ``from_generator`` pipeline, beyond the floor the input-free window already
    charges: the per-batch pull of that pipeline fed one cached batch
    (``input.tf_generator_pull_s``, :mod:`stoke.diagnosis.measure.tf_pulls`) less
    ``input.tf_pull_floor_s``. A fixed, faster or
    pre-made input still crosses the ``py_function`` every step, so the predicted step keeps
    it, and it is not counted as waiting. Measured on 2 cores, fit_generator.py ``--keras3``
    (a 15 ms generator) against its fixed twin: x15.7 predicted without it against x12.2
    measured at load 9 (the window 0.98 ms a step, the twin 1.36 ms); quiet, x14.6 against
    x13.5 without it, x16.1 against x14.6 with it (0.22 ms a step), and doctor_known.py's
    tiny model x14.6 against x16.7 without, x18.1 against x17.3 with it. 0.0 for other
    inputs, when not measured, or when the waits were not timed by the doctor's eager pull."""
    inputs = record.input
    floor = as_number(inputs.tf_pull_floor_s)
    ready = as_number(inputs.tf_generator_pull_s)
    if (floor is None or ready is None or inputs.kind not in FROM_GENERATOR_INPUT_KINDS
            or inputs.wait_method != "timed-next-outside-graph"):
        return 0.0
    return max(0.0, ready - floor)


def generator_restart_s(record: RunRecord) -> float:
    """Seconds of each epoch's first timed TensorFlow wait that are Keras' ``from_generator``
    pipeline starting over, not the input's work: its restart on a ready batch
    (``input.tf_generator_restart_s``, :func:`stoke.diagnosis.measure.tf_pulls.
    generator_restart_seconds`). Keras makes a new iterator over a ``PyDataset``'s pipeline
    for each epoch (:func:`restarts_each_epoch`), and the epoch's first pull pays for it; a
    fixed or pre-made input pays it too. Only where one tf.data thread runs the pipeline
    (``producer == "tf.data-thread"``): with workers, Keras builds another pipeline, and the
    workers make the first batch while it starts. Counted as waiting, it made a tf.keras ``Sequence``
    of 5 batches an epoch (2 cores) "input-bound" at 78%: 8.6-9.6 ms at each epoch's first
    step, 0.05-0.1 ms at the others, while its twin with the batches made once ran no
    faster. 0.0 for other inputs, where the epochs do not start a new iterator, when not
    measured, or when the waits were not timed by the doctor's eager pull."""
    inputs = record.input
    restart = as_number(inputs.tf_generator_restart_s)
    if (restart is None or inputs.kind not in FROM_GENERATOR_INPUT_KINDS
            or inputs.producer != "tf.data-thread"
            or inputs.wait_method != "timed-next-outside-graph" or not restarts_each_epoch(record)):
        return 0.0
    return max(0.0, restart)


def _less_epoch_restart(steps: Sequence[StepSample], restart_s: float) -> list[StepSample]:
    """The steps with ``restart_s`` taken off each epoch's first step's timed wait (not below
    zero): that time stays in the step, as the epoch's own work (from a fit's third epoch on,
    :func:`epoch_overhead_s_per_step` reads it there)."""
    if restart_s <= 0:
        return list(steps)
    epochs, _ = _epochs_by_fit(steps)
    firsts = {id(epoch_steps[0]) for epoch_steps in epochs.values()}
    return [
        dataclasses.replace(s, wait_s=max(0.0, s.wait_s - restart_s))
        if s.wait_timed and id(s) in firsts else s
        for s in steps
    ]


def _less_handover(steps: Sequence[StepSample], handover_s: float) -> list[StepSample]:
    """The steps with ``handover_s`` taken off each timed wait (not below zero)."""
    if handover_s <= 0:
        return list(steps)
    return [
        dataclasses.replace(s, wait_s=max(0.0, s.wait_s - handover_s)) if s.wait_timed else s
        for s in steps
    ]


def analyse_run(record: RunRecord) -> Analysis:
    """The numbers of one run (see the module docstring): pure, no findings."""
    handover_in_pull_s = pipeline_handover_s(record)
    steps = _less_handover(record.steps, handover_in_pull_s)
    restart_in_pull_s = generator_restart_s(record)
    restarted = _less_epoch_restart(steps, restart_in_pull_s)
    if all(a.wait_s == b.wait_s for a, b in zip(steps, restarted)):
        restart_in_pull_s = 0.0  # (said in the verdict only where a first wait held some)
    steps = restarted
    others = other_model_fits(record)
    steps_total = len(steps)
    steps = [s for s in steps if s.fit not in others]
    kept, steady = steady_steps(steps)
    if others:
        steady = dataclasses.replace(steady, steps_total=steps_total, other_model_fits=others)
    window = _window_samples(record.system, steady)
    cpu = summarise_cpu(record, window)
    gpus = summarise_gpus(window)
    model_alone = _probe_rate(record, "model_alone")
    input_alone = _probe_rate(record, "input_alone")
    overhead_fraction = doctor_overhead_fraction(record)

    if not kept:
        return Analysis(
            verdict="unknown",
            verdict_reason=(
                "no training step was measured: the script ended with an error before one finished"
                if record.meta.error
                else "no training step was measured: the doctor measures model.fit() and "
                "train_on_batch; custom training loops (GradientTape, jax.grad, a torch loop) "
                "are not measured. Findings below come from the setup alone"
            ),
            input_wait_fraction=None,
            throughput=None,
            predicted_throughput=None,
            predicted_speedup=None,
            model_alone=model_alone,
            input_alone=input_alone,
            bound=Bound("unknown", None, None, None, None),
            steady=steady,
            cpu=cpu,
            gpus=gpus,
            doctor_overhead_fraction=overhead_fraction,
        )

    samples = sum(s.batch_size for s in kept)
    if samples <= 0:  # batch sizes not recorded per step: fall back on the configured one
        samples = (as_number(record.input.batch_size) or 0.0) * len(kept)
    total_step_s = sum(s.step_s for s in kept)
    total_wait_s = sum(min(s.wait_used_s, s.step_s) for s in kept)
    throughput = samples / total_step_s if samples > 0 else None

    wait_source = "measured"
    untimed = [s for s in kept if not s.wait_timed]
    estimated_steps = sum(1 for s in untimed if s.wait_estimated_s is not None)
    wait_method = record.input.wait_method
    if (
        estimated_steps < len(untimed)  # waits neither timed nor estimated
        or record.input.wait_measured is False
        or wait_method == "none"
    ):
        estimated_steps = 0
        estimate = wait_fraction_from_probes(
            throughput, model_alone, input_alone, record.input.tf_data_prefetches
        )
        wait_source = "unmeasured" if estimate is None else "probes"
        if estimate is not None:
            total_wait_s = estimate * total_step_s
    elif untimed:
        wait_source = "model-alone-estimate"  # estimated after the run, where not timed
    wait_fraction = total_wait_s / total_step_s
    pulled_wait_fraction = wait_fraction  # as timed (or estimated), before any adjustment

    # Predicted step after the fix: what is left without the wait, never less than the model
    # needs alone. Same as min(no-wait throughput, model alone) in samples/s.
    batch_size = samples / len(kept) if samples > 0 else None
    step_s = total_step_s / len(kept)
    if wait_source == "probes":  # per-step waits are not known, only their share
        compute_s = step_s * (1.0 - wait_fraction)
    else:
        compute_s = no_wait_step_s(kept, wait_fraction)
    model_step_s = batch_size / model_alone if (model_alone and batch_size) else 0.0
    input_free_s = input_free_step_s(record)
    window_rejected = window_contradicts_run(input_free_s, step_s, wait_fraction)
    if window_rejected is not None:
        input_free_s = None  # the run's own steps less their waits stand instead
    if input_free_s is not None:
        compute_s = input_free_s  # measured: the run's own steps with the input made free
    elif not model_alone and wait_source == "measured":
        compute_s = max(compute_s, _synced_compute_s(kept, wait_fraction))
    # what each step still pays to take in a batch that is ready (the window and the model
    # alone reuse a batch already taken in): free input still has to be handed over
    handover_s = handover_s_per_step(record, total_wait_s / len(kept)) if (
        wait_source == "measured") else 0.0
    # TensorFlow: a generator's batch crosses Keras' from_generator pipeline every step, a
    # ready one too; the window's cached batch does not (taken off the waits above as well)
    from_generator_s = generator_handover_s(record) if wait_source == "measured" else 0.0
    handover_s += from_generator_s
    # the trainer's own work right after each wait, beyond what it takes back to back: the
    # input's cost too (it leaves with the wait), so counted as waiting
    after_wait_s = after_wait_slowdown_s(
        kept, wait_fraction, input_free_s + from_generator_s if input_free_s else None) if (
        wait_source == "measured") else 0.0
    # the input's workers beside a CPU-trained model: the step's slowdown is the input's cost
    sharing_s = shared_cores_slowdown_s(record, kept, input_free_s) if (
        wait_source == "measured" and after_wait_s == 0) else 0.0
    if after_wait_s > 0 or sharing_s > 0:
        total_wait_s = min(total_step_s, total_wait_s + (after_wait_s + sharing_s) * len(kept))
        wait_fraction = total_wait_s / total_step_s
    # the part of each timed wait the model's own work ran through (asynchronous dispatch):
    # not exposed, so neither the input's cost nor anything a fix removes
    timed_wait_fraction = wait_fraction
    input_step_s = batch_size / input_alone if (input_alone and batch_size) else None
    behind_model_s = wait_behind_model_s(
        step_s, total_wait_s / len(kept), model_step_s, input_step_s) if (
        wait_source == "measured" and asynchronous_dispatch(record)) else 0.0
    if behind_model_s > 0:
        total_wait_s = max(0.0, total_wait_s - behind_model_s * len(kept))
        wait_fraction = total_wait_s / total_step_s
    predicted_step_s = max(compute_s, model_step_s) + handover_s
    predicted_speedup = max(1.0, step_s / predicted_step_s) if predicted_step_s > 0 else None
    disagreement = probes_disagree(predicted_step_s, step_s, timed_wait_fraction) or (
        input_slower_than_run(input_step_s, step_s, timed_wait_fraction,
                              record.input.producer in BACKGROUND_PRODUCERS))
    overlap_no_wait_s = predicted_step_s
    if disagreement is not None and wait_fraction < 0.999:
        # the probes contradict the run: the wait it timed is the figure left to go by
        predicted_speedup = max(1.0, 1.0 / (1.0 - wait_fraction))
        overlap_no_wait_s = step_s * (1.0 - wait_fraction)
    # (the input-free window and the steps with Keras' pull ran in the probes' fit: its batch)
    probed_batch = (probed_fit_batch_size(kept, record) or batch_size) if batch_size else None
    overlap = overlapped_producer(record, overlap_no_wait_s, probed_batch, input_alone, cpu,
                                  step_s)
    # (the step the overlap came from, where it was measured: its in_graph_steps say so)
    in_graph_step_s = overlap["keras_step_s"] if (
        overlap and overlap.get("in_graph_steps") and wait_source == "measured") else None
    run_step_s = step_s  # the step the fix is measured against (the epoch's work aside)
    if in_graph_step_s:
        # measured: the run's own steps with Keras' pull inside the step, against the step
        # with the input made free, say what the input costs the run, its wait and its gain
        # (the doctor's timed pull moved both: sequence_float64.py 57% timed, 39% this way,
        # x1.23 measured; cpu_slow_generator.py 4.9% timed, "overhead-bound", 31% this
        # way, x1.51 measured). What the timed steps added to their wait is theirs
        # (the run's throughput too: the step the user's run takes, which the report's step,
        # wait and throughput then all describe)
        run_step_s = in_graph_step_s
        predicted_speedup = overlap["speedup"]
        wait_fraction = max(0.0, 1.0 - overlap["no_wait_step_s"] / in_graph_step_s)
        total_wait_s = wait_fraction * total_step_s
        after_wait_s = sharing_s = behind_model_s = 0.0
        if probed_batch:  # (those steps ran in the probes' fit: its batches, where fits differ)
            throughput = probed_batch / in_graph_step_s
    elif overlap is not None and predicted_speedup is not None:
        predicted_speedup = min(predicted_speedup, overlap["speedup"])
    restarting = loader_restarts_workers(record)
    epoch_s, epoch_in_mean_s = epoch_overhead_s_per_step(
        steps, kept, input_restarts_s(record), first_step_is_input=restarting)
    # a DataLoader starting its workers at each epoch's first step: the input's cost, before
    # the fix only (and the part of the steady mean it makes, taken off first)
    start_input_s, start_in_mean_s = epoch_start_input_s(steps, kept) if (
        restarting and wait_source == "measured") else (0.0, 0.0)
    if ((epoch_s > 0 or start_input_s > 0) and predicted_speedup is not None
            and predicted_speedup > 1.0):
        # once an epoch, before and after the fix alike; where the mean step holds part of it
        # already, that part comes off the step first (and off the step predicted from the
        # run's own steps, which held it too)
        steady_step_s = max(1e-9, step_s - epoch_in_mean_s - start_in_mean_s) if (
            not in_graph_step_s) else in_graph_step_s  # (those steps are inside an epoch)
        fixed_step_s = run_step_s / predicted_speedup
        if input_free_s is None and model_step_s <= compute_s:
            # only as far as that step is above the steady steps' median: a median left the
            # epochs' first steps out already
            busy_s = statistics.median(s.step_s - min(s.wait_used_s, s.step_s) for s in kept)
            fixed_step_s -= min(epoch_in_mean_s, max(0.0, compute_s - busy_s))
        predicted_speedup = max(
            1.0, (steady_step_s + epoch_s + start_input_s) / (fixed_step_s + epoch_s))
    wait_cap = WAIT_CAP_MARGIN / (1.0 - wait_fraction) if wait_fraction < 0.999 else None
    capped = bool(predicted_speedup and wait_cap and predicted_speedup > wait_cap)
    if capped:
        predicted_speedup = wait_cap
    no_wait_throughput = batch_size / compute_s if (batch_size and compute_s > 0) else None
    predicted_throughput = (
        throughput * predicted_speedup if (throughput and predicted_speedup) else None
    )
    model_rate = model_take_rate(no_wait_throughput, model_alone)
    input_is_limit = (
        None if not (input_alone and model_rate) else input_alone < INPUT_LIMIT_FACTOR * model_rate
    )
    # an in-memory input whose wait was not timed but estimated (the step less the model
    # alone: TensorFlow pulls inside the compiled loop under a distribution strategy or
    # steps_per_execution): the estimate holds whatever the step pays beyond the model-alone
    # probe's step, and an input already in memory is no faster after any fix. Not called the
    # limit, and no speedup predicted from it, unless the input alone was measured slower than
    # the model. s24_mirrored_strategy.py on TF (from_tensor_slices, shuffle, batch, prefetch):
    # "input-bound", x1.73 predicted from a 42% estimated wait, input alone 1.8-2.3x the
    # model; its fixed twin (one cached batch) measured x0.87 and x0.68
    estimated_in_memory = (
        in_memory_input(record) and wait_source in ("model-alone-estimate", "probes")
        and (record.input.kind == "arrays" or bool(record.input.tf_data_ops))  # graph read
        and not (input_alone and model_rate and input_alone < model_rate)
    )
    # an input in memory measured faster alone than the model (not only INPUT_LIMIT_FACTOR
    # times): no input fix makes it faster; its wait is the hand-over. tfdata_plain.py on TF
    # (from_tensor_slices, shuffle, batch, prefetch; input alone 2.4x the model): a 5.5% wait
    # read "partly-input-bound", x1.06, where its fixed twin measured x0.93
    keeps_up_in_memory = in_memory_input(record) and (
        input_is_limit is False or bool(input_alone and model_rate and input_alone >= model_rate))
    handover_only = keeps_up_in_memory or estimated_in_memory
    if handover_only:
        input_is_limit = False  # as the verdict says (the JSON showed true beside it)
    if handover_only:
        # arrays in memory (or a tf.data pipeline with no map) many times faster than the
        # model: what the trainer "waits" is handing the batch over, which every fix pays too
        predicted_speedup = 1.0
        predicted_throughput = throughput
    elif (in_memory_input(record) and wait_source == "measured" and predicted_speedup
          and wait_fraction < 0.999 and predicted_speedup > 1.0 / (1.0 - wait_fraction)):
        # an input already in memory: no input is faster, so a fix removes at most the wait
        # (the input-free window's cached batch also skips taking a batch in, which every
        # input pays: arrays_in_memory.py on TensorFlow, 2% wait, was predicted x1.16-1.27
        # from the window against x0.88-1.05 measured on its fixed twin)
        predicted_speedup = max(1.0, 1.0 / (1.0 - wait_fraction))
        predicted_throughput = throughput * predicted_speedup if throughput else None
    disagreement = None if handover_only else (disagreement or window_rejected)
    prediction = _prediction(
        record, cpu, wait_fraction, wait_source, throughput, predicted_throughput,
        predicted_speedup, wait_cap, capped, batch_size, input_alone, model_alone,
        disagreement, overlap, steady_steps_timed=len(kept),
    )
    host_fix = host_code_fix_prediction(
        record, run_step_s, wait_fraction * run_step_s, batch_size, input_alone, input_is_limit,
        epoch_s)
    prediction = dataclasses.replace(
        prediction, if_host_code_fixed=host_fix.get("speedup"), host_code_fix=host_fix,
        epoch_overhead_s_per_step=epoch_s,
        epoch_overhead_in_mean_s_per_step=0.0 if in_graph_step_s else epoch_in_mean_s,
        epoch_start_input_s_per_step=start_input_s,
        epoch_start_in_mean_s_per_step=start_in_mean_s)

    signals = overhead_signals(record, throughput, run_step_s, gpus)
    verdict, reason = _verdict(wait_fraction, signals, wait_known=wait_source != "unmeasured")
    if estimated_in_memory and wait_fraction >= PARTLY_INPUT_BOUND_WAIT_FRACTION:
        alone = (f"; alone it makes {input_alone / model_rate:.1f}x what the model takes"
                 if input_alone and model_rate else "")
        signals = (
            f"{wait_fraction:.0%} of each step is time beyond the model alone on a cached batch "
            f"(an estimate: the input's wait was not timed), and the input is in memory{alone}",
            *signals,
        )
        verdict = "overhead-bound"
        how = ("from the throughput against the input alone" if wait_source == "probes"
               else "as step time minus the model-alone step")
        reason = (
            f"{wait_fraction:.0%} of each step is time beyond the model alone on a cached batch "
            f"(not measured as a wait: estimated {how}, since "
            "TensorFlow pulls the batch inside the compiled loop); the input is arrays in memory "
            "(or a tf.data pipeline with no map), which no input fix makes faster, so that "
            f"time is not counted against it{alone}"
        )
    elif handover_only and wait_fraction >= PARTLY_INPUT_BOUND_WAIT_FRACTION:
        # not the input's work: the per-step cost of taking a batch in (see the reason)
        signals = (
            f"{wait_fraction:.0%} of each step goes to taking in-memory batches that the input "
            f"alone makes {input_alone / model_rate:.1f}x faster than the model uses them",
            *signals,
        )
        verdict = "overhead-bound"
        reason = f"the trainer spends {wait_fraction:.0%} of each step taking in its batch"
    elif (verdict == "partly-input-bound" and predicted_speedup is not None
          and predicted_speedup < NO_GAIN_SPEEDUP):
        # the red-team's a20 (a Sequence on TensorFlow): "partly-input-bound" beside x1.00
        # predicted, and its fixed twin ran x0.9-1.0: a wait the input made free does not
        # shorten is not the input's to remove
        verdict = "overhead-bound" if signals else "compute-bound"
        reason = (
            f"the trainer waits for the next batch {wait_fraction:.0%} of each step, but with "
            f"the input made free its steps are predicted no faster (x{predicted_speedup:.2f}): "
            "that wait is not the input's cost to remove"
        )
    if after_wait_s > 0:
        reason += (
            f" (with {after_wait_s * 1e3:.2f} ms a step the trainer's own work runs slower right "
            "after each wait than back to back: the input's cost, inside the step)"
        )
    if sharing_s > 0:
        reason += (
            f" (of which {sharing_s * 1e3:.2f} ms a step is the trainer's own work running "
            f"beyond the {compute_s * 1e3:.2f} ms it takes with the input made free: the "
            "input's workers share its cores, so their cost lands inside the step; counted "
            "as the shared cores' wait)"
        )
    if behind_model_s > 0:
        reason += (
            f" (not counted as waiting: {behind_model_s * 1e3:.2f} ms a step during which the "
            f"model's own work ran: alone, on a cached batch, it takes {model_step_s * 1e3:.2f} "
            f"ms a step, more than the {(step_s - timed_wait_fraction * step_s) * 1e3:.2f} ms "
            "of each step not spent waiting, so it kept working while the trainer waited, as "
            "asynchronous dispatch lets it)"
        )
    if in_graph_step_s:
        median_s = overlap.get("in_graph_median_s") or in_graph_step_s
        floor = ""
        if median_s < 0.98 * in_graph_step_s:
            floor = (f" (their median {median_s * 1e3:.2f} ms, but no step outruns the input "
                     "alone, which makes a batch in that time)")
        elif median_s > 1.02 * in_graph_step_s:
            floor = (f" (their median {median_s * 1e3:.2f} ms, but Keras' own pull costs no more "
                     "than the doctor's, whose steps took that)")
        reason += (
            f" (measured on {overlap['in_graph_steps']} of the run's steps run as Keras runs "
            f"them, the batch pulled inside the step: {in_graph_step_s * 1e3:.2f} ms a "
            f"step{floor} against {overlap['no_wait_step_s'] * 1e3:.2f} ms with the input made free; the "
            f"doctor's own timed pull, which returns to Python after each batch, read "
            f"{pulled_wait_fraction:.0%})"
        )
    elif wait_source == "measured" and (handover_in_pull_s > 0 or restart_in_pull_s > 0):
        not_waiting = []
        if handover_in_pull_s > 0:
            not_waiting.append(f"the {handover_in_pull_s * 1e3:.2f} ms a step this pipeline "
                               "takes to hand over a batch it has ready")
        if restart_in_pull_s > 0:
            not_waiting.append(
                f"up to {restart_in_pull_s * 1e3:.2f} ms at each epoch's first step, Keras' "
                "pipeline starting over (a new iterator's first pull), which a pre-made input "
                "pays too: the epoch's own work")
        reason += f" (not counted as waiting: {'; '.join(not_waiting)})"
    if estimated_in_memory and wait_fraction >= PARTLY_INPUT_BOUND_WAIT_FRACTION:
        pass  # the reason above says the figure is an estimate, and why it is not the input's
    elif wait_source == "probes":
        reason += " (estimated from the probes: this input's wait cannot be timed directly)"
    elif wait_source == "model-alone-estimate":
        share = "" if estimated_steps == len(kept) else f" for {estimated_steps} of {len(kept)} steps"
        reason += (
            f" (estimated{share}: step time minus the model-alone step; the pull runs in the "
            "graph, where it cannot be timed)"
        )
    elif wait_source == "unmeasured":
        reason += " (this input's wait cannot be timed directly, and no probe bounds it)"
    if handover_only and not estimated_in_memory and wait_fraction >= PARTLY_INPUT_BOUND_WAIT_FRACTION:
        reason += (
            f"; but the input alone makes {input_alone / model_rate:.1f}x what the model takes: "
            "that wait is the cost of handing each batch over, which no input fix removes"
        )
    limited_by = {
        "input-bound": "input",
        "partly-input-bound": "model",
        "compute-bound": "model",
        "overhead-bound": "overhead",
    }[verdict]
    bound = Bound(
        limited_by=limited_by,
        batch_size=batch_size,
        step_s=run_step_s,
        wait_s=wait_fraction * run_step_s,
        compute_s=(1.0 - wait_fraction) * run_step_s,
        model_alone_step_s=batch_size / model_alone if (model_alone and batch_size) else None,
        input_alone_step_s=batch_size / input_alone if (input_alone and batch_size) else None,
        no_wait_throughput=no_wait_throughput,
    )
    return Analysis(
        verdict=verdict,
        verdict_reason=reason,
        input_wait_fraction=wait_fraction,
        throughput=throughput,
        predicted_throughput=predicted_throughput,
        predicted_speedup=predicted_speedup,
        input_wait_source=wait_source,
        wait_estimated_steps=estimated_steps,
        model_alone=model_alone,
        input_alone=input_alone,
        bound=bound,
        steady=steady,
        cpu=cpu,
        gpus=gpus,
        doctor_overhead_fraction=overhead_fraction,
        overhead_signals=signals,
        prediction=prediction,
        input_is_limit=input_is_limit,
        after_wait_s=after_wait_s,
        shared_cores_s=sharing_s,
        in_graph_steps=overlap["in_graph_steps"] if in_graph_step_s else 0,
        wait_behind_model_s=behind_model_s,
    )


def stoke_rate_on_shared_cores(
    cores_free: float,
    trainer_cpu_s_per_sample: float,
    input_cpu_s_per_sample: float,
    bound_rate: float,
) -> float:
    """Samples/s stoke can deliver when its workers and the trainer share ``cores_free``
    cores: every sample costs the trainer ``trainer_cpu_s_per_sample`` and the input
    ``input_cpu_s_per_sample`` CPU seconds, so ``rate * (trainer + input) <= cores_free``;
    and never more than ``bound_rate`` (the input made free)."""
    per_sample = trainer_cpu_s_per_sample + input_cpu_s_per_sample
    if per_sample <= 0:
        return bound_rate
    return min(bound_rate, cores_free / per_sample)


def serial_producer_rate(
    record: RunRecord, input_alone: float | None, batch_size: float | None
) -> float | None:
    """Samples/s of an input stoke cannot spread over workers, or None where it can: a plain
    Python generator (no ``len()``/``[i]``) runs as one copy under ``stoke.accelerate``
    (``replicas`` only where the user says copies are independent), off the trainer's thread:
    its batches are overlapped with the step, never made faster than the generator alone.
    The faster of the input-alone probe and the run's own ``next()`` calls on it
    (:func:`generator_s_per_step`). s10_long_for_ctrlc.py on JAX (5 ms a batch): with stoke
    x21.5 predicted from the cores (115,760 samples/s) against 6,021 samples/s for the
    generator alone; ``stoke.accelerate(gen)`` measured x1.03."""
    if record.input.kind != "generator":
        return None
    pull_s = generator_s_per_step(record)
    rates = [r for r in (input_alone, batch_size / pull_s if (batch_size and pull_s) else None)
             if r]
    return max(rates) if rates else None


def accelerate_workers_start(
    record: RunRecord, cores: float, throughput: float, wait_fraction: float,
    batch_size: float, trainer_cpu_s_per_sample: float, input_cpu_s_per_sample: float,
    input_alone: float | None,
) -> dict[str, Any] | None:
    """When ``stoke.accelerate`` (the fix for a Sequence/PyDataset) would start its workers
    in this run, by its own rule (:func:`stoke.accelerate.worker_start.when_workers_start`):
    the trainer makes the batches, as Keras does, until workers would save more than their
    start-up costs plus a second. None where the fix is not ``stoke.accelerate`` or the run's
    length is not known (steps kept only in part).

    The rule's inputs, from the run: ``__getitem__``'s time (the input-alone probe's batch,
    else the wait), its CPU, the rest of the step (the step less the wait) and the trainer's
    cores meanwhile, the batches of an epoch and of the run (the judged fits' steps), and a
    worker's start-up CPU (the script's CPU when its first fit began, as stoke takes it). The
    red-team's s05_ragged_sequence.py (JAX, 64 batches of 2.3 ms, a 1.2 ms ``pad_sequences``):
    "with stoke x2.03", where ``stoke.accelerate`` made every batch in the trainer, as its rule
    says for a run that short (workers would have saved 0.05 s), and measured x0.87."""
    if record.input.kind != "pydataset" or record.meta.steps_truncated:
        return None
    from stoke.accelerate.worker_start import when_workers_start
    from stoke.autotune.tuner import TunerSettings

    step_s = batch_size / throughput
    wait_s = wait_fraction * step_s
    make_s = batch_size / input_alone if input_alone else wait_s
    rest_s = max(step_s - wait_s, 1e-6)
    cores_used = min(cores, trainer_cpu_s_per_sample * batch_size / rest_s)
    others = other_model_fits(record)
    run_batches = sum(1 for s in record.steps if s.fit not in others)
    per_epoch = record.input.num_batches or record.input.steps_per_epoch or run_batches
    startup_cpu_s = record.meta.trainer_cpu_s_at_first_fit
    if not run_batches or startup_cpu_s is None:
        return None
    workers = max(1, min(TunerSettings().start_workers, int(cores)))
    rule = (make_s, input_cpu_s_per_sample * batch_size, rest_s, cores_used, cores, per_epoch)
    started_after, answer = when_workers_start(*rule, run_batches, workers, startup_cpu_s)
    in_a_long_run, _ = when_workers_start(*rule, LONG_RUN_BATCHES, workers, startup_cpu_s)
    return {
        "accelerate_workers_start_after_batches": started_after,
        "accelerate_workers_start_in_a_long_run_after_batches": in_a_long_run,
        "run_batches": run_batches,
        "accelerate_rule": answer.why(),
        "accelerate_workers_saved_s": round(answer.saved_s, 3),
        "accelerate_workers_startup_cost_s": round(answer.startup_cost_s, 3),
    }


# A run this long stands for "a longer run" where stoke.accelerate's start rule is asked when
# its workers would start in any run
LONG_RUN_BATCHES = 10**6


def accelerate_start_words(start: dict[str, Any]) -> str | None:
    """What stoke.accelerate's start rule does to this run (:func:`accelerate_workers_start`),
    in words, where it keeps some of its batches in the trainer; None where the workers would
    make them all."""
    from stoke.accelerate.worker_start import MIN_SAVED_S

    after, run_batches = start["accelerate_workers_start_after_batches"], start["run_batches"]
    longer = start["accelerate_workers_start_in_a_long_run_after_batches"]
    if after is None and longer is None:
        return ("stoke.accelerate's own rule: it makes the batches in the trainer, as Keras "
                "does now: its workers would not make these steps enough shorter in a run of "
                f"any length ({start['accelerate_rule']})")
    if after is None:
        words = (
            "stoke.accelerate's own rule: it makes the batches in the trainer, as Keras does "
            "now, until its workers would pay for their start-up; over this run's "
            f"{run_batches:,} batches they would save {start['accelerate_workers_saved_s']:.2f}"
            f" s, not the {MIN_SAVED_S:g} s beyond their start-up "
            f"({start['accelerate_workers_startup_cost_s']:.2f} s) it asks for")
        return words + (f"; a run of more than {longer:,} batches starts them"
                        if longer is not None else "")
    if after > 0.05 * run_batches:
        return (f"stoke.accelerate's own rule: the trainer makes the first {after:,} of this "
                f"run's {run_batches:,} batches, as Keras does now, before its workers start")
    return None


@dataclass(frozen=True)
class Recompiles:
    """The train step compiled again and again (JAX, a new batch shape each time): the
    judged fits' compilations (``StepSample.compiled_s``, ``compiles``), what their steps took
    beyond a steady step (a step of several compilations, ``steps_per_execution``: shared
    among them), and what could be saved, by kind:

    - ``last_batches_s``: the first compilation of a smaller batch size that comes once an
      epoch, the epoch's only other size (its smaller last batch, wherever a shuffle puts
      it): saved by one batch size (drop or pad it);
    - ``other_shapes_s``: every other compilation but the run's first (lengths padded per
      batch, images of other sizes, batch sizes that vary within the epoch): saved by one
      shape."""

    compiles: int
    steps: int  # steps that compiled
    compile_s: float  # the backend's own compiling time
    excess_s: float  # the compiling steps' time beyond a steady step
    fits_s: float  # the judged fits' steps, all of them
    other_shapes_s: float
    last_batches_s: float
    sizes_vary: bool  # a batch size other than the usual one compiled within an epoch
    batch_sizes: tuple[int, ...]  # the compiling steps' batch sizes


def recompiles(record: RunRecord, steady_step_s: float | None) -> Recompiles | None:
    """The train step's compilations in this run (:class:`Recompiles`), where they were
    watched (JAX) and the step compiled at least once; None elsewhere."""
    if not record.model.compiles_watched:
        return None
    others = other_model_fits(record)
    judged = sorted((s for s in record.steps if s.fit not in others), key=lambda s: (s.t_s, s.step))
    compiled = [s for s in judged if s.compiled_s > 0]
    if not compiled:
        return None
    usual = statistics.mode(s.batch_size for s in judged)
    # a smaller batch size that comes at most once an epoch, and one smaller size an epoch:
    # the epoch's last batch (anywhere in it: fit(shuffle=True) shuffles a PyDataset's batches)
    per_epoch: dict[tuple[int, int], dict[int, int]] = {}
    for step in judged:
        sizes = per_epoch.setdefault((step.fit, step.epoch), {})
        sizes[step.batch_size] = sizes.get(step.batch_size, 0) + 1
    last_batch_sizes = {size for sizes in per_epoch.values() for size, count in sizes.items()
                        if size < usual and count == 1
                        and sum(1 for other in sizes if other != usual) == 1}
    typical = steady_step_s or 0.0
    other_shapes = last_batches = 0.0
    sizes_seen: set[int] = set()
    sizes_vary = False
    for number, step in enumerate(compiled):
        count = max(1, step.compiles)
        each = max(0.0, step.step_s - typical) / count
        unavoidable = 1 if number == 0 else 0  # the run's first compilation
        if (number and step.batch_size in last_batch_sizes
                and step.batch_size not in sizes_seen):
            last_batches += each
            unavoidable = 1
        elif step.batch_size != usual and step.batch_size not in last_batch_sizes:
            sizes_vary = True
        sizes_seen.add(step.batch_size)
        other_shapes += each * (count - unavoidable)
    return Recompiles(
        compiles=sum(max(1, s.compiles) for s in compiled),
        steps=len(compiled),
        compile_s=sum(s.compiled_s for s in compiled),
        excess_s=sum(max(0.0, s.step_s - typical) for s in compiled),
        fits_s=sum(s.step_s for s in judged),
        other_shapes_s=other_shapes,
        last_batches_s=last_batches,
        sizes_vary=sizes_vary,
        batch_sizes=tuple(sorted({s.batch_size for s in compiled})),
    )


def input_cpu_from_run(
    cpu: CpuSummary | None, throughput: float | None, trainer_per_sample: float
) -> float | None:
    """The input's CPU seconds per sample where its probe did not measure them (a record
    from before the probe counted its worker processes' CPU): what this run's process tree used
    per sample over the steady window (the sampler's ``self_cores``, threads and worker
    processes included), less the trainer's own. Not the input alone's wall time per
    sample: a worker waiting on I/O uses no CPU (a PyDataset sleeping 60 ms a batch on 4
    processes), and several busy ones use more than their wall time. None without samples."""
    if cpu is None or not throughput or not cpu.self_cores:
        return None
    return max(0.0, cpu.self_cores / throughput - trainer_per_sample)


# A predicted speedup below this is no gain: a wait it comes from is not called the limit.
NO_GAIN_SPEEDUP = 1.05

# Fewer steady steps than this: the run's own figures stand on too little to be confident.
FEW_STEADY_STEPS = 10

# Probes the budget of a short run cut short (``detail["shortened"]``, set by the probe
# schedule): measured, but over fewer steps than a probe runs, so they lower the confidence.
SHORTENED_LABELS = {
    "input_free": "the step with the input made free",
    "input_alone": "the input alone",
    "model_alone": "the model alone",
    "compiled_step": "the compiled step with the host layers stood in",
}


def _prediction(
    record: RunRecord,
    cpu: CpuSummary | None,
    wait_fraction: float,
    wait_source: str,
    throughput: float | None,
    predicted_throughput: float | None,
    predicted_speedup: float | None,
    wait_cap: float | None,
    capped: bool,
    batch_size: float | None,
    input_alone: float | None,
    model_alone: float | None,
    disagreement: str | None = None,
    overlap: dict[str, Any] | None = None,
    steady_steps_timed: int = FEW_STEADY_STEPS,
) -> Prediction:
    """One prediction (see :class:`Prediction`): the headline's bound, and stoke on these
    cores from the trainer's and the input's measured CPU per sample. ``disagreement``: the
    probes and the run's steps contradict each other (:func:`probes_disagree`)."""
    unmeasured: list[str] = [disagreement] if disagreement else []
    notes = record.meta.probe_notes or {}
    if steady_steps_timed < FEW_STEADY_STEPS:
        # the red-team's a07: a script that failed after its first step (the compilation)
        # was read compute-bound with high confidence from that step alone
        unmeasured.append(
            f"the steady state: {steady_steps_timed} step(s) timed"
            + (", the script ended with an error" if record.meta.error else "")
            + f" (fewer than {FEW_STEADY_STEPS}: a step that compiles, or one slowed by "
            "anything else, is the whole figure)"
        )
    waits = wait_fraction >= PARTLY_INPUT_BOUND_WAIT_FRACTION  # else nothing to predict
    untimed_pull = keras_pull_untimed(record) if wait_source == "measured" else None
    if untimed_pull:  # (either way: the doctor's pull read 4.9% where Keras' read 31%)
        unmeasured.append(untimed_pull + (
            "; the gain is modelled from the input alone and the step with the input made free"
            if overlap is not None else ""))
    if wait_source != "measured":
        unmeasured.append(
            {
                "probes": "the wait itself (this input's next() cannot be timed): estimated "
                "from the probes",
                "model-alone-estimate": "the wait itself (TensorFlow pulls the batch inside "
                "the compiled step, out of the doctor's sight): estimated as step time minus "
                "the model-alone step",
            }.get(wait_source, "the wait itself (not timed, and no probe bounds it)")
        )
    if "input_free" not in record.probes and wait_fraction >= PARTLY_INPUT_BOUND_WAIT_FRACTION:
        why = notes.get("input_free")
        unmeasured.append(
            "the step with the input made free"
            + (f" ({why})" if why else "")
            + ": taken as the steps less their waits, which runs long after long waits"
        )
    if input_alone is None and waits:
        why = notes.get("input_alone")
        unmeasured.append(
            "the input alone" + (f" ({why})" if why else "")
            + ": whether the input itself is the limit is not known"
        )
    if model_alone is None and waits:
        why = notes.get("model_alone")
        unmeasured.append("the model alone" + (f" ({why})" if why else ""))
    for name, label in SHORTENED_LABELS.items():
        probe = record.probes.get(name)
        shortened = probe.detail.get("shortened") if probe is not None else None
        if shortened and waits:
            unmeasured.append(f"{label} only briefly (the probe {shortened})")
    shared: dict[str, Any] = {}
    with_stoke = None
    if cpu is not None and throughput and predicted_throughput and batch_size:
        cores_free = max(0.5, cpu.cores - cpu.other_cores)
        free_probe = record.probes.get("input_free")
        trainer_cpu = as_number(free_probe.detail.get("cpu_s_per_step")) if free_probe else None
        if trainer_cpu is not None:
            trainer_per_sample, trainer_source = trainer_cpu / batch_size, "measured"
        else:
            # not measured: the trainer keeps one core busy for its no-wait step (a model on
            # the CPU with several threads takes more: then this is optimistic)
            trainer_per_sample, trainer_source = 1.0 / predicted_throughput, "assumed one core"
            if waits:
                unmeasured.append(
                    "the trainer's own CPU per step (assumed: one core while it works)"
                )
        input_probe = record.probes.get("input_alone")
        input_cpu = (
            as_number(input_probe.detail.get("cpu_s_per_sample")) if input_probe else None
        )
        # the input probe ran on worker processes without counting their CPU (records from
        # before it did): the run's own CPU bounds it, not the probe's wall time
        from_run = input_cpu_from_run(cpu, throughput, trainer_per_sample) if (
            input_alone and record.input.producer == "worker-processes") else None
        if input_cpu is not None:
            input_per_sample, input_source = input_cpu, "measured"
        elif from_run is not None:
            input_per_sample, input_source = from_run, "the run's own CPU less the trainer's"
        elif input_alone:
            input_per_sample, input_source = 1.0 / input_alone, "input alone on one core"
        else:
            input_per_sample, input_source = None, "not measured"
        run_pull_s = generator_s_per_step(record)  # batch_size: the samples of one step
        if (record.input.main_thread and run_pull_s and (
                input_per_sample is None or run_pull_s / batch_size < input_per_sample)):
            # a generator on the trainer's thread: its time in the run's own next() calls is
            # an upper bound of its CPU per sample, as the run pays it. The probe's pulls keep
            # their batches for training (fresh memory for every batch, page faults the run
            # does not pay), so they can cost more than the run's own
            input_per_sample = run_pull_s / batch_size
            input_source = "the run's own next() on the generator"
        if input_per_sample is not None:
            # the run already makes `throughput` on these cores: they supply at least that
            cores_free = max(cores_free, throughput * (trainer_per_sample + input_per_sample))
            rate = stoke_rate_on_shared_cores(
                cores_free, trainer_per_sample, input_per_sample, predicted_throughput
            )
            limited_by = (
                "the input made free (model and loop)"
                if rate >= predicted_throughput * 0.999
                else "the cores, shared by the trainer and the input's workers"
            )
            serial_rate = serial_producer_rate(record, input_alone, batch_size)
            if serial_rate is not None:
                serial_rate = max(serial_rate, throughput)  # the run shows it makes that much
            if serial_rate is not None and serial_rate < rate:
                rate = serial_rate
                limited_by = (
                    "the generator itself: stoke.accelerate runs one copy of it, off the "
                    "trainer's thread, so it overlaps the generator with the step but cannot "
                    f"make more than the generator alone ({serial_rate:,.0f} samples/s)"
                )
            with_stoke = round(max(1.0, rate / throughput), 2)
            if predicted_speedup:
                with_stoke = min(with_stoke, predicted_speedup)  # never above the headline
            start = accelerate_workers_start(
                record, cpu.cores, throughput, wait_fraction, batch_size, trainer_per_sample,
                input_per_sample, input_alone) if with_stoke > 1.0 else None
            if start is not None:
                after, run_batches = (start["accelerate_workers_start_after_batches"],
                                      start["run_batches"])
                start["speedup_once_workers_run"] = with_stoke
                # the batches before the workers start run as they do now
                with_stoke = round(run_batches / (
                    (after or run_batches) + (run_batches - (after or run_batches)) / with_stoke
                ), 2)
            shared = {
                "cores": cpu.cores,
                "other_processes_cores": round(cpu.other_cores, 2),
                "cores_for_this_run": round(cores_free, 2),
                "trainer_cpu_ms_per_sample": round(trainer_per_sample * 1e3, 4),
                "trainer_cpu_source": trainer_source,
                "input_cpu_ms_per_sample": round(input_per_sample * 1e3, 4),
                "input_cpu_source": input_source,
                "samples_per_s_on_these_cores": round(rate, 1),
                "limited_by": limited_by,
            }
            if serial_rate is not None:
                shared["generator_alone_samples_per_s"] = round(serial_rate, 1)
            if start is not None:
                shared.update(start)
                shared["limited_by"] = accelerate_start_words(start) or limited_by
    confidence = "high" if not unmeasured else ("medium" if len(unmeasured) == 1 else "low")
    if wait_source == "unmeasured":
        confidence = "low"
    return Prediction(
        if_input_free=predicted_speedup,
        with_stoke_here=with_stoke,
        wait_cap=wait_cap,
        capped=capped,
        confidence=confidence,
        unmeasured=tuple(unmeasured),
        shared_cores=shared,
        overlapped_producer=overlap or {},
    )


def _verdict(wait_fraction: float, signals: Sequence[str], wait_known: bool = True
             ) -> tuple[str, str]:
    if not wait_known:  # never "input wait is 0.0%" for a wait nobody measured
        if signals:
            return "overhead-bound", f"input wait not measured; host work fills the step: {signals[0]}"
        return "compute-bound", "input wait not measured; no wait is counted against the model"
    pct = f"{wait_fraction:.0%}" if wait_fraction >= 0.1 else f"{wait_fraction:.1%}"
    if wait_fraction >= INPUT_BOUND_WAIT_FRACTION:
        return "input-bound", f"the trainer waits for the next batch {pct} of each step"
    if wait_fraction >= PARTLY_INPUT_BOUND_WAIT_FRACTION:
        return "partly-input-bound", f"the trainer waits for the next batch {pct} of each step"
    if signals:
        return "overhead-bound", f"input wait is {pct}, but host work fills the step: {signals[0]}"
    return "compute-bound", f"input wait is {pct}; the model's own work fills the step"


def _window_samples(samples: Sequence[SystemSample], steady: SteadyState) -> list[SystemSample]:
    if steady.t_start_s is None or steady.t_end_s is None:
        return list(samples)
    inside = [s for s in samples if steady.t_start_s <= s.t_s <= steady.t_end_s]
    return inside or list(samples)


def _compute_s(step: StepSample) -> float:
    return max(0.0, step.step_s - step.wait_used_s)


def _probe_rate(record: RunRecord, name: str) -> float | None:
    probe = record.probes.get(name)
    if probe is None:
        return None
    rate = as_number(probe.samples_per_s)
    return rate if rate and rate > 0 else None


def as_number(value: Any) -> float | None:
    """A finite float from a recorded value (numpy scalars too), or None (bools, text, NaN)."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None

