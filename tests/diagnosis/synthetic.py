"""Synthetic run records with known answers, for the doctor's analysis, findings and reports.

Each builder writes what the probes would have recorded for a run of a known shape: so many
steps of ``step_s`` seconds, ``wait_s`` of them waiting for the batch, a compilation at the
start, host and GPU load, and the two probes. The expected numbers follow by hand.
"""

from __future__ import annotations

from stoke.diagnosis.record import (
    EnvFacts,
    GpuSample,
    InputFacts,
    ModelFacts,
    OverheadFacts,
    ProbeResult,
    RunFacts,
    RunRecord,
    StepSample,
    SystemSample,
)

GIB = 1024**3


def make_steps(
    count: int = 100,
    *,
    wait_s: float,
    step_s: float,
    batch_size: int = 64,
    epochs: int = 1,
    compile_s: float = 3.0,
    first_wait_s: float = 1.0,
    synced_every: int = 0,
    synced_compute_s: float | None = None,
    estimated: bool = False,
) -> list[StepSample]:
    """``count`` steps per epoch; the first step of the run also compiles and starts workers.
    ``estimated``: the waits were not timed but estimated after the run (TensorFlow pulling
    inside the compiled loop), as the recorder writes them."""
    steps = []
    t = 0.0
    number = 0
    for epoch in range(epochs):
        for _ in range(count):
            wait, step = wait_s, step_s
            if number == 0:
                wait, step = first_wait_s, step_s + first_wait_s + compile_s
            synced = bool(synced_every) and number % synced_every == 0 and number > 0
            if synced and synced_compute_s is not None:
                step = wait + synced_compute_s
            t += step
            steps.append(
                StepSample(
                    step=number, epoch=epoch, t_s=t, wait_s=0.0 if estimated else wait,
                    step_s=step, batch_size=batch_size, synced=synced,
                    wait_timed=not estimated, wait_estimated_s=wait if estimated else None,
                )
            )
            number += 1
    return steps


def make_system(
    duration_s: float,
    *,
    cores: int = 2,
    self_pct: float = 90.0,
    other_pct: float = 5.0,
    gpu_kernel_active: list[float] | None = None,
    gpu_memory_fraction: float = 0.3,
    every_s: float = 0.25,
) -> list[SystemSample]:
    """Constant load sampled every ``every_s``; one GPU per entry of ``gpu_kernel_active``."""
    samples = []
    count = max(1, int(duration_s / every_s))
    busy_per_core = min(100.0, (self_pct + other_pct) / cores)
    for i in range(count + 1):
        gpus = [
            GpuSample(
                index=index,
                kernel_active_pct=active,
                memory_used_bytes=int(gpu_memory_fraction * 80 * GIB),
                memory_total_bytes=80 * GIB,
            )
            for index, active in enumerate(gpu_kernel_active or [])
        ]
        samples.append(
            SystemSample(
                t_s=i * every_s,
                cpu_per_core_pct=[busy_per_core] * cores,
                cpu_self_pct=self_pct,
                cpu_other_pct=other_pct,
                rss_bytes=2 * GIB,
                gpus=gpus,
            )
        )
    return samples


def make_record(
    *,
    kind: str = "generator",
    wait_s: float,
    step_s: float,
    batch_size: int = 64,
    model_alone: float | None = None,
    input_alone: float | None = None,
    cores: int = 2,
    self_pct: float = 90.0,
    other_pct: float = 5.0,
    gpu_kernel_active: list[float] | None = None,
    gpus_visible: int | None = 1,
    gpus_used: int | None = 1,
    backend: str = "jax",
    steps: list[StepSample] | None = None,
    input_extra: dict | None = None,
    model_extra: dict | None = None,
    env_extra: dict | None = None,
    model_detail: dict | None = None,
    meta_extra: dict | None = None,
    gpu_memory_fraction: float = 0.3,
) -> RunRecord:
    steps = steps if steps is not None else make_steps(wait_s=wait_s, step_s=step_s, batch_size=batch_size)
    duration = steps[-1].t_s if steps else 1.0
    probes = {}
    if model_alone is not None:
        probes["model_alone"] = ProbeResult(
            samples_per_s=model_alone, seconds=2.0, batches=50, detail=dict(model_detail or {})
        )
    if input_alone is not None:
        probes["input_alone"] = ProbeResult(samples_per_s=input_alone, seconds=2.0, batches=50)
    env = {"gpus_visible": gpus_visible, "gpus_used": gpus_used, **(env_extra or {})}
    return RunRecord(
        meta=RunFacts.from_dict({
            "stoke_version": "0.1.0",
            "python": "3.11.2",
            "keras_version": "3.15.1",
            "backend": backend,
            "argv": ["train.py", "--epochs", "1"],
            "script": "train.py",
            "started_at": "2025-01-01T00:00:00",
            "hostname": "box",
            "cpu_count": cores,
            "exit_status": 0,
            "error": None,
            **(meta_extra or {}),
        }),
        steps=steps,
        system=make_system(
            duration,
            cores=cores,
            self_pct=self_pct,
            other_pct=other_pct,
            gpu_kernel_active=gpu_kernel_active,
            gpu_memory_fraction=gpu_memory_fraction,
        ),
        input=InputFacts.from_dict({
            "kind": kind,
            "dtypes": {"x": "float32", "y": "int64"},
            "batch_size": batch_size,
            **(input_extra or {}),
        }),
        model=ModelFacts.from_dict({"run_eagerly": False, "jit_compile": True, "steps_per_execution": 1,
               "params": 1_000_000, "device": "gpu" if gpus_used else "cpu", "host_ops": [],
               **(model_extra or {})}),
        env=EnvFacts.from_dict({key: value for key, value in env.items() if value is not None}),
        probes=probes,
        overhead=OverheadFacts(doctor_s_total=0.05, doctor_s_per_step=0.0002, fraction_of_step=0.005),
    )


def input_bound_generator() -> RunRecord:
    """A Python generator on the main thread: 30 of 40 ms wait, model alone 9 ms per batch.

    Known answers: wait 75%, throughput 64/0.040 = 1600/s, no-wait 64/0.010 = 6400/s,
    model alone 64/0.009 = 7111/s, predicted min(6400, 7111) = 6400/s, speedup 4.0.
    """
    return make_record(
        kind="generator",
        wait_s=0.030,
        step_s=0.040,
        model_alone=64 / 0.009,
        input_alone=64 / 0.030,
        gpu_kernel_active=[22.0],
        input_extra={"main_thread": True},
    )


def compute_bound_tf_data() -> RunRecord:
    """A parallel, prefetched tf.data pipeline feeding a big model: 1 of 50 ms waits."""
    return make_record(
        kind="tf.data",
        wait_s=0.001,
        step_s=0.050,
        model_alone=64 / 0.049,
        input_alone=20_000.0,
        gpu_kernel_active=[97.0],
        backend="tensorflow",
        input_extra={"tf_data_parallel_map": True, "tf_data_prefetch": True},
        env_extra={"memory_growth": True},
    )


def partly_input_bound() -> RunRecord:
    """10 of 100 ms wait: partly input-bound, speedup bounded by the 90 ms not waiting (the
    model alone takes 88 ms: it fits in them, so the whole wait is exposed)."""
    return make_record(
        kind="pydataset",
        wait_s=0.010,
        step_s=0.100,
        model_alone=64 / 0.088,
        gpu_kernel_active=[88.0],
        input_extra={"pydataset_workers": 4, "use_multiprocessing": True, "main_thread": False},
    )


def multi_fit() -> RunRecord:
    """Pretraining (batch 16, 2 epochs of 40 steps, 2 of 10 ms waiting) then fine-tuning
    (batch 4, 1 epoch of 40 steps, 8 of 10 ms waiting): two fits, two batch sizes. Each fit
    starts with two warm-up steps. A mean batch size over the fits (about 12) describes
    neither."""
    steps = []
    t = 0.0
    number = 0
    for fit, (batch_size, epochs, wait_s) in enumerate([(16, 2, 0.002), (4, 1, 0.008)]):
        for epoch_in_fit in range(epochs):
            for index in range(40):
                warmup = epoch_in_fit == 0 and index < 2
                step_s = 0.5 if warmup and index == 0 else 0.010
                t += step_s
                steps.append(StepSample(
                    step=number, epoch=len({s.epoch for s in steps if s.fit < fit}) + epoch_in_fit,
                    t_s=t, wait_s=wait_s, step_s=step_s, batch_size=batch_size, warmup=warmup,
                    fit=fit,
                ))
                number += 1
    return make_record(
        kind="generator", wait_s=0.0, step_s=0.0, steps=steps, batch_size=16,
        model_alone=16 / 0.004, input_alone=16 / 0.009, input_extra={"main_thread": True},
        model_detail={"s_per_step": 0.004, "batch_size": 16},
    )


def batch_size_unknown() -> RunRecord:
    """Batch sizes recorded nowhere (0 per step, none configured): no samples/s can be said,
    only step times; 5 of 20 ms wait."""
    return make_record(
        kind="generator", wait_s=0.005, step_s=0.020, batch_size=0,
        input_extra={"batch_size": None, "main_thread": True},
    )


def mirrored_strategy_tf_data() -> RunRecord:
    """MirroredStrategy over a tf.data pipeline: TensorFlow pulls inside the compiled step
    (no wait timed, none estimated), the per-replica batch size is not seen (0 per step), no
    probe ran. Nothing bounds the wait: the report says what was not measured."""
    steps = make_steps(wait_s=0.0, step_s=0.020, batch_size=0, estimated=True)
    for step in steps:
        step.wait_estimated_s = None
    return make_record(
        kind="tf.data", wait_s=0.0, step_s=0.020, steps=steps, backend="tensorflow",
        input_extra={"batch_size": None, "wait_method": "none", "wait_measured": False,
                     "tf_data_prefetch": True},
        meta_extra={"probe_notes": {"all": "a distribution strategy is active"}},
    )


def no_fit() -> RunRecord:
    """A custom training loop: no step measured, the setup's facts only (16 threads on 2
    cores)."""
    return make_record(
        kind=None, wait_s=0.0, step_s=0.0, steps=[], backend="tensorflow",
        env_extra={"tf_intra_op_threads": 16}, other_pct=5.0,
    )


def input_bound_no_gain() -> RunRecord:
    """30 of 40 ms wait, but the model alone takes 45 ms a batch, longer than the run's whole
    step (the load changed between them): the probes contradict the run, so the gain is the
    timed wait's own, 1/(1 - wait), with low confidence (never "input-bound, ×1.00")."""
    return make_record(
        kind="generator", wait_s=0.030, step_s=0.040, model_alone=64 / 0.045,
        input_alone=64 / 0.030, input_extra={"main_thread": True},
    )


def input_bound_large_gain() -> RunRecord:
    """38 of 40 ms wait, the model alone 1 ms a batch: a ×20 prediction (written "×20"
    everywhere, never "×20.00" in one place and "×20" in another)."""
    return make_record(
        kind="generator", wait_s=0.038, step_s=0.040, model_alone=64 / 0.001,
        input_alone=64 / 0.038, input_extra={"main_thread": True},
    )


def tf_data_no_prefetch() -> RunRecord:
    """A tf.data pipeline with no prefetch: 12 of 40 ms wait; overlapping the two would make
    a step 28 ms."""
    return make_record(
        kind="tf.data", wait_s=0.012, step_s=0.040, backend="tensorflow",
        model_alone=64 / 0.027, input_alone=64 / 0.012,
        input_extra={"tf_data_parallel_map": True, "tf_data_prefetch": False},
        env_extra={"memory_growth": True},
    )


def contended_generator() -> RunRecord:
    """The input-bound generator on a machine where other processes take 1.5 of 2 cores."""
    return make_record(
        kind="generator", wait_s=0.030, step_s=0.040, model_alone=64 / 0.009,
        input_alone=64 / 0.030, self_pct=45.0, other_pct=150.0, gpu_kernel_active=[22.0],
        input_extra={"main_thread": True},
    )


def numpy_layer_eager() -> RunRecord:
    """numpy_layer.py on TensorFlow (``np.sin(inputs)`` in a layer, run eagerly, arrays): a
    40 ms eager step that barely waits; the compiled-step probe timed the step with numpy_sin
    stood in by the identity at 4 ms, fit's loop 0.5 ms, the pipeline's ready pull 1 ms.

    Known answers: the host-code fix x40/5.5 = x7.27, for host-op-in-model and run-eagerly."""
    record = make_record(
        kind="arrays", wait_s=0.0, step_s=0.040, backend="tensorflow",
        model_alone=64 / 0.039, input_alone=64 / 0.0015, gpus_visible=0, gpus_used=0,
        model_extra={"run_eagerly": True, "jit_compile": False, "device": "cpu",
                     "host_ops": ["numpy_sin"],
                     "host_op_evidence": {"numpy_sin": "NumpySin.call returned a NumPy array"},
                     "host_op_stand_ins": {"numpy_sin": "identity"}},
        input_extra={"main_thread": True, "producer": "native",
                     "wait_method": "timed-next-outside-graph", "tf_pull_floor_s": 0.0004},
    )
    record.probes["input_alone"].detail["ready_pull_s"] = 0.001
    record.probes["compiled_step"] = ProbeResult(
        samples_per_s=64 / 0.004, seconds=1.0, batches=250,
        detail={"s_per_step": 0.004, "loop_s_per_step": 0.0005, "stood_in": ["numpy_sin"],
                "stand_in": "identity", "jit_compile": False})
    return record


def tiny_model_generator() -> RunRecord:
    """JAX, a 19.85 ms generator on the trainer's thread before a tiny model (issue 14's
    input-bound-tiny-model): 20.0 of each 20.8 ms step timed as wait; the input-free window
    timed the train function back to back at 0.05 ms against 0.40 ms on the run's steps, so
    the fit loop's 0.40 ms (after each wait) counts 0.05 ms back to back (0.10 ms a step in
    all), and taking a ready batch in 0.01 ms warm against the 0.15 ms the wait less the
    generator's time shows.

    Known answers: predicted step 0.10 + 0.01 = 0.11 ms, speedup 20.8 / 0.11 = x189.1 (with
    the hand-over after each wait, 0.15 ms: x83.2; the loop after each wait too, as the
    window counted it before: 20.8 / (0.05 + 0.40 + 0.15) = x34.7); wait (20.0 + 0.7 after
    each wait over the window's 0.10) / 20.8, cap 1.3/(1 - wait) = x270.4."""
    record = make_record(
        kind="generator", wait_s=0.020, step_s=0.0208, batch_size=32,
        model_alone=32 / 0.00004, input_alone=32 / 0.0199, gpus_used=0, gpus_visible=0,
        input_extra={"main_thread": True, "producer": "trainer-thread",
                     "wait_method": "timed-next", "generator_s_per_batch": 0.01985},
    )
    record.probes["input_free"] = ProbeResult(
        samples_per_s=32 / 0.0001, seconds=0.05, batches=500,
        detail={"s_per_step": 0.0001, "call_s_per_step": 0.00005, "call_s_after_wait": 0.0004,
                "warm_share": 0.125, "loop_s_per_step": 0.00005, "loop_s_after_wait": 0.0004,
                "handover_s": 0.00001, "ready_pull_s": 0.0},
    )
    return record
