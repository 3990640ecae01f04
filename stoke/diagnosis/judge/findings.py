"""The doctor's findings: one check per cause, each with its evidence, its fix and its gain.

A check is a function ``(record, analysis) -> Finding | None``. It reads the run record and
the run's numbers (:class:`~stoke.diagnosis.judge.analysis.Analysis`: verdict, steady-state
numbers, CPU and GPU summaries, the prediction) and raises a finding only when the record
holds evidence for it: numbers from the run, never a guess from the input kind alone. Checks
see no other finding: one way, measurements -> findings -> diagnosis. Where a finding gives
way to a more specific one (``input-too-slow`` when a named input cause explains the wait),
its entry in ``FINDING_CHECKS`` says so (``yields_to``), and :func:`find` applies it after
every check ran. The arithmetic (steady state, verdict, predicted speedup) belongs to
:mod:`stoke.diagnosis.judge.analysis`, the code each fix shows to
:mod:`stoke.diagnosis.judge.fixes`, the wording of reports to :mod:`stoke.diagnosis.report`.

Finding ids are a public contract (JSON consumers match on them): ``generator-on-main-thread``,
``input-too-slow``, ``shared-cores``, ``sequential-map``, ``no-prefetch``, ``float64-input``, ``run-eagerly``,
``host-op-in-model``, ``small-batch``, ``cpu-contention``, ``no-accelerator``,
``multi-gpu-unused``, ``thread-config``, ``gpu-memory-growth``, ``slow-validation``,
``workers-restart-each-epoch``. For an input-bound run the
first fix is stoke itself, with the code and the predicted speedup.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from stoke.diagnosis.judge.analysis import (
    NO_GAIN_SPEEDUP,
    Analysis,
    in_memory_input,
    loader_restarts_workers,
    recompiles,
)
from stoke.diagnosis.judge.fits import batch_size_words, fit_summaries
from stoke.diagnosis.judge.fixes import (
    MEMORY_GROWTH_FIX,
    PREFETCH_FIX,
    STOKE_ENV_FIX,
    TF_OVERSUBSCRIBED_FIX,
    compile_fix,
    contention_fix,
    data_parallel_fix,
    float64_fix,
    gpu_install_fix,
    host_op_fix,
    input_fix,
    keras2_fix,
    one_shape_fix,
    persistent_workers_fix,
    plain_number,
    shared_cores_fix,
    small_batch_fix,
    stoke_fix,
    thread_limit_fix,
    torch_threads_fix,
    use_gpu_fix,
    validation_generator_fix,
)
from stoke.diagnosis.judge.words import ms, rate, speedup
from stoke.diagnosis.record import RunRecord

SEVERITIES = ("high", "medium", "low", "info")
CATEGORIES = ("input", "model", "system")

# The same thresholds as the verdict (XProf): below 5% input wait there is nothing to win.
_PARTLY_WAIT = 0.05
_INPUT_BOUND_WAIT = 0.20
# cpu-contention: other processes take at least this share of the cores (and half a core).
CONTENTION_CORE_SHARE = 0.25
CONTENTION_MIN_CORES = 0.5
SATURATED_BUSY_FRACTION = 0.8
# gpu-memory-growth: the framework holds at least this share of a GPU's memory.
MEMORY_RESERVED_FRACTION = 0.9
# multi-gpu-unused: a GPU below this kernel-active % is idle.
IDLE_GPU_PCT = 5.0
# Why host-op-in-model has no expected gain when the compiled-step probe could not time its fix.
HOST_OP_GAIN_NOT_PREDICTED = (
    "No gain is predicted: the gain is the compiled step's, and the doctor could not time "
    "that step with the layer stood in ({why}); rewrite the layer with keras.ops and run "
    "`stoke doctor` again to see the compiled step."
)
# input["producer"] values that mean one Python thread makes the batches, one at a time.
_SERIAL_PYTHON_PRODUCERS = ("trainer-thread", "tf.data-thread")


@dataclass(frozen=True)
class Finding:
    """One cause: what it is, the numbers that show it, the fix (runnable code) and its gain.

    ``expected_gain`` is a throughput multiplier (2.0 = twice the samples/s) or ``None`` when
    the record does not allow a number. ``fix_language`` is ``"python"`` or ``"bash"``.
    """

    id: str
    severity: str
    category: str
    message: str
    fix: str
    evidence: dict[str, Any] = field(default_factory=dict)
    expected_gain: float | None = None
    fix_language: str = "python"

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"Finding severity must be one of {SEVERITIES}; got {self.severity!r}.")
        if self.category not in CATEGORIES:
            raise ValueError(f"Finding category must be one of {CATEGORIES}; got {self.category!r}.")

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "severity": self.severity,
            "category": self.category,
            "message": self.message,
            "fix": self.fix,
            "fix_language": self.fix_language,
            "evidence": dict(self.evidence),
            "expected_gain": self.expected_gain,
        }


Check = Callable[[RunRecord, Analysis], "Finding | None"]


# -- input -------------------------------------------------------------------------------------


def generator_on_main_thread(record: RunRecord, analysis: Analysis) -> Finding | None:
    """Batches made by one Python thread, one at a time: the trainer's own thread (JAX, torch,
    a train_on_batch loop) or the single tf.data thread Keras wraps a generator in
    (TensorFlow), which holds the GIL against the trainer. A Keras-2 call (``fit_generator``)
    translated for Keras 3 is diagnosed as what the user wrote: a generator."""
    inputs = record.input
    legacy = keras2_generator_call(record)
    kind = "generator" if legacy is not None else (inputs.kind or "unknown")
    on_main = inputs.main_thread is True or legacy is not None
    serial_python = (
        kind == "generator" or on_main or inputs.producer in _SERIAL_PYTHON_PRODUCERS
    )
    wait = analysis.input_wait_fraction
    if not serial_python or kind == "tf.data" or wait is None or wait < _PARTLY_WAIT:
        return None
    if kind in ("arrays", "stoke") and legacy is None and analysis.input_is_limit is not True:
        return None  # slicing arrays (or stoke inline) is not what the trainer waits for
    bound = analysis.bound
    overlap_gain = _overlap_gain(analysis)
    described = {
        "generator": "a Python generator",
        "pydataset": "the PyDataset (no workers)",
        "torch_dataloader": "the DataLoader (num_workers=0)",
        "arrays": "slicing of in-memory arrays",
        "stoke": "the stoke pipeline (inline executor)",
        "train_on_batch": "the script's own loop between train_on_batch calls",
    }.get(kind, "the input pipeline")
    # a Sequence or image iterator (flow_from_directory) given to fit_generator: still the
    # user's own call, and `stoke run` its fix (it runs the script unchanged, fed by workers)
    named_call = legacy or keras2_generator_call(record, ("sequence", "image-iterator"))
    if named_call is not None:
        what = {"sequence": "Sequence", "image-iterator": "image iterator"}.get(
            str(named_call.get("input_kind")), "Python generator")
        described = (
            f"the {what} passed to {named_call.get('method', 'fit_generator')}() "
            f"({conversion_site(named_call)}){_no_workers(named_call) if legacy is None else ''}"
        )
    where = (
        "on the trainer's main thread, one after the other with the training step"
        if on_main or inputs.producer == "trainer-thread"
        else "in a single Python thread (Keras wraps it in tf.data), holding the GIL "
        "against the trainer"
    )
    message = (
        f"Batches are made by {described} {where}: the trainer waits {wait:.0%} of every "
        f"step ({ms(bound.wait_s)} of {ms(bound.step_s)}) while Python builds the next batch."
    )
    evidence = _input_evidence(record, analysis)
    if legacy is not None:
        evidence["input_kind"] = "generator"
        evidence["keras2_call"] = legacy.get("method")
    if overlap_gain is not None:
        evidence["speedup_overlap_only"] = round(overlap_gain, 2)
    message += _prediction_sentence(analysis)
    here = stoke_gain_on_these_cores(record, analysis)
    if here is not None:
        evidence["speedup_with_stoke_on_these_cores"] = here
    return Finding(
        id="generator-on-main-thread",
        severity=_wait_severity(wait),
        category="input",
        message=message,
        fix=keras2_fix(
            record.meta.script, named_call.get("method", "fit_generator"),
            keras2_data_name(record),
            class_weight="class_weight=" in str(named_call.get("legacy_arguments") or ""),
        ) if named_call is not None else input_fix(
            record.input, analysis.prediction, keras2_data_name(record)),
        evidence=evidence,
        expected_gain=here if here is not None else analysis.predicted_speedup,
        fix_language="bash" if named_call is not None else "python",
    )


def keras2_generator_call(
    record: RunRecord, input_kinds: tuple[str, ...] = ("generator",)
) -> dict[str, Any] | None:
    """The first Keras-2 training call on a plain generator (or on one of ``input_kinds``:
    ``"sequence"``, ``"image-iterator"``) that the doctor's shim translated
    (``meta["keras2_conversions"]``, from ``stoke.legacy.shim.conversions()``), or None."""
    for conversion in record.meta.keras2_conversions or []:
        if not isinstance(conversion, dict):
            continue
        method = str(conversion.get("method", ""))
        if conversion.get("input_kind") in input_kinds and not method.startswith(
            ("evaluate", "predict")
        ):
            return conversion
    return None


def keras2_data_name(record: RunRecord) -> str | None:
    """The script's own text for the data of its first Keras-2 training call on a generator,
    Sequence or image iterator (``model.fit_generator(training_batches, ...)``:
    ``training_batches``), for the fixes to name; None when the doctor does not know it."""
    from stoke.legacy.conversions import first_argument

    for conversion in record.meta.keras2_conversions or []:
        if not isinstance(conversion, dict) or str(conversion.get("method", "")).startswith(
                ("evaluate", "predict")):
            continue
        if conversion.get("input_kind") in ("generator", "sequence", "image-iterator"):
            return first_argument(str(conversion.get("call_source") or "")) or None
    return None


def _no_workers(conversion: dict[str, Any]) -> str:
    """" with no workers", and why when the call asked for them: Keras 3's ``fit`` has no
    ``workers``/``use_multiprocessing`` (a PyDataset takes them in its constructor), so those
    of a ``fit_generator(seq, workers=6, use_multiprocessing=True)`` run nothing."""
    asked = re.findall(r"\b((?:workers|use_multiprocessing)=[^,'\")]+)",
                       str(conversion.get("legacy_arguments") or ""))
    if not asked:
        return " with no workers"
    return (f" with no workers (Keras 3's fit() has no {', '.join(asked)}: they start "
            f"nothing)")


def conversion_site(conversion: dict[str, Any]) -> str:
    """Where the script made a translated Keras-2 call, as the report shows it:
    ``train.py:31`` (the file's name, never its folder)."""
    filename = str(conversion.get("filename") or "the script").rsplit("/", 1)[-1]
    line = conversion.get("lineno")
    return f"{filename}:{line}" if line else filename


def sequential_map(record: RunRecord, analysis: Analysis) -> Finding | None:
    """A tf.data ``map`` without ``num_parallel_calls``: one element at a time, one core."""
    wait = analysis.input_wait_fraction
    if record.input.kind != "tf.data" or record.input.tf_data_parallel_map is not False:
        return None
    if wait is None or wait < _PARTLY_WAIT:
        return None
    if _cores_size_the_input(record, analysis):
        # more parallel calls take cores from the model: shared-cores says how many (the
        # red-team's a17 on JAX: told AUTOTUNE here and 1 call there; AUTOTUNE ran x1.01)
        return None
    return Finding(
        id="sequential-map",
        severity=_wait_severity(wait),
        category="input",
        message=(
            f"The tf.data pipeline maps one element at a time (no num_parallel_calls): "
            f"the trainer waits {wait:.0%} of every step ({ms(analysis.bound.wait_s)} of "
            f"{ms(analysis.bound.step_s)}) for a pipeline that uses one core."
        ),
        fix=stoke_fix(record.input),
        evidence=_input_evidence(record, analysis),
        expected_gain=analysis.predicted_speedup,
    )


def no_prefetch(record: RunRecord, analysis: Analysis) -> Finding | None:
    """A tf.data pipeline without ``prefetch``: the next batch is made only when asked for."""
    wait = analysis.input_wait_fraction
    if record.input.kind != "tf.data" or record.input.tf_data_prefetches is not False:
        return None  # a prefetch of its own, or the one tf.data injects (or not known)
    if wait is None or wait < _PARTLY_WAIT:
        return None
    gain = _overlap_gain(analysis)
    return Finding(
        id="no-prefetch",
        severity=_wait_severity(wait),
        category="input",
        message=(
            f"The tf.data pipeline has no prefetch, so the next batch is made only after the "
            f"step asks for it: the trainer waits {wait:.0%} of every step instead of "
            f"overlapping input and compute."
            + (_overlap_sentence(analysis, gain) if gain is not None else "")
        ),
        fix=PREFETCH_FIX,
        evidence=_input_evidence(record, analysis),
        expected_gain=gain,
    )


def input_too_slow(record: RunRecord, analysis: Analysis) -> Finding | None:
    """The run waits for input that already has workers (PyDataset workers, DataLoader workers,
    a parallel tf.data pipeline, stoke): the workers cannot keep up, or moving their batches
    costs more than making them. Raised only when the input alone is the limit: measured
    slower than INPUT_LIMIT_FACTOR times the model's no-wait rate (or, not measured, an input
    that does real work per batch); it gives way to a named input cause (``FINDING_CHECKS``)."""
    wait = analysis.input_wait_fraction
    if wait is None or wait < _PARTLY_WAIT:
        return None
    kind = record.input.kind or "unknown"
    if analysis.input_is_limit is False:
        return None  # the input alone is far faster than the model: it is not the limit
    if kind == "tf.data" and _cores_size_the_input(record, analysis):
        # its fix (more parallel calls) takes cores from the model: shared-cores sizes them
        # (the red-team's a17: AUTOTUNE here, num_parallel_calls=1 there; AUTOTUNE ran x1.01)
        return None
    if in_memory_input(record) and analysis.input_wait_source != "measured":
        return None  # an estimated wait on arrays in memory is no evidence against them
    if in_memory_input(record):
        # slicing arrays in memory: blamed only when measured slower than the model itself
        model_rate = analysis.model_rate
        if not (analysis.input_alone and model_rate and analysis.input_alone < model_rate):
            return None
    if _input_keeps_up_alone(analysis) and (wait or 0.0) < _INPUT_BOUND_WAIT:
        # measured faster than the model, and little wait: not the limit (issue 14); a large
        # wait beside an input that barely keeps up alone is still the input's.
        # s18_tfrecord_noprefetch.py on TF: input alone 1.01-1.28x the model, 6-8% wait, was
        # told "cannot keep up" and to map in parallel, which it already did
        return None
    if _model_on_cpu(record) and kind in ("stoke", "pydataset", "torch_dataloader", "grain") and (
        analysis.prediction is not None and analysis.prediction.shared_cores.get("limited_by", "")
        .startswith("the cores")
    ):
        return None  # the cores are the limit: shared-cores says so, with the numbers
    workers = record.input.pydataset_workers
    detail = {
        "pydataset": (
            f"PyDataset(workers={workers}, use_multiprocessing="
            f"{record.input.use_multiprocessing}) cannot keep up: process workers pickle "
            "every batch through a pipe, thread workers share the GIL with the trainer"
        ),
        "torch_dataloader": (
            "the DataLoader's workers cannot keep up: every batch is pickled through a pipe and "
            "copied again from pageable memory"
        ),
        "tf.data": f"the tf.data pipeline ({_tf_data_shape(record)}) cannot keep up",
        "stoke": "the stoke pipeline cannot keep up with its current workers",
        "grain": (
            "the Grain dataset cannot keep up: its reading threads share the GIL with the "
            "trainer"
        ),
    }.get(kind, "the input pipeline cannot keep up with the model")
    step_s = analysis.bound.step_s
    sharing = bool(step_s and analysis.shared_cores_s > 0.5 * wait * step_s)
    if sharing:
        # most of the wait is the model running slower beside the input's work on the cores
        # they share (the verdict says so), not batches it waited for: "cannot keep up" was
        # said of image_dataset_from_directory's pipeline on TF (13%, 2.6 of its 3.5 ms that)
        detail = (
            f"{ms(analysis.shared_cores_s)} a step of that is the CPU-trained model running "
            "slower beside the input's work on the cores they share (it waited for the "
            f"batches themselves {ms(max(0.0, wait * step_s - analysis.shared_cores_s))} a "
            "step): less input work per step frees the model's cores"
        )
    message = f"The trainer waits {wait:.0%} of every step for input: {detail}."
    if analysis.input_alone and analysis.model_alone:
        message += (
            f" Alone, the input makes {rate(analysis.input_alone)} and the model takes "
            f"{rate(analysis.model_alone)}."
        )
    elif analysis.input_is_limit is None and not sharing:
        message += " The input alone was not measured: that it is the limit is inferred from the wait."
    message += _prediction_sentence(analysis)
    here = stoke_gain_on_these_cores(record, analysis)
    evidence = _input_evidence(record, analysis)
    if here is not None:
        evidence["speedup_with_stoke_on_these_cores"] = here
    return Finding(
        id="input-too-slow",
        severity=_wait_severity(wait) if analysis.input_is_limit else "medium",
        category="input",
        message=message,
        fix=input_fix(record.input, analysis.prediction, keras2_data_name(record)),
        evidence=evidence,
        expected_gain=here if here is not None else analysis.predicted_speedup,
    )


def _input_keeps_up_alone(analysis: Analysis) -> bool:
    """The input alone was measured at least as fast as the model takes batches (its no-wait
    rate, or alone, whichever is lower): then its wait has another cause (the cores it shares,
    handing batches over), and ``input-too-slow`` is not said."""
    model_rate = analysis.model_rate
    return bool(analysis.input_alone and model_rate and analysis.input_alone >= model_rate)


def shared_cores(record: RunRecord, analysis: Analysis) -> Finding | None:
    """The model trains on the CPU and its wait comes from sharing the cores with the input's
    workers (or other work), not from an input too slow to keep up: the numbers of the
    shared-cores model (:class:`stoke.diagnosis.judge.analysis.Prediction`). Unless the cores
    are the limit (:func:`cores_are_the_limit`), it gives way to the input findings
    (``FINDING_CHECKS``)."""
    wait = analysis.input_wait_fraction
    prediction = analysis.prediction
    if wait is None or wait < _PARTLY_WAIT or not _model_on_cpu(record) or prediction is None:
        return None
    numbers = prediction.shared_cores
    if not numbers:
        return None
    if in_memory_input(record) and analysis.input_wait_source != "measured":
        return None  # an estimated wait on arrays in memory: no workers to size (analysis)
    if not cores_are_the_limit(analysis) and analysis.input_is_limit is not False:
        return None
    if not cores_are_the_limit(analysis) and (prediction.with_stoke_here or 1.0) < 1 + _PARTLY_WAIT:
        # the input made free is the limit and its workers would win nothing: the wait is the
        # hand-over the verdict names (NumPy arrays on a CPU-trained model), not the cores
        return None
    trainer_ms = numbers["trainer_cpu_ms_per_sample"]
    input_ms = numbers["input_cpu_ms_per_sample"]
    cores_here = numbers["cores_for_this_run"]
    cores_rate = numbers["samples_per_s_on_these_cores"]
    input_cores = cores_rate * input_ms / 1e3
    trainer_cores = cores_rate * trainer_ms / 1e3
    message = (
        f"The model trains on the CPU and shares {plain_number(cores_here)} core(s) with the input: "
        f"per sample the trainer takes {trainer_ms:.3g} ms of CPU and the input "
        f"{input_ms:.3g} ms"
    )
    if analysis.input_alone and analysis.model_alone:
        message += (
            f" (alone the input makes {rate(analysis.input_alone)}, "
            f"{_times(analysis.input_alone / analysis.model_alone)} "
            f"{rate(analysis.model_alone)})"
        )
    slow_input = bool(analysis.input_alone and analysis.model_alone
                      and analysis.input_alone < analysis.model_alone)
    if slow_input:
        because = "the input is slower than the model and shares the cores with it"
    elif analysis.input_is_limit is False or _input_keeps_up_alone(analysis):
        # s24_mirrored_strategy.py: input alone 2.3x the model was "slow alone too"
        because = "the cores are shared, not because the input is slow"
    else:  # the cores are the limit, and the input alone is slow too
        because = "the input is slow alone too, but the cores, shared, are the limit"
    message += (
        f". The trainer waits {wait:.0%} of each step because {because}: at best these cores "
        f"make {rate(cores_rate)} (trainer ~{trainer_cores:.1f} cores, input "
        f"~{input_cores:.1f})."
    )
    fix = shared_cores_fix(input_cores, cores_rate, record.input.batch_size or 64, record.input,
                           prediction.with_stoke_here)
    return Finding(
        id="shared-cores",
        severity="high" if wait >= _INPUT_BOUND_WAIT else "medium",
        category="system",
        message=message,
        fix=fix,
        evidence={**numbers, "input_wait_pct": _pct(wait),
                  "input_alone_samples_per_s": _round(analysis.input_alone),
                  "model_alone_samples_per_s": _round(analysis.model_alone)},
        expected_gain=prediction.with_stoke_here,
    )


def cores_are_the_limit(analysis: Analysis) -> bool:
    """The shared-cores model says the cores, shared by the trainer and the input's workers,
    limit this run (not the input made free): then shared-cores stands beside input findings."""
    prediction = analysis.prediction
    numbers = prediction.shared_cores if prediction is not None else {}
    return str(numbers.get("limited_by", "")).startswith("the cores")


def _cores_size_the_input(record: RunRecord, analysis: Analysis) -> bool:
    """A tf.data pipeline of TF ops (no Python in its graph) beside a model trained on the
    CPU, the cores they share being the limit: the map's parallelism is then shared-cores' to
    size (more of it takes cores from the model), not AUTOTUNE's. A map in Python
    (``py_function``) keeps sequential-map, whose first fix moves it to processes."""
    return (record.input.tf_data_py_function is False and _model_on_cpu(record)
            and cores_are_the_limit(analysis))


def _times(ratio: float) -> str:
    """One rate against another's, ending where the other's figure follows: "12x the
    model's", "1.5x the model's", or below 1 "85x fewer than the model's" (never "0.0x")."""
    if ratio >= 1:
        return (f"{ratio:.0f}x" if ratio >= 10 else f"{ratio:.1f}x") + " the model's"
    fewer = 1.0 / ratio if ratio > 0 else float("inf")
    return (f"{fewer:.0f}x" if fewer >= 10 else f"{fewer:.1f}x") + " fewer than the model's"


def _tf_data_shape(record: RunRecord) -> str:
    """The tf.data pipeline in words, from the facts read off its graph (no claims beyond)."""
    inputs = record.input
    maps = inputs.tf_data_map_parallelism or []
    parts = []
    if not maps and inputs.tf_data_parallel_map is None:
        parts.append("no map")
    elif inputs.tf_data_parallel_map is False:
        parts.append("a map one element at a time")
    else:
        parts.append(f"{len(maps) or 'its'} parallel map(s)")
    if inputs.tf_data_py_function:
        parts.append("Python inside (py_function / from_generator)")
    prefetch = inputs.tf_data_prefetches
    if inputs.tf_data_prefetch is True:
        parts.append("prefetch")
    elif prefetch is True:
        parts.append("prefetch injected by tf.data")
    elif prefetch is False:
        parts.append("no prefetch")
    return ", ".join(parts)


def _prediction_sentence(analysis: Analysis) -> str:
    """The shared prediction, in the words every input finding uses."""
    prediction = analysis.prediction
    if not analysis.predicted_speedup:
        return ""
    gain = analysis.predicted_speedup
    step_s = analysis.bound.step_s
    if gain < 1.005:
        text = f" Taking the input off the critical path is predicted to gain nothing ({speedup(gain)})"
        if analysis.model_alone and analysis.throughput:
            text += (
                f": the model alone makes {rate(analysis.model_alone)} and the run "
                f"{rate(analysis.throughput)}"
            )
    elif analysis.throughput and analysis.predicted_throughput:
        text = (
            f" With the input off the critical path the run would make "
            f"{rate(analysis.predicted_throughput)} instead of {rate(analysis.throughput)} "
            f"({speedup(gain)})"
        )
    elif step_s:
        text = (
            f" With the input off the critical path each step would take {ms(step_s / gain)} "
            f"instead of {ms(step_s)} ({speedup(gain)}; no samples/s: the batch size was not "
            "recorded)"
        )
    else:
        text = f" With the input off the critical path the run would be {speedup(gain)} as fast"
    below = below_input_free_window(analysis)
    if below:
        text += f" ({below})"
    if prediction is not None and prediction.with_stoke_here is not None and analysis.cpu:
        text += (
            f"; stoke on these {analysis.cpu.cores} cores "
            f"({analysis.cpu.other_cores:.1f} taken by other processes, the rest shared by the "
            f"trainer and the workers): {speedup(prediction.with_stoke_here)}"
        )
        generator_rate = prediction.shared_cores.get("generator_alone_samples_per_s")
        if generator_rate and str(prediction.shared_cores.get("limited_by", "")).startswith(
                "the generator itself"):
            text += (
                f", no more than the generator makes alone ({rate(generator_rate)}): "
                "stoke.accelerate runs one copy of a generator, off the trainer's thread, so "
                "it overlaps it with the step but cannot spread it over workers (a dataset "
                "with len() and [i] can be)"
            )
    return text + "."


# overlapped_producer's "limited_by", in the words below_input_free_window prints
_OVERLAP_LIMITS = {"input": "the input alone", "model and loop": "the model and loop"}


def below_input_free_window(analysis: Analysis) -> str:
    """Why the one prediction is below what the input-free window alone gives (its step against
    the run's), in words with the numbers, or "" when it is not (within 10%): the report prints
    both figures, and they must not read as a contradiction (issue 14, one prediction).
    s03_sequence_multi_input.py on TF (a PyDataset in Keras' tf.data thread, validation each
    20-step epoch): "Input free 2.29 ms per step -> 13,972 samples/s" beside "x1.05": the
    thread already overlaps the step without the doctor's timed pull (2.79 ms a step, the input
    alone), and 4.5 ms a step of epoch work is paid before and after the fix."""
    prediction = analysis.prediction
    bound = analysis.bound
    gain = analysis.predicted_speedup
    if (prediction is None or not gain or not bound.no_wait_throughput or not analysis.throughput
            or not bound.step_s or analysis.input_is_limit is False):
        # (an input not the limit: the verdict's reason says why no input fix gains)
        return ""
    window = bound.no_wait_throughput / analysis.throughput
    if window <= gain * 1.1:
        return ""
    reasons = []
    overlap = prediction.overlapped_producer
    if (overlap and overlap.get("keras_step_s", 0) > overlap.get("no_wait_step_s", 0)
            and overlap.get("keras_step_s", 0) < 0.95 * bound.step_s):
        reasons.append(
            f"Keras pulls inside its compiled step while one tf.data thread makes the next "
            f"batch, so without the doctor's timed pull a step already takes "
            f"{ms(overlap['keras_step_s'])} (limited by "
            f"{_OVERLAP_LIMITS.get(overlap.get('limited_by'), overlap.get('limited_by'))}), not the "
            f"{ms(bound.step_s)} timed here; freeing the input takes that to "
            f"{ms(overlap['no_wait_step_s'])} ({speedup(overlap['speedup'])})"
        )
    if prediction.epoch_overhead_s_per_step > 0:
        reasons.append(
            f"{ms(prediction.epoch_overhead_s_per_step)} a step of work that recurs once an "
            "epoch (epoch-end callbacks, validation, the next epoch's start) is paid before "
            "and after the fix"
        )
    if prediction.capped and prediction.wait_cap:
        reasons.append(
            f"the gain is capped at {speedup(prediction.wait_cap)}, what removing the "
            f"{analysis.input_wait_fraction:.0%} wait allows"
        )
    if not reasons:
        return ""
    return (f"the input-free step alone would give {speedup(window)}, but "
            + "; and ".join(reasons))


# the share of an epoch that a DataLoader's restarting workers must cost to be named
_RESTART_EPOCH_SHARE = 0.03


def workers_restart_each_epoch(record: RunRecord, analysis: Analysis) -> Finding | None:
    """A torch ``DataLoader`` with worker processes and no ``persistent_workers``
    (:func:`stoke.diagnosis.judge.analysis.loader_restarts_workers`): named from what it
    cost here, each epoch's first step beyond a steady step
    (:func:`stoke.diagnosis.judge.analysis.epoch_start_input_s`), at least
    ``_RESTART_EPOCH_SHARE`` of an epoch. The gain is the epoch without it. The red-team's a19
    (TensorDataset, 2 workers, JAX, 2 cores): 65-90 ms at each epoch's first step against
    64 steps of 1-2 ms; ``persistent_workers=True`` measured x1.45 on the epoch."""
    inputs = record.input
    prediction = analysis.prediction
    if not loader_restarts_workers(record) or prediction is None:
        return None
    start_s = prediction.epoch_start_input_s_per_step
    step_s = analysis.bound.step_s
    steps = _steps_per_epoch(record)
    if not start_s or not step_s or not steps:
        return None
    # an epoch with its workers kept: the steady step less the restarts its mean holds
    kept_epoch_s = (step_s - prediction.epoch_start_in_mean_s_per_step
                    + prediction.epoch_overhead_s_per_step) * steps
    restart_s = start_s * steps
    if kept_epoch_s <= 0:
        return None
    epoch_s = kept_epoch_s + restart_s
    share = restart_s / epoch_s
    if share < _RESTART_EPOCH_SHARE:
        return None
    gain = epoch_s / kept_epoch_s
    return Finding(
        id="workers-restart-each-epoch",
        severity="medium" if share >= 0.1 else "low",
        category="input",
        message=(
            f"The DataLoader starts its {inputs.torch_num_workers} worker process(es) again at "
            f"every epoch (persistent_workers is off): each epoch's first step takes "
            f"{ms(restart_s)} more than a steady step, starting them and waiting for their "
            f"first batches, {share:.0%} of an epoch of {steps} steps. With the workers kept, "
            f"an epoch would take {ms(epoch_s - restart_s)} instead of {ms(epoch_s)}: "
            f"{speedup(gain)}."
        ),
        fix=persistent_workers_fix(inputs),
        evidence={
            "torch_num_workers": inputs.torch_num_workers,
            "persistent_workers": False,
            "epoch_start_extra_ms": _round_ms(restart_s),
            "steps_per_epoch": steps,
            "epoch_share_pct": round(100 * share, 1),
        },
        expected_gain=_gain(gain),
    )


# the share of an epoch fit's validation must take, and its generator's share of that, to be named.
# The generator's time is known over all validations, the first (tracing) one's too, the
# validation's without the first: on a loaded machine the second validation of
# slow_validation.py took 0.42 s against 0.26 s for the first, its generator 0.35 s over both
# (0.17 s a call: 42%, unnamed at a half)
_VALIDATION_EPOCH_SHARE = 0.2
_VALIDATION_INPUT_SHARE = 1 / 3


def slow_validation(record: RunRecord, analysis: Analysis) -> Finding | None:
    """``validation_data`` from a Python generator that takes a large share of each epoch: the
    training steps never wait for it (the verdict does not see it), but every epoch does.
    Measured by ``measure.validation``: each ``evaluate`` call of a measured ``fit`` (the
    first one, which traces the test function, left out when there are more) and the time
    spent inside the generator. The gain is the epoch with the generator's time taken off."""
    inputs = record.input
    calls = list(inputs.validation_call_s or ())
    if inputs.validation_kind != "generator" or not calls or not inputs.validation_input_s:
        return None
    steady_calls = calls[1:] or calls
    validation_s = sum(steady_calls) / len(steady_calls)
    input_s = min(inputs.validation_input_s / len(calls), validation_s)
    step_s = analysis.bound.step_s
    steps = _steps_per_epoch(record)
    if step_s is None or not steps:
        return None
    training_s = step_s * steps
    epoch_s = training_s + validation_s
    if validation_s < _VALIDATION_EPOCH_SHARE * epoch_s or input_s < _VALIDATION_INPUT_SHARE * validation_s:
        return None
    gain = epoch_s / (epoch_s - input_s)
    share = validation_s / epoch_s
    return Finding(
        id="slow-validation",
        severity="high" if share >= 0.4 else "medium",
        category="input",
        message=(
            f"fit's validation_data is a Python generator, and validation takes {share:.0%} of "
            f"each epoch ({ms(validation_s)} after {steps} training steps of {ms(step_s)}); "
            f"{ms(input_s)} of it is spent inside the generator "
            f"({inputs.validation_input_batches} batches made in {len(calls)} validation(s)). "
            f"The training steps never wait for it, so the verdict above does not count it. "
            f"With its batches made off the trainer's thread (or once, before fit), each "
            f"epoch would take {ms(epoch_s - input_s)} instead of {ms(epoch_s)}: "
            f"{speedup(gain)}."
        ),
        fix=validation_generator_fix(record.meta.script),
        evidence={
            "validation_kind": inputs.validation_kind,
            "validation_s_per_epoch": round(validation_s, 4),
            "validation_input_s_per_epoch": round(input_s, 4),
            "training_s_per_epoch": round(training_s, 4),
            "steps_per_epoch": steps,
            "validation_calls": len(calls),
            "validation_share_of_epoch_pct": round(100 * share, 1),
        },
        expected_gain=_gain(gain),
        fix_language="bash",
    )


def _steps_per_epoch(record: RunRecord) -> int | None:
    """Training steps (train-function calls) an epoch takes: what fit was told, else the most
    steps one epoch of the record holds."""
    per_execution = record.model.steps_per_execution or 1
    if record.input.steps_per_epoch:
        return max(1, record.input.steps_per_epoch // per_execution)
    counts: dict[tuple[int, int], int] = {}
    for step in record.steps:
        counts[(step.fit, step.epoch)] = counts.get((step.fit, step.epoch), 0) + 1
    return max(counts.values()) if counts else None


def float64_input(record: RunRecord, analysis: Analysis) -> Finding | None:
    """float64 inputs to a float32 model: batches made as float64 (twice the bytes to make,
    move and cast, every step), or float64 arrays passed to ``fit``, which Keras casts to
    floatx once when ``fit`` starts (the batches are float32 then: no cost per step, but a
    float32 copy of the whole array beside the user's; :func:`_float64_arrays`)."""
    dtypes = record.input.dtypes
    if not isinstance(dtypes, dict):
        return None
    wide = sorted(_field_label(str(path)) for path, dtype in dtypes.items() if "float64" in str(dtype))
    if not wide:
        return _float64_arrays(record)
    wait = analysis.input_wait_fraction or 0.0
    kind = record.input.kind or "unknown"
    fix = float64_fix(
        kind, kind in ("pydataset", "generator") or keras2_generator_call(record) is not None,
        wide,
    )
    return Finding(
        id="float64-input",
        severity="medium" if wait >= _PARTLY_WAIT else "low",
        category="input",
        message=(
            f"{len(wide)} input field(s) are float64 ({', '.join(wide)}): twice the bytes of "
            "float32 to build, copy and send to the device, and Keras casts them back to "
            "float32 on every step."
        ),
        fix=fix,
        evidence={"float64_fields": wide, "input_kind": kind, "input_wait_pct": _pct(wait)},
    )


def _float64_arrays(record: RunRecord) -> Finding | None:
    """float64 arrays passed to ``fit`` (``input.source_dtypes``) whose batches reach the
    trainer as float32: Keras cast them once, when ``fit`` started. Named (a beginner's
    ``np.random.rand`` table on JAX/torch went unreported) with what it really costs: a copy,
    not a step; the fix is the cast, never a feeder for arrays already in memory."""
    source = record.input.source_dtypes
    if not isinstance(source, dict):
        return None
    wide = sorted(_field_label(str(path)) for path, dtype in source.items() if "float64" in str(dtype))
    if not wide:
        return None
    return Finding(
        id="float64-input",
        severity="low",
        category="input",
        message=(
            f"{len(wide)} array(s) passed to fit are float64 ({', '.join(wide)}): Keras casts "
            "them to float32 once, when fit starts, so the steps do not pay for it, but it "
            "keeps a float32 copy of each whole array beside yours (1.5x their memory) and "
            "casts them again in every fit."
        ),
        fix='x_train = x_train.astype("float32")  # once, where the arrays are made\n',
        evidence={"float64_fields": wide, "input_kind": record.input.kind or "unknown",
                  "cast": "once, when fit starts (Keras' array adapter)"},
    )


# -- model -------------------------------------------------------------------------------------


def run_eagerly(record: RunRecord, analysis: Analysis) -> Finding | None:
    """``run_eagerly=True``: every op dispatched from Python, no graph, no XLA. When the model
    runs host code (NumPy on tensors, found while the step ran), compiling as it stands would
    fail (``Cannot convert a symbolic tf.Tensor to a numpy array``): the fix then starts with
    the host code."""
    if record.model.run_eagerly is not True:
        return None
    backend = record.meta.backend or "unknown"
    on_torch = backend == "torch"
    host_layers = [str(name) for name in record.model.host_ops or []]
    failed = layer_failed_on_host_conversion(record)
    if failed is not None and failed[0] not in host_layers:
        host_layers.append(failed[0])  # the run failed in it: compiling cannot fix that either
    message = (
        "The model runs eagerly (run_eagerly=True): every layer is dispatched from Python "
        "on every step, with no compiled graph"
        + (
            "; on the torch backend the cost is smaller, but it also blocks jit_compile."
            if on_torch
            else "; compiled steps are typically several times faster."
        )
    )
    gain = None
    if host_layers:
        message += (
            f" It cannot simply be turned off: {', '.join(host_layers)} run(s) host code on "
            "the step's tensors (see host-op-in-model), which a compiled step cannot call. "
            "Move that code onto the device first, then compile without run_eagerly."
        )
        gain = _host_code_fix_gain(analysis)  # the same fix as host-op-in-model's: its gain
        if gain is not None:
            message += f" Both together: {speedup(gain)} (see host-op-in-model)."
    return Finding(
        id="run-eagerly",
        severity="low" if on_torch else "high",
        category="model",
        message=message,
        fix=compile_fix(host_code=bool(host_layers), in_lambda=_in_lambda(record, host_layers)),
        evidence={
            "run_eagerly": True,
            "backend": backend,
            "step_ms": _round_ms(analysis.bound.step_s),
            "host_op_layers": host_layers,
        },
        expected_gain=gain,
    )


def host_op_in_model(record: RunRecord, analysis: Analysis) -> Finding | None:
    """NumPy, ``py_function`` or host callbacks inside the model: a device-host round trip per
    step. Found by what runs (a tensor converted to NumPy inside the step) or, failing that,
    by reading the layer's source (``model["host_op_evidence"]`` says which)."""
    layers = [str(name) for name in record.model.host_ops or []]
    evidence_by_layer = dict(record.model.host_op_evidence or {})
    failed = layer_failed_on_host_conversion(record)
    if failed is not None and failed[0] not in layers:
        layers.append(failed[0])
        evidence_by_layer[failed[0]] = failed[1]
    if not layers:
        return None
    how = "; ".join(f"{name}: {evidence_by_layer[name]}" for name in layers if name in evidence_by_layer)
    fix_numbers = analysis.prediction.host_code_fix if analysis.prediction is not None else {}
    gain = _host_code_fix_gain(analysis)
    evidence: dict[str, Any] = {"host_op_layers": layers, "verdict": analysis.verdict,
                                "how_found": evidence_by_layer}
    if gain is not None:
        gain_words = (
            f" Fixed, the step takes about {ms(fix_numbers['fixed_step_s'])} instead of "
            f"{ms(fix_numbers['step_s'])}: {speedup(gain)}. Timed: {fix_numbers['step_words']} "
            f"with {', '.join(fix_numbers['stood_in'])} stood in by the identity, on a "
            f"cached batch ({ms(fix_numbers['compiled_step_s'])}"
            + (", against the model-alone probe's step with it in"
               if fix_numbers["compared_with"] == "model-alone probe" else "")
            + f"), plus fit's own loop "
            f"({ms(fix_numbers['loop_s'])}) and the input ({ms(fix_numbers['input_s'])}) a step"
            + (f"; limited by {fix_numbers['limited_by']}"
               if fix_numbers["limited_by"] == "the input alone" else "")
            + "."
        )
        evidence.update(
            fixed_step_ms=_round_ms(fix_numbers["fixed_step_s"]),
            compiled_step_ms=_round_ms(fix_numbers["compiled_step_s"]),
            step_ms=_round_ms(fix_numbers["step_s"]),
        )
    else:
        why = fix_numbers.get("not_predicted") or (
            "the run failed inside the layer before a step could be timed" if failed is not None
            else "no compiled-step probe in this record")
        gain_words = " " + HOST_OP_GAIN_NOT_PREDICTED.format(why=why)
        evidence["expected_gain_not_predicted"] = gain_words.strip()
    return Finding(
        id="host-op-in-model",
        severity="high" if analysis.verdict in ("compute-bound", "overhead-bound") else "medium",
        category="model",
        message=(
            f"{len(layers)} layer(s) run on the host inside the model ({', '.join(layers)}): "
            "each step copies tensors from the device to Python and back, and the step cannot "
            "be compiled (it must run eagerly) while they do."
            + (f" Seen: {how}." if how else "")
            + gain_words
        ),
        fix=host_op_fix(_in_lambda(record, layers)),
        evidence=evidence,
        expected_gain=gain,
    )


def _in_lambda(record: RunRecord, layers: list[str]) -> bool:
    """Whether every host layer is a Lambda layer (its fix is in the Lambda's function)."""
    classes = dict(record.model.host_op_classes or {})
    failure = record.model.failed_in_layer or {}
    if failure.get("layer"):
        classes.setdefault(str(failure["layer"]), str(failure.get("class") or ""))
    return bool(layers) and all(classes.get(name) == "Lambda" for name in layers)


def _host_code_fix_gain(analysis: Analysis) -> float | None:
    """The one predicted gain of fixing host code in the model (the layer on the device, the
    step compiled): the prediction's ``if_host_code_fixed``, rounded as every gain is."""
    if analysis.prediction is None:
        return None
    return _gain(analysis.prediction.if_host_code_fixed)



# What the backends raise when a layer hands a symbolic or traced tensor to NumPy (TensorFlow
# compiled, JAX traced: "Cannot convert a symbolic tf.Tensor to a numpy array",
# TracerArrayConversionError; torch: "Can't call numpy() on Tensor that requires grad").
_HOST_CONVERSION_ERRORS = re.compile(
    r"numpy|symbolic|Tracer|_error_repr|__array__", re.IGNORECASE
)
_FAILED_LAYER_CALL = re.compile(r"when calling (\w+)\.call\(\)")


def layer_failed_on_host_conversion(record: RunRecord) -> tuple[str, str] | None:
    """(layer, how) when the run itself failed inside a layer's ``call`` converting a tensor to
    NumPy: host code that could not run at all on this backend or compiled. The layer and the
    user's line come from the failure's frames (``model.failed_in_layer``): on JAX the message
    names the outer model (s06_lambda_numpy.py: "when calling Sequential.call()" for a failing
    Lambda). Records without them: the layer class the message names."""
    error = str(record.meta.error or "")
    failure = record.model.failed_in_layer or {}
    if failure.get("layer"):
        inner = str(failure.get("error") or "")
        if not _HOST_CONVERSION_ERRORS.search(f"{error} {inner} {failure.get('raised_in') or ''}"):
            return None
        name, cls, function = failure["layer"], failure.get("class") or "", failure.get("function")
        where = (f", in its function {function} at {failure.get('site')}," if function != "call"
                 else f" at {failure.get('site')}")
        return name, (f"the run failed inside {cls}.call(){where} converting a tensor to NumPy "
                      f"({_error_words(inner or error)})")
    match = _FAILED_LAYER_CALL.search(error)
    if match is None or not _HOST_CONVERSION_ERRORS.search(error):
        return None
    return match.group(1), (f"the run failed inside {match.group(1)}.call() converting a tensor "
                            f"to NumPy ({_error_words(error)})")


def _error_words(error: str, limit: int = 200) -> str:
    """An error's first sentence, whole: cut at a word with "…" only past ``limit`` characters
    (Keras' build error was cut at 160 characters mid-sentence: "...when its variables have ")."""
    line = (error.strip().splitlines() or [""])[0]
    sentence = re.split(r"(?<=[.!?])\s", line, maxsplit=1)[0]
    if len(sentence) <= limit:
        return sentence.rstrip(".")
    return sentence[:limit].rsplit(" ", 1)[0].rstrip(" ,;:") + "…"


def small_batch(record: RunRecord, analysis: Analysis) -> Finding | None:
    """Fixed per-step cost (dispatch, Python) dominates: too little work per step."""
    if not analysis.overhead_signals:
        return None
    wait = analysis.input_wait_fraction or 0.0
    if wait >= _INPUT_BOUND_WAIT:
        return None  # fix the input first; the overhead is hidden behind the wait
    if record.model.host_ops or (record.model.run_eagerly is True
                                 and record.meta.backend != "torch"):
        # the fixed cost is the eager dispatch, which run-eagerly's fix (compiling) removes;
        # jit_compile=True would fail on a layer that calls NumPy (host-op-in-model). On torch
        # eager dispatch is cheap and small-batch's fix still applies.
        return None
    batch_size = analysis.bound.batch_size
    # the fits' own batch sizes, never a mean over fits of different batch sizes
    batch_words = batch_size_words(fit_summaries(record, analysis))
    steps_per_execution = record.model.steps_per_execution or 1
    gain = None
    fixed_s = _detail(record, "model_alone", "fixed_s_per_step")
    step_s = analysis.bound.step_s
    if fixed_s is not None and step_s:
        after = step_s - min(fixed_s, step_s) * (1.0 - 1.0 / 32)
        gain = step_s / after if after > 0 else None
    elif analysis.model_alone and analysis.throughput and analysis.model_alone > analysis.throughput:
        gain = analysis.model_alone / analysis.throughput
    if gain is not None and analysis.input_alone and analysis.throughput:
        # fewer dispatches make the model faster, never the input: the run cannot pass the
        # rate its input makes alone (an ImageDataGenerator at 746 samples/s was promised x12)
        gain = min(gain, max(1.0, analysis.input_alone / analysis.throughput))
    prediction = analysis.prediction
    epoch_s = (prediction.epoch_overhead_s_per_step or 0.0) if prediction else 0.0
    if gain is not None and step_s and epoch_s > 0:
        # the work that recurs once an epoch (a generator's pipeline starting over, the
        # epoch-end callbacks) is paid per epoch, not per step: a bigger batch leaves it (the
        # part the mean step holds comes off it first). A Sequence of 5 batches an epoch,
        # 10 ms of it each epoch, was promised x4.97
        steady_s = max(1e-9, step_s - prediction.epoch_overhead_in_mean_s_per_step)
        gain = max(1.0, (steady_s + epoch_s) / (steady_s / gain + epoch_s))
    return Finding(
        id="small-batch",
        severity="high" if analysis.verdict == "overhead-bound" else "medium",
        category="model",
        message=(
            "Each step does too little work for its fixed cost ("
            + (f"batch {batch_words}, " if batch_words else "")
            + f"steps_per_execution={steps_per_execution}, step {ms(step_s)}): "
            + "; ".join(analysis.overhead_signals)
            + "."
        ),
        fix=small_batch_fix(record.meta.backend, record.input.kind, record.model.jit_compile),
        evidence={
            "batch_size": (batch_words if batch_words and not batch_words.isdigit()
                           else plain_number(batch_size)),
            "steps_per_execution": steps_per_execution,
            "jit_compile": record.model.jit_compile,
            "step_ms": _round_ms(step_s),
            "fixed_ms_per_step": _round_ms(fixed_s),
            "model_alone_samples_per_s": _round(analysis.model_alone),
            "throughput_samples_per_s": _round(analysis.throughput),
        },
        expected_gain=_gain(gain),
    )


# A share of the fits' time the step's compilations beyond the first take: named above this.
_RECOMPILE_SHARE = 0.10
# Compiling steps a run may have without a finding: the first, and a smaller last batch's.
_EXPECTED_COMPILES = 2


def step_recompiles(record: RunRecord, analysis: Analysis) -> Finding | None:
    """JAX compiled the train step again and again, once per new batch shape
    (:func:`~stoke.diagnosis.judge.analysis.recompiles`): the red-team's s05 (sequences padded
    per batch) spent 2.3 s of a 2.5 s run compiling, and the doctor said nothing. Its gain:
    the compilations of other shapes (one shape saves them), at most, since a batch padded
    or resized to one shape does that shape's work in every step; the smaller last batches'
    beside it (one batch size saves them)."""
    found = recompiles(record, analysis.bound.step_s if analysis.bound else None)
    if found is None or found.compiles <= _EXPECTED_COMPILES or not found.fits_s:
        return None
    shapes_s, last_s = found.other_shapes_s, found.last_batches_s
    if (shapes_s + last_s) / found.fits_s < _RECOMPILE_SHARE:
        return None
    last_batch_only = shapes_s / found.fits_s < _RECOMPILE_SHARE
    saved_s = last_s if last_batch_only else shapes_s
    gain = found.fits_s / max(found.fits_s - saved_s, 1e-9)
    both = found.fits_s / max(found.fits_s - shapes_s - last_s, 1e-9)
    backend = record.meta.backend or "jax"
    message = (
        f"The {backend} backend compiled the train step {found.compiles} times in this run "
        f"({found.compile_s:.1f} s of compiling): it compiles the step again for every new "
        f"batch shape. The steps that compiled took {found.excess_s:.1f} s beyond a steady "
        f"step, of the fits' {found.fits_s:.1f} s. "
    )
    if last_batch_only:
        message += (
            f"Only the epochs' smaller last batches had another shape: {last_s:.1f} s "
            f"({last_s / found.fits_s:.0%}); one batch size saves them: {speedup(gain)}."
        )
    else:
        shapes = {
            "buckets": "the pipeline buckets already: each bucket's length, and batches "
                       "shorter or smaller than their bucket's",
            "pads": "padded_batch pads each batch to its own longest",
        }.get(record.input.tf_data_shapes_batches,
              "lengths padded per batch or images of other sizes")
        message += (
            f"Batches of other shapes ({'batch sizes that vary within the epoch, ' if found.sizes_vary else ''}"
            f"{shapes}) compiled it {shapes_s:.1f} s "
            f"({shapes_s / found.fits_s:.0%}); one shape saves that: at most {speedup(gain)} "
            "(padded or resized to one shape, each step does that shape's work)"
            + (f"; the smaller last batches too ({last_s:.1f} s): at most {speedup(both)}"
               if last_s > 0 else "")
            + "."
        )
    share = saved_s / found.fits_s
    return Finding(
        id="step-recompiles",
        severity="high" if share >= 0.3 else "medium",
        category="model",
        message=message,
        fix=one_shape_fix(record.input.kind, last_batch_only, found.sizes_vary,
                          record.input.tf_data_shapes_batches),
        evidence={
            "compiles": found.compiles,
            "compiling_steps": found.steps,
            "compile_s": round(found.compile_s, 3),
            "compiling_steps_excess_s": round(found.excess_s, 3),
            "other_shapes_s": round(shapes_s, 3),
            "last_batches_s": round(last_s, 3),
            "fits_s": round(found.fits_s, 3),
            "compiling_batch_sizes": list(found.batch_sizes),
            "expected_gain_is_upper_bound": not last_batch_only,
            "saved_share": round(share, 3),  # of the fits' time, what the fix saves
        },
        expected_gain=_gain(gain),
    )


# -- system ------------------------------------------------------------------------------------


def contention_level(other_cores: float, cores: int, busy_fraction: float) -> str:
    """How hard other processes press on this machine's cores: ``"none"``, ``"low"``
    (they take at least a quarter of the cores, and half a core, but cores are still free) or
    ``"high"`` (and the machine is at least 80% busy). The one rule ``stoke doctor``
    (cpu-contention) and ``stoke env`` (cpu-load) share."""
    if other_cores < max(CONTENTION_MIN_CORES, CONTENTION_CORE_SHARE * cores):
        return "none"
    return "high" if busy_fraction >= SATURATED_BUSY_FRACTION else "low"


def _free_cores_words(free: float) -> str:
    """What contention below saturation leaves: the cores still free, in numbers (the
    red-team's a13: "cores are still free" where others took 0.9 and the run 1.0 of 2)."""
    if free >= 0.5:
        return (f", {free:.1f} core(s) still free: little harm now, but a faster input "
                "pipeline will compete with them for the cores.")
    return (": with this run they take nearly every core (medians; most samples found the "
            "machine under 80% busy), and a faster input pipeline will compete with them "
            "for the cores.")


def cpu_contention(record: RunRecord, analysis: Analysis) -> Finding | None:
    """Other processes take the cores this run needs: for its input pipeline (it waits for
    input), for the model (it trains on the CPU) or for dispatch (the step is overhead-bound)."""
    cpu = analysis.cpu
    if cpu is None:
        return None
    level = contention_level(cpu.other_cores, cpu.cores, cpu.busy_fraction)
    if level == "none":
        return None
    wait = analysis.input_wait_fraction or 0.0
    model_on_cpu = _model_on_cpu(record)
    needs_cpu = wait >= _PARTLY_WAIT or model_on_cpu or analysis.verdict == "overhead-bound"
    saturated = level == "high"
    if not needs_cpu:
        return None
    if saturated:
        severity = "high" if (wait >= _INPUT_BOUND_WAIT or model_on_cpu) else "medium"
    else:
        severity = "low"
    if model_on_cpu:
        need = "runs on the CPU"
    elif wait >= _PARTLY_WAIT:
        need = f"waits {wait:.0%} of each step for input"
    else:
        need = "spends its steps in host work"
    gain = None
    if saturated and analysis.predicted_speedup and cpu.cores > cpu.other_cores:
        freed = cpu.cores / (cpu.cores - cpu.other_cores)  # if the run could use those cores
        if cpu.self_cores > 0:
            # nor more than all the machine's cores against those this run had: a run that
            # had 0.5 of 2 cores gains at most x4, however little the others left free
            freed = min(freed, cpu.cores / cpu.self_cores)
        gain = freed if model_on_cpu else min(freed, analysis.predicted_speedup)
    return Finding(
        id="cpu-contention",
        severity=severity,
        category="system",
        message=(
            f"Other processes take {cpu.other_cores:.1f} of the machine's {cpu.cores} cores "
            f"(median over the run) and this run {cpu.self_cores:.1f}; the machine is "
            f"{cpu.busy_fraction:.0%} busy: contention {level.upper()} (as `stoke env` calls it)"
            + (
                f"; the training {need} and cannot get more cores."
                if saturated
                else _free_cores_words(cpu.cores - cpu.other_cores - cpu.self_cores)
            )
            + (
                f" With those cores back ({cpu.cores} instead of "
                f"{cpu.cores - cpu.other_cores:.1f}): up to {speedup(_gain(gain))}"
                + ("" if model_on_cpu else ", never more than removing the wait gives")
                + "."
                if gain is not None else ""
            )
        ),
        fix=contention_fix(cpu.cores, cpu.other_cores),
        fix_language="bash",
        evidence={
            "cores": cpu.cores,
            "other_processes_cores": round(cpu.other_cores, 2),
            "this_run_cores": round(cpu.self_cores, 2),
            "machine_busy_pct": _pct(cpu.busy_fraction),
            "contention": level,
            "input_wait_pct": _pct(analysis.input_wait_fraction),
            "samples": cpu.samples,
        },
        expected_gain=_gain(gain),
    )


def no_accelerator(record: RunRecord, analysis: Analysis) -> Finding | None:
    """No GPU visible to the backend, or the model on the CPU while one is."""
    env = record.env
    visible = env.gpus_visible
    if visible is None:
        return None
    used = env.gpus_used
    physical = env.gpus_physical
    if physical is None and analysis.gpus:
        physical = len(analysis.gpus)
    backend = record.meta.backend or "unknown"
    if visible == 0 and physical:
        return Finding(
            id="no-accelerator",
            severity="high",
            category="system",
            message=(
                f"This machine has {physical} NVIDIA GPU(s), but the {backend} backend sees "
                "none: training runs on the CPU. The installed build has no CUDA support, or "
                "CUDA_VISIBLE_DEVICES hides the GPUs."
            ),
            fix=gpu_install_fix(backend),
            fix_language="bash",
            evidence={"gpus_physical": physical, "gpus_visible": 0, "backend": backend},
        )
    if visible == 0:
        return Finding(
            id="no-accelerator",
            severity="info",
            category="system",
            message=(
                f"No GPU is visible, so the {backend} backend trains on the CPU. That is fine "
                "if intended; the input pipeline then shares the cores with the model."
            ),
            fix=STOKE_ENV_FIX,
            fix_language="bash",
            evidence={"gpus_visible": 0, "backend": backend},
        )
    if visible > 0 and (used == 0 or record.model.device == "cpu"):
        return Finding(
            id="no-accelerator",
            severity="high",
            category="system",
            message=(
                f"{visible} GPU(s) are visible, but the model runs on the CPU"
                + (
                    f" (GPU kernel-active {max(g.kernel_active_pct for g in analysis.gpus):.0f}%)."
                    if analysis.gpus
                    else "."
                )
            ),
            fix=use_gpu_fix(backend),
            evidence={
                "gpus_visible": visible,
                "gpus_used": used,
                "model_device": record.model.device,
                "backend": backend,
            },
        )
    return None


def multi_gpu_unused(record: RunRecord, analysis: Analysis) -> Finding | None:
    """More GPUs visible than the run uses."""
    visible = record.env.gpus_visible or 0
    used = record.env.gpus_used
    if visible < 2 or used is None or used < 1 or used >= visible:
        return None
    idle = [g.index for g in analysis.gpus if g.kernel_active_pct < IDLE_GPU_PCT]
    backend = record.meta.backend or "unknown"
    compute_bound = analysis.verdict == "compute-bound"
    message = f"The run uses {used} of {visible} visible GPUs"
    if idle:
        message += f" (GPU {', '.join(map(str, idle))} idle: kernel-active under {IDLE_GPU_PCT:.0f}%)"
    message += (
        ". The model fills its GPU, so data parallelism over all of them would help."
        if compute_bound
        else ". Fix the input first: more GPUs need proportionally more batches."
    )
    return Finding(
        id="multi-gpu-unused",
        severity="medium" if compute_bound else "low",
        category="system",
        message=message,
        fix=data_parallel_fix(backend),
        evidence={
            "gpus_visible": visible,
            "gpus_used": used,
            "idle_gpus": idle,
            "kernel_active_pct": {str(g.index): round(g.kernel_active_pct, 1) for g in analysis.gpus},
            "speedup_upper_bound": round(visible / used, 2) if compute_bound else None,
        },
    )


def thread_config(record: RunRecord, analysis: Analysis) -> Finding | None:
    """Thread settings that leave cores idle under a CPU model, or oversubscribe them."""
    cores = (analysis.cpu.cores if analysis.cpu else None) or record.meta.cpu_count
    if not cores:
        return None
    env = record.env
    intra = env.tf_intra_op_threads or None  # 0 means "all cores"
    inter = env.tf_inter_op_threads or None
    omp = _int_or_none(env.omp_num_threads)
    backend = record.meta.backend or "unknown"
    evidence = {
        "cores": cores,
        "tf_intra_op_threads": intra,
        "tf_inter_op_threads": inter,
        "omp_num_threads": omp,
        "this_run_cores": round(analysis.cpu.self_cores, 2) if analysis.cpu else None,
    }
    if intra is not None and intra > cores:
        return Finding(
            id="thread-config",
            severity="low",
            category="system",
            message=(
                f"TensorFlow is set to {intra} intra-op threads on a {cores}-core machine: "
                "the threads fight over cores with each other and with the input pipeline."
            ),
            fix=TF_OVERSUBSCRIBED_FIX,
            evidence=evidence,
        )
    torch_threads = env.torch_threads if backend == "torch" else None
    if torch_threads is not None and torch_threads > cores:
        evidence["torch_threads"] = torch_threads
        return Finding(
            id="thread-config",
            severity="low",
            category="system",
            message=(
                f"torch is set to {torch_threads} threads on a {cores}-core machine: the threads "
                "fight over cores with each other and with the input pipeline."
            ),
            fix=torch_threads_fix(cores),
            evidence=evidence,
        )
    limit = intra if backend == "tensorflow" and intra is not None else omp
    if limit is None or not _model_on_cpu(record) or analysis.verdict != "compute-bound":
        return None
    if limit >= cores / 2:
        return None
    setting = "intra-op threads" if limit == intra else "OMP_NUM_THREADS"
    fix = thread_limit_fix(tf_intra_op=setting == "intra-op threads")
    return Finding(
        id="thread-config",
        severity="medium",
        category="system",
        message=(
            f"The model trains on the CPU and fills the step, but {setting} is {limit} on a "
            f"{cores}-core machine: most cores stay idle."
        ),
        fix=fix,
        fix_language="python" if setting == "intra-op threads" else "bash",
        evidence=evidence,
    )


def gpu_memory_growth(record: RunRecord, analysis: Analysis) -> Finding | None:
    """TensorFlow holding (nearly) all GPU memory up front, with memory growth off."""
    if record.meta.backend != "tensorflow" or record.env.memory_growth is True:
        return None
    full = [g for g in analysis.gpus if g.memory_used_fraction_peak >= MEMORY_RESERVED_FRACTION]
    if not full:
        return None
    return Finding(
        id="gpu-memory-growth",
        severity="low",
        category="system",
        message=(
            f"TensorFlow reserved {max(g.memory_used_fraction_peak for g in full):.0%} of GPU "
            f"memory up front (memory growth off): the real need is hidden, and any other "
            "process on the GPU (a second run, an evaluation job) will fail to allocate."
        ),
        fix=MEMORY_GROWTH_FIX,
        evidence={
            "memory_growth": record.env.memory_growth,
            "gpu_memory_used_pct": {
                str(g.index): round(100.0 * g.memory_used_fraction_peak, 1) for g in full
            },
        },
    )


@dataclass(frozen=True)
class FindingCheck:
    """One entry of the registry: the finding ``id`` a check raises, the check, and the
    findings it gives way to (``yields_to``: when one of those is raised, this one is left out,
    unless ``stands_when(analysis)`` says it stands beside them)."""

    id: str
    check: Check
    yields_to: tuple[str, ...] = ()
    stands_when: Callable[[Analysis], bool] | None = None


# Named input causes: a wait they explain needs no "input too slow" on top.
_NAMED_INPUT_CAUSES = ("generator-on-main-thread", "sequential-map", "no-prefetch")

# Every check, with its id; within one severity, the order findings are reported in.
FINDING_CHECKS: tuple[FindingCheck, ...] = (
    FindingCheck("generator-on-main-thread", generator_on_main_thread),
    FindingCheck("sequential-map", sequential_map),
    FindingCheck("no-prefetch", no_prefetch),
    FindingCheck("input-too-slow", input_too_slow, yields_to=_NAMED_INPUT_CAUSES),
    FindingCheck(
        "shared-cores",
        shared_cores,
        yields_to=(*_NAMED_INPUT_CAUSES, "input-too-slow"),
        stands_when=cores_are_the_limit,
    ),
    FindingCheck("workers-restart-each-epoch", workers_restart_each_epoch),
    FindingCheck("slow-validation", slow_validation),
    FindingCheck("float64-input", float64_input),
    FindingCheck("run-eagerly", run_eagerly),
    FindingCheck("host-op-in-model", host_op_in_model),
    FindingCheck("small-batch", small_batch),
    FindingCheck("step-recompiles", step_recompiles),
    FindingCheck("cpu-contention", cpu_contention),
    FindingCheck("no-accelerator", no_accelerator),
    FindingCheck("multi-gpu-unused", multi_gpu_unused),
    FindingCheck("thread-config", thread_config),
    FindingCheck("gpu-memory-growth", gpu_memory_growth),
)

FINDING_IDS: tuple[str, ...] = tuple(entry.id for entry in FINDING_CHECKS)


def find(record: RunRecord, analysis: Analysis) -> tuple[Finding, ...]:
    """Every finding of one run, in report order: each check runs on the record and the
    numbers alone; then a finding whose ``yields_to`` names one that is kept is left out
    (:class:`FindingCheck`); then :func:`order_findings`. A check that fails is skipped with a
    warning: one broken check must not cost the user the whole report."""
    raised: dict[str, Finding] = {}
    for entry in FINDING_CHECKS:
        try:
            finding = entry.check(record, analysis)
            if finding is not None and finding.id != entry.id:
                raise ValueError(f"it raised {finding.id!r}, registered as {entry.id!r}")
        except Exception as error:
            warnings.warn(
                f"stoke doctor: the {entry.check.__name__} check failed on this run record and "
                f"was skipped ({type(error).__name__}: {error}). Please report it with the record.",
                RuntimeWarning,
                stacklevel=3,
            )
            continue
        if finding is not None:
            raised[entry.id] = finding
    entries = {entry.id: entry for entry in FINDING_CHECKS}
    kept: dict[str, bool] = {}

    def keep(finding_id: str) -> bool:
        if finding_id not in kept:
            entry = entries[finding_id]
            kept[finding_id] = finding_id in raised and (
                (entry.stands_when is not None and entry.stands_when(analysis))
                or not any(keep(other) for other in entry.yields_to)
            )
        return kept[finding_id]

    found = [no_gain_is_low(raised[entry.id]) for entry in FINDING_CHECKS if keep(entry.id)]
    return order_findings(found, analysis.verdict)


def no_gain_is_low(finding: Finding) -> Finding:
    """A finding whose fix is predicted to gain nothing here (its own figure, below
    ``NO_GAIN_SPEEDUP``) is not high or medium, whatever the cause's weight elsewhere (the
    red-team's a06: a torch IterableDataset on the trainer's thread, ``[HIGH]`` beside
    "expected x1.00")."""
    gain = finding.expected_gain
    if gain is None or gain >= NO_GAIN_SPEEDUP or finding.severity not in ("high", "medium"):
        return finding
    return replace(finding, severity="low")


def order_findings(findings: Iterable[Finding], verdict: str) -> tuple[Finding, ...]:
    """For an input-bound run the input findings (whose first fix is stoke) first, then by
    severity, then in the order given (the registry's)."""
    input_first = verdict == "input-bound"
    indexed = list(enumerate(findings))
    indexed.sort(
        key=lambda item: (
            0 if input_first and item[1].category == "input" else 1,
            SEVERITIES.index(item[1].severity),
            item[0],
        )
    )
    return tuple(f for _, f in indexed)


def _check_registry(checks: tuple[FindingCheck, ...]) -> None:
    """Ids are unique and every ``yields_to`` names a registered id, with no loop."""
    ids = [entry.id for entry in checks]
    if len(set(ids)) != len(ids):
        raise ValueError(f"FINDING_CHECKS registers an id twice: {ids}")
    yields = {entry.id: entry.yields_to for entry in checks}
    for entry in checks:
        seen, todo = set(), list(entry.yields_to)
        while todo:
            other = todo.pop()
            if other not in yields:
                raise ValueError(f"{entry.id} yields to {other!r}, which no check raises")
            if other == entry.id:
                raise ValueError(f"{entry.id} yields to itself through {sorted(seen)}")
            if other not in seen:
                seen.add(other)
                todo.extend(yields[other])


_check_registry(FINDING_CHECKS)


# -- helpers -----------------------------------------------------------------------------------


def _input_evidence(record: RunRecord, analysis: Analysis) -> dict[str, Any]:
    bound = analysis.bound
    evidence: dict[str, Any] = {
        "input_kind": record.input.kind or "unknown",
        "input_wait_pct": _pct(analysis.input_wait_fraction),
        "wait_ms_per_step": _round_ms(bound.wait_s),
        "step_ms": _round_ms(bound.step_s),
        "throughput_samples_per_s": _round(analysis.throughput),
        "predicted_samples_per_s": _round(analysis.predicted_throughput),
    }
    if analysis.input_alone:
        evidence["input_alone_samples_per_s"] = _round(analysis.input_alone)
    if analysis.model_alone:
        evidence["model_alone_samples_per_s"] = _round(analysis.model_alone)
    inputs = record.input
    for key, value in (
        ("producer", inputs.producer),
        ("pydataset_workers", inputs.pydataset_workers),
        ("use_multiprocessing", inputs.use_multiprocessing),
        ("torch_num_workers", inputs.torch_num_workers),
        ("tf_data_parallel_map", inputs.tf_data_parallel_map),
        ("tf_data_prefetch", inputs.tf_data_prefetch),
        ("tf_data_py_function", inputs.tf_data_py_function),
        ("wait_method", inputs.wait_method),
    ):
        if value is not None:
            evidence[key] = value
    generator_s = inputs.generator_s_per_batch
    if isinstance(generator_s, int | float):
        evidence["generator_ms_per_batch"] = _round_ms(float(generator_s))
    return evidence


def stoke_gain_on_these_cores(record: RunRecord, analysis: Analysis) -> float | None:
    """The speedup stoke's workers can bring on this machine, sharing its cores with the
    trainer: the one prediction's ``with_stoke_here`` (:mod:`stoke.diagnosis.judge.analysis`)."""
    prediction = analysis.prediction
    return None if prediction is None else prediction.with_stoke_here


def _overlap_sentence(analysis: Analysis, gain: float) -> str:
    """The overlap gain (:func:`_overlap_gain`) in words, with the step times it comes from."""
    bound = analysis.bound
    overlapped = max(bound.wait_s, bound.compute_s)
    text = f" Overlapped, a step takes the longer of the two ({ms(overlapped)} instead of {ms(bound.step_s)})"
    if abs(bound.step_s / overlapped - gain) > 0.005:
        return text + f", but no more than the prediction allows: {speedup(gain)}."
    return text + f": {speedup(gain)}."


def _overlap_gain(analysis: Analysis) -> float | None:
    """Speedup from overlapping (not parallelising) the input: step -> max(wait, compute)."""
    bound = analysis.bound
    if not bound.step_s or bound.wait_s is None or bound.compute_s is None:
        return None
    overlapped = max(bound.wait_s, bound.compute_s)
    if overlapped <= 0:
        return None
    gain = bound.step_s / overlapped
    if analysis.predicted_speedup:
        gain = min(gain, analysis.predicted_speedup)
    return _gain(gain)


def _field_label(path: str) -> str:
    """A batch field path as the user knows it: "0" -> "x", "1/mask" -> "y/mask"."""
    head, _, rest = path.partition("/")
    head = {"0": "x", "1": "y", "2": "sample_weight"}.get(head, head)
    return f"{head}/{rest}" if rest else head


def _model_on_cpu(record: RunRecord) -> bool:
    if record.model.device == "cpu":
        return True
    return record.env.gpus_used == 0 or record.env.gpus_visible == 0


def _detail(record: RunRecord, probe: str, key: str) -> float | None:
    result = record.probes.get(probe)
    value = result.detail.get(key) if result is not None else None
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _wait_severity(wait: float) -> str:
    return "high" if wait >= _INPUT_BOUND_WAIT else "medium"


def _gain(value: float | None) -> float | None:
    return None if value is None else round(max(1.0, value), 2)


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _pct(fraction: float | None) -> float | None:
    return None if fraction is None else round(100.0 * fraction, 1)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _round_ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1e3, 2)
