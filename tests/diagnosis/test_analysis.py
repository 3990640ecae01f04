"""The doctor's arithmetic on records with known answers: steady state, verdict, bound,
predicted speedup, overhead, and the JSON form."""

from __future__ import annotations

import json
import math

import pytest

from stoke.diagnosis.judge.analysis import VERDICTS, doctor_overhead_fraction, steady_steps
from stoke.diagnosis.judge.diagnosis import DIAGNOSIS_SCHEMA_VERSION, analyse
from stoke.diagnosis.record import OverheadFacts, ProbeResult, RunRecord, StepSample
from tests.diagnosis import synthetic
from tests.diagnosis.synthetic import make_record, make_steps


def test_input_bound_generator_numbers_are_exact():
    diagnosis = analyse(synthetic.input_bound_generator())
    assert diagnosis.verdict == "input-bound"
    assert diagnosis.input_wait_fraction == pytest.approx(0.75)
    assert diagnosis.throughput == pytest.approx(1600.0)
    # predicted = min(no-wait 64/0.010, model alone 64/0.009) = 6400 samples/s
    assert diagnosis.predicted_throughput == pytest.approx(6400.0)
    assert diagnosis.predicted_speedup == pytest.approx(4.0)
    assert diagnosis.model_alone == pytest.approx(64 / 0.009)
    assert diagnosis.input_alone == pytest.approx(64 / 0.030)
    assert diagnosis.bound.limited_by == "input"
    assert diagnosis.bound.step_s == pytest.approx(0.040)
    assert diagnosis.bound.wait_s == pytest.approx(0.030)
    assert diagnosis.bound.compute_s == pytest.approx(0.010)
    assert diagnosis.bound.model_alone_step_s == pytest.approx(0.009)
    assert diagnosis.bound.input_alone_step_s == pytest.approx(0.030)


def test_model_alone_probe_bounds_the_prediction():
    # The trainer is busy only 2 ms outside the wait (async dispatch), but the model needs
    # 8 ms on the device: the probe, not the no-wait estimate, sets the prediction.
    record = make_record(wait_s=0.030, step_s=0.032, model_alone=64 / 0.008)
    diagnosis = analyse(record)
    assert diagnosis.predicted_throughput == pytest.approx(8000.0)
    assert diagnosis.predicted_speedup == pytest.approx(0.032 / 0.008)


def test_without_probe_prediction_is_step_minus_wait():
    record = make_record(wait_s=0.030, step_s=0.040)
    diagnosis = analyse(record)
    assert diagnosis.model_alone is None
    assert diagnosis.predicted_speedup == pytest.approx(0.040 / 0.010)


def test_synced_steps_correct_an_async_underestimate():
    # Dispatch returns after 1 ms; steps measured after a device sync show 9 ms of compute.
    steps = make_steps(wait_s=0.030, step_s=0.031, synced_every=10, synced_compute_s=0.009)
    diagnosis = analyse(make_record(wait_s=0.030, step_s=0.031, steps=steps))
    # per-sample compute = max(mean over all steps, mean over synced steps) = 9 ms per batch
    assert diagnosis.predicted_throughput == pytest.approx(64 / 0.009)


def test_input_free_window_sets_the_prediction_over_the_steps_after_waits():
    # The steps right after 20 ms waits spend 0.8 ms not waiting, but the run's own loop fed
    # a cached batch takes 0.3 ms, and the model alone 0.05 ms: the window is the answer.
    record = make_record(wait_s=0.020, step_s=0.0208, batch_size=32, model_alone=32 / 0.00005)
    record.probes["input_free"] = ProbeResult(
        samples_per_s=32 / 0.0003, seconds=0.06, batches=200, detail={"s_per_step": 0.0003}
    )
    diagnosis = analyse(record)
    # the window says x69; the 0.5 ms the steps after a wait take beyond it are the input's
    # cost too, counted in the wait (20.5 of 20.8 ms), so the cap 1.3/(1 - wait) allows it
    assert diagnosis.after_wait_s == pytest.approx(0.0005)
    assert diagnosis.input_wait_fraction == pytest.approx(0.0205 / 0.0208)
    assert diagnosis.predicted_speedup == pytest.approx(0.0208 / 0.0003)
    assert not diagnosis.prediction.capped
    assert "slower right after each wait" in diagnosis.verdict_reason
    assert diagnosis.bound.no_wait_throughput == pytest.approx(32 / 0.0003)
    # ... and the model alone still bounds it from below
    record.probes["input_free"].detail["s_per_step"] = 0.00001
    record.probes["model_alone"].samples_per_s = 32 / 0.002
    assert analyse(record).predicted_speedup == pytest.approx(0.0208 / 0.002)


def test_predicted_speedup_never_below_one():
    # A pessimistic probe (slower than the run itself) must not predict a slowdown.
    # (the probe contradicts the run: the prediction falls back on the timed wait, x4)
    diagnosis = analyse(make_record(wait_s=0.030, step_s=0.040, model_alone=100.0))
    assert diagnosis.predicted_speedup == pytest.approx(1 / (1 - 0.75))
    assert diagnosis.predicted_throughput == pytest.approx(4 * diagnosis.throughput)
    # a run that barely waits, with the same probe: x1.0, never below
    diagnosis = analyse(make_record(wait_s=0.001, step_s=0.040, model_alone=100.0))
    assert diagnosis.predicted_speedup == 1.0
    assert diagnosis.predicted_throughput == pytest.approx(diagnosis.throughput)


@pytest.mark.parametrize(
    ("wait_s", "step_s", "verdict"),
    [
        (0.020, 0.100, "input-bound"),  # exactly 20%
        (0.019, 0.100, "partly-input-bound"),
        (0.005, 0.100, "partly-input-bound"),  # exactly 5%
        (0.004, 0.100, "compute-bound"),
        (0.0, 0.100, "compute-bound"),
    ],
)
def test_xprof_thresholds(wait_s, step_s, verdict):
    record = make_record(wait_s=wait_s, step_s=step_s, model_alone=64 / (step_s - wait_s),
                         gpu_kernel_active=[95.0])
    assert analyse(record).verdict == verdict


def test_partly_input_bound():
    diagnosis = analyse(synthetic.partly_input_bound())
    assert diagnosis.verdict == "partly-input-bound"
    assert diagnosis.input_wait_fraction == pytest.approx(0.10)
    assert diagnosis.predicted_speedup == pytest.approx(0.100 / 0.090)
    assert diagnosis.bound.limited_by == "model"


def test_compute_bound():
    diagnosis = analyse(synthetic.compute_bound_tf_data())
    assert diagnosis.verdict == "compute-bound"
    assert diagnosis.input_wait_fraction == pytest.approx(0.02)
    assert diagnosis.predicted_speedup == pytest.approx(0.050 / 0.049)
    assert diagnosis.overhead_signals == ()


def test_overhead_bound_from_fixed_per_step_cost():
    # 4 ms steps of which 3 ms do not depend on the batch size: dispatch fills the step.
    record = make_record(
        wait_s=0.0001, step_s=0.004, batch_size=8, model_alone=8 / 0.0039,
        model_detail={"fixed_s_per_step": 0.003},
    )
    diagnosis = analyse(record)
    assert diagnosis.verdict == "overhead-bound"
    assert "fixed per-step cost" in diagnosis.overhead_signals[0]
    assert diagnosis.bound.limited_by == "overhead"


def test_overhead_bound_when_run_is_far_below_model_alone():
    # The model alone makes 10,000/s on a cached batch; the run 1,600/s and barely waits.
    record = make_record(wait_s=0.0005, step_s=0.040, model_alone=10_000.0, gpu_kernel_active=[95.0])
    diagnosis = analyse(record)
    assert diagnosis.verdict == "overhead-bound"
    assert any("model reaches alone" in s for s in diagnosis.overhead_signals)


def test_overhead_bound_when_gpu_idles_without_input_wait():
    record = make_record(wait_s=0.0005, step_s=0.040, gpu_kernel_active=[18.0])
    diagnosis = analyse(record)
    assert diagnosis.verdict == "overhead-bound"
    assert any("kernel-active" in s for s in diagnosis.overhead_signals)


def test_cpu_model_with_idle_gpu_is_not_overhead_bound():
    # The model runs on the CPU: an idle GPU says nothing about host dispatch.
    record = make_record(wait_s=0.0005, step_s=0.040, gpu_kernel_active=[0.0], gpus_used=0)
    assert analyse(record).verdict == "compute-bound"


def test_warmup_and_compilation_steps_are_dropped():
    steps = make_steps(count=50, wait_s=0.010, step_s=0.050, epochs=2)
    # the last, smaller batch of epoch 0 recompiles: 2.5 s of compute
    last = steps[49]
    steps[49] = StepSample(step=last.step, epoch=0, t_s=last.t_s, wait_s=0.010, step_s=2.51,
                           batch_size=16)
    kept, steady = steady_steps(steps)
    assert steady.warmup_dropped == ((0, 0), (0, 1))
    assert steady.outliers_dropped == ((0, 49),)
    assert steady.steps_used == 97
    assert all(s.step_s == pytest.approx(0.050) for s in kept)
    diagnosis = analyse(make_record(wait_s=0.010, step_s=0.050, steps=steps))
    assert diagnosis.input_wait_fraction == pytest.approx(0.20)
    assert diagnosis.throughput == pytest.approx(64 / 0.050)


def test_many_slow_steps_are_the_run_not_outliers():
    steps = make_steps(count=40, wait_s=0.0, step_s=0.010)
    for i in range(10, 40, 3):  # every third step is slow: 25% of the run
        s = steps[i]
        steps[i] = StepSample(step=s.step, epoch=0, t_s=s.t_s, wait_s=0.0, step_s=1.0, batch_size=64)
    _, steady = steady_steps(steps)
    assert steady.outliers_dropped == ()


def test_short_runs_keep_at_least_half_their_steps():
    kept, steady = steady_steps(make_steps(count=2, wait_s=0.01, step_s=0.02))
    assert steady.steps_used == 1 and len(kept) == 1


def test_no_steps_gives_unknown_and_still_serialises():
    record = make_record(wait_s=0.0, step_s=0.0, steps=[],
                         meta_extra={"error": "ValueError: bad shape", "exit_status": 1})
    diagnosis = analyse(record)
    assert diagnosis.verdict == "unknown"
    assert "ended with an error" in diagnosis.verdict_reason
    assert diagnosis.predicted_speedup is None
    data = json.loads(json.dumps(diagnosis.to_json_dict(), allow_nan=False))
    assert data["verdict"] == "unknown" and data["steps"] == []


def test_doctor_overhead_fraction_sources():
    record = make_record(wait_s=0.01, step_s=0.05)
    assert doctor_overhead_fraction(record) == pytest.approx(0.005)
    record.overhead = OverheadFacts(doctor_s_per_step=0.0005)
    steps = [s.step_s for s in record.steps]
    assert doctor_overhead_fraction(record) == pytest.approx(0.0005 / (sum(steps) / len(steps)))
    record.overhead = OverheadFacts()
    assert doctor_overhead_fraction(record) is None


def test_cpu_and_gpu_summaries():
    record = make_record(wait_s=0.01, step_s=0.05, cores=8, self_pct=250.0, other_pct=300.0,
                         gpu_kernel_active=[90.0, 1.0], gpus_visible=2)
    diagnosis = analyse(record)
    assert diagnosis.cpu.cores == 8
    assert diagnosis.cpu.self_cores == pytest.approx(2.5)
    assert diagnosis.cpu.other_cores == pytest.approx(3.0)
    assert [g.kernel_active_pct for g in diagnosis.gpus] == [90.0, 1.0]


def test_json_dict_has_the_public_schema():
    diagnosis = analyse(synthetic.input_bound_generator())
    data = json.loads(json.dumps(diagnosis.to_json_dict(), allow_nan=False))
    for key in ("schema_version", "verdict", "input_wait_fraction", "throughput",
                "predicted_speedup", "findings", "steps", "system", "probes", "meta",
                "model_alone", "input_alone", "bound", "doctor_overhead_fraction"):
        assert key in data, key
    assert data["schema_version"] == DIAGNOSIS_SCHEMA_VERSION
    assert data["verdict"] in VERDICTS
    assert len(data["steps"]) == 100
    assert set(data["probes"]) == {"model_alone", "input_alone"}
    for finding in data["findings"]:
        assert set(finding) >= {"id", "severity", "message", "fix", "evidence", "expected_gain"}


def test_json_dict_has_no_nan():
    record = make_record(wait_s=0.01, step_s=0.05, meta_extra={"duration_s": float("nan")})
    record.overhead = OverheadFacts(fraction_of_step=float("inf"))
    data = analyse(record).to_json_dict()
    text = json.dumps(data, allow_nan=False)
    assert json.loads(text)["meta"]["duration_s"] is None
    assert json.loads(text)["overhead"]["fraction_of_step"] is None


def test_saved_record_gives_the_same_diagnosis(tmp_path):
    record = synthetic.input_bound_generator()
    record.save(tmp_path / "run.json")
    again = analyse(RunRecord.load(tmp_path / "run.json"))
    first = analyse(record)
    assert again.verdict == first.verdict
    assert math.isclose(again.predicted_speedup, first.predicted_speedup)
    assert [f.id for f in again.findings] == [f.id for f in first.findings]


def test_unmeasurable_tf_data_wait_is_estimated_from_the_probes():
    # next() inside a tf.function: the record shows no wait, but the input alone makes
    # 1,000/s and the model 5,000/s, and the run goes at 1,000/s.
    record = make_record(
        kind="tf.data", wait_s=0.0, step_s=0.064, model_alone=5000.0, input_alone=1000.0,
        backend="tensorflow",
        input_extra={"wait_measured": False, "tf_data_prefetch": True, "tf_data_parallel_map": True},
    )
    diagnosis = analyse(record)
    assert diagnosis.input_wait_source == "probes"
    assert diagnosis.input_wait_fraction == pytest.approx(1 - 1000 / 5000)
    assert diagnosis.verdict == "input-bound"
    assert diagnosis.predicted_speedup == pytest.approx(5.0)
    assert "estimated from the probes" in diagnosis.verdict_reason


def test_unmeasurable_wait_without_prefetch_is_the_whole_input_cost():
    record = make_record(
        kind="tf.data", wait_s=0.0, step_s=0.064, model_alone=5000.0, input_alone=2000.0,
        input_extra={"wait_measured": False, "tf_data_prefetch": False},
    )
    assert analyse(record).input_wait_fraction == pytest.approx(1000 / 2000)


def test_unmeasurable_wait_without_probes_says_so():
    record = make_record(kind="tf.data", wait_s=0.0, step_s=0.05, input_extra={"wait_measured": False})
    diagnosis = analyse(record)
    assert diagnosis.input_wait_source == "unmeasured"
    assert "cannot be timed" in diagnosis.verdict_reason
    # the verdict's reason never reads an unmeasured wait as "input wait is 0.0%"
    assert diagnosis.verdict_reason.startswith("input wait not measured")
    assert "0.0%" not in diagnosis.verdict_reason


def test_unknown_batch_sizes_still_give_a_verdict_and_speedup():
    steps = [StepSample(s.step, s.epoch, s.t_s, s.wait_s, s.step_s, batch_size=0)
             for s in make_steps(wait_s=0.03, step_s=0.04)]
    record = make_record(wait_s=0.03, step_s=0.04, steps=steps)
    record.input.batch_size = None
    diagnosis = analyse(record)
    assert diagnosis.verdict == "input-bound"
    assert diagnosis.throughput is None
    assert diagnosis.predicted_speedup == pytest.approx(4.0)
    json.dumps(diagnosis.to_json_dict(), allow_nan=False)


def test_step_numbers_restarting_each_epoch():
    steps = []
    t = 0.0
    for epoch in range(3):
        for step in range(30):
            step_s = 3.0 if (epoch, step) == (0, 0) else 0.05
            t += step_s
            steps.append(StepSample(step, epoch, t, 0.01, step_s, 64))
    _, steady = steady_steps(steps)
    assert steady.warmup_dropped == ((0, 0), (0, 1))
    assert steady.steps_used == 88


def test_wait_estimated_by_the_probes_is_labelled():
    record = make_record(kind="tf.data", wait_s=0.03, step_s=0.04, model_alone=64 / 0.010,
                         steps=make_steps(wait_s=0.03, step_s=0.04, estimated=True),
                         input_extra={"wait_method": "estimated-from-model-alone"})
    diagnosis = analyse(record)
    assert diagnosis.input_wait_source == "model-alone-estimate"
    assert diagnosis.input_wait_fraction == pytest.approx(0.75)
    assert "model-alone step" in diagnosis.verdict_reason


def test_warmup_flags_from_the_probes_win():
    steps = make_steps(count=40, wait_s=0.01, step_s=0.05, compile_s=0.0, first_wait_s=0.01)
    flagged = [StepSample(s.step, s.epoch, s.t_s, s.wait_s, s.step_s, s.batch_size,
                          warmup=s.step in (0, 1, 2, 20)) for s in steps]
    _, steady = steady_steps(flagged)
    assert steady.warmup_dropped == ((0, 0), (0, 1), (0, 2), (0, 20))


def test_window_between_synced_steps():
    # async dispatch: the 5 steps after the last sync are queued, not done (too short).
    steps = make_steps(count=60, wait_s=0.0, step_s=0.05)
    steps = [StepSample(s.step, s.epoch, s.t_s, s.wait_s, 0.01 if s.step > 50 else s.step_s,
                        s.batch_size, synced=s.step in (10, 20, 30, 40, 50)) for s in steps]
    kept, steady = steady_steps(steps)
    assert [s.step for s in kept] == list(range(11, 51))
    assert steady.unsynced_trimmed == 18
    diagnosis = analyse(make_record(wait_s=0.0, step_s=0.05, steps=steps))
    assert diagnosis.throughput == pytest.approx(64 / 0.05)


def test_no_wait_step_is_the_median_when_the_trainer_waits():
    # After a long wait the trainer's own work runs slower now and then; that goes with the wait.
    steps = make_steps(count=100, wait_s=0.020, step_s=0.021)
    steps = [StepSample(s.step, s.epoch, s.t_s, s.wait_s, s.step_s + (0.002 if s.step % 4 == 0 else 0.0),
                        s.batch_size) for s in steps]
    diagnosis = analyse(make_record(wait_s=0.02, step_s=0.021, steps=steps))
    mean_step = diagnosis.bound.step_s
    assert diagnosis.bound.no_wait_throughput == pytest.approx(64 / 0.001)
    cap = 1.3 / (1 - diagnosis.input_wait_fraction)  # a 93% wait: at most x18.6
    assert diagnosis.predicted_speedup == pytest.approx(min(mean_step / 0.001, cap))


def test_no_wait_step_is_the_mean_when_the_trainer_barely_waits():
    steps = make_steps(count=100, wait_s=0.001, step_s=0.050)
    steps = [StepSample(s.step, s.epoch, s.t_s, s.wait_s, s.step_s + (0.02 if s.step % 4 == 0 else 0.0),
                        s.batch_size) for s in steps]
    diagnosis = analyse(make_record(wait_s=0.001, step_s=0.05, steps=steps))
    bound = diagnosis.bound
    assert diagnosis.predicted_speedup == pytest.approx(bound.step_s / bound.compute_s)


def _in_graph_record(steps, model_alone=64 / 0.010, input_alone=None):
    return make_record(kind="tf.data", wait_s=0.0, step_s=0.0, steps=steps, backend="tensorflow",
                       model_alone=model_alone, input_alone=input_alone,
                       input_extra={"wait_method": "estimated-from-model-alone",
                                    "tf_data_prefetch": True, "tf_data_parallel_map": True})


def _every_probe(record):
    """The input-free window and the CPU per sample: nothing but the wait left to estimate."""
    record.probes["input_free"] = ProbeResult(64 / 0.01, 1.0, 50, {"s_per_step": 0.01,
                                                                   "cpu_s_per_step": 0.01})
    record.probes["input_alone"].detail["cpu_s_per_sample"] = 0.03 / 64
    return record


def test_an_estimated_wait_lowers_the_confidence_of_the_same_numbers():
    timed = analyse(_every_probe(make_record(
        kind="tf.data", wait_s=0.03, step_s=0.04, model_alone=64 / 0.010, input_alone=64 / 0.03,
        backend="tensorflow")))
    estimated = analyse(_every_probe(_in_graph_record(
        make_steps(wait_s=0.03, step_s=0.04, estimated=True), input_alone=64 / 0.03)))
    assert timed.prediction.confidence == "high"
    assert estimated.input_wait_fraction == pytest.approx(timed.input_wait_fraction)
    assert estimated.predicted_speedup == pytest.approx(timed.predicted_speedup)
    assert timed.input_wait_source == "measured" and timed.wait_estimated_steps == 0
    assert estimated.input_wait_source == "model-alone-estimate"
    assert estimated.wait_estimated_steps == estimated.steady.steps_used
    order = ["low", "medium", "high"]
    assert order.index(estimated.prediction.confidence) < order.index(timed.prediction.confidence)
    assert any("estimated as step time minus the model-alone step" in text
               for text in estimated.prediction.unmeasured)


def test_a_timed_wait_counts_as_timed_beside_estimated_ones():
    # one fit timed its pulls (10 ms waits), a second pulled in the graph (30 ms estimated)
    first = make_steps(count=50, wait_s=0.010, step_s=0.040)
    end = first[-1].t_s
    second = [StepSample(50 + i, 1, end + 0.04 * (i + 1), 0.0, 0.040, 64, wait_timed=False,
                         wait_estimated_s=0.030) for i in range(50)]
    steps = first + second
    diagnosis = analyse(_in_graph_record(steps))
    used = diagnosis.steady.steps_used
    assert diagnosis.wait_estimated_steps == 50 < used
    assert diagnosis.input_wait_fraction == pytest.approx((50 * 0.03 + (used - 50) * 0.01) / (used * 0.04))
    assert f"estimated for 50 of {used} steps" in diagnosis.verdict_reason


def test_waits_neither_timed_nor_estimated_are_not_read_as_no_wait():
    # the pull ran in the graph and the model-alone probe did not run: nothing estimated it
    steps = [StepSample(s.step, s.epoch, s.t_s, 0.0, s.step_s, s.batch_size, wait_timed=False)
             for s in make_steps(wait_s=0.03, step_s=0.04)]
    diagnosis = analyse(_in_graph_record(steps, model_alone=None, input_alone=64 / 0.03))
    assert diagnosis.input_wait_source == "unmeasured"
    assert diagnosis.prediction.confidence == "low"
    assert "cannot be timed" in diagnosis.verdict_reason


def test_the_handover_of_a_ready_batch_stays_in_the_predicted_step():
    # A generator on the trainer's thread: each timed next() is the generator's own 11 ms and
    # 1 ms of Keras taking the batch in (tensors, device). A fixed generator still pays that
    # 1 ms every step; the input-free window (8 ms, a batch already taken in) does not.
    record = make_record(
        wait_s=0.012, step_s=0.020, batch_size=32,
        input_extra={"main_thread": True, "wait_method": "timed-next",
                     "generator_s_per_batch": 0.011},
    )
    record.probes["input_free"] = ProbeResult(
        samples_per_s=32 / 0.008, seconds=0.2, batches=100, detail={"s_per_step": 0.008}
    )
    assert analyse(record).predicted_speedup == pytest.approx(0.020 / (0.008 + 0.001))
    # the batches made on another thread (tf.data, workers): the wait is not generator plus
    # handover one after the other, nothing is added
    record.input.main_thread = False
    assert analyse(record).predicted_speedup == pytest.approx(0.020 / 0.008)
    # a generator timed slower than the wait (noise, batches made for the probes) adds nothing
    record.input.main_thread = True
    record.input.generator_s_per_batch = 0.013
    assert analyse(record).predicted_speedup == pytest.approx(0.020 / 0.008)


def test_the_generators_time_counts_once_per_batch_of_a_step_with_steps_per_execution():
    # dict_generator.py on JAX, steps_per_execution=4 (issue 14), in round numbers: each step
    # (one train-function call) takes 4 batches from a generator on the trainer's thread, 1 ms
    # each, and 0.5 ms of Keras taking them in: a 4.5 ms wait in a 10 ms step; the input-free
    # window runs the 4 batches in 5 ms. Counted once, the generator's 1 ms left 3.5 ms of
    # "hand-over" in the predicted step: x1.18 (measured on the twin: x2.05)
    record = make_record(
        wait_s=0.0045, step_s=0.010, batch_size=128,
        input_extra={"main_thread": True, "wait_method": "timed-next",
                     "generator_s_per_batch": 0.001},
    )
    record.model.steps_per_execution = 4
    record.probes["input_free"] = ProbeResult(
        samples_per_s=128 / 0.005, seconds=0.2, batches=40, detail={"s_per_step": 0.005}
    )
    diagnosis = analyse(record)
    assert diagnosis.predicted_speedup == pytest.approx(0.010 / (0.005 + 0.0005))
    # the input's CPU per sample (shared cores): 1 ms for each batch of 32, not for 128 samples
    shared = diagnosis.prediction.shared_cores
    assert shared["input_cpu_source"] == "the run's own next() on the generator"
    assert shared["input_cpu_ms_per_sample"] == pytest.approx(1.0 / 32, rel=0.01)


def test_the_handover_timed_warm_in_the_window_stands_for_the_one_after_each_wait():
    # issue 14, JAX, a tiny model: the wait less the generator's time (0.15 ms) is Keras taking
    # the batch in right after the generator's 19.85 ms, cold; the window timed the same path
    # back to back at 0.01 ms, what a fixed input pays
    record = synthetic.tiny_model_generator()
    diagnosis = analyse(record)
    assert diagnosis.predicted_speedup == pytest.approx(0.0208 / (0.0001 + 0.00001))
    assert diagnosis.predicted_speedup <= 1.3 / (1 - diagnosis.input_wait_fraction)
    assert not diagnosis.prediction.capped
    # a warm figure above the cold one (timed under heavier load): the cold one stands
    record.probes["input_free"].detail["handover_s"] = 0.0005
    assert analyse(record).predicted_speedup == pytest.approx(0.0208 / (0.0001 + 0.00015))
    # a record without it (the window did not time it): the cold one, as before
    del record.probes["input_free"].detail["handover_s"]
    assert analyse(record).predicted_speedup == pytest.approx(0.0208 / (0.0001 + 0.00015))


def _tf_generator_record(kind: str = "generator", generator_pull_s: float | None = 0.00045):
    """fit_generator.py --keras3 on TensorFlow (issue 14), in round numbers: a 15 ms generator
    behind Keras' from_generator pipeline, 15 of each 16 ms step timed as wait by the doctor's
    eager pull (its 0.15 ms floor already off), 1 ms a step with the input made free; that
    pipeline hands a ready batch over in ``generator_pull_s``."""
    extra = {"main_thread": False, "producer": "tf.data-thread",
             "wait_method": "timed-next-outside-graph", "tf_pull_floor_s": 0.00015,
             "generator_s_per_batch": 0.015}
    if generator_pull_s is not None:
        extra["tf_generator_pull_s"] = generator_pull_s
    record = make_record(kind=kind, wait_s=0.015, step_s=0.016, batch_size=32,
                         backend="tensorflow", gpus_used=0, gpus_visible=0, input_extra=extra)
    record.probes["input_free"] = ProbeResult(
        samples_per_s=32 / 0.001, seconds=0.2, batches=200, detail={"s_per_step": 0.001})
    return record


def test_tf_generator_handover_through_from_generator_stays_in_the_predicted_step():
    # a fixed generator still crosses Keras' from_generator pipeline every step: 0.30 ms over
    # the floor the window charges; predicted 16 / (1 + 0.3) ms, not 16 / 1 (the x16 that
    # read x12 on the fixed twin)
    diagnosis = analyse(_tf_generator_record())
    assert diagnosis.predicted_speedup == pytest.approx(0.016 / (0.001 + 0.0003))
    # nor is that hand-over counted as waiting
    assert diagnosis.input_wait_fraction == pytest.approx((0.015 - 0.0003) / 0.016)
    assert "hand over a batch it has ready" in diagnosis.verdict_reason
    # a PyDataset goes through the same pipeline
    assert analyse(_tf_generator_record("pydataset")).predicted_speedup == pytest.approx(
        0.016 / 0.0013)
    # not measured, or at the floor: nothing added
    assert analyse(_tf_generator_record(generator_pull_s=None)).predicted_speedup == (
        pytest.approx(16.0))
    assert analyse(_tf_generator_record(generator_pull_s=0.0001)).predicted_speedup == (
        pytest.approx(16.0))
    # other inputs do not cross from_generator
    record = _tf_generator_record("tf.data")
    assert analyse(record).predicted_speedup == pytest.approx(16.0)


def test_probes_slower_than_the_run_itself_lower_the_confidence():
    # 22% of each 26 ms step waits, yet the model alone, timed when the machine was busier,
    # takes 41 ms (seen on torch, a model on 2 loaded cores): a x1.0 from it would not be a
    # measured "no gain" and would contradict the verdict; the prediction falls back on the
    # timed wait, 1/(1 - wait), and says so.
    record = make_record(wait_s=0.0057, step_s=0.026, batch_size=32, model_alone=32 / 0.041,
                         backend="torch", gpus_used=0)
    record.probes["input_free"] = ProbeResult(
        samples_per_s=32 / 0.0275, seconds=1.0, batches=36, detail={"s_per_step": 0.0275}
    )
    diagnosis = analyse(record)
    assert diagnosis.verdict == "input-bound"
    assert diagnosis.predicted_speedup == pytest.approx(1 / (1 - 0.0057 / 0.026))
    assert diagnosis.prediction.confidence != "high"
    assert any("timed it at 41.00 ms, longer than this run's own 26.00 ms steps" in u
               for u in diagnosis.prediction.unmeasured)
    # probes within the timing noise of the steps, or faster: they agree
    record.probes["model_alone"].samples_per_s = 32 / 0.020
    unmeasured = analyse(record).prediction.unmeasured
    assert not any("longer than this run's own" in u for u in unmeasured)


@pytest.mark.parametrize("run_pull_s, source", [
    (0.015, "the run's own next() on the generator"),  # cheaper than the probe's pulls
    (0.060, "measured"),  # dearer (a wait inside the generator, say): the probe's CPU
])
def test_a_main_thread_generator_costs_the_cores_what_the_run_paid_for_it(run_pull_s, source):
    # the probe's pulls keep their batches for training (fresh memory each), 0.03 s a batch
    record = _every_probe(make_record(
        kind="generator", wait_s=0.03, step_s=0.04, model_alone=64 / 0.010,
        input_alone=64 / 0.03, input_extra={"main_thread": True, "wait_method": "timed-next",
                                            "generator_s_per_batch": run_pull_s}))
    shared = analyse(record).prediction.shared_cores
    assert shared["input_cpu_source"] == source
    expected_ms = min(run_pull_s, 0.03) / 64 * 1e3
    assert shared["input_cpu_ms_per_sample"] == pytest.approx(expected_ms, abs=1e-4)


def test_the_slowdown_after_waits_counts_only_where_there_is_a_wait_and_a_window():
    window = ProbeResult(samples_per_s=32 / 0.0003, seconds=0.06, batches=200,
                         detail={"s_per_step": 0.0003})
    # no window: the steps less their waits stand, nothing is moved into the wait
    record = make_record(wait_s=0.020, step_s=0.0208, batch_size=32)
    assert analyse(record).after_wait_s == 0.0
    assert analyse(record).input_wait_fraction == pytest.approx(0.020 / 0.0208)
    # a run that waits little (6%, partly input-bound): its 9.4 ms not waiting less a 7 ms
    # window (load that changed) is not the input's, and the verdict stays
    quiet = make_record(wait_s=0.0006, step_s=0.010, batch_size=32)
    quiet.probes["input_free"] = ProbeResult(samples_per_s=32 / 0.007, seconds=0.2, batches=20,
                                             detail={"s_per_step": 0.007})
    assert analyse(quiet).after_wait_s == 0.0
    assert analyse(quiet).input_wait_fraction == pytest.approx(0.06)
    assert analyse(quiet).verdict == "partly-input-bound"
    # never more than the timed wait itself: 5 of 10 ms waited, 5 ms not waiting
    half = make_record(wait_s=0.005, step_s=0.010, batch_size=32)
    half.probes["input_free"] = ProbeResult(samples_per_s=32 / 0.001, seconds=0.2, batches=20,
                                            detail={"s_per_step": 0.001})
    assert analyse(half).after_wait_s == pytest.approx(0.004)  # 5 ms less a 1 ms window
    fifth = make_record(wait_s=0.002, step_s=0.010, batch_size=32)  # 8 ms not waiting
    fifth.probes["input_free"] = half.probes["input_free"]
    assert analyse(fifth).after_wait_s == pytest.approx(0.002)  # 7 ms, bounded by the 2 ms wait
    # with both, the prediction and the cap 1.3 / (1 - wait) agree
    record.probes["input_free"] = window
    diagnosis = analyse(record)
    assert diagnosis.predicted_speedup <= 1.3 / (1 - diagnosis.input_wait_fraction)


def test_a_wait_the_model_works_through_is_not_input_wait():
    # JAX, compute-bound (the quiet 2-core benchmark): 5% of 8.8 ms steps timed as waiting
    # for a 0.2 ms generator, while the model alone takes 17.6 ms a step: under asynchronous
    # dispatch the device ran through the wait, and the fixed twin gained x1.01
    record = make_record(wait_s=0.00044, step_s=0.0088, batch_size=256,
                         model_alone=256 / 0.0176, input_alone=256 / 0.0002,
                         input_extra={"main_thread": True, "wait_method": "timed-next"})
    diagnosis = analyse(record)
    assert diagnosis.verdict == "compute-bound"
    assert diagnosis.wait_behind_model_s == pytest.approx(0.00044)
    assert diagnosis.input_wait_fraction == pytest.approx(0.0)
    assert diagnosis.predicted_speedup == 1.0
    assert "model's own work ran" in diagnosis.verdict_reason
    # the model alone (17.6 ms) longer than the whole step (8.8 ms): the probe and the steps
    # disagree, which the prediction still says
    assert diagnosis.prediction.confidence != "high"
    # TensorFlow run eagerly on the CPU dispatches synchronously too
    assert analyse(make_record(wait_s=0.00044, step_s=0.0088, batch_size=256,
                               backend="tensorflow", gpus_used=0, model_alone=256 / 0.0176,
                               input_alone=256 / 0.0002, model_extra={"run_eagerly": True})
                   ).wait_behind_model_s == 0.0
    # torch on the CPU dispatches synchronously: nothing runs through its wait
    assert analyse(make_record(wait_s=0.00044, step_s=0.0088, batch_size=256, backend="torch",
                               gpus_used=0, model_alone=256 / 0.0176,
                               input_alone=256 / 0.0002)).wait_behind_model_s == 0.0
    # only the excess counts: the model alone 9.2 of a 10 ms step with 2 ms waits leaves
    # 0.8 ms exposed, the share the prediction gains (step / model step)
    partly = make_record(wait_s=0.002, step_s=0.010, model_alone=64 / 0.0092,
                         input_alone=64 / 0.001)
    diagnosis = analyse(partly)
    assert diagnosis.wait_behind_model_s == pytest.approx(0.0012)
    assert diagnosis.input_wait_fraction == pytest.approx(0.08)
    assert diagnosis.verdict == "partly-input-bound"
    assert diagnosis.predicted_speedup == pytest.approx(1 / (1 - diagnosis.input_wait_fraction))
    # a model that fits in the time not waiting leaves the wait as timed
    fits = make_record(wait_s=0.002, step_s=0.010, model_alone=64 / 0.008, input_alone=64 / 0.001)
    assert analyse(fits).wait_behind_model_s == 0.0
    assert analyse(fits).input_wait_fraction == pytest.approx(0.2)


def test_a_window_longer_than_the_run_s_own_step_gives_way_to_the_steps():
    # JAX, the tutorial Sequence (loaded 2 cores): 18% of 10 ms steps waiting, the window
    # timed the input-free step at 14.2 ms, the model alone at 6.9 ms: taken as it was, the
    # prediction said x1.00 under a wait of 18% (x1.49 on the fixed twin). The steps less their
    # waits (8.2 ms) stand instead, and the verdict and the headline agree
    record = make_record(wait_s=0.0018, step_s=0.010, batch_size=32, model_alone=32 / 0.0069,
                         input_extra={"main_thread": True, "wait_method": "timed-next"})
    record.probes["input_free"] = ProbeResult(samples_per_s=32 / 0.0142, seconds=2.0,
                                              batches=160, detail={"s_per_step": 0.0142})
    diagnosis = analyse(record)
    assert diagnosis.verdict == "partly-input-bound"
    assert diagnosis.predicted_speedup == pytest.approx(0.010 / 0.0082)
    assert diagnosis.prediction.confidence != "high"
    assert any("window timed it at 14.20 ms" in u for u in diagnosis.prediction.unmeasured)
    # a window shorter than the step stands
    record.probes["input_free"].detail["s_per_step"] = 0.0075
    diagnosis = analyse(record)
    assert diagnosis.predicted_speedup == pytest.approx(0.010 / 0.0075)
    assert not any("window timed it" in u for u in diagnosis.prediction.unmeasured)


def test_a_model_alone_longer_than_the_step_hides_no_wait_the_input_explains():
    # TensorFlow on loaded cores: a 30 ms generator, 71% of 32.7 ms steps waiting, the model
    # alone timed at 33.2 ms under heavier load, the input alone at 43.5 ms a batch: the input
    # is the longer side, the critical path, and the wait stays: input-bound
    record = make_record(wait_s=0.0232, step_s=0.0327, batch_size=128, backend="tensorflow",
                         model_alone=128 / 0.0332, input_alone=128 / 0.0435)
    diagnosis = analyse(record)
    assert diagnosis.wait_behind_model_s == 0.0
    assert diagnosis.verdict == "input-bound"
    assert diagnosis.prediction.confidence != "high"  # the probes disagree, and it says so
    # the same probe with an input alone far faster than the model: the wait ran behind it
    record.probes["input_alone"].samples_per_s = 128 / 0.0002
    assert analyse(record).wait_behind_model_s == pytest.approx(0.0232)
    # the input alone not measured: which side is longer is not known, the wait stays
    del record.probes["input_alone"]
    assert analyse(record).wait_behind_model_s == 0.0


def test_a_model_alone_longer_than_the_step_is_believed_only_if_the_input_cannot_explain_it():
    # TensorFlow, a CPU-heavy generator on loaded cores: 0.9 ms of 3.0 ms steps waiting, the
    # model alone timed at 8.1 ms (longer than the whole step: the probe contradicts the run),
    # the input alone at 3.4 ms a batch: longer than the wait, so the wait may be the input's
    record = make_record(wait_s=0.0009, step_s=0.003, batch_size=32, backend="tensorflow",
                         model_alone=32 / 0.0081, input_alone=32 / 0.0034)
    diagnosis = analyse(record)
    assert diagnosis.wait_behind_model_s == 0.0
    assert diagnosis.verdict == "input-bound"
    # an input alone that makes a batch in less than the wait cannot be what the trainer
    # waited for: the model's time is believed (JAX compute-bound, quiet)
    record.probes["input_alone"].samples_per_s = 32 / 0.0002
    assert analyse(record).wait_behind_model_s == pytest.approx(0.0009)
    assert analyse(record).verdict == "compute-bound"


def test_when_the_probes_disagree_a_tf_data_thread_overlaps_the_timed_wait_s_step():
    # TensorFlow, a generator wrapped in a tf.data thread, loaded cores: 71% of 32.7 ms steps
    # waiting, the window (39 ms) and the model alone (33.2 ms) timed under heavier load. The
    # fallback on the timed wait (x3.4) is bounded by the overlap of the input (43.5 ms a
    # batch) with the step less its wait (9.5 ms), not by the disagreeing probes' (x1.11)
    record = make_record(wait_s=0.0232, step_s=0.0327, batch_size=128, backend="tensorflow",
                         model_alone=128 / 0.0332, input_alone=128 / 0.0435,
                         input_extra={"producer": "tf.data-thread", "main_thread": False})
    record.probes["input_free"] = ProbeResult(samples_per_s=128 / 0.039, seconds=1.0,
                                              batches=25, detail={"s_per_step": 0.039})
    diagnosis = analyse(record)
    assert diagnosis.verdict == "input-bound"
    assert diagnosis.predicted_speedup == pytest.approx(1 / (1 - 0.0232 / 0.0327))
    assert diagnosis.prediction.overlapped_producer["no_wait_step_s"] == pytest.approx(
        0.0327 - 0.0232)


def _sleeping_pool_record(input_cpu_s_per_sample: float | None) -> RunRecord:
    """A PyDataset on 4 worker processes that sleep 100 ms a batch (a remote store), a model
    trained on 2 CPU cores: 27 of 30 ms steps waiting, the model alone 3 ms a step, the
    input alone 25 ms a batch of wall time, yet the run's process tree used 0.12 cores (the
    trainer's 3 ms a step and the sleeping workers' next to nothing)."""
    record = make_record(
        kind="pydataset", wait_s=0.027, step_s=0.030, model_alone=64 / 0.003,
        input_alone=64 / 0.025, self_pct=12.0, other_pct=5.0, gpus_visible=0, gpus_used=0,
        input_extra={"pydataset_workers": 4, "use_multiprocessing": True, "main_thread": False,
                     "producer": "worker-processes"},
    )
    record.probes["input_free"] = ProbeResult(64 / 0.003, 1.0, 300, {"s_per_step": 0.003,
                                                                    "cpu_s_per_step": 0.003})
    if input_cpu_s_per_sample is not None:  # the probe counted its workers' CPU
        record.probes["input_alone"].detail["cpu_s_per_sample"] = input_cpu_s_per_sample
    return record


@pytest.mark.parametrize("input_cpu_s_per_sample", [0.0002 / 64, None],
                         ids=["probe-counted-its-workers", "record-without-it"])
def test_workers_sleeping_on_io_are_not_taken_for_cores_busy(input_cpu_s_per_sample):
    # the input alone's wall time (25 ms a batch) is not its CPU: taken as CPU, the cores
    # looked full (2.1 ms of the trainer and the input per sample on 1.95 cores: x2.09 with
    # stoke here, "limited by the cores") while more sleeping workers keep up on these cores
    diagnosis = analyse(_sleeping_pool_record(input_cpu_s_per_sample))
    prediction = diagnosis.prediction
    assert diagnosis.predicted_speedup == pytest.approx(10.0)
    shared = prediction.shared_cores
    assert shared["input_cpu_ms_per_sample"] < 0.05 * (1e3 * 0.025 / 64)
    assert shared["input_cpu_source"] == (
        "measured" if input_cpu_s_per_sample else "the run's own CPU less the trainer's")
    assert shared["limited_by"] == "the input made free (model and loop)"
    assert prediction.with_stoke_here == pytest.approx(diagnosis.predicted_speedup)
    assert "shared-cores" not in [f.id for f in diagnosis.findings]


def test_workers_busy_on_cpu_still_fill_the_cores():
    # the same pool computing instead: its probe counted 25 ms of CPU a batch (four workers
    # on two cores), and the run used both cores: the cores stay the limit
    record = _sleeping_pool_record(0.025 / 64)
    record.system = synthetic.make_system(record.steps[-1].t_s, self_pct=190.0, other_pct=5.0)
    diagnosis = analyse(record)
    shared = diagnosis.prediction.shared_cores
    assert shared["input_cpu_source"] == "measured"
    assert shared["limited_by"] == "the cores, shared by the trainer and the input's workers"
    assert diagnosis.prediction.with_stoke_here < 2.5


def _epochs_with_a_pool_restart(restart_s: float, gap_s: float, restart_wait_s: float = 0.0):
    """4 epochs of 16 steps, 20 ms each (15 ms of it waiting for the input); each epoch after
    the first starts with a step that also starts a worker pool again (``restart_s`` beyond
    the step, of which ``restart_wait_s`` is timed as wait), after ``gap_s`` between epochs."""
    steps = make_steps(16, wait_s=0.015, step_s=0.020, batch_size=32, epochs=4, synced_every=4)
    shift = 0.0
    for step in steps:
        if step.epoch > 0 and step.step == 16 * step.epoch:  # an epoch's first step
            shift += gap_s + restart_s
            step.step_s += restart_s
            step.wait_s += restart_wait_s
        step.t_s += shift
    return steps


def test_work_that_recurs_once_an_epoch_is_paid_before_and_after_the_fix():
    # pydataset_io.py (issue 14): a PyDataset with use_multiprocessing starts its pool again
    # each epoch (~0.2 s at each epoch's first step, 16 steps an epoch); the steady steps leave
    # that step out, the run and its fixed twin both pay it: x2.35-x5.27 predicted against
    # x1.34-x1.51 measured without it
    plain = analyse(make_record(wait_s=0.015, step_s=0.020, batch_size=32,
                                steps=_epochs_with_a_pool_restart(0.0, 0.0)))
    assert plain.predicted_speedup == pytest.approx(4.0, rel=0.01)  # 20 ms -> 5 ms
    assert plain.prediction.epoch_overhead_s_per_step == 0.0
    record = make_record(wait_s=0.015, step_s=0.020, batch_size=32,
                         steps=_epochs_with_a_pool_restart(0.2, 0.004))
    diagnosis = analyse(record)
    epoch_s = (0.2 + 0.004) / 16  # over the epoch's 16 steps
    assert diagnosis.prediction.epoch_overhead_s_per_step == pytest.approx(epoch_s, rel=0.01)
    assert diagnosis.predicted_speedup == pytest.approx(
        (0.020 + epoch_s) / (0.005 + epoch_s), rel=0.01)
    # the first epoch boundary holds one-time work (compilation): never counted
    one_boundary = make_record(wait_s=0.015, step_s=0.020, batch_size=32,
                               steps=[s for s in _epochs_with_a_pool_restart(0.2, 0.004)
                                      if s.epoch < 2])
    assert analyse(one_boundary).prediction.epoch_overhead_s_per_step == 0.0


def test_a_tf_data_pipeline_starting_over_at_each_boundary_is_the_inputs_work():
    # custom_train_step.py on TensorFlow (issue 14): Keras makes a new iterator over the user's
    # tf.data pipeline when an epoch has taken its batches (in the gap) and when the next starts
    # (in its first step), 10 ms each; its fixed twin (the pipeline cached) does not pay them:
    # counted as epoch work, x15.9 predicted against x29-34 measured
    def boundaries(kind: str, iterator_start_s: float | None, **lengths):
        record = make_record(kind=kind, wait_s=0.015, step_s=0.020, batch_size=32,
                             input_alone=32 / 0.016, backend="tensorflow",
                             steps=_epochs_with_a_pool_restart(0.010, 0.010),
                             input_extra={"num_batches": 16, **lengths})
        if iterator_start_s is not None:
            record.probes["input_alone"].detail["iterator_start_s"] = iterator_start_s
        return analyse(record).prediction.epoch_overhead_s_per_step

    assert boundaries("tf.data", 0.010) == 0.0
    assert boundaries("tf.data", 0.004) == pytest.approx(2 * 0.006 / 16, rel=0.01)
    assert boundaries("tf.data", None) == pytest.approx(0.020 / 16, rel=0.01)
    # a dataset of unknown length (a TFRecord file): one new iterator, as the epoch starts
    assert boundaries("tf.data", 0.010, num_batches=None) == pytest.approx(0.010 / 16, rel=0.01)
    # with steps_per_epoch the iterator runs on from epoch to epoch, made again in the gap
    # only where each epoch reads the whole dataset: that one is the input's
    assert boundaries("tf.data", 0.010, steps_per_epoch=16) == pytest.approx(0.010 / 16, rel=0.01)
    assert boundaries("tf.data", 0.010, steps_per_epoch=8) == pytest.approx(0.020 / 16, rel=0.01)
    # Keras' own pipeline over a generator starts over on a fixed input too: still counted
    assert boundaries("generator", 0.010) == pytest.approx(0.020 / 16, rel=0.01)


def test_a_pause_at_one_later_epoch_boundary_is_not_work_that_recurs():
    # tfdata_py_function.py, quiet (kept record): the doctor's 60 steps were 3 epochs, so one
    # boundary after the first; its first step took 268 ms (47 ms waiting) against 49 ms steps,
    # the first boundary 0.6 ms a step: 11.2 ms a step of "epoch work" on both sides of the
    # fix, x4.19 predicted against x15.6 on the fixed twin. Work that recurs each epoch is at
    # the first boundary too: that one bounds the others
    steps = make_steps(16, wait_s=0.015, step_s=0.020, batch_size=32, epochs=3, synced_every=4)
    shift = 0.0
    for step in steps:
        if step.step == 32:  # the third epoch's first step: a pause, once
            shift += 0.2
            step.step_s += 0.2
        step.t_s += shift
    diagnosis = analyse(make_record(wait_s=0.015, step_s=0.020, batch_size=32, steps=steps))
    assert diagnosis.prediction.epoch_overhead_s_per_step == 0.0
    # the mean step holds the pause (60% waiting): the wait's cap, 1.3 / 0.4; counted as
    # epoch work on both sides, x1.86
    assert diagnosis.predicted_speedup == pytest.approx(1.3 / 0.4, rel=0.01)
    # a restart at each boundary, the first too, is still counted (the test above)
    restarts = make_record(wait_s=0.015, step_s=0.020, batch_size=32,
                           steps=[s for s in _epochs_with_a_pool_restart(0.2, 0.004)
                                  if s.epoch < 3])
    assert restarts.steps[-1].epoch == 2
    assert analyse(restarts).prediction.epoch_overhead_s_per_step == pytest.approx(
        0.204 / 16, rel=0.01)


def test_a_later_boundary_beyond_the_first_ones_holds_a_one_off_not_recurring_work():
    # custom_train_step_jax.py doctored for 60 steps of 20 an epoch (issue 14): the first
    # boundary took 74 ms, the third epoch's first step 0.24 s more than the others, the only
    # boundary counted: read as 11.5 ms a step of recurring work (x4.70 predicted); such
    # steps came at 2 of 4 boundaries of a longer run, and once in the plain runs
    steps = [s for s in _epochs_with_a_pool_restart(0.0, 0.074) if s.epoch < 3]
    for step in steps:
        if step.step == 32:  # the third epoch's first step
            step.step_s += 0.24
        if step.step >= 32:
            step.t_s += 0.24
    diagnosis = analyse(make_record(wait_s=0.015, step_s=0.020, batch_size=32, steps=steps))
    # no more than the first boundary's 74 ms, over the epoch's 16 steps (was 0.244 s)
    assert diagnosis.prediction.epoch_overhead_s_per_step == pytest.approx(0.074 / 16, rel=0.01)


def test_an_epochs_first_wait_is_the_inputs_and_not_recurring_work():
    # a tf.data map refilling at an epoch's start: timed as wait, removed by the input's fix
    # (and a first step the steady steps keep is in their mean: not counted again)
    record = make_record(wait_s=0.015, step_s=0.020, batch_size=32,
                         steps=_epochs_with_a_pool_restart(0.2, 0.0, restart_wait_s=0.2))
    assert analyse(record).prediction.epoch_overhead_s_per_step == 0.0


def _short_epochs_record(restart_s: float | None, **input_extra) -> RunRecord:
    """The tutorial Sequence of 5 batches an epoch on TensorFlow (issue 14, 2 cores), in round
    numbers: 12 epochs; each epoch's first step waits 9 ms and takes 14 ms (Keras' pipeline
    starting over: a new iterator, then its first batch), the others wait 0.07 ms of 1 ms;
    4 ms between epochs; 0.8 ms a step with the input made free."""
    steps, t = [], 0.0
    for number in range(60):
        epoch, first = divmod(number, 5)[0], number % 5 == 0
        wait, step = (0.009, 0.014) if first else (0.00007, 0.001)
        if number == 0:
            step += 0.45  # the trace
        t += step + (0.004 if first and number else 0.0)
        steps.append(StepSample(step=number, epoch=epoch, t_s=t, wait_s=wait, step_s=step,
                                batch_size=32, synced=number % 10 == 9, warmup=number < 2))
    extra = {"main_thread": False, "producer": "tf.data-thread",
             "wait_method": "timed-next-outside-graph", "tf_pull_floor_s": 0.00015,
             "num_batches": 5, **input_extra}
    if restart_s is not None:
        extra["tf_generator_restart_s"] = restart_s
    record = make_record(kind="pydataset", wait_s=0.0, step_s=0.0, batch_size=32, steps=steps,
                         backend="tensorflow", gpus_used=0, gpus_visible=0,
                         input_alone=32 / 0.00077, input_extra=extra)
    record.probes["input_free"] = ProbeResult(
        samples_per_s=32 / 0.0008, seconds=0.1, batches=200, detail={"s_per_step": 0.0008})
    return record


def test_keras_pipeline_starting_over_at_each_epoch_is_the_epochs_work_not_the_inputs():
    # counted as waiting, each epoch's first wait made this run "input-bound" at 78% (x1.00
    # predicted beside it); its twin with the batches made once ran no faster. Keras' own
    # from_generator pipeline, fed a ready batch, took 10 ms to start over on the same cores
    unmeasured = analyse(_short_epochs_record(None))
    assert unmeasured.verdict == "input-bound"
    diagnosis = analyse(_short_epochs_record(0.010))
    assert diagnosis.verdict != "input-bound"
    assert diagnosis.input_wait_fraction < 0.05
    assert diagnosis.predicted_speedup == pytest.approx(1.0, abs=0.1)
    assert "starting over" in diagnosis.verdict_reason
    # the 9 ms stay in the run's time as the epoch's own work, paid before and after a fix
    assert diagnosis.prediction.epoch_overhead_s_per_step > (
        unmeasured.prediction.epoch_overhead_s_per_step + 0.008 / 5)
    # no more than the pipeline's own restart comes off: the rest of a slower first wait is
    # the input's (its first batch, made from nothing)
    partly = analyse(_short_epochs_record(0.004)).input_wait_fraction
    assert diagnosis.input_wait_fraction + 0.3 < partly < unmeasured.input_wait_fraction - 0.1
    # with steps_per_epoch at the Sequence's length Keras makes the new iterator as each
    # epoch ends: the next one's first pull still pays it
    assert analyse(_short_epochs_record(0.010, steps_per_epoch=5)).verdict != "input-bound"
    # shorter, the iterator runs on across epochs: nothing taken off
    assert analyse(_short_epochs_record(0.010, steps_per_epoch=3)).verdict == "input-bound"
    # a PyDataset's workers make the first batch while Keras' (other) pipeline starts: no
    assert analyse(_short_epochs_record(0.010, producer="worker-threads")).verdict == (
        "input-bound")


def test_a_bigger_batch_is_not_promised_the_work_that_recurs_once_an_epoch():
    # the same run: the model alone takes 0.6 ms a batch of its 3.6 ms mean step, but half of
    # that step is work that recurs once an epoch (Keras' pipeline starting over, the
    # epoch's end), which a bigger batch does not shrink: small-batch promised x4.97 (the
    # input alone's rate) on the real run; what is left for it is the steady steps' part
    record = _short_epochs_record(0.010)
    record.probes["model_alone"] = ProbeResult(samples_per_s=32 / 0.0006, seconds=0.4,
                                               batches=600)
    diagnosis = analyse(record)
    small = next(f for f in diagnosis.findings if f.id == "small-batch")
    prediction = diagnosis.prediction
    steady_s = diagnosis.bound.step_s - prediction.epoch_overhead_in_mean_s_per_step
    epoch_s = prediction.epoch_overhead_s_per_step
    assert 0 < prediction.epoch_overhead_in_mean_s_per_step < diagnosis.bound.step_s
    assert 1.0 < small.expected_gain <= (steady_s + epoch_s) / epoch_s
    assert small.expected_gain < 1.5


def _dataloader_record(persistent: bool | None, workers: int = 2, restart_s: float = 1.0):
    # the red-team's a19 in small: each epoch after the first starts with a step that takes
    # restart_s more, 0.15 s of it waiting (a DataLoader starting its workers and waiting for
    # their first batches), no gap between epochs
    return make_record(
        kind="torch_dataloader", wait_s=0.015, step_s=0.020, batch_size=32,
        steps=_epochs_with_a_pool_restart(restart_s, 0.0, restart_wait_s=0.15),
        input_extra={"torch_num_workers": workers, "torch_persistent_workers": persistent})


def test_a_dataloader_starting_its_workers_each_epoch_is_the_inputs_cost_not_recurring_work():
    # the red-team's a19 (a DataLoader, 2 workers, not persistent, JAX): each epoch's first step
    # waited 40-65 ms and took 23-30 ms of work more, starting the workers; read as work that
    # recurs after any fix, x5.6-6.0 predicted against x10.8-16.6 on its fixed twin
    restarting = analyse(_dataloader_record(persistent=False))
    prediction = restarting.prediction
    # the first steps (1.02 s against 20 ms steps) are outliers: left out of the steady mean
    assert prediction.epoch_overhead_s_per_step == 0.0
    assert prediction.epoch_start_input_s_per_step == pytest.approx(1.0 / 16, rel=0.01)
    assert prediction.epoch_start_in_mean_s_per_step == 0.0
    # before the fix: the steady step and the restart, (20 + 62.5) ms; after: the step less its
    # wait, 5 ms: x16.5, which the wait's cap holds to 1.3 / (1 - 0.75) (the restart's work is
    # not a wait: the cap stays conservative)
    assert prediction.capped
    assert restarting.predicted_speedup == pytest.approx(1.3 / 0.25, rel=0.01)
    # a restart the steady steps keep (0.22 s): its share of their mean is known, to be taken
    # off before the restart is added back (3 of the steady steps hold 0.2 s each)
    kept_run = analyse(_dataloader_record(persistent=False, restart_s=0.2))
    kept_restart = kept_run.prediction
    assert kept_restart.epoch_start_input_s_per_step == pytest.approx(0.2 / 16, rel=0.01)
    assert kept_restart.epoch_start_in_mean_s_per_step == pytest.approx(
        3 * 0.2 / kept_run.steady.steps_used, rel=0.01)
    assert kept_restart.epoch_overhead_s_per_step == 0.0
    # the same steps where the workers live on (or another input): the restart's work is
    # read as work that recurs once an epoch, paid after the fix too (as before)
    for other in (_dataloader_record(persistent=True), _dataloader_record(None, workers=0)):
        kept = analyse(other)
        assert kept.prediction.epoch_start_input_s_per_step == 0.0
        epoch_s = kept.prediction.epoch_overhead_s_per_step
        assert epoch_s == pytest.approx(0.85 / 16, rel=0.01)  # the restart's work, not its wait
        assert kept.predicted_speedup == pytest.approx((0.020 + epoch_s) / (0.005 + epoch_s),
                                                       rel=0.01)


def test_window_loop_holding_the_queued_step_is_not_counted_twice():
    # JAX, a PyDataset on the trainer's thread (the wild corpus' pydataset_workers.py, kept
    # record): the run's calls only queued the step (0.33 ms) and the loop blocked on its work
    # (3.31 ms); the window's calls, synced, took the whole step (2.91 ms). Its step of 6.21
    # ms held the step's work twice: x1.15 predicted, x2.01 on the fixed twin.
    record = make_record(wait_s=0.0035, step_s=0.0072, batch_size=32, gpus_used=0,
                         gpus_visible=0, model_alone=32 / 0.00256)
    record.probes["input_free"] = ProbeResult(32 / 0.00621, 0.58, 198, {
        "s_per_step": 0.00621, "call_s_per_step": 0.00291, "call_s_after_wait": 0.00033,
        "loop_s_per_step": 0.00331})
    diagnosis = analyse(record)
    assert diagnosis.predicted_speedup == pytest.approx(0.0072 / (0.00621 - 0.00258))
    # synchronous dispatch (torch on the CPU): a shorter call in the run is noise, not queued
    record.meta.backend = "torch"
    assert analyse(record).predicted_speedup == pytest.approx(0.0072 / 0.00621)


def test_workers_sharing_a_cpu_models_cores_count_the_steps_slowdown_as_wait():
    # JAX, two PyDataset threads augmenting batches beside a model trained on the CPU (the
    # wild corpus' pydataset_threads.py, quiet): steps of 9.1 ms waiting 1.2 ms, 5.0 ms in
    # the input-free window, the input alone 15 ms a batch (its fresh workers beside the
    # training's own). The fixed twin ran x1.69; the timed wait alone said x1.15.
    def record(producer):
        made = make_record(wait_s=0.0012, step_s=0.0091, batch_size=32, gpus_used=0,
                           gpus_visible=0, model_alone=32 / 0.0035, input_alone=32 / 0.015,
                           input_extra={"kind": "pydataset", "producer": producer})
        made.probes["input_free"] = ProbeResult(32 / 0.005, 0.5, 100, {"s_per_step": 0.005})
        return made

    diagnosis = analyse(record("worker-threads"))
    assert diagnosis.verdict == "input-bound"
    assert diagnosis.input_wait_fraction == pytest.approx((0.0012 + 0.0079 - 0.005) / 0.0091)
    assert diagnosis.predicted_speedup == pytest.approx(0.0091 / 0.005)
    assert "2.90 ms a step is the trainer's own work running beyond the 5.00 ms" in (
        diagnosis.verdict_reason)
    # the slower input alone voids nothing
    assert not [u for u in diagnosis.prediction.unmeasured if u.startswith("the input alone")]
    # a tf.data pipeline of TF ops mapping in parallel: its threads share the cores too (the
    # red-team's a13 on TensorFlow: PNGs decoded with AUTOTUNE, 4.7% wait, x1.04 predicted
    # against x2.34-2.53 on its twin)
    parallel = record("native")
    parallel.input.kind, parallel.input.tf_data_parallel_map = "tf.data", True
    assert analyse(parallel).input_wait_fraction == pytest.approx(diagnosis.input_wait_fraction)
    parallel.input.tf_data_parallel_map = False  # one map thread: its wait is the timed one
    assert analyse(parallel).input_wait_fraction == pytest.approx(0.0012 / 0.0091)
    # a generator on the trainer's thread: the wait is the timed one, and the input alone
    # slower than the run's steps says the load changed
    diagnosis = analyse(record("trainer-thread"))
    assert diagnosis.input_wait_fraction == pytest.approx(0.0012 / 0.0091)
    assert diagnosis.predicted_speedup == pytest.approx(1 / (1 - 0.0012 / 0.0091))


@pytest.mark.parametrize("kind", ["arrays", "tf.data"])
def test_an_input_already_in_memory_is_predicted_no_more_than_its_wait(kind):
    # arrays_in_memory.py on TensorFlow: 2% wait, input alone 4x the model (not 5x: no
    # hand-over-only verdict), and the input-free window's cached batch 15% faster than the
    # run's steps (it skips taking a batch in, which every input pays): x1.16-1.27 predicted
    # against x0.88-1.05 measured on its fixed twin. No input is faster than one in memory
    record = make_record(kind=kind, wait_s=0.00004, step_s=0.00186, batch_size=64,
                         model_alone=64 / 0.00109, input_alone=4 * 64 / 0.00160)
    record.probes["input_free"] = ProbeResult(
        samples_per_s=64 / 0.0016, seconds=0.2, batches=100, detail={"s_per_step": 0.0016})
    diagnosis = analyse(record)
    wait = diagnosis.input_wait_fraction
    assert wait < 0.05
    # faster alone than the model: its wait is the hand-over, no fix gains (tfdata_plain.py)
    assert diagnosis.predicted_speedup == 1.0
    # a generator's batches are made by the user's code: the window stands
    record.input.kind = "generator"
    assert analyse(record).predicted_speedup > 1.1


def test_a_run_of_a_few_steps_is_not_judged_with_confidence():
    # the red-team's a07 (a TensorBoard callback failing after the first step on TensorFlow):
    # compute-bound, confidence "high", nothing listed as not measured, from one step
    few = make_record(wait_s=0.0, step_s=0.02, steps=make_steps(4, wait_s=0.0, step_s=0.02),
                      model_alone=64 / 0.019, input_alone=64 / 0.002,
                      meta_extra={"error": "ModuleNotFoundError: tensorboard"})
    diagnosis = analyse(few)
    kept = diagnosis.steady.steps_used
    assert kept < 10
    assert diagnosis.prediction.confidence != "high"
    (note,) = [u for u in diagnosis.prediction.unmeasured if u.startswith("the steady state")]
    assert f"{kept} step(s) timed, the script ended with an error" in note
    many = make_record(wait_s=0.0, step_s=0.02, model_alone=64 / 0.019, input_alone=64 / 0.002)
    assert not [u for u in analyse(many).prediction.unmeasured if u.startswith("the steady")]


def test_a_wait_the_input_made_free_does_not_shorten_is_not_partly_input_bound():
    # the red-team's a20 (a Sequence on TensorFlow): partly-input-bound beside x1.00 predicted
    # (its fixed twin: x0.9-1.0). A 10% wait whose steps the input-free window finds no faster
    record = make_record(wait_s=0.004, step_s=0.04, model_alone=64 / 0.035,
                         input_alone=64 / 0.01)
    record.probes["input_free"] = ProbeResult(64 / 0.04, 0.5, 20, {"s_per_step": 0.04})
    diagnosis = analyse(record)
    assert diagnosis.predicted_speedup < 1.05
    assert diagnosis.verdict in ("compute-bound", "overhead-bound")
    assert "not the input's cost to remove" in diagnosis.verdict_reason
    # the same wait with steps the window finds faster: partly-input-bound, as before
    record.probes["input_free"] = ProbeResult(64 / 0.036, 0.5, 20, {"s_per_step": 0.036})
    assert analyse(record).verdict == "partly-input-bound"


def _cheap_sequence_record(epochs: int) -> RunRecord:
    """The red-team's s05_ragged_sequence.py in numbers: a PyDataset (Keras' one worker, the
    trainer's thread) whose ``__getitem__`` takes 1.2 ms before a 1.15 ms step on 2 CPU cores,
    16 batches an epoch; the script had used 3 s of CPU when fit began."""
    return make_record(
        kind="pydataset", wait_s=0.00115, step_s=0.0023, model_alone=64 / 0.0006,
        input_alone=64 / 0.0012, self_pct=140.0, other_pct=3.0, gpus_visible=0, gpus_used=0,
        steps=make_steps(count=16, epochs=epochs, wait_s=0.00115, step_s=0.0023,
                         compile_s=0.5, first_wait_s=0.0012),
        input_extra={"pydataset_workers": 1, "use_multiprocessing": False, "main_thread": True,
                     "producer": "trainer-thread", "num_batches": 16},
        meta_extra={"trainer_cpu_s_at_first_fit": 3.0},
    )


def test_with_stoke_follows_stoke_accelerates_own_rule_for_when_workers_start():
    """stoke.accelerate makes a Sequence's batches in the trainer until its workers would
    save a second beyond their start-up (stoke.accelerate.worker_start): over s05's 64
    batches of 2.3 ms they never start, and the doctor predicted "with stoke x2.03" where
    stoke.accelerate measured x0.87. Over a run 100 times as long they start early on."""
    short = analyse(_cheap_sequence_record(epochs=4))
    shared = short.prediction.shared_cores
    assert short.predicted_speedup > 1.5  # the input made free would help...
    assert short.prediction.with_stoke_here == 1.0  # ...stoke would not start its workers
    assert shared["accelerate_workers_start_after_batches"] is None
    assert shared["run_batches"] == 64
    assert shared["limited_by"].startswith("stoke.accelerate's own rule")
    longer = shared["accelerate_workers_start_in_a_long_run_after_batches"]
    assert 64 < longer < 6400
    assert shared["speedup_once_workers_run"] > 1.3
    finding = next(f for f in short.findings if f.id == "generator-on-main-thread")
    assert finding.expected_gain == 1.0
    assert "so it would not start them" in finding.fix
    assert f"A run of more than {longer:,} batches starts them" in finding.fix
    assert "shared-cores" not in [f.id for f in short.findings]

    for epochs, named in ((400, True), (2000, False)):  # the first 1,033 batches: 16%, 3%
        long = analyse(_cheap_sequence_record(epochs=epochs))
        shared = long.prediction.shared_cores
        assert shared["accelerate_workers_start_after_batches"] == longer
        steady = shared["speedup_once_workers_run"]
        run_batches = 16 * epochs
        assert long.prediction.with_stoke_here == pytest.approx(
            run_batches / (longer + (run_batches - longer) / steady), abs=0.01)
        assert long.prediction.with_stoke_here > 1.3
        assert shared["limited_by"].startswith("stoke.accelerate's own rule") is named


def test_workers_that_never_pay_are_said_to_never_start_not_once_they_run():
    # the red-team's s5_varbatch.py: the rule's x0.65 with workers, yet "x1.56 once its
    # workers run" and "would save -0.01 s"
    from stoke.diagnosis.judge.analysis import accelerate_start_words
    from stoke.diagnosis.judge.fixes import input_fix
    from stoke.diagnosis.report import terminal_text

    diagnosis = analyse(_cheap_sequence_record(epochs=4))
    shared = diagnosis.prediction.shared_cores
    shared["accelerate_workers_start_in_a_long_run_after_batches"] = None
    shared["accelerate_rule"] = "x0.65 with workers: ..."
    words = accelerate_start_words(shared)
    assert "in a run of any length" in words and "x0.65 with workers" in words
    fix = input_fix(diagnosis.record.input, diagnosis.prediction)
    assert "in a run of any length" in fix and "would save" not in fix
    assert "once its workers run" not in terminal_text(diagnosis)
