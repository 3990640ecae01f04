"""Each finding is raised on a record that shows its cause, with numbers, a fix that parses
and the right gain, and is not raised where the record holds no evidence for it."""

from __future__ import annotations

import ast
from dataclasses import replace

import pytest

from stoke.diagnosis.judge.diagnosis import analyse
from stoke.diagnosis.judge.findings import (
    FINDING_CHECKS,
    FINDING_IDS,
    SEVERITIES,
    Finding,
    FindingCheck,
)
from stoke.diagnosis.record import ProbeResult
from tests.diagnosis import synthetic
from tests.diagnosis.synthetic import make_record

CONTRACT_IDS = {
    "generator-on-main-thread", "float64-input", "no-prefetch", "sequential-map", "run-eagerly",
    "host-op-in-model", "small-batch", "cpu-contention", "no-accelerator", "multi-gpu-unused",
    "thread-config", "gpu-memory-growth", "slow-validation", "workers-restart-each-epoch",
}


def ids(record) -> list[str]:
    return [f.id for f in analyse(record).findings]


def only(record, finding_id: str) -> Finding:
    finding = analyse(record).finding(finding_id)
    assert finding is not None, f"{finding_id} not raised; got {ids(record)}"
    return finding


def test_registry_covers_the_contract():
    assert CONTRACT_IDS <= set(FINDING_IDS)
    assert len(FINDING_CHECKS) == len(FINDING_IDS)


def test_input_bound_generator_first_fix_is_stoke():
    diagnosis = analyse(synthetic.input_bound_generator())
    first = diagnosis.findings[0]
    assert first.id == "generator-on-main-thread"
    assert first.severity == "high"
    assert "stoke.accelerate(" in first.fix
    assert "stoke.from_sequence(" in first.fix
    # the bound is x4.0; what stoke's workers can bring on the record's cores is less
    here = first.evidence["speedup_with_stoke_on_these_cores"]
    assert first.expected_gain == pytest.approx(here) and 1.0 <= here <= 4.0
    assert first.evidence["input_wait_pct"] == pytest.approx(75.0)
    assert first.evidence["speedup_overlap_only"] == pytest.approx(40 / 30, abs=0.01)
    assert "75%" in first.message and "×4.0" in first.message


def test_clean_compute_bound_run_has_no_findings():
    assert ids(synthetic.compute_bound_tf_data()) == []


def test_pydataset_on_main_thread():
    record = make_record(kind="pydataset", wait_s=0.03, step_s=0.04,
                         input_extra={"pydataset_workers": 0, "main_thread": True})
    finding = only(record, "generator-on-main-thread")
    assert "stoke.accelerate(train_dataset)" in finding.fix
    assert analyse(record).findings[0].id == "generator-on-main-thread"


def test_pydataset_with_workers_that_cannot_keep_up():
    diagnosis = analyse(make_record(
        kind="pydataset", wait_s=0.03, step_s=0.04, model_alone=64 / 0.009, input_alone=1400.0,
        input_extra={"pydataset_workers": 4, "use_multiprocessing": True, "main_thread": False},
    ))
    assert diagnosis.findings[0].id == "input-too-slow"
    assert diagnosis.finding("generator-on-main-thread") is None
    assert "stoke.accelerate(train_dataset)" in diagnosis.findings[0].fix
    assert diagnosis.findings[0].evidence["pydataset_workers"] == 4


def test_no_input_finding_when_the_input_keeps_up():
    record = make_record(kind="generator", wait_s=0.001, step_s=0.05, gpu_kernel_active=[95.0],
                         input_extra={"main_thread": True})
    assert analyse(record).verdict == "compute-bound"
    assert "generator-on-main-thread" not in ids(record)
    assert "input-too-slow" not in ids(record)


def test_tf_data_sequential_map_and_no_prefetch():
    record = make_record(kind="tf.data", wait_s=0.03, step_s=0.04, backend="tensorflow",
                         input_extra={"tf_data_parallel_map": False, "tf_data_prefetch": False})
    found = ids(record)
    assert found[:2] == ["sequential-map", "no-prefetch"]
    assert "input-too-slow" not in found
    sequential = only(record, "sequential-map")
    # TF ops only (no py_function in the graph): tf.data's own fix first, stoke as the option
    assert sequential.fix.index("num_parallel_calls") < sequential.fix.index("stoke.")
    record.input.tf_data_py_function = True  # Python per element: stoke's workers first
    sequential = only(record, "sequential-map")
    assert sequential.fix.index("stoke.") < sequential.fix.index("num_parallel_calls")
    prefetch = only(record, "no-prefetch")
    assert "prefetch(tf.data.AUTOTUNE)" in prefetch.fix
    # overlapping 30 ms of input with 10 ms of compute: 40 / max(30, 10)
    assert prefetch.expected_gain == pytest.approx(1.33, abs=0.01)


def test_no_prefetch_is_not_told_to_a_pipeline_tf_data_prefetches_for():
    # `from_tensor_slices(...).map(f).batch(32)`, no prefetch in the script: TensorFlow 2.21
    # injects prefetch(AUTOTUNE) (tf.data.Options inject_prefetch unset: on while autotune is)
    record = make_record(kind="tf.data", wait_s=0.03, step_s=0.04, backend="tensorflow",
                         input_extra={"tf_data_parallel_map": False, "tf_data_prefetch": False,
                                      "tf_data_inject_prefetch": True})
    found = ids(record)
    assert "sequential-map" in found and "no-prefetch" not in found
    fix = only(record, "sequential-map").fix
    assert ".prefetch(" not in fix and "already prefetches" in fix
    record.input.tf_data_inject_prefetch = False  # the option set off, or autotune off
    assert "no-prefetch" in ids(record)


@pytest.mark.parametrize("py_function", [False, True])
def test_sequential_map_fix_does_not_add_the_prefetch_the_run_has(py_function):
    # `.map(f).batch(32).prefetch(tf.data.AUTOTUNE)`: the map is the cause, prefetch is there
    record = make_record(kind="tf.data", wait_s=0.03, step_s=0.04, backend="tensorflow",
                         input_extra={"tf_data_parallel_map": False, "tf_data_prefetch": True,
                                      "tf_data_py_function": py_function})
    found = ids(record)
    assert "sequential-map" in found and "no-prefetch" not in found
    fix = only(record, "sequential-map").fix
    assert "num_parallel_calls=tf.data.AUTOTUNE" in fix
    assert ".prefetch(" not in fix and "already prefetches" in fix


def test_parallel_prefetched_tf_data_has_neither():
    record = make_record(kind="tf.data", wait_s=0.03, step_s=0.04, backend="tensorflow",
                         input_extra={"tf_data_parallel_map": True, "tf_data_prefetch": True})
    found = ids(record)
    assert "sequential-map" not in found and "no-prefetch" not in found
    assert found[0] == "input-too-slow"


def test_float64_input():
    # field paths as the probes write them: "0" is x, "1" is y, "0/image" a named input
    dtypes = {"0/image": "float64", "0/mask": "bool", "1": "float64"}
    record = make_record(wait_s=0.03, step_s=0.04, input_extra={"dtypes": dtypes})
    finding = only(record, "float64-input")
    assert finding.evidence["float64_fields"] == ["x/image", "y"]
    assert finding.severity == "medium"
    # a generator's batches: the cast where each batch is made, the float64 fields named (the
    # red-team's a03: "sample_weight, y/priority" were told x_train = x_train.astype(...))
    assert "astype(np.float32)" in finding.fix and "x_train" not in finding.fix
    assert "# float64 here: x/image, y" in finding.fix
    assert "float64-input" not in ids(make_record(wait_s=0.03, step_s=0.04))
    # a torch DataLoader: in its Dataset, never stoke.accelerate (which refuses a DataLoader)
    loader = make_record(kind="torch_dataloader", wait_s=0.03, step_s=0.04, backend="torch",
                         input_extra={"dtypes": dtypes})
    fix = only(loader, "float64-input").fix
    assert "torch.float32" in fix and "stoke.accelerate" not in fix


def test_float64_arrays_cast_once_by_keras_are_named_with_their_real_cost():
    # float64_small_batch.py on torch (issue 14): np.random arrays into fit; Keras casts them
    # to float32 when fit starts, so the batches seen are float32 and nothing was named
    record = make_record(wait_s=0.0, step_s=0.04, kind="arrays", input_extra={
        "dtypes": {"0": "float32", "1": "float32"},
        "source_dtypes": {"0": "float64", "1": "float64"}})
    finding = only(record, "float64-input")
    assert finding.evidence["float64_fields"] == ["x", "y"]
    assert finding.severity == "low"
    assert "once, when fit starts" in finding.message
    assert 'astype("float32")' in finding.fix and "stoke" not in finding.fix
    float32 = make_record(wait_s=0.0, step_s=0.04, kind="arrays", input_extra={
        "dtypes": {"0": "float32"}, "source_dtypes": {"0": "float32", "1": "int64"}})
    assert "float64-input" not in ids(float32)


def test_run_eagerly():
    assert only(make_record(wait_s=0.0, step_s=0.05, model_extra={"run_eagerly": True}),
                "run-eagerly").severity == "high"
    on_torch = make_record(wait_s=0.0, step_s=0.05, backend="torch", model_extra={"run_eagerly": True})
    assert only(on_torch, "run-eagerly").severity == "low"
    assert "run-eagerly" not in ids(make_record(wait_s=0.0, step_s=0.05))


def test_host_op_in_model():
    record = make_record(wait_s=0.0, step_s=0.05, gpu_kernel_active=[95.0],
                         model_extra={"host_ops": ["numpy_normalise", "py_func_aug"]})
    finding = only(record, "host-op-in-model")
    assert finding.severity == "high"
    assert finding.evidence["host_op_layers"] == ["numpy_normalise", "py_func_aug"]
    assert "numpy_normalise" in finding.message


def test_small_batch_when_dispatch_dominates():
    record = make_record(wait_s=0.0001, step_s=0.004, batch_size=8, model_alone=8 / 0.0039,
                         model_detail={"fixed_s_per_step": 0.003})
    finding = only(record, "small-batch")
    assert finding.severity == "high"
    assert "steps_per_execution=32" in finding.fix
    # 4 ms step, 3 ms of it fixed, amortised over 32 steps: 4 / (4 - 3 * 31/32)
    assert finding.expected_gain == pytest.approx(0.004 / (0.004 - 0.003 * 31 / 32), abs=0.01)
    assert "small-batch" not in ids(synthetic.compute_bound_tf_data())


@pytest.mark.parametrize("backend, kind, jit_compile", [
    ("torch", "generator", None), ("tensorflow", "tf.data", True), ("jax", "arrays", False)])
def test_small_batch_fix_is_one_this_run_can_take(backend, kind, jit_compile):
    # the red-team (session 14): on torch the fix's steps_per_execution=32 raised ("must be 1
    # with the PyTorch backend"); for a tf.data dataset it said batch_size=256, which fit
    # ignores for a dataset; it said jit_compile=True to a model compiled with False
    record = make_record(kind=kind, wait_s=0.0001, step_s=0.004, batch_size=8,
                         model_alone=8 / 0.0039, model_detail={"fixed_s_per_step": 0.003},
                         backend=backend, model_extra={"jit_compile": jit_compile})
    fix = only(record, "small-batch").fix
    assert ("steps_per_execution" in fix) is (backend != "torch")
    assert ("jit_compile=True" in fix) is (backend != "torch" and jit_compile is not False)
    assert (".batch(256)" in fix) is (kind == "tf.data")
    assert ("batch_size=256" in fix) is (kind == "arrays")
    compile(fix, "fix", "exec")  # runnable Python


def test_a_finding_predicted_to_gain_nothing_is_not_high():
    # a06 (torch IterableDataset on the trainer's thread): [HIGH] beside "expected x1.00"
    from stoke.diagnosis.judge.findings import Finding, no_gain_is_low

    finding = Finding(id="generator-on-main-thread", severity="high", category="input",
                      message="m", fix="f", expected_gain=1.0)
    assert no_gain_is_low(finding).severity == "low"
    assert no_gain_is_low(replace(finding, expected_gain=1.4)).severity == "high"
    assert no_gain_is_low(replace(finding, expected_gain=None)).severity == "high"
    assert no_gain_is_low(replace(finding, severity="info")).severity == "info"


def test_small_batch_gain_stops_at_what_the_input_makes_alone():
    # ImageDataGenerator().flow(x, y) on 2 loaded CPU cores (rttf's red team, s05): the
    # model alone makes 12x the run, the input alone 2x; fewer dispatches speed up the model,
    # not the input, so small-batch promised x12 where the input allows x2 at most
    record = make_record(kind="pydataset", wait_s=0.0158, step_s=0.0847, batch_size=32,
                         model_alone=4625.0, input_alone=746.0, backend="tensorflow",
                         gpus_visible=0, gpus_used=0, self_pct=4.0, other_pct=196.0,
                         input_extra={"main_thread": False, "producer": "tf.data-thread",
                                      "pydataset_workers": 1})
    diagnosis = analyse(record)
    finding = diagnosis.finding("small-batch")
    assert finding is not None
    assert finding.expected_gain <= 746.0 / diagnosis.throughput + 0.01


def test_small_batch_not_raised_behind_an_input_wait():
    assert "small-batch" not in ids(synthetic.input_bound_generator())


def test_cpu_contention_on_an_input_bound_run():
    record = make_record(wait_s=0.03, step_s=0.04, cores=2, self_pct=80.0, other_pct=115.0,
                         model_alone=64 / 0.009)
    finding = only(record, "cpu-contention")
    assert finding.severity == "high"
    assert finding.evidence["other_processes_cores"] == pytest.approx(1.15)
    assert finding.fix_language == "bash"
    # 2 cores, 1.15 taken by others: up to 2 / 0.85 if freed, below the 4x input bound
    assert finding.expected_gain == pytest.approx(2 / 0.85, abs=0.01)


def test_cpu_contention_gain_never_exceeds_all_the_cores_against_the_runs_own():
    # rttf's red team, a CPU-trained tf.keras CNN on a machine at load 20: others took 1.96 of
    # 2 cores by the median, this run 0.5; "2 / 0.04 = x50" is not a gain any run can get
    record = make_record(wait_s=0.003, step_s=0.04, cores=2, self_pct=50.0, other_pct=196.0,
                         gpus_visible=0, gpus_used=0, model_alone=64 / 0.035)
    finding = only(record, "cpu-contention")
    assert finding.expected_gain == pytest.approx(2 / 0.5, abs=0.01)


def test_low_cpu_contention_says_how_many_cores_are_free():
    # the red-team's a13: "cores are still free" beside others 0.9 and the run 1.0 of 2
    record = make_record(wait_s=0.03, step_s=0.04, cores=4, self_pct=100.0, other_pct=120.0,
                         model_alone=64 / 0.009)
    finding = only(record, "cpu-contention")
    assert finding.evidence["contention"] == "low"
    assert "1.8 core(s) still free" in finding.message


def test_no_cpu_contention_without_other_load():
    record = make_record(wait_s=0.03, step_s=0.04, cores=2, self_pct=190.0, other_pct=5.0)
    assert "cpu-contention" not in ids(record)


def test_no_cpu_contention_on_an_idle_machine_with_a_gpu_bound_model():
    # Others take a core of 16, the machine is mostly idle, and the run does not wait.
    record = make_record(wait_s=0.0005, step_s=0.05, cores=16, self_pct=100.0, other_pct=100.0,
                         gpu_kernel_active=[97.0])
    assert "cpu-contention" not in ids(record)


def test_no_accelerator_on_a_cpu_only_machine_is_info():
    record = make_record(wait_s=0.001, step_s=0.05, gpus_visible=0, gpus_used=0)
    finding = only(record, "no-accelerator")
    assert finding.severity == "info"


def test_no_accelerator_when_the_backend_cannot_see_the_gpu():
    record = make_record(wait_s=0.001, step_s=0.05, gpus_visible=0, gpus_used=0,
                         gpu_kernel_active=[0.0], backend="tensorflow")
    finding = only(record, "no-accelerator")
    assert finding.severity == "high"
    assert "tensorflow[and-cuda]" in finding.fix


def test_no_accelerator_when_the_model_runs_on_cpu_with_a_visible_gpu():
    record = make_record(wait_s=0.001, step_s=0.05, gpus_visible=1, gpus_used=0, gpu_kernel_active=[0.0])
    finding = only(record, "no-accelerator")
    assert finding.severity == "high"
    assert finding.evidence["gpus_visible"] == 1


def test_no_accelerator_not_raised_without_env_or_when_used():
    assert "no-accelerator" not in ids(make_record(wait_s=0.001, step_s=0.05, gpus_visible=None,
                                                   gpus_used=None))
    assert "no-accelerator" not in ids(synthetic.compute_bound_tf_data())


def test_multi_gpu_unused():
    record = make_record(wait_s=0.001, step_s=0.05, gpus_visible=4, gpus_used=1,
                         gpu_kernel_active=[97.0, 0.0, 0.0, 0.0])
    finding = only(record, "multi-gpu-unused")
    assert finding.severity == "medium"
    assert finding.evidence["idle_gpus"] == [1, 2, 3]
    assert "DataParallel" in finding.fix
    assert "multi-gpu-unused" not in ids(make_record(wait_s=0.001, step_s=0.05, gpus_visible=4,
                                                     gpus_used=4, gpu_kernel_active=[97.0] * 4))


def test_thread_config_oversubscribed():
    record = make_record(wait_s=0.001, step_s=0.05, cores=8, backend="tensorflow",
                         gpu_kernel_active=[97.0], env_extra={"tf_intra_op_threads": 32})
    assert only(record, "thread-config").evidence["tf_intra_op_threads"] == 32


def test_thread_config_torch_oversubscribed():
    # torch.set_num_threads(24) on 2 cores (a torch loop around a Keras model, or a fit)
    record = make_record(wait_s=0.001, step_s=0.05, cores=2, backend="torch",
                         env_extra={"torch_threads": 24})
    finding = only(record, "thread-config")
    assert finding.evidence["torch_threads"] == 24
    assert "torch.set_num_threads(2)" in finding.fix
    assert "thread-config" not in ids(make_record(wait_s=0.001, step_s=0.05, cores=2,
                                                  backend="torch",
                                                  env_extra={"torch_threads": 2}))


def test_thread_config_cpu_model_limited_to_one_thread():
    record = make_record(wait_s=0.001, step_s=0.05, cores=16, gpus_visible=0, gpus_used=0,
                         self_pct=100.0, env_extra={"omp_num_threads": "1"})
    finding = only(record, "thread-config")
    assert "OMP_NUM_THREADS" in finding.message
    assert "thread-config" not in ids(make_record(wait_s=0.001, step_s=0.05, cores=16,
                                                  gpus_visible=0, gpus_used=0))


def test_gpu_memory_growth():
    record = make_record(wait_s=0.001, step_s=0.05, backend="tensorflow", gpu_kernel_active=[97.0],
                         gpu_memory_fraction=0.97, env_extra={"memory_growth": False})
    finding = only(record, "gpu-memory-growth")
    assert "set_memory_growth" in finding.fix
    grown = make_record(wait_s=0.001, step_s=0.05, backend="tensorflow", gpu_kernel_active=[97.0],
                        gpu_memory_fraction=0.97, env_extra={"memory_growth": True})
    assert "gpu-memory-growth" not in ids(grown)


def everything_wrong():
    return make_record(
        kind="generator", wait_s=0.03, step_s=0.04, cores=2, self_pct=80.0, other_pct=115.0,
        model_alone=64 / 0.009, gpu_kernel_active=[30.0, 0.0], gpus_visible=2, gpus_used=1,
        backend="tensorflow", gpu_memory_fraction=0.97,
        input_extra={"main_thread": True, "dtypes": {"image": "float64"}},
        model_extra={"run_eagerly": True, "host_ops": ["np_layer"]},
        env_extra={"memory_growth": False, "tf_intra_op_threads": 8},
    )


def test_every_finding_is_well_formed():
    diagnosis = analyse(everything_wrong())
    assert len(diagnosis.findings) >= 8
    assert diagnosis.findings[0].id == "generator-on-main-thread"
    for finding in diagnosis.findings:
        assert finding.id in FINDING_IDS
        assert finding.severity in SEVERITIES
        assert finding.message and finding.evidence
        if finding.fix_language == "python":
            ast.parse(finding.fix)  # the fix is code that parses
        assert max(map(len, finding.fix.splitlines())) <= 80  # fits a terminal unwrapped
        if finding.expected_gain is not None:
            assert finding.expected_gain >= 1.0


@pytest.mark.parametrize("kind", ["generator", "pydataset", "torch_dataloader", "tf.data", "arrays",
                                  "stoke", "grain", "unknown"])
def test_input_bound_fix_per_kind_parses_and_names_stoke(kind):
    # the input alone measured as the limit (64 samples per 30 ms, the model 64 per 9 ms)
    record = make_record(kind=kind, wait_s=0.03, step_s=0.04, input_alone=64 / 0.03,
                         model_alone=64 / 0.009,
                         input_extra={"main_thread": kind != "tf.data", "tf_data_parallel_map": True})
    first = analyse(record).findings[0]
    assert first.category == "input"
    assert "stoke" in first.fix
    ast.parse(first.fix)
    assert max(map(len, first.fix.splitlines())) <= 80


def test_a_broken_check_warns_and_the_others_still_run(monkeypatch):
    from stoke.diagnosis.judge import findings

    def broken(record, analysis):
        raise KeyError("surprise")

    monkeypatch.setattr(findings, "FINDING_CHECKS", (FindingCheck("broken", broken), *FINDING_CHECKS))
    with pytest.warns(RuntimeWarning, match="broken check failed"):
        diagnosis = analyse(synthetic.input_bound_generator())
    assert diagnosis.findings[0].id == "generator-on-main-thread"


def test_generator_on_tensorflow_runs_in_one_tf_data_thread():
    record = make_record(kind="generator", wait_s=0.03, step_s=0.04, backend="tensorflow",
                         input_extra={"main_thread": False, "producer": "tf.data-thread",
                                      "generator_s_per_batch": 0.029})
    finding = only(record, "generator-on-main-thread")
    assert "single Python thread" in finding.message
    assert finding.evidence["generator_ms_per_batch"] == pytest.approx(29.0)


def test_pydataset_without_workers_on_tensorflow_is_serial_python():
    record = make_record(kind="pydataset", wait_s=0.03, step_s=0.04, backend="tensorflow",
                         input_extra={"main_thread": False, "producer": "tf.data-thread",
                                      "pydataset_workers": 0})
    assert analyse(record).findings[0].id == "generator-on-main-thread"


def test_train_on_batch_loop():
    record = make_record(kind="train_on_batch", wait_s=0.03, step_s=0.04,
                         input_extra={"main_thread": True, "producer": "trainer-thread",
                                      "wait_method": "between-calls"})
    finding = analyse(record).findings[0]
    assert finding.id == "generator-on-main-thread"
    assert "train_on_batch" in finding.message and "model.train_on_batch(x, y)" in finding.fix


def test_no_cpu_contention_when_the_run_does_not_need_the_cpu():
    # A busy machine, but the model fills its GPU and the input keeps up.
    record = make_record(wait_s=0.0005, step_s=0.05, cores=2, self_pct=50.0, other_pct=150.0,
                         gpu_kernel_active=[97.0])
    assert analyse(record).verdict == "compute-bound"
    assert "cpu-contention" not in ids(record)


def test_stoke_gain_on_these_cores_counts_cores_model_and_other_processes():
    """The demo's case: 2 cores, the model on the CPU. Input 1.06 ms of CPU per sample
    (measured alone), trainer 0.28 ms of CPU per sample (measured in the input-free window).
    Free machine: 2 / 1.34 ms = 1,497 samples/s; with 0.9 core taken by others 1.1 / 1.34 ms
    = 823 samples/s. Never more than the input made free. A PyDataset without workers (len()
    and [i]: stoke spreads it over the cores; a plain generator it cannot, see
    test_facts_checked's generator bound)."""
    from stoke.diagnosis.judge.findings import stoke_gain_on_these_cores

    def diagnose(other_pct):
        record = make_record(kind="pydataset", wait_s=0.0658, step_s=0.0823, batch_size=64, cores=2,
                             self_pct=100.0, other_pct=other_pct, gpus_visible=0, gpus_used=0,
                             model_alone=3580.0, input_alone=946.0,
                             input_extra={"main_thread": True})
        record.probes["input_free"] = ProbeResult(
            samples_per_s=64 / 0.0165, seconds=1.0, batches=60,
            detail={"s_per_step": 0.0165, "cpu_s_per_step": 64 * 0.00028})
        record.probes["input_alone"].detail["cpu_s_per_sample"] = 0.001057
        return record, analyse(record)

    record, diagnosis = diagnose(other_pct=0.0)
    now = diagnosis.throughput
    expected = min(2 / (0.00028 + 0.001057), diagnosis.predicted_throughput) / now
    assert stoke_gain_on_these_cores(record, diagnosis) == pytest.approx(expected, abs=0.02)
    shared = diagnosis.prediction.shared_cores
    assert shared["trainer_cpu_source"] == shared["input_cpu_source"] == "measured"
    assert shared["limited_by"].startswith("the cores")
    record, busy = diagnose(other_pct=90.0)
    expected_busy = 1.1 / (0.00028 + 0.001057) / busy.throughput
    assert stoke_gain_on_these_cores(record, busy) == pytest.approx(expected_busy, abs=0.02)
    # the finding quotes the same number as the JSON
    finding = busy.finding("generator-on-main-thread")
    assert finding.expected_gain == busy.to_json_dict()["predicted_speedup_with_stoke"]


def test_findings_do_not_depend_on_the_order_checks_run_in(monkeypatch):
    """One way: each check sees the record and the numbers, never another finding; which
    finding gives way to which is declared (yields_to), so any registry order keeps the same."""
    from stoke.diagnosis.judge import findings

    records = [
        synthetic.input_bound_generator(),
        synthetic.partly_input_bound(),
        make_record(kind="tf.data", wait_s=0.03, step_s=0.04, model_alone=64 / 0.009,
                    input_alone=64 / 0.03,
                    input_extra={"tf_data_parallel_map": False, "tf_data_prefetch": False}),
        # the model on the CPU, the input alone far faster: shared-cores would be raised, but
        # the generator on the trainer's thread explains the wait (and the cores are no limit)
        make_record(kind="generator", wait_s=0.03, step_s=0.04, gpus_visible=0, gpus_used=0,
                    model_alone=64 / 0.009, input_alone=1e6, input_extra={"main_thread": True}),
    ]
    before = [set(ids(record)) for record in records]
    monkeypatch.setattr(findings, "FINDING_CHECKS", tuple(reversed(findings.FINDING_CHECKS)))
    assert [set(ids(record)) for record in records] == before
    assert "input-too-slow" not in before[0]  # the generator explains the wait
    assert findings.shared_cores(records[3], analyse(records[3])) is not None
    assert "shared-cores" not in before[3] and "generator-on-main-thread" in before[3]


def test_input_too_slow_gives_way_to_a_named_cause():
    record = make_record(kind="tf.data", wait_s=0.03, step_s=0.04, model_alone=64 / 0.009,
                         input_alone=64 / 0.03, input_extra={"tf_data_parallel_map": False,
                                                             "tf_data_prefetch": True})
    found = ids(record)
    assert "sequential-map" in found and "input-too-slow" not in found
    record.input.tf_data_parallel_map = True  # no named cause left: the input is too slow
    assert "input-too-slow" in ids(record)


def test_every_check_is_registered_under_the_id_it_raises(monkeypatch):
    from stoke.diagnosis.judge import findings

    mislabelled = FindingCheck("no-prefetch", findings.generator_on_main_thread)
    monkeypatch.setattr(findings, "FINDING_CHECKS", (mislabelled,))
    with pytest.warns(RuntimeWarning, match="registered as 'no-prefetch'"):
        assert analyse(synthetic.input_bound_generator()).findings == ()


def validating(kind: str = "generator", calls=(2.0, 0.5, 0.5), input_s: float | None = 1.2):
    """A compute-bound run on arrays, 20 steps of 20 ms an epoch, whose fit validates on
    ``kind`` (the first validation traces the test function)."""
    extra = {"steps_per_epoch": 20, "validation_kind": kind, "validation_call_s": list(calls)}
    if input_s is not None:
        extra.update(validation_input_s=input_s, validation_input_batches=31)
    return make_record(kind="arrays", wait_s=0.0002, step_s=0.02, backend="tensorflow",
                       input_extra=extra)


def test_slow_validation_generator_is_named_with_the_epoch_it_costs():
    # the training steps never wait for validation: the verdict cannot see it, the epoch does
    record = validating()
    assert analyse(record).verdict in ("compute-bound", "overhead-bound")
    finding = only(record, "slow-validation")
    # epoch 20 x 20 ms + 500 ms (the traced first call left out); 400 ms of it in the generator
    assert finding.evidence["validation_s_per_epoch"] == pytest.approx(0.5)
    assert finding.evidence["validation_input_s_per_epoch"] == pytest.approx(0.4)
    assert finding.expected_gain == pytest.approx(0.9 / 0.5, abs=0.01)
    assert "Python generator" in finding.message and "56%" in finding.message
    assert "stoke run train.py" in finding.fix
    assert "validation_data=stoke.accelerate(val_generator)" in finding.fix
    assert "validation_data=(x_val, y_val)" in finding.fix
    assert max(map(len, finding.fix.splitlines())) <= 80


def test_no_slow_validation_when_validation_is_arrays_short_or_not_the_generator():
    assert "slow-validation" not in ids(validating(kind="arrays", input_s=None))
    assert "slow-validation" not in ids(validating(calls=(0.5, 0.05, 0.05), input_s=0.1))
    # validation is long, but the generator made its batches in little of that time
    assert "slow-validation" not in ids(validating(input_s=0.3))
    # a third of it, averaged over the validations the first's too (a loaded machine made
    # the second validation slower than the traced first): named
    assert "slow-validation" in ids(validating(calls=(0.26, 0.42), input_s=0.35))
    assert "slow-validation" not in ids(make_record(kind="arrays", wait_s=0.0002, step_s=0.02))


def test_a_grain_dataset_is_told_about_its_own_threads_not_a_generic_loader():
    # a Grain MapDataset read by Keras (GrainDatasetAdapter): threads, not a PyDataset
    record = make_record(kind="grain", wait_s=0.03, step_s=0.04, input_alone=64 / 0.03,
                         model_alone=64 / 0.009)
    finding = only(record, "input-too-slow")
    assert "Grain" in finding.message and "PyDataset" not in finding.fix
    assert "stoke.accelerate(dataset)" in finding.fix
    ast.parse(finding.fix)


@pytest.mark.parametrize("shape", [{"torch_iterable_dataset": True},
                                   {"torch_iterable_dataset": False, "torch_collate_fn": "pad"}])
def test_a_dataloader_stoke_cannot_take_keeps_its_loader_in_the_fix(shape):
    # the red-team's a06 (an IterableDataset) and a18 (a collate_fn padding token lists): the
    # fix stoke.from_sequence(train_loader.dataset).batch(32) raised on both
    record = make_record(kind="torch_dataloader", wait_s=0.03, step_s=0.04, backend="torch",
                         input_alone=900.0, model_alone=5000.0,
                         input_extra={"torch_num_workers": 0, "main_thread": True,
                                      "producer": "trainer-thread", **shape})
    fixes = [f.fix for f in analyse(record).findings if f.category == "input"]
    assert fixes
    for fix in fixes:
        assert "from_sequence(train_loader.dataset)" not in fix and "stoke.accelerate" not in fix
    first = fixes[0]
    assert "persistent_workers=True" in first and "num_workers=2" in first
    assert ("collate_fn=pad" in first) is ("torch_collate_fn" in shape)
    compile(first, "fix", "exec")


def _restarting_loader(persistent, restart_s: float = 0.2, workers: int = 2):
    """4 epochs of 16 steps of 20 ms (15 ms waiting); each later epoch's first step takes
    ``restart_s`` more, three quarters of it waiting: a DataLoader starting its workers."""
    steps = synthetic.make_steps(16, wait_s=0.015, step_s=0.020, batch_size=32, epochs=4)
    shift = 0.0
    for step in steps:
        if step.epoch > 0 and step.step == 16 * step.epoch:
            shift += restart_s
            step.step_s += restart_s
            step.wait_s += 0.75 * restart_s
        step.t_s += shift
    return make_record(kind="torch_dataloader", wait_s=0.015, step_s=0.020, batch_size=32,
                       steps=steps, input_extra={"torch_num_workers": workers,
                                                 "torch_persistent_workers": persistent})


def test_a_dataloader_restarting_its_workers_each_epoch_is_named_with_what_it_costs():
    # the red-team's a19: 65-90 ms at each epoch's first step against 64 steps of 1-2 ms;
    # persistent_workers=True measured x1.45 on the epoch
    finding = only(_restarting_loader(persistent=False), "workers-restart-each-epoch")
    epoch_s = 16 * 0.020 + 0.2
    assert finding.expected_gain == pytest.approx(epoch_s / (16 * 0.020), abs=0.01)
    assert finding.severity == "medium"
    assert finding.evidence["epoch_start_extra_ms"] == pytest.approx(200.0, rel=0.01)
    assert "persistent_workers=True" in finding.fix and "num_workers=2" in finding.fix
    ast.parse(finding.fix)
    assert "200.0 ms" in finding.message and "2 worker process(es)" in finding.message
    # never what the run already does, nor for a loader without workers, nor a restart that
    # costs next to nothing
    assert "workers-restart-each-epoch" not in ids(_restarting_loader(persistent=True))
    assert "workers-restart-each-epoch" not in ids(_restarting_loader(False, workers=0))
    assert "workers-restart-each-epoch" not in ids(_restarting_loader(False, restart_s=0.005))


def _compiling_run(compiles: dict[int, int], watched: bool = True, compile_s: float = 0.3,
                   kind: str = "pydataset", epochs: int = 4):
    """A JAX run of 16 steps of 2 ms an epoch; the steps in ``compiles`` (index: batch size)
    compiled the train step (``compile_s`` each), as the doctor's compile watch records."""
    steps = synthetic.make_steps(count=16, epochs=epochs, wait_s=0.0002, step_s=0.002,
                                 compile_s=0.0, first_wait_s=0.0002)
    for index, size in compiles.items():
        size, count = size if isinstance(size, tuple) else (size, 1)  # (size, compilations)
        steps[index] = replace(steps[index], step_s=0.002 + count * compile_s,
                               compiled_s=count * compile_s, compiles=count, batch_size=size)
    return synthetic.make_record(
        kind=kind, wait_s=0.0002, step_s=0.002, steps=steps, model_alone=64 / 0.0018,
        input_alone=64 / 0.0002, gpus_visible=0, gpus_used=0,
        model_extra={"compiles_watched": watched})


def test_a_step_compiled_again_for_each_batch_shape_is_named_with_what_it_costs():
    # the red-team's s05_ragged_sequence.py (JAX): sequences padded per batch, 7 compiles
    # (six lengths of the full batch, one smaller last batch) in a run of 2 ms steps
    compiles = {0: 64, 1: 64, 3: 64, 4: 64, 6: 64, 8: 64, 15: 40}
    record = _compiling_run(compiles)
    finding = only(record, "step-recompiles")
    fits_s = sum(s.step_s for s in record.steps)
    lengths_s = 5 * 0.3  # the full batch compiled again, 5 times beyond its first
    assert finding.expected_gain == pytest.approx(fits_s / (fits_s - lengths_s), abs=0.01)
    assert finding.severity == "high"
    assert finding.evidence["compiling_steps"] == 7
    assert finding.evidence["other_shapes_s"] == pytest.approx(lengths_s, abs=0.01)
    assert finding.evidence["last_batches_s"] == pytest.approx(0.3, abs=0.01)
    assert "compiled the train step 7 times" in finding.message
    both = fits_s / (fits_s - lengths_s - 0.3)
    assert f"the smaller last batches too (0.3 s): at most ×{both:.2f}" in finding.message
    assert "batch sizes that vary" not in finding.message
    assert "pad_sequences(rows, maxlen=MAXLEN" in finding.fix
    assert "images: resize" in finding.fix
    ast.parse(finding.fix)
    tf_data = only(_compiling_run(compiles, kind="tf.data"), "step-recompiles")
    assert "padded_batch(" in tf_data.fix and "bucket_by_sequence_length" in tf_data.fix
    ast.parse(tf_data.fix)
    # every compiling step is left out of the steady state, however many there are
    diagnosis = analyse(record)
    assert len(diagnosis.steady.outliers_dropped) + len(diagnosis.steady.warmup_dropped) >= 7
    assert diagnosis.bound.step_s == pytest.approx(0.002, rel=0.05)


def test_a_smaller_last_batch_alone_is_named_only_when_it_compiles_often():
    # the first compile and one for the last batch: every run has them
    assert "step-recompiles" not in ids(_compiling_run({0: 64, 15: 40}))
    # one smaller batch size per fit of a few: only the batch size to fix (drop_remainder)
    record = _compiling_run({0: 64, 15: 40, 31: 48, 47: 56}, kind="tf.data")
    finding = only(record, "step-recompiles")
    assert "Only the epochs' smaller last batches had another shape" in finding.message
    assert "drop_remainder=True" in finding.fix
    assert finding.evidence["expected_gain_is_upper_bound"] is False
    # not watched (TensorFlow, torch): not named, whatever the step times
    assert "step-recompiles" not in ids(_compiling_run({0: 64, 1: 64, 3: 64, 4: 64, 6: 64},
                                                       watched=False))
    # compiles too cheap to matter beside the run
    assert "step-recompiles" not in ids(_compiling_run({0: 64, 1: 64, 3: 64, 4: 64},
                                                       compile_s=0.002, epochs=40))


def test_a_pipeline_that_buckets_or_pads_already_is_told_what_it_lacks_not_what_it_does():
    # the red-team's s3 (bucket_by_sequence_length, JAX) was told HIGH and "bucket": it does
    compiles = {0: 64, 1: 64, 3: 64, 4: 64, 6: 64, 8: 64}
    ops = ["GroupByWindowDataset", "MapDataset", "PrefetchDataset", "TensorSliceDataset"]
    record = _compiling_run(compiles, kind="tf.data")
    record = replace(record, input=replace(record.input, tf_data_ops=ops))
    finding = only(record, "step-recompiles")
    assert "the pipeline buckets already: each bucket's length" in finding.message
    assert "The pipeline buckets already" in finding.fix
    assert "pad_to_bucket_boundary=True" in finding.fix and "drop_remainder=True" in finding.fix
    assert "padded_shapes=" in finding.fix
    assert "a few lengths" not in finding.fix
    ast.parse(finding.fix)
    # padded_batch with no padded_shapes: told the argument it lacks
    padded = replace(record, input=replace(record.input, tf_data_ops=[
        "MapDataset", "PaddedBatchDatasetV2", "PrefetchDataset", "TensorSliceDataset"]))
    finding = only(padded, "step-recompiles")
    assert "padded_batch pads each batch to its own longest" in finding.message
    assert finding.fix.startswith("# padded_batch without padded_shapes")
    assert "buckets already" not in finding.fix
    ast.parse(finding.fix)
    # a pipeline that does neither: pad to one length, or bucket (padded to each boundary,
    # else each batch of a bucket is padded to its own longest and compiles again)
    plain = only(_compiling_run(compiles, kind="tf.data"), "step-recompiles")
    assert "bucket_by_sequence_length" in plain.fix and "pad_to_bucket_boundary=True" in plain.fix
    assert "buckets already" not in plain.fix + plain.message


def test_the_headline_names_compiles_that_took_much_of_the_run():
    # the red-team's s1: COMPUTE-BOUND alone in the headline, with 86% of the fit compiling
    from stoke.diagnosis.report._format import headline
    diagnosis = analyse(_compiling_run({0: 64, 1: 64, 3: 64, 4: 64, 6: 64, 8: 64, 15: 40}))
    finding = diagnosis.finding("step-recompiles")
    share = finding.evidence["other_shapes_s"] / finding.evidence["fits_s"]
    assert share >= 0.3
    text = headline(diagnosis)
    assert (f"compiling the step again for new batch shapes took {share:.0%} of the fits' time "
            f"(step-recompiles): at most ×{finding.expected_gain:.2f} with one shape") in text
    # a finding of a smaller share stays out of the headline
    small = analyse(_compiling_run({0: 64, 1: 64, 3: 64, 4: 64}, compile_s=0.006))
    assert small.finding("step-recompiles") is not None
    assert "compiling the step again" not in headline(small)


def test_batch_sizes_that_vary_within_the_epoch_and_several_compiles_a_step_are_counted():
    # the red-team's s5_varbatch.py: sizes 16-48 drawn all through the epoch were read as
    # "smaller last batches" (x4.19, not an upper bound, against x2.94 measured)
    record = _compiling_run({0: 32, 2: 16, 5: 24, 9: 40, 12: 48})
    finding = only(record, "step-recompiles")
    assert "batch sizes that vary within the epoch" in finding.message
    assert finding.evidence["last_batches_s"] == 0.0
    assert finding.evidence["other_shapes_s"] == pytest.approx(4 * 0.3, abs=0.01)
    assert finding.evidence["expected_gain_is_upper_bound"] is True
    assert "every batch as large as the others" in finding.fix
    # steps_per_execution=4: the first step compiled four shapes, one of them avoidable or
    # not: its other three count (the red-team's s1 --spe 4: 17 compiles read as 8)
    spe = only(_compiling_run({0: (64, 4), 1: (64, 2), 3: 64}), "step-recompiles")
    assert spe.evidence["compiles"] == 7 and spe.evidence["compiling_steps"] == 3
    assert spe.evidence["other_shapes_s"] == pytest.approx(6 * 0.3, abs=0.01)
