"""The doctor's findings: one check per cause, each with its evidence, its fix and its gain.

A check is a function ``(record, diagnosis) -> Finding | None``. It reads the run record and
the diagnosis computed so far (verdict, steady-state numbers, CPU and GPU summaries, and the
findings raised by the checks before it in ``FINDING_CHECKS``) and raises a finding only when
the record holds evidence for it: numbers from the run, never a guess from the input kind
alone. The arithmetic (steady state, verdict, predicted speedup) belongs to
:mod:`stoke.diagnosis.judge.analysis`; the wording of reports to :mod:`stoke.diagnosis.report`.

Finding ids are a public contract (JSON consumers match on them): ``generator-on-main-thread``,
``input-too-slow``, ``shared-cores``, ``sequential-map``, ``no-prefetch``, ``float64-input``, ``run-eagerly``,
``host-op-in-model``, ``small-batch``, ``cpu-contention``, ``no-accelerator``,
``multi-gpu-unused``, ``thread-config``, ``gpu-memory-growth``. For an input-bound run the
first fix is stoke itself, with the code and the predicted speedup.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from stoke.diagnosis.record import RunRecord

if TYPE_CHECKING:
    from stoke.diagnosis.judge.analysis import Diagnosis

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


Check = Callable[[RunRecord, "Diagnosis"], "Finding | None"]


# -- input -------------------------------------------------------------------------------------


def generator_on_main_thread(record: RunRecord, diagnosis: Diagnosis) -> Finding | None:
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
    wait = diagnosis.input_wait_fraction
    if not serial_python or kind == "tf.data" or wait is None or wait < _PARTLY_WAIT:
        return None
    if kind in ("arrays", "stoke") and legacy is None and diagnosis.input_is_limit is not True:
        return None  # slicing arrays (or stoke inline) is not what the trainer waits for
    bound = diagnosis.bound
    overlap_gain = _overlap_gain(diagnosis)
    described = {
        "generator": "a Python generator",
        "pydataset": "the PyDataset (no workers)",
        "torch_dataloader": "the DataLoader (num_workers=0)",
        "arrays": "slicing of in-memory arrays",
        "stoke": "the stoke pipeline (inline executor)",
        "train_on_batch": "the script's own loop between train_on_batch calls",
    }.get(kind, "the input pipeline")
    if legacy is not None:
        described = (
            f"the Python generator passed to {legacy.get('method', 'fit_generator')}() "
            f"({_where(legacy)})"
        )
    where = (
        "on the trainer's main thread, one after the other with the training step"
        if on_main or inputs.producer == "trainer-thread"
        else "in a single Python thread (Keras wraps it in tf.data), holding the GIL "
        "against the trainer"
    )
    message = (
        f"Batches are made by {described} {where}: the trainer waits {wait:.0%} of every "
        f"step ({_ms(bound.wait_s)} of {_ms(bound.step_s)}) while Python builds the next batch."
    )
    evidence = _input_evidence(record, diagnosis)
    if legacy is not None:
        evidence["input_kind"] = "generator"
        evidence["keras2_call"] = legacy.get("method")
    if overlap_gain is not None:
        evidence["speedup_overlap_only"] = round(overlap_gain, 2)
    message += _prediction_sentence(diagnosis)
    here = stoke_gain_on_these_cores(record, diagnosis)
    if here is not None:
        evidence["speedup_with_stoke_on_these_cores"] = here
    return Finding(
        id="generator-on-main-thread",
        severity=_wait_severity(wait),
        category="input",
        message=message,
        fix=_keras2_fix(record, legacy) if legacy is not None else _input_fix(record, diagnosis),
        evidence=evidence,
        expected_gain=here if here is not None else diagnosis.predicted_speedup,
        fix_language="bash" if legacy is not None else "python",
    )


def keras2_generator_call(record: RunRecord) -> dict[str, Any] | None:
    """The first Keras-2 training call on a plain generator that the doctor's shim translated
    (``meta["keras2_conversions"]``, from ``stoke.legacy.shim.conversions()``), or None."""
    for conversion in record.meta.keras2_conversions or []:
        if not isinstance(conversion, dict):
            continue
        method = str(conversion.get("method", ""))
        if conversion.get("input_kind") == "generator" and not method.startswith(
            ("evaluate", "predict")
        ):
            return conversion
    return None


def _where(conversion: dict[str, Any]) -> str:
    filename = str(conversion.get("filename") or "the script").rsplit("/", 1)[-1]
    line = conversion.get("lineno")
    return f"{filename}:{line}" if line else filename


def sequential_map(record: RunRecord, diagnosis: Diagnosis) -> Finding | None:
    """A tf.data ``map`` without ``num_parallel_calls``: one element at a time, one core."""
    wait = diagnosis.input_wait_fraction
    if record.input.kind != "tf.data" or record.input.tf_data_parallel_map is not False:
        return None
    if wait is None or wait < _PARTLY_WAIT:
        return None
    return Finding(
        id="sequential-map",
        severity=_wait_severity(wait),
        category="input",
        message=(
            f"The tf.data pipeline maps one element at a time (no num_parallel_calls): "
            f"the trainer waits {wait:.0%} of every step ({_ms(diagnosis.bound.wait_s)} of "
            f"{_ms(diagnosis.bound.step_s)}) for a pipeline that uses one core."
        ),
        fix=_stoke_fix(record),
        evidence=_input_evidence(record, diagnosis),
        expected_gain=diagnosis.predicted_speedup,
    )


def no_prefetch(record: RunRecord, diagnosis: Diagnosis) -> Finding | None:
    """A tf.data pipeline without ``prefetch``: the next batch is made only when asked for."""
    wait = diagnosis.input_wait_fraction
    if record.input.kind != "tf.data" or record.input.tf_data_prefetch is not False:
        return None
    if wait is None or wait < _PARTLY_WAIT:
        return None
    gain = _overlap_gain(diagnosis)
    return Finding(
        id="no-prefetch",
        severity=_wait_severity(wait),
        category="input",
        message=(
            f"The tf.data pipeline has no prefetch, so the next batch is made only after the "
            f"step asks for it: the trainer waits {wait:.0%} of every step instead of "
            f"overlapping input and compute."
        ),
        fix=(
            "# last in the chain: batch n+1 is made while the model trains on batch n\n"
            "ds = ds.prefetch(tf.data.AUTOTUNE)\n"
            "model.fit(ds, epochs=10)\n"
        ),
        evidence=_input_evidence(record, diagnosis),
        expected_gain=gain,
    )


def input_too_slow(record: RunRecord, diagnosis: Diagnosis) -> Finding | None:
    """The run waits for input that already has workers (PyDataset workers, DataLoader workers,
    a parallel tf.data pipeline, stoke): the workers cannot keep up, or moving their batches
    costs more than making them. Raised only when no more specific input finding explains it,
    and only when the input alone is the limit: measured slower than INPUT_LIMIT_FACTOR times
    the model's no-wait rate (or, not measured, an input that does real work per batch)."""
    wait = diagnosis.input_wait_fraction
    if wait is None or wait < _PARTLY_WAIT:
        return None
    if any(f.category == "input" for f in diagnosis.findings):
        return None
    kind = record.input.kind or "unknown"
    if diagnosis.input_is_limit is False:
        return None  # the input alone is far faster than the model: it is not the limit
    if in_memory_input(record) and diagnosis.input_wait_source != "measured":
        return None  # an estimated wait on arrays in memory is no evidence against them
    if in_memory_input(record):
        # slicing arrays in memory: blamed only when measured slower than the model itself
        rates = [r for r in (diagnosis.bound.no_wait_throughput, diagnosis.model_alone) if r]
        if not (diagnosis.input_alone and rates and diagnosis.input_alone < min(rates)):
            return None
    if _model_on_cpu(record) and kind in ("stoke", "pydataset", "torch_dataloader") and (
        diagnosis.prediction is not None and diagnosis.prediction.shared_cores.get("limited_by", "")
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
    }.get(kind, "the input pipeline cannot keep up with the model")
    message = f"The trainer waits {wait:.0%} of every step for input: {detail}."
    if diagnosis.input_alone and diagnosis.model_alone:
        message += (
            f" Alone, the input makes {_rate(diagnosis.input_alone)} and the model takes "
            f"{_rate(diagnosis.model_alone)}."
        )
    elif diagnosis.input_is_limit is None:
        message += " The input alone was not measured: that it is the limit is inferred from the wait."
    message += _prediction_sentence(diagnosis)
    here = stoke_gain_on_these_cores(record, diagnosis)
    evidence = _input_evidence(record, diagnosis)
    if here is not None:
        evidence["speedup_with_stoke_on_these_cores"] = here
    return Finding(
        id="input-too-slow",
        severity=_wait_severity(wait) if diagnosis.input_is_limit else "medium",
        category="input",
        message=message,
        fix=_input_fix(record, diagnosis),
        evidence=evidence,
        expected_gain=here if here is not None else diagnosis.predicted_speedup,
    )


def _input_fix(record: RunRecord, diagnosis: Diagnosis) -> str:
    """stoke's fix for this input kind, unless the shared-cores model says stoke's workers
    would bring nothing on these cores: then that comes first, with what would help."""
    fix = _stoke_fix(record)
    prediction = diagnosis.prediction
    if prediction is None or prediction.with_stoke_here is None or prediction.with_stoke_here > 1.05:
        return fix
    shared = prediction.shared_cores
    return (
        f"# On these cores stoke's workers would not be faster: {_num(shared.get('cores_for_this_run'))}"
        " core(s)\n"
        f"# are left to this run (others take {_num(shared.get('other_processes_cores'))}),"
        " and the trainer and the input\n"
        "# already fill them. First free cores (stop or renice other jobs), move the\n"
        "# model to a GPU, or make the per-batch work cheaper; then:\n"
        + fix
    )


def shared_cores(record: RunRecord, diagnosis: Diagnosis) -> Finding | None:
    """The model trains on the CPU and its wait comes from sharing the cores with the input's
    workers (or other work), not from an input too slow to keep up: the numbers of the
    shared-cores model (:class:`stoke.diagnosis.judge.analysis.Prediction`)."""
    wait = diagnosis.input_wait_fraction
    prediction = diagnosis.prediction
    if wait is None or wait < _PARTLY_WAIT or not _model_on_cpu(record) or prediction is None:
        return None
    numbers = prediction.shared_cores
    if not numbers:
        return None
    cores_limit = str(numbers.get("limited_by", "")).startswith("the cores")
    if not cores_limit and diagnosis.input_is_limit is not False:
        return None
    if any(f.category == "input" for f in diagnosis.findings) and not cores_limit:
        return None
    trainer_ms = numbers["trainer_cpu_ms_per_sample"]
    input_ms = numbers["input_cpu_ms_per_sample"]
    cores_here = numbers["cores_for_this_run"]
    rate = numbers["samples_per_s_on_these_cores"]
    input_cores = rate * input_ms / 1e3
    trainer_cores = rate * trainer_ms / 1e3
    message = (
        f"The model trains on the CPU and shares {_num(cores_here)} core(s) with the input: "
        f"per sample the trainer takes {trainer_ms:.3g} ms of CPU and the input "
        f"{input_ms:.3g} ms"
    )
    if diagnosis.input_alone and diagnosis.model_alone:
        message += (
            f" (alone the input makes {_rate(diagnosis.input_alone)}, "
            f"{_times(diagnosis.input_alone / diagnosis.model_alone)} the model's "
            f"{_rate(diagnosis.model_alone)})"
        )
    message += (
        f". The trainer waits {wait:.0%} of each step because the cores are shared, not because "
        f"the input is slow: at best these cores make {rate:,.0f} samples/s "
        f"(trainer ~{trainer_cores:.1f} cores, input ~{input_cores:.1f})."
    )
    workers_needed = max(1, math.ceil(input_cores))
    fix = (
        "# The cores, not the workers, are the limit: more workers take cores from the model.\n"
        f"# The input needs about {input_cores:.1f} core(s) at {rate:,.0f} samples/s: give it\n"
        f"# {workers_needed} worker(s) and leave the rest to the model's threads, or let stoke's\n"
        "# tuner budget the cores (it measures the trainer's own CPU per step):\n"
        "import stoke\n"
        f"train = stoke.from_sequence(samples).map(load).batch({record.input.batch_size or 64})"
        ".to_keras()\n"
        "model.fit(train, epochs=10)\n"
        "# More speed needs more cores or a GPU for the model.\n"
    )
    return Finding(
        id="shared-cores",
        severity="high" if wait >= _INPUT_BOUND_WAIT else "medium",
        category="system",
        message=message,
        fix=fix,
        evidence={**numbers, "input_wait_pct": _pct(wait),
                  "input_alone_samples_per_s": _round(diagnosis.input_alone),
                  "model_alone_samples_per_s": _round(diagnosis.model_alone)},
        expected_gain=prediction.with_stoke_here,
    )


def _times(ratio: float) -> str:
    return f"{ratio:.0f}x" if ratio >= 10 else f"{ratio:.1f}x"


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
    prefetch = inputs.tf_data_prefetch
    if prefetch is True:
        parts.append("prefetch")
    elif prefetch is False:
        parts.append("no prefetch")
    return ", ".join(parts)


def _prediction_sentence(diagnosis: Diagnosis) -> str:
    """The shared prediction, in the words every input finding uses."""
    prediction = diagnosis.prediction
    if not diagnosis.predicted_speedup:
        return ""
    text = (
        f" With the input off the critical path the run would make "
        f"{_rate(diagnosis.predicted_throughput)} instead of {_rate(diagnosis.throughput)} "
        f"(×{diagnosis.predicted_speedup:.2f})"
    )
    if prediction is not None and prediction.with_stoke_here is not None and diagnosis.cpu:
        text += (
            f"; stoke on these {diagnosis.cpu.cores} cores "
            f"({diagnosis.cpu.other_cores:.1f} taken by other processes, the rest shared by the "
            f"trainer and the workers): ×{prediction.with_stoke_here:.2f}"
        )
    return text + "."


def float64_input(record: RunRecord, diagnosis: Diagnosis) -> Finding | None:
    """float64 arrays fed to a float32 model: twice the bytes to make, move and cast."""
    dtypes = record.input.dtypes
    if not isinstance(dtypes, dict):
        return None
    wide = sorted(_field_label(str(path)) for path, dtype in dtypes.items() if "float64" in str(dtype))
    if not wide:
        return None
    wait = diagnosis.input_wait_fraction or 0.0
    kind = record.input.kind or "unknown"
    if kind == "tf.data":
        fix = (
            "ds = ds.map(lambda x, y: (tf.cast(x, tf.float32), y),\n"
            "            num_parallel_calls=tf.data.AUTOTUNE)\n"
        )
    elif kind in ("pydataset", "generator") or keras2_generator_call(record) is not None:
        fix = (
            "# where each batch is made (__getitem__, the generator): float32, not\n"
            "# float64 (the default of np.empty, np.zeros, np.random)\n"
            "x = np.empty((batch_size, *shape), dtype=np.float32)\n"
            "x_train = x_train.astype(\"float32\")  # arrays: once, where they are made\n"
            "# or let stoke feed fit(): it ships float64 as float32 by default\n"
            "import stoke\n"
            "model.fit(stoke.accelerate(train_data), epochs=10)\n"
        )
    else:
        fix = (
            "x_train = x_train.astype(\"float32\")  # once, where the arrays are made\n"
            "# or let stoke feed fit(): it ships float64 as float32 by default\n"
            "import stoke\n"
            "model.fit(stoke.accelerate(train_data), epochs=10)\n"
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


# -- model -------------------------------------------------------------------------------------


def run_eagerly(record: RunRecord, diagnosis: Diagnosis) -> Finding | None:
    """``run_eagerly=True``: every op dispatched from Python, no graph, no XLA. When the model
    runs host code (NumPy on tensors, found while the step ran), compiling as it stands would
    fail (``Cannot convert a symbolic tf.Tensor to a numpy array``): the fix then starts with
    the host code."""
    if record.model.run_eagerly is not True:
        return None
    backend = record.meta.backend or "unknown"
    on_torch = backend == "torch"
    host_layers = [str(name) for name in record.model.host_ops or []]
    message = (
        "The model runs eagerly (run_eagerly=True): every layer is dispatched from Python "
        "on every step, with no compiled graph"
        + (
            "; on the torch backend the cost is smaller, but it also blocks jit_compile."
            if on_torch
            else "; compiled steps are typically several times faster."
        )
    )
    fix = (
        "# compile without run_eagerly=True (the default is a compiled step)\n"
        "model.compile(optimizer=optimizer, loss=loss, metrics=metrics)\n"
        "model.run_eagerly = False  # if it was set on the model\n"
    )
    if host_layers:
        message += (
            f" It cannot simply be turned off: {', '.join(host_layers)} run(s) host code on "
            "the step's tensors (see host-op-in-model), which a compiled step cannot call. "
            "Move that code onto the device first, then compile without run_eagerly."
        )
        fix = _HOST_OP_FIX + (
            "\n# then, and only then, compile the step:\n"
            "model.compile(optimizer=optimizer, loss=loss)  # no run_eagerly\n"
        )
    return Finding(
        id="run-eagerly",
        severity="low" if on_torch else "high",
        category="model",
        message=message,
        fix=fix,
        evidence={
            "run_eagerly": True,
            "backend": backend,
            "step_ms": _round_ms(diagnosis.bound.step_s),
            "host_op_layers": host_layers,
        },
    )


_HOST_OP_FIX = (
    "import keras\n"
    "from keras import ops\n"
    "\n"
    "class Normalise(keras.layers.Layer):\n"
    "    def call(self, x):\n"
    "        # was: np.sin(x), np.asarray(x) or a tf.py_function (on the host)\n"
    "        return ops.sin(x)  # keras.ops: on the device, inside the compiled step\n"
    "\n"
    "# or do that preprocessing in the input pipeline, before the model\n"
)


def host_op_in_model(record: RunRecord, diagnosis: Diagnosis) -> Finding | None:
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
    return Finding(
        id="host-op-in-model",
        severity="high" if diagnosis.verdict in ("compute-bound", "overhead-bound") else "medium",
        category="model",
        message=(
            f"{len(layers)} layer(s) run on the host inside the model ({', '.join(layers)}): "
            "each step copies tensors from the device to Python and back, and the step cannot "
            "be compiled (it must run eagerly) while they do."
            + (f" Seen: {how}." if how else "")
        ),
        fix=_HOST_OP_FIX,
        evidence={"host_op_layers": layers, "verdict": diagnosis.verdict,
                  "how_found": evidence_by_layer},
    )


# What the backends raise when a layer hands a symbolic or traced tensor to NumPy (TensorFlow
# compiled, JAX traced: "Cannot convert a symbolic tf.Tensor to a numpy array",
# TracerArrayConversionError; torch: "Can't call numpy() on Tensor that requires grad").
_HOST_CONVERSION_ERRORS = re.compile(
    r"numpy|symbolic|Tracer|_error_repr|__array__", re.IGNORECASE
)
_FAILED_LAYER_CALL = re.compile(r"when calling (\w+)\.call\(\)")


def layer_failed_on_host_conversion(record: RunRecord) -> tuple[str, str] | None:
    """(layer class, how) when the run itself failed inside a layer's ``call`` converting a
    tensor to NumPy: host code that could not run at all on this backend or compiled."""
    error = str(record.meta.error or "")
    match = _FAILED_LAYER_CALL.search(error)
    if match is None or not _HOST_CONVERSION_ERRORS.search(error):
        return None
    first_line = error.strip().splitlines()[0][:160]
    return match.group(1), f"the run failed inside {match.group(1)}.call() converting a tensor to NumPy ({first_line})"


def small_batch(record: RunRecord, diagnosis: Diagnosis) -> Finding | None:
    """Fixed per-step cost (dispatch, Python) dominates: too little work per step."""
    if not diagnosis.overhead_signals:
        return None
    wait = diagnosis.input_wait_fraction or 0.0
    if wait >= _INPUT_BOUND_WAIT:
        return None  # fix the input first; the overhead is hidden behind the wait
    batch_size = diagnosis.bound.batch_size
    steps_per_execution = record.model.steps_per_execution or 1
    gain = None
    fixed_s = _detail(record, "model_alone", "fixed_s_per_step")
    step_s = diagnosis.bound.step_s
    if fixed_s is not None and step_s:
        after = step_s - min(fixed_s, step_s) * (1.0 - 1.0 / 32)
        gain = step_s / after if after > 0 else None
    elif diagnosis.model_alone and diagnosis.throughput and diagnosis.model_alone > diagnosis.throughput:
        gain = diagnosis.model_alone / diagnosis.throughput
    return Finding(
        id="small-batch",
        severity="high" if diagnosis.verdict == "overhead-bound" else "medium",
        category="model",
        message=(
            f"Each step does too little work for its fixed cost (batch {_num(batch_size)}, "
            f"steps_per_execution={steps_per_execution}, step {_ms(step_s)}): "
            + "; ".join(diagnosis.overhead_signals)
            + "."
        ),
        fix=(
            "model.compile(optimizer=optimizer, loss=loss,\n"
            "              steps_per_execution=32,  # one dispatch runs 32 steps\n"
            "              jit_compile=True)\n"
            "# and a larger batch where it is chosen (scale the learning rate with it):\n"
            "model.fit(x_train, y_train, batch_size=256, epochs=10)\n"
        ),
        evidence={
            "batch_size": _num(batch_size),
            "steps_per_execution": steps_per_execution,
            "jit_compile": record.model.jit_compile,
            "step_ms": _round_ms(step_s),
            "fixed_ms_per_step": _round_ms(fixed_s),
            "model_alone_samples_per_s": _round(diagnosis.model_alone),
            "throughput_samples_per_s": _round(diagnosis.throughput),
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


def cpu_contention(record: RunRecord, diagnosis: Diagnosis) -> Finding | None:
    """Other processes take the cores this run needs: for its input pipeline (it waits for
    input), for the model (it trains on the CPU) or for dispatch (the step is overhead-bound)."""
    cpu = diagnosis.cpu
    if cpu is None:
        return None
    level = contention_level(cpu.other_cores, cpu.cores, cpu.busy_fraction)
    if level == "none":
        return None
    wait = diagnosis.input_wait_fraction or 0.0
    model_on_cpu = _model_on_cpu(record)
    needs_cpu = wait >= _PARTLY_WAIT or model_on_cpu or diagnosis.verdict == "overhead-bound"
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
    if saturated and diagnosis.predicted_speedup and cpu.cores > cpu.other_cores:
        freed = cpu.cores / (cpu.cores - cpu.other_cores)  # if the run could use those cores
        gain = freed if model_on_cpu else min(freed, diagnosis.predicted_speedup)
    return Finding(
        id="cpu-contention",
        severity=severity,
        category="system",
        message=(
            f"Other processes take {cpu.other_cores:.1f} of the machine's {cpu.cores} cores "
            f"(median over the run) and this run {cpu.self_cores:.1f}; the machine is "
            f"{cpu.busy_fraction:.0%} busy"
            + (
                f": the training {need} and cannot get more cores."
                if saturated
                else ", so cores are still free: little harm now, but a faster input pipeline "
                "will compete with them for the cores."
            )
        ),
        fix=_contention_fix(cpu.cores, cpu.other_cores),
        fix_language="bash",
        evidence={
            "cores": cpu.cores,
            "other_processes_cores": round(cpu.other_cores, 2),
            "this_run_cores": round(cpu.self_cores, 2),
            "machine_busy_pct": _pct(cpu.busy_fraction),
            "input_wait_pct": _pct(wait),
            "samples": cpu.samples,
        },
        expected_gain=_gain(gain),
    )


def _contention_fix(cores: int, other_cores: float) -> str:
    """Who takes the cores, and how to keep them off training's: core numbers that exist on
    this machine only."""
    fix = (
        "# who takes the cores?\n"
        "ps -eo pid,pcpu,comm --sort=-pcpu | head\n"
        "# stop them or lower their priority:\n"
        "renice -n 19 -p PID_OF_OTHER_JOB\n"
    )
    others = max(1, math.ceil(other_cores))
    if cores - others >= 2:
        last_training = cores - others - 1
        fix += (
            f"# or split this machine's {cores} cores: training on 0-{last_training}, the other "
            f"job on {last_training + 1}-{cores - 1}\n"
            f"taskset -cp {last_training + 1}-{cores - 1} PID_OF_OTHER_JOB\n"
            f"taskset -c 0-{last_training} python train.py\n"
        )
    else:
        fix += f"# with {cores} core(s) there are none to set aside: run the other job later\n"
    return fix


def no_accelerator(record: RunRecord, diagnosis: Diagnosis) -> Finding | None:
    """No GPU visible to the backend, or the model on the CPU while one is."""
    env = record.env
    visible = env.gpus_visible
    if visible is None:
        return None
    used = env.gpus_used
    physical = env.gpus_physical
    if physical is None and diagnosis.gpus:
        physical = len(diagnosis.gpus)
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
            fix=_gpu_install_fix(backend),
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
            fix="stoke env  # shows the devices each backend sees and why\n",
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
                    f" (GPU kernel-active {max(g.kernel_active_pct for g in diagnosis.gpus):.0f}%)."
                    if diagnosis.gpus
                    else "."
                )
            ),
            fix=_use_gpu_fix(backend),
            evidence={
                "gpus_visible": visible,
                "gpus_used": used,
                "model_device": record.model.device,
                "backend": backend,
            },
        )
    return None


def multi_gpu_unused(record: RunRecord, diagnosis: Diagnosis) -> Finding | None:
    """More GPUs visible than the run uses."""
    visible = record.env.gpus_visible or 0
    used = record.env.gpus_used
    if visible < 2 or used is None or used < 1 or used >= visible:
        return None
    idle = [g.index for g in diagnosis.gpus if g.kernel_active_pct < IDLE_GPU_PCT]
    backend = record.meta.backend or "unknown"
    compute_bound = diagnosis.verdict == "compute-bound"
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
        fix=_data_parallel_fix(backend),
        evidence={
            "gpus_visible": visible,
            "gpus_used": used,
            "idle_gpus": idle,
            "kernel_active_pct": {str(g.index): round(g.kernel_active_pct, 1) for g in diagnosis.gpus},
            "speedup_upper_bound": round(visible / used, 2) if compute_bound else None,
        },
    )


def thread_config(record: RunRecord, diagnosis: Diagnosis) -> Finding | None:
    """Thread settings that leave cores idle under a CPU model, or oversubscribe them."""
    cores = (diagnosis.cpu.cores if diagnosis.cpu else None) or record.meta.cpu_count
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
        "this_run_cores": round(diagnosis.cpu.self_cores, 2) if diagnosis.cpu else None,
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
            fix=(
                "# 0 (the default): one thread per core\n"
                "tf.config.threading.set_intra_op_parallelism_threads(0)\n"
            ),
            evidence=evidence,
        )
    limit = intra if backend == "tensorflow" and intra is not None else omp
    if limit is None or not _model_on_cpu(record) or diagnosis.verdict != "compute-bound":
        return None
    if limit >= cores / 2:
        return None
    setting = "intra-op threads" if limit == intra else "OMP_NUM_THREADS"
    fix = (
        "# before any op runs; 0 (the default): one thread per core\n"
        "tf.config.threading.set_intra_op_parallelism_threads(0)\n"
        if setting == "intra-op threads"
        else "unset OMP_NUM_THREADS  # or export OMP_NUM_THREADS=<cores>\n"
        "python train.py\n"
    )
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


def gpu_memory_growth(record: RunRecord, diagnosis: Diagnosis) -> Finding | None:
    """TensorFlow holding (nearly) all GPU memory up front, with memory growth off."""
    if record.meta.backend != "tensorflow" or record.env.memory_growth is True:
        return None
    full = [g for g in diagnosis.gpus if g.memory_used_fraction_peak >= MEMORY_RESERVED_FRACTION]
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
        fix=(
            "import tensorflow as tf\n"
            "for gpu in tf.config.list_physical_devices(\"GPU\"):\n"
            "    tf.config.experimental.set_memory_growth(gpu, True)  # before any op runs\n"
        ),
        evidence={
            "memory_growth": record.env.memory_growth,
            "gpu_memory_used_pct": {
                str(g.index): round(100.0 * g.memory_used_fraction_peak, 1) for g in full
            },
        },
    )


# The order checks run in (later checks see the findings of earlier ones) and, within one
# severity, the order findings are reported in.
FINDING_CHECKS: tuple[Check, ...] = (
    generator_on_main_thread,
    sequential_map,
    no_prefetch,
    input_too_slow,
    shared_cores,
    float64_input,
    run_eagerly,
    host_op_in_model,
    small_batch,
    cpu_contention,
    no_accelerator,
    multi_gpu_unused,
    thread_config,
    gpu_memory_growth,
)

FINDING_IDS: tuple[str, ...] = (
    "generator-on-main-thread",
    "input-too-slow",
    "shared-cores",
    "sequential-map",
    "no-prefetch",
    "float64-input",
    "run-eagerly",
    "host-op-in-model",
    "small-batch",
    "cpu-contention",
    "no-accelerator",
    "multi-gpu-unused",
    "thread-config",
    "gpu-memory-growth",
)


# -- fixes ------------------------------------------------------------------------------------


def _stoke_fix(record: RunRecord) -> str:
    """stoke, with the code for this input kind: the first fix for an input-bound run."""
    kind = record.input.kind or "unknown"
    batch = record.input.batch_size or 64
    if kind == "generator":
        return (
            "import stoke\n"
            "\n"
            "# One line: stoke runs the generator off the trainer's thread and\n"
            "# prefetches to the device: batch n+1 is made while the model trains on n.\n"
            "model.fit(stoke.accelerate(train_generator), steps_per_epoch=steps, epochs=10)\n"
            "\n"
            "# All cores: give stoke the samples (anything with len() and [i]) and\n"
            "# your per-sample function; its worker processes build batches in parallel.\n"
            "train = (\n"
            "    stoke.from_sequence(samples)\n"
            "    .map(load_and_augment)\n"
            f"    .batch({batch})\n"
            "    .to_keras()\n"
            ")\n"
            "model.fit(train, epochs=10)\n"
        )
    if kind == "pydataset":
        return (
            "import stoke\n"
            "\n"
            "# One line: your PyDataset's batches are built in parallel worker processes and\n"
            "# handed to fit() through shared memory (no pickling), prefetched to the device.\n"
            "model.fit(stoke.accelerate(train_dataset), epochs=10)\n"
        )
    if kind == "torch_dataloader":
        return (
            "import stoke\n"
            "\n"
            "# The same torch Dataset (len() and [i]); stoke's workers write samples\n"
            "# straight into shared memory and prefetch to the device.\n"
            f"train = stoke.from_sequence(train_loader.dataset).batch({batch}).to_keras()\n"
            "model.fit(train, epochs=10)\n"
        )
    if kind == "tf.data" and not record.input.tf_data_py_function:
        return (
            "# This pipeline runs TF ops only: keep tf.data, map in parallel and prefetch.\n"
            "ds = ds.map(load_and_augment, num_parallel_calls=tf.data.AUTOTUNE)\n"
            "ds = ds.prefetch(tf.data.AUTOTUNE)\n"
            "# and if its per-sample work is Python, stoke runs it in worker processes:\n"
            f"# stoke.from_sequence(samples).map(load_and_augment).batch({batch}).to_keras()\n"
        )
    if kind == "tf.data":
        return (
            "import stoke\n"
            "\n"
            "# Python per-sample work (py_function / numpy_function) runs in stoke's worker\n"
            "# processes, outside the GIL, and is prefetched to the device:\n"
            "train = (\n"
            "    stoke.from_sequence(samples)\n"
            "    .map(load_and_augment)\n"
            f"    .batch({batch})\n"
            "    .to_keras()\n"
            ")\n"
            "model.fit(train, epochs=10)\n"
            "\n"
            "# Staying with tf.data (TF ops only): map in parallel and prefetch.\n"
            "ds = ds.map(load_and_augment, num_parallel_calls=tf.data.AUTOTUNE)\n"
            "ds = ds.prefetch(tf.data.AUTOTUNE)\n"
        )
    if kind == "train_on_batch":
        return (
            "import stoke\n"
            "\n"
            "# stoke's worker processes build the batches ahead of your loop:\n"
            f"batches = stoke.from_sequence(samples).map(load_and_augment).batch({batch})\n"
            "for x, y in batches.iter():\n"
            "    model.train_on_batch(x, y)\n"
        )
    if kind == "arrays":
        return (
            "import stoke\n"
            "\n"
            f"train = stoke.from_arrays(x_train, y_train).batch({batch}).to_keras()\n"
            "model.fit(train, epochs=10)\n"
        )
    if kind == "stoke":
        return (
            "# stoke already feeds this run and its workers cannot keep up. Measure\n"
            "# the pipeline alone with each executor and worker count (shell:\n"
            "# `stoke bench`), then give it more workers or cores, or run its map\n"
            "# stage on a Ray cluster.\n"
        )
    return (
        "import stoke\n"
        "\n"
        "# A PyDataset, keras.utils.Sequence or generator: one line.\n"
        "model.fit(stoke.accelerate(train_data), epochs=10)\n"
    )


def _keras2_fix(record: RunRecord, conversion: dict[str, Any]) -> str:
    """A Keras-2 script: ``stoke run`` runs it unchanged with the generator off the trainer's
    thread; or the one-line change in the script."""
    script = str(record.meta.script or "train.py")
    return (
        f"stoke run {script}   # the script unchanged: {conversion.get('method', 'fit_generator')}"
        "() is fed by stoke's workers\n"
        "# or in the script, for Keras 3:\n"
        "#   model.fit(stoke.accelerate(train_generator), steps_per_epoch=steps, epochs=10)\n"
    )


def _gpu_install_fix(backend: str) -> str:
    install = {
        "jax": 'pip install -U "jax[cuda12]"',
        "tensorflow": 'pip uninstall -y tensorflow-cpu && pip install "tensorflow[and-cuda]"',
        "torch": "pip install torch --index-url https://download.pytorch.org/whl/cu124",
    }.get(backend, 'pip install -U "jax[cuda12]"  # or the CUDA build of your backend')
    return (
        "nvidia-smi                      # the driver sees the GPU?\n"
        "echo $CUDA_VISIBLE_DEVICES      # empty or unset, not -1\n"
        f"{install}\n"
        "stoke env                       # checks that a matmul really runs on the GPU\n"
    )


def _use_gpu_fix(backend: str) -> str:
    if backend == "tensorflow":
        return (
            "import tensorflow as tf\n"
            "print(tf.config.list_logical_devices(\"GPU\"))\n"
            "# remove any `with tf.device(\"/CPU:0\"):` around model building and fit()\n"
        )
    if backend == "torch":
        return (
            "import torch\n"
            "print(torch.cuda.is_available())\n"
            "# Keras places the model on cuda when it is available; remove any .to(\"cpu\") or\n"
            "# keras.device(\"cpu\") scope around model building and fit()\n"
        )
    return (
        "import jax\n"
        "print(jax.devices())  # expect CudaDevice entries\n"
        "# remove JAX_PLATFORMS=cpu and any keras.device(\"cpu\") scope around the model\n"
    )


def _data_parallel_fix(backend: str) -> str:
    if backend == "tensorflow":
        return (
            "import tensorflow as tf\n"
            "\n"
            "strategy = tf.distribute.MirroredStrategy()  # every visible GPU\n"
            "with strategy.scope():\n"
            "    model = build_model()\n"
            "    model.compile(optimizer=optimizer, loss=loss)\n"
            "model.fit(train, epochs=10)  # batch size is global: scale it with the GPU count\n"
        )
    if backend == "torch":
        return (
            "# Keras' distribution API needs the JAX backend; with torch, run one\n"
            "# process per GPU (torch.distributed / DDP), or switch:\n"
            "import os\n"
            "os.environ[\"KERAS_BACKEND\"] = \"jax\"  # before importing keras\n"
            "import keras\n"
            "keras.distribution.set_distribution(keras.distribution.DataParallel())\n"
        )
    return (
        "import keras\n"
        "\n"
        "# before building the model: shard every batch over all visible GPUs\n"
        "keras.distribution.set_distribution(keras.distribution.DataParallel())\n"
        "model = build_model()\n"
        "model.fit(train, epochs=10)  # batch size is global: scale it with the GPU count\n"
    )


# -- helpers -----------------------------------------------------------------------------------


def _input_evidence(record: RunRecord, diagnosis: Diagnosis) -> dict[str, Any]:
    bound = diagnosis.bound
    evidence: dict[str, Any] = {
        "input_kind": record.input.kind or "unknown",
        "input_wait_pct": _pct(diagnosis.input_wait_fraction),
        "wait_ms_per_step": _round_ms(bound.wait_s),
        "step_ms": _round_ms(bound.step_s),
        "throughput_samples_per_s": _round(diagnosis.throughput),
        "predicted_samples_per_s": _round(diagnosis.predicted_throughput),
    }
    if diagnosis.input_alone:
        evidence["input_alone_samples_per_s"] = _round(diagnosis.input_alone)
    if diagnosis.model_alone:
        evidence["model_alone_samples_per_s"] = _round(diagnosis.model_alone)
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


def stoke_gain_on_these_cores(record: RunRecord, diagnosis: Diagnosis) -> float | None:
    """The speedup stoke's workers can bring on this machine, sharing its cores with the
    trainer: the one prediction's ``with_stoke_here`` (:mod:`stoke.diagnosis.judge.analysis`)."""
    prediction = diagnosis.prediction
    return None if prediction is None else prediction.with_stoke_here


def _overlap_gain(diagnosis: Diagnosis) -> float | None:
    """Speedup from overlapping (not parallelising) the input: step -> max(wait, compute)."""
    bound = diagnosis.bound
    if not bound.step_s or bound.wait_s is None or bound.compute_s is None:
        return None
    overlapped = max(bound.wait_s, bound.compute_s)
    if overlapped <= 0:
        return None
    gain = bound.step_s / overlapped
    if diagnosis.predicted_speedup:
        gain = min(gain, diagnosis.predicted_speedup)
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


def _ms(seconds: float | None) -> str:
    return "?" if seconds is None else f"{seconds * 1e3:.1f} ms"


def _rate(samples_per_s: float | None) -> str:
    return "?" if samples_per_s is None else f"{samples_per_s:,.0f} samples/s"


def _num(value: float | None) -> float | int | None:
    if value is None:
        return None
    return int(value) if float(value).is_integer() else round(value, 1)
