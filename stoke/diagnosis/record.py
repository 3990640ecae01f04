"""The run record: everything the doctor measured about one training run, serialisable.

The record is the only thing that flows from the probes (which watch a live run) to the
analysis and the renderers (which never touch Keras). Its JSON form is a public interface,
versioned by ``RECORD_SCHEMA_VERSION``: add fields freely, never change the meaning of one.

Times are seconds, rates are per second, sizes are bytes, percentages are 0-100.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RECORD_SCHEMA_VERSION = 1


@dataclass
class StepSample:
    """One training step as the trainer saw it.

    ``wait_s`` is the time the trainer spent blocked waiting for this step's batch (the
    ``next()`` on the input iterator); ``step_s`` is the wall time from the end of the
    previous step to the end of this one, so ``wait_s <= step_s``. ``synced`` says the step's
    end was measured after the device finished (sampled steps), not merely dispatched.

    One sample is one call of Keras' train function: with ``steps_per_execution > 1`` it
    covers several batches, and ``batch_size`` is the samples of all of them. ``warmup`` marks
    steps that include tracing or compilation (the first steps of each ``fit``): leave them
    out of rates. Under asynchronous dispatch (JAX, torch on a GPU) the host may wait for a
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

    ``cpu_per_core_pct`` is the whole machine per core; ``cpu_self_pct`` is this training
    process and its children (sum over cores, so up to 100 * cores); ``cpu_other_pct`` is
    everything else on the machine, on the same scale.
    """

    t_s: float
    cpu_per_core_pct: list[float]
    cpu_self_pct: float
    cpu_other_pct: float
    rss_bytes: int
    gpus: list[GpuSample] = field(default_factory=list)


@dataclass
class ProbeResult:
    """A bound measured on its own: the input pipeline alone, or the model alone on a batch
    already on the device. ``samples_per_s`` is the headline; ``detail`` says how."""

    samples_per_s: float
    seconds: float
    batches: int
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunRecord:
    """Everything measured about one run. Build it with the probes; read it anywhere."""

    meta: dict[str, Any] = field(default_factory=dict)
    # meta: stoke_version, python, keras_version, backend, argv (list), script, started_at (ISO),
    #       hostname, cpu_count, exit_status, error (str or None)
    #       exit_status: "completed" | "stopped-after-steps" (the doctor ended the run after
    #       --steps N) | "failed" (the script raised or exited non-zero) | "interrupted";
    #       exit_code (int), error_type (str or None), duration_s, measured_from
    #       ("fit" | "train_on_batch" | None when no training step was seen), steps_truncated,
    #       stopped_after_steps, probe_notes {probe name or "all": why it is missing},
    #       hook_error (the hooks could not be installed: nothing was measured),
    #       keras_warning (Keras outside the tested range), attach_note
    steps: list[StepSample] = field(default_factory=list)
    system: list[SystemSample] = field(default_factory=list)
    input: dict[str, Any] = field(default_factory=dict)
    # input: kind ("generator" | "pydataset" | "tf.data" | "stoke" | "arrays" | "torch_dataloader"
    #        | "grain" | "unknown"), dtypes {field path: dtype str}, batch_size,
    #        pydataset_workers, use_multiprocessing, tf_data_parallel_map (bool | None),
    #        tf_data_prefetch (bool | None), main_thread (bool: batches made on the trainer's thread),
    #        wait_measured (optional bool, default true: false when next() cannot be timed, e.g. a
    #        native tf.data pipeline on TensorFlow; the analysis then estimates the wait from
    #        the probes, see analysis.wait_fraction_from_probes)
    #        also: wait_method, how wait_s was measured: "timed-next" (the trainer's next() on its
    #        batch iterator, timed in Python: JAX, torch), "timed-next-outside-graph" (TensorFlow:
    #        the doctor pulls the batch eagerly and hands it to Keras' step function),
    #        "between-calls" (train_on_batch loops: the time spent outside train_on_batch),
    #        "estimated-from-model-alone" (TensorFlow with the pull inside the graph: step_s minus
    #        the model-alone step time; wait_s is an estimate), "none"; wait_note (plain words
    #        on the method's limits); shapes {field path: list}, batch_bytes, producer
    #        ("trainer-thread" | "tf.data-thread" | "worker-threads" | "worker-processes" |
    #        "native"), tf_data_py_function (bool | None: Python inside the tf.data graph),
    #        tf_data_map_parallelism (list of ints, -1 = AUTOTUNE), torch_num_workers,
    #        torch_pin_memory, generator_s_per_batch (mean time inside the user's generator),
    #        source_dtypes (arrays: the dtypes passed to fit, before Keras casts floats to
    #        floatx once; "dtypes" are those of the batches the trainer sees), tf_pull_floor_s
    #        (TensorFlow: the cost of an eager next() on a ready batch, taken off each wait)
    model: dict[str, Any] = field(default_factory=dict)
    # model: run_eagerly, jit_compile, steps_per_execution, params, device ("cpu" | "gpu" | ...),
    #        host_ops (list of layer names doing NumPy / py_function / host callbacks)
    #        also: name, class, layers (count), optimizer, dtype_policy
    env: dict[str, Any] = field(default_factory=dict)
    # env: gpus_visible (int), gpus_used (int), accelerator_kind, tf_intra_op_threads,
    #      tf_inter_op_threads, memory_growth (bool | None), omp_num_threads
    #      also: gpu_names (list), cuda_visible_devices, nvml (bool: GPU sampling worked),
    #      jax_platform, torch_cuda,
    #      gpus_physical (optional int: NVIDIA GPUs on the machine whatever the backend sees,
    #      e.g. from NVML; tells "no GPU here" from "a GPU the backend cannot see")
    probes: dict[str, ProbeResult] = field(default_factory=dict)
    # probes: "input_alone", "model_alone", "input_free" (each absent when it could not run:
    #         see meta["probe_notes"]); detail: method, s_per_batch / s_per_step, batch_size, ...
    #   input_free: the run's own fit loop fed a cached batch (stoke.diagnosis.measure.input_free);
    #   detail.s_per_step is the step time with the input free, per train-function call.
    #   model_alone.detail may hold (all optional, seconds): fixed_s_per_step (the per-step cost
    #   that does not grow with the batch, e.g. from timing two batch sizes), device_s_per_batch
    #   (device time of one step), batch_size. analysis.overhead_signals reads them.
    overhead: dict[str, float] = field(default_factory=dict)
    # overhead: doctor_s_total, doctor_s_per_step, fraction_of_step (time inside the doctor's
    #           hooks, excluding the sampled device syncs), also: sync_s_total (time blocked in
    #           sampled syncs, work the device did anyway), synced_steps, sampler_cpu_s (CPU
    #           time of the background sampler thread), probes_s (wall time the probes added)
    schema_version: int = RECORD_SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunRecord:
        version = data.get("schema_version", RECORD_SCHEMA_VERSION)
        if version > RECORD_SCHEMA_VERSION:
            raise ValueError(
                f"This run record has schema_version={version}, newer than this stoke "
                f"understands ({RECORD_SCHEMA_VERSION}). Upgrade stoke to read it."
            )
        system = [
            SystemSample(**{**s, "gpus": [GpuSample(**g) for g in s.get("gpus", [])]})
            for s in data.get("system", [])
        ]
        return cls(
            meta=dict(data.get("meta", {})),
            steps=[StepSample(**s) for s in data.get("steps", [])],
            system=system,
            input=dict(data.get("input", {})),
            model=dict(data.get("model", {})),
            env=dict(data.get("env", {})),
            probes={k: ProbeResult(**v) for k, v in data.get("probes", {}).items()},
            overhead=dict(data.get("overhead", {})),
            schema_version=version,
        )

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path: str | Path) -> RunRecord:
        return cls.from_dict(json.loads(Path(path).read_text()))
