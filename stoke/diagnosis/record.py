"""The run record: everything the doctor measured about one training run, typed and serialisable.

The record is the only thing that flows from the probes (which watch a live run) to the
analysis and the renderers (which never touch Keras). Two forms, one boundary:

- :class:`Measurements` is what the measuring side (:mod:`stoke.diagnosis.measure`) writes while
  the run goes on: plain dicts it fills as facts become known, the step samples, the probes.
- :class:`RunRecord` is what everything downstream reads: the same content as typed facts
  (:class:`RunFacts`, :class:`InputFacts`, :class:`ModelFacts`, :class:`EnvFacts`,
  :class:`OverheadFacts`), read as attributes. :meth:`RunRecord.from_measurements` is the one
  place the dicts become facts; a key no facts class declares fails there, loudly
  (:class:`UnknownFactError`), as does a misspelled attribute set or read on a facts object.

The JSON form (:meth:`RunRecord.save` / :meth:`RunRecord.load`) is a public interface, versioned
by ``RECORD_SCHEMA_VERSION``: a new field is a new schema version (an older stoke then says
"upgrade" instead of failing on the unknown key); never change the meaning of a field. Each facts
group serialises the keys the probes wrote, in the order they wrote them, plus any field set
since: a record loads and saves back unchanged.

Times are seconds, rates are per second, sizes are bytes, percentages are 0-100.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Iterable, Mapping
from dataclasses import InitVar, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

# 2: StepSample.wait_timed and wait_estimated_s (schema 1 wrote the TensorFlow in-graph
# estimate into wait_s; RunRecord.from_dict moves it where schema 2 keeps it)
# 3: input facts tf_data_seeded_reshuffle, torch_iterable_dataset, torch_collate_fn,
# torch_persistent_workers; meta fit_models, probed_fit (a schema-2 record reads as it is:
# each is None there)
# 4: meta trainer_cpu_s_at_first_fit, model compiles_watched, StepSample.compiled_s and
# compiles (None, None, 0.0 and 0 in a schema-3 record)
# 5: model batch_end_async (None in a schema-4 record)
# 6: input tf_in_graph_step_s (None in a schema-5 record)
# 7: input tf_in_graph_skipped (None in a schema-6 record)
# 8: input tf_generator_restart_s, tf_generator_restart_error (None in a schema-7 record)
RECORD_SCHEMA_VERSION = 8

# The probes a record may hold (RunRecord.probes keys; RunFacts.probe_notes also takes "all").
PROBE_NAMES = ("input_alone", "model_alone", "input_free", "compiled_step")


class UnknownFactError(ValueError):
    """A key or attribute that no facts class declares: a misspelling, or a fact a probe
    writes that the record does not know yet (then declare it, with its meaning)."""


@dataclass
class StepSample:
    """One training step as the trainer saw it.

    ``wait_s`` is the time the trainer spent blocked waiting for this step's batch (the
    ``next()`` on the input iterator); ``step_s`` is the wall time from the end of the
    previous step to the end of this one, so ``wait_s <= step_s``. ``synced`` says the step's
    end was measured after the device finished (sampled steps), not merely dispatched.

    ``wait_s`` is only ever what was timed. ``wait_timed`` is False for a step whose pull the
    doctor could not time (TensorFlow pulling inside the compiled loop: ``steps_per_execution
    > 1`` or a distribution strategy); its ``wait_s`` is then 0.0 and means nothing, and
    ``wait_estimated_s`` holds the wait estimated after the run (``InputFacts.wait_method``
    says how), or None when nothing could estimate it. :attr:`wait_used_s` is the wait the
    analysis counts for the step.

    One sample is one call of Keras' train function: with ``steps_per_execution > 1`` it
    covers several batches, and ``batch_size`` is the samples of all of them. ``warmup`` marks
    steps that include tracing or compilation (the first steps of each ``fit``), or that were
    fed batches the input-alone probe had taken from a generator and kept (no wait): leave
    them out of rates. Under asynchronous dispatch (JAX, torch on a GPU) the host may wait for a
    batch while the device still runs the previous step, so ``wait_s`` is the trainer's wait,
    not the device's idle time; sums over a window that ends on a ``synced`` step are exact.
    """

    step: int
    epoch: int
    t_s: float  # end of the step, seconds since the run started
    wait_s: float
    step_s: float
    batch_size: int
    synced: bool = False
    warmup: bool = False
    wait_timed: bool = True
    wait_estimated_s: float | None = None
    # which ``fit`` (or ``train_on_batch`` loop) of the run made the step, counted from 0: a
    # script that fits twice (pretrain, then fine-tune with another batch size) has two
    fit: int = 0
    # seconds the backend spent compiling the train step inside this step (JAX: a new batch
    # shape; stoke.diagnosis.measure.compiles); 0.0 where it did not, or was not watched
    # (ModelFacts.compiles_watched)
    compiled_s: float = 0.0
    compiles: int = 0  # how many compilations (a step of steps_per_execution > 1: several)

    @property
    def wait_used_s(self) -> float:
        """The wait to count for this step: the timed one where it was timed, else the
        estimate, else 0.0 (not known at all: see ``wait_timed``)."""
        if self.wait_timed:
            return self.wait_s
        return self.wait_estimated_s if self.wait_estimated_s is not None else 0.0


@dataclass
class GpuSample:
    """One NVML reading of one GPU. ``kernel_active_pct`` is NVML's utilization.gpu: the
    share of time any kernel ran (not SM occupancy)."""

    index: int
    kernel_active_pct: float
    memory_used_bytes: int
    memory_total_bytes: int
    pcie_tx_bytes_per_s: float | None = None
    pcie_rx_bytes_per_s: float | None = None


@dataclass
class SystemSample:
    """Host (and GPU) load at one moment.

    ``cpu_per_core_pct`` is the whole machine per core, busy with work that competes with the
    run; ``cpu_self_pct`` is this training process and its children (sum over cores, so up to
    100 * cores); ``cpu_other_pct`` is everything else on the machine that competes with the
    run, on the same scale; ``cpu_yielding_pct`` is lower-priority (niced) work of other
    processes, which yields the cores to the run and is not counted as contention
    (:mod:`stoke.diagnosis.measure.core_load`).
    """

    t_s: float
    cpu_per_core_pct: list[float]
    cpu_self_pct: float
    cpu_other_pct: float
    rss_bytes: int
    gpus: list[GpuSample] = field(default_factory=list)
    cpu_yielding_pct: float = 0.0


@dataclass
class ProbeResult:
    """A bound measured on its own: the input pipeline alone, or the model alone on a batch
    already on the device. ``samples_per_s`` is the headline; ``detail`` says how (method,
    ``s_per_batch`` / ``s_per_step``, ``batch_size``, ...; see :class:`RunRecord`)."""

    samples_per_s: float
    seconds: float
    batches: int
    detail: dict[str, Any] = field(default_factory=dict)


# -- typed facts ------------------------------------------------------------------------------

FactsT = TypeVar("FactsT", bound="Facts")


@dataclass
class Facts:
    """One group of facts about a run: typed fields, each None (or its default) when unknown.

    Setting or reading an attribute that is not a field raises; :meth:`from_dict` rejects
    unknown keys. :meth:`to_dict` gives back the keys :meth:`from_dict` was given, in their
    order, and every field set to something other than its default since.
    """

    key_order: InitVar[tuple[str, ...]] = ()

    def __post_init__(self, key_order: tuple[str, ...]) -> None:
        self._key_order = tuple(key_order)

    def __setattr__(self, name: str, value: Any) -> None:
        if name != "_key_order" and name not in _attribute_names(type(self)):
            raise UnknownFactError(_unknown_message(type(self), [name], _attribute_names(type(self))))
        object.__setattr__(self, name, value)

    @classmethod
    def from_dict(cls: type[FactsT], data: Mapping[str, Any]) -> FactsT:
        """The facts in ``data`` (JSON keys, as the probes wrote them); an unknown key raises
        :class:`UnknownFactError`."""
        keys = _field_keys(cls)
        unknown = [key for key in data if key not in keys]
        if unknown:
            raise UnknownFactError(_unknown_message(cls, unknown, keys))
        return cls(**{keys[key]: value for key, value in data.items()}, key_order=tuple(data))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types, keyed as the record's JSON form (see the class docstring)."""
        names = _field_keys(type(self))
        out = {key: getattr(self, names[key]) for key in self._key_order if key in names}
        for item in dataclasses.fields(self):
            key = item.metadata.get("key", item.name)
            if key not in out and getattr(self, item.name) != item.default:
                out[key] = getattr(self, item.name)
        return out


@functools.cache
def _field_keys(cls: type) -> dict[str, str]:
    """JSON key -> attribute name, for every field of a facts class (``class_name`` is
    ``"class"`` in JSON)."""
    return {item.metadata.get("key", item.name): item.name for item in dataclasses.fields(cls)}


@functools.cache
def _attribute_names(cls: type) -> frozenset[str]:
    return frozenset(item.name for item in dataclasses.fields(cls))


def _unknown_message(cls: type, names: list[str], known_names: Iterable[str]) -> str:
    import difflib  # only on the error path

    known = sorted(known_names)
    parts = []
    for name in names:
        close = difflib.get_close_matches(name, known, n=1)
        parts.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return (
        f"{cls.__name__} has no fact {', '.join(parts)}. Known facts: {', '.join(known)}. "
        "A new fact is declared as a field of this class (record.py), with its meaning."
    )


@dataclass
class RunFacts(Facts):
    """The run itself (the record's ``meta``): versions, host, command, how it ended."""

    stoke_version: str | None = None
    python: str | None = None
    keras_version: str | None = None
    backend: str | None = None  # "jax" | "tensorflow" | "torch"
    argv: list[str] | None = None
    script: str | None = None
    started_at: str | None = None  # ISO 8601
    hostname: str | None = None
    cpu_count: int | None = None
    # "completed" | "stopped-after-steps" (the doctor ended the run after --steps N) |
    # "failed" (the script raised or exited non-zero) | "interrupted"
    exit_status: str | None = None
    exit_code: int | None = None
    error: str | None = None
    error_type: str | None = None
    duration_s: float | None = None
    measured_from: str | None = None  # "fit" | "train_on_batch" | None: no training step seen
    steps_truncated: bool | None = None  # more steps ran than the record keeps
    stopped_after_steps: int | None = None
    probe_notes: dict[str, str] | None = None  # probe name (or "all") -> why it is missing
    hook_error: str | None = None  # the hooks could not be installed: nothing was measured
    keras_warning: str | None = None  # Keras outside the tested range
    attach_note: str | None = None  # DoctorCallback: what it could not attach to
    # Keras-2 calls the shim translated (stoke.legacy.shim.conversions(), as plain dicts)
    keras2_conversions: list[dict[str, Any]] | None = None
    keras2_conversions_error: str | None = None
    doctor_error: str | None = None  # the doctor's own failure while finishing the record
    # per fit (StepSample.fit), the model it trained: its name, made unique per model object
    # ("sequential", "sequential (2)" for another model of that name)
    fit_models: list[str | None] | None = None
    probed_fit: int | None = None  # the fit (StepSample.fit) the probes and the window ran in
    # the process CPU seconds the script had used when its first fit began (its imports, the
    # model's build): what stoke.accelerate takes a worker's start-up to cost
    trainer_cpu_s_at_first_fit: float | None = None


# Input kinds Keras feeds on TensorFlow through ``tf.data.Dataset.from_generator`` (one
# ``py_function`` call a batch): their hand-over is measured apart (``tf_generator_pull_s``).
FROM_GENERATOR_INPUT_KINDS = ("generator", "pydataset")
# Producers whose work runs beside the trainer's, in the same run and at the same time
# (``InputFacts.producer``): a ``PyDataset``'s or ``DataLoader``'s threads or processes.
BACKGROUND_PRODUCERS = ("worker-threads", "worker-processes")


def input_shares_the_cores(device: str | None, producer: str | None,
                           tf_data_parallel_map: bool | None = None) -> bool:
    """Whether the input's workers (``producer``, :data:`BACKGROUND_PRODUCERS`, or a tf.data
    pipeline of TF ops mapping in parallel: ``tf_data_parallel_map``, its threads) run beside
    a model trained on the CPU (``device``): they fill Keras' queue ahead of the trainer, so
    it barely waits, while their work takes the cores (threads: the GIL too) its step needs.
    The input's cost then shows as a slower step, not as a wait (the red-team's a13 on
    TensorFlow, 2 cores: PNGs decoded with num_parallel_calls=AUTOTUNE, 4.7% wait, the step
    3.4x the model alone; its twin with the input made free ran x2.53)."""
    if device != "cpu":
        return False
    return producer in BACKGROUND_PRODUCERS or (producer == "native" and tf_data_parallel_map is True)


@dataclass
class InputFacts(Facts):
    """What fed the trainer, and how its wait was measured."""

    # "generator" | "pydataset" | "tf.data" | "stoke" | "arrays" | "torch_dataloader" | "grain"
    # | "train_on_batch" | "unknown"
    kind: str | None = None
    adapter: str | None = None  # Keras' data adapter class
    batch_size: int | None = None
    steps_per_epoch: int | None = None
    num_batches: int | None = None
    first_batch_size: int | None = None  # the leading dimension of the first batch seen
    main_thread: bool | None = None  # batches made on the trainer's thread
    # "trainer-thread" | "tf.data-thread" | "worker-threads" | "worker-processes" | "native"
    producer: str | None = None
    # how wait_s was measured: "timed-next" (the trainer's next() on its batch iterator, timed in
    # Python: JAX, torch), "timed-next-outside-graph" (TensorFlow: the doctor pulls the batch
    # eagerly and hands it to Keras' step function), "between-calls" (train_on_batch loops: the
    # time spent outside train_on_batch), "estimated-from-model-alone" (TensorFlow with the pull
    # inside the graph: not timed; each such step's wait_estimated_s is step_s minus the
    # model-alone step time), "none"
    wait_method: str | None = None
    wait_note: str | None = None  # the method's limits, in plain words
    # False when next() cannot be timed (a native tf.data pipeline on TensorFlow): the analysis
    # then estimates the wait from the probes (analysis.wait_fraction_from_probes)
    wait_measured: bool | None = None
    dtypes: dict[str, str] | None = None  # field path ("0", "1/mask") -> dtype of the batches seen
    shapes: dict[str, list[int | None] | None] | None = None
    batch_bytes: int | None = None
    # arrays: the dtypes passed to fit, before Keras casts floats to floatx once
    source_dtypes: dict[str, str] | None = None
    pydataset_workers: int | None = None
    use_multiprocessing: bool | None = None
    max_queue_size: int | None = None
    torch_num_workers: int | None = None
    torch_pin_memory: bool | None = None
    # a DataLoader with workers keeps them between epochs (else it starts new ones each epoch)
    torch_persistent_workers: bool | None = None
    stoke_executor: str | None = None
    stoke_workers: int | str | None = None
    tf_data_parallel_map: bool | None = None  # None: no map
    tf_data_prefetch: bool | None = None
    # a shuffle that draws a new order for every iterator from a fixed seed: a second
    # iterator (a probe's) would change the orders training reads; probes read training's own
    tf_data_seeded_reshuffle: bool | None = None
    # a torch DataLoader over an IterableDataset (no [i]); its collate_fn, if the user's own
    torch_iterable_dataset: bool | None = None
    torch_collate_fn: str | None = None
    tf_data_py_function: bool | None = None  # Python inside the tf.data graph
    tf_data_map_parallelism: list[int] | None = None  # one per map, -1 = AUTOTUNE
    tf_data_batch_size: int | None = None
    tf_data_ops: list[str] | None = None
    # tf.data adds prefetch(AUTOTUNE) after a last transformation that is not a prefetch (its
    # option; unset, TensorFlow applies it while autotune is on): measure.facts
    tf_data_inject_prefetch: bool | None = None
    tf_data_graph_error: str | None = None
    # TensorFlow: the cost of an eager next() on a ready batch, taken off each wait
    tf_pull_floor_s: float | None = None
    tf_pull_floor_error: str | None = None
    # TensorFlow, a generator or PyDataset: next() pulled back to back on Keras' from_generator
    # pipeline of the batch structure yielding a cached batch, per batch
    # (measure.tf_pulls.generator_ready_pull_seconds)
    tf_generator_pull_s: float | None = None
    tf_generator_pull_error: str | None = None
    # the same pipeline's cost to start over (a new iterator's first pull, less a ready one),
    # which Keras pays at each epoch's first step (measure.tf_pulls.generator_restart_seconds)
    tf_generator_restart_s: float | None = None
    tf_generator_restart_error: str | None = None
    # TensorFlow, one tf.data thread making the batches: a few of the run's steps with Keras'
    # own pull inside the step, each step's seconds (measure.in_graph_steps)
    tf_in_graph_step_s: list[float] | None = None
    tf_in_graph_skipped: str | None = None  # where none was timed: why, in the report's words
    generator_s_per_batch: float | None = None  # mean time inside the user's generator
    generator_batches: int | None = None
    # fit's validation (measure.validation): the kind of validation_data ("generator",
    # "arrays", "tf.data", ...), each evaluate call's seconds inside measured fits, and the
    # seconds spent inside the script's validation generator (all its batches)
    validation_kind: str | None = None
    validation_call_s: list[float] | None = None
    validation_input_s: float | None = None
    validation_input_batches: int | None = None
    facts_error: str | None = None
    batch_facts_error: str | None = None

    @property
    def tf_data_prefetches(self) -> bool | None:
        """Whether a tf.data pipeline makes its batches ahead of the step: a ``prefetch`` of
        its own (``tf_data_prefetch``) or the one tf.data injects (``tf_data_inject_prefetch``,
        not known: none); None when the pipeline's graph was not read."""
        if self.tf_data_inject_prefetch is True:
            return True
        return self.tf_data_prefetch

    @property
    def tf_data_shapes_batches(self) -> str | None:
        """How a tf.data pipeline gives its batches their lengths, read off its graph's ops:
        "buckets" (``bucket_by_sequence_length``/``group_by_window``: a
        ``GroupByWindowDataset``), "pads" (``padded_batch``: ``PaddedBatchDatasetV2``), or
        None (neither, or the graph was not read)."""
        ops = self.tf_data_ops or ()
        if "GroupByWindowDataset" in ops:
            return "buckets"
        if "PaddedBatchDatasetV2" in ops:
            return "pads"
        return None


@dataclass
class ModelFacts(Facts):
    """The model and how its step is compiled and placed."""

    name: str | None = None
    class_name: str | None = field(default=None, metadata={"key": "class"})
    layers: int | None = None
    params: int | None = None
    optimizer: str | None = None
    dtype_policy: str | None = None
    run_eagerly: bool | None = None
    jit_compile: bool | str | None = None
    steps_per_execution: int | None = None
    device: str | None = None  # "cpu" | "gpu" | "tpu"
    # layers doing NumPy / py_function / host callbacks, and how each was found
    host_ops: list[str] | None = None
    host_op_evidence: dict[str, str] | None = None
    # each host layer's traceable stand-in: "identity", or why none is known (host_code.stand_in_for)
    host_op_stand_ins: dict[str, str] | None = None
    host_op_classes: dict[str, str] | None = None  # each host layer's class ("Lambda", "LogAbs")
    host_ops_error: str | None = None
    host_code_watched: bool | None = None  # one eager step was watched for host code
    # the backend's compilations of the train step were counted per step (JAX:
    # StepSample.compiled_s); False: not watched (the other backends), None: no fit measured
    compiles_watched: bool | None = None
    # fit's callbacks ran each step's batch-end on Keras' thread pool (asynchronous dispatch:
    # no callback of the fit overrides on_(train_)batch_end, on a thread-safe backend);
    # False: on the trainer's thread; None: not known (facts.batch_end_async)
    batch_end_async: bool | None = None
    # the run failed inside a layer's call: its layer, class, function, site (file:line),
    # raised_in (the frame that raised) and error (host_code.failed_in_layer)
    failed_in_layer: dict[str, str] | None = None
    failed_in_layer_error: str | None = None
    facts_error: str | None = None


@dataclass
class EnvFacts(Facts):
    """The devices and thread settings the backend runs with."""

    gpus_visible: int | None = None
    gpus_used: int | None = None
    # NVIDIA GPUs on the machine whatever the backend sees (NVML): tells "no GPU here" from
    # "a GPU the backend cannot see"
    gpus_physical: int | None = None
    gpu_names: list[str] | None = None
    nvml: bool | None = None  # GPU sampling worked
    accelerator_kind: str | None = None
    cuda_visible_devices: str | None = None
    memory_growth: bool | None = None
    tf_intra_op_threads: int | None = None  # 0: one per core
    tf_inter_op_threads: int | None = None
    omp_num_threads: str | None = None  # the environment variable, as set
    jax_platform: str | None = None
    torch_cuda: str | None = None
    torch_threads: int | None = None
    facts_error: str | None = None


@dataclass
class OverheadFacts(Facts):
    """The doctor's own cost."""

    doctor_s_total: float | None = None  # time inside the hooks, sampled device syncs excluded
    doctor_s_per_step: float | None = None
    fraction_of_step: float | None = None
    sync_s_total: float | None = None  # blocked in sampled syncs: work the device did anyway
    synced_steps: int | None = None
    sampler_cpu_s: float | None = None  # CPU time of the background sampler thread
    # wall time the probes added (TensorFlow's ready-pull timing at the first step included)
    probes_s: float | None = None
    # each probe's wall time (input_free, model_alone, input_alone, tf_pulls, in_graph_steps:
    # the untimed first steps with Keras' own pull, measure.in_graph_steps)
    probe_s_each: dict[str, float] | None = None
    # the probes' wall-time budget (DoctorOptions.probe_budget_fraction of the run's expected
    # steps' wall time when its length is known, else of the measured steps, at least
    # probe_budget_min_s); None when no probe was scheduled
    probe_budget_s: float | None = None
    expected_run_s: float | None = None  # the expected steps' wall time the budget came from
    # TensorFlow: timing ready pulls at the first step (in probes_s as "tf_pulls" too)
    calibration_s: float | None = None
    # where else the doctor's wall time went, for benchmarks/doctor_overhead.py --wall:
    bootstrap_s: float | None = None  # process start -> the script starts (the doctor's imports)
    facts_s: float | None = None  # taking the run's facts (input, model, environment)
    finish_s: float | None = None  # the script's end -> the record is ready to be written
    # when each part of the run happened, Unix times (stoke.diagnosis.measure.phases.PHASES)
    phases: dict[str, float] | None = None


# -- the record -------------------------------------------------------------------------------


@dataclass
class Measurements:
    """What the measuring side writes while a run goes on (plain dicts, keyed as the record's
    JSON form). Only :mod:`stoke.diagnosis.measure` and the run's bootstrap write it; everything
    else reads the :class:`RunRecord` made from it by :meth:`RunRecord.from_measurements`."""

    meta: dict[str, Any] = field(default_factory=dict)
    steps: list[StepSample] = field(default_factory=list)
    system: list[SystemSample] = field(default_factory=list)
    input: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)
    env: dict[str, Any] = field(default_factory=dict)
    probes: dict[str, ProbeResult] = field(default_factory=dict)
    overhead: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunRecord:
    """Everything measured about one run, typed. Made from the probes'
    :class:`Measurements` (:meth:`from_measurements`) or a saved JSON (:meth:`load`).

    ``probes``: ``"input_alone"``, ``"model_alone"``, ``"input_free"``, ``"compiled_step"``
    (each absent when it could not run: see ``meta.probe_notes``; ``compiled_step`` only with
    host code in the model, :mod:`stoke.diagnosis.measure.compiled_step`: its
    ``detail["s_per_step"]`` is the step its fix gives, ``detail["loop_s_per_step"]`` the fit
    loop's own time). ``input_free`` is the run's own fit loop fed a
    cached batch (:mod:`stoke.diagnosis.measure.input_free`); its ``detail["s_per_step"]`` is
    the step time with the input free, per train-function call. ``model_alone.detail`` may hold
    (all optional, seconds): ``fixed_s_per_step`` (the per-step cost that does not grow with the
    batch, e.g. from timing two batch sizes), ``device_s_per_batch`` (device time of one step),
    ``batch_size``; ``analysis.overhead_signals`` reads them.
    """

    meta: RunFacts = field(default_factory=RunFacts)
    steps: list[StepSample] = field(default_factory=list)
    system: list[SystemSample] = field(default_factory=list)
    input: InputFacts = field(default_factory=InputFacts)
    model: ModelFacts = field(default_factory=ModelFacts)
    env: EnvFacts = field(default_factory=EnvFacts)
    probes: dict[str, ProbeResult] = field(default_factory=dict)
    overhead: OverheadFacts = field(default_factory=OverheadFacts)
    schema_version: int = RECORD_SCHEMA_VERSION

    @classmethod
    def from_measurements(cls, measurements: Measurements) -> RunRecord:
        """The one boundary from the probes' dicts to typed facts: an unknown key (or probe
        name) raises :class:`UnknownFactError`."""
        _check_probe_names(measurements.probes, measurements.meta.get("probe_notes"))
        return cls(
            meta=RunFacts.from_dict(measurements.meta),
            steps=list(measurements.steps),
            system=list(measurements.system),
            input=InputFacts.from_dict(measurements.input),
            model=ModelFacts.from_dict(measurements.model),
            env=EnvFacts.from_dict(measurements.env),
            probes=dict(measurements.probes),
            overhead=OverheadFacts.from_dict(measurements.overhead),
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: plain types (see :meth:`from_dict`)."""
        return {
            "meta": self.meta.to_dict(),
            "steps": [dataclasses.asdict(s) for s in self.steps],
            "system": [dataclasses.asdict(s) for s in self.system],
            "input": self.input.to_dict(),
            "model": self.model.to_dict(),
            "env": self.env.to_dict(),
            "probes": {name: dataclasses.asdict(p) for name, p in self.probes.items()},
            "overhead": self.overhead.to_dict(),
            "schema_version": self.schema_version,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunRecord:
        """A record from its JSON form: a newer schema says "upgrade"; an unknown key, at the
        top or in a facts group, raises :class:`UnknownFactError`."""
        version = data.get("schema_version", RECORD_SCHEMA_VERSION)
        if version > RECORD_SCHEMA_VERSION:
            raise ValueError(
                f"This run record has schema_version={version}, newer than this stoke "
                f"understands ({RECORD_SCHEMA_VERSION}). Upgrade stoke to read it."
            )
        parts = [item.name for item in dataclasses.fields(cls)]
        unknown = [key for key in data if key not in parts]
        if unknown:
            raise UnknownFactError(
                f"A run record has no part {', '.join(map(repr, unknown))}; its parts are "
                f"{', '.join(parts)}."
            )
        system = [
            SystemSample(**{**s, "gpus": [GpuSample(**g) for g in s.get("gpus", [])]})
            for s in data.get("system", [])
        ]
        probes = {k: ProbeResult(**v) for k, v in data.get("probes", {}).items()}
        _check_probe_names(probes, data.get("meta", {}).get("probe_notes"))
        steps = [StepSample(**s) for s in data.get("steps", [])]
        if version < 2:
            _steps_from_schema_1(steps, data.get("input", {}), "model_alone" in probes)
            version = RECORD_SCHEMA_VERSION
        return cls(
            meta=RunFacts.from_dict(data.get("meta", {})),
            steps=steps,
            system=system,
            input=InputFacts.from_dict(data.get("input", {})),
            model=ModelFacts.from_dict(data.get("model", {})),
            env=EnvFacts.from_dict(data.get("env", {})),
            probes=probes,
            overhead=OverheadFacts.from_dict(data.get("overhead", {})),
            schema_version=version,
        )

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path: str | Path) -> RunRecord:
        return cls.from_dict(json.loads(Path(path).read_text()))


def _steps_from_schema_1(steps: list[StepSample], inputs: Mapping[str, Any], model_alone: bool) -> None:
    """Schema 1 kept the TensorFlow in-graph estimate (``wait_method``
    ``"estimated-from-model-alone"``) in ``wait_s`` (0.0 without the model-alone probe): move it
    where schema 2 keeps it, ``wait_estimated_s``, and mark the waits as not timed."""
    if inputs.get("wait_method") != "estimated-from-model-alone":
        return
    for step in steps:
        step.wait_timed = False
        step.wait_estimated_s = step.wait_s if model_alone else None
        step.wait_s = 0.0


def _check_probe_names(probes: Mapping[str, Any], notes: Mapping[str, Any] | None) -> None:
    """Probe results are keyed by ``PROBE_NAMES``; ``meta.probe_notes`` by those or ``"all"``."""
    unknown = [name for name in probes if name not in PROBE_NAMES]
    unknown += [name for name in notes or {} if name not in (*PROBE_NAMES, "all")]
    if unknown:
        raise UnknownFactError(
            f"Unknown probe(s) {', '.join(map(repr, unknown))} in the run record; the probes are "
            f"{', '.join(PROBE_NAMES)} (and \"all\" in probe_notes)."
        )
