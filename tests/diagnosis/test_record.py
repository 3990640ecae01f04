"""The run record's typed facts: what the probes write becomes attributes at one boundary, a
misspelled fact fails loudly there (and on the attribute), and the JSON form round-trips."""

from __future__ import annotations

import json
import time

import pytest

from stoke.diagnosis.record import (
    RECORD_SCHEMA_VERSION,
    InputFacts,
    Measurements,
    ModelFacts,
    ProbeResult,
    RunFacts,
    RunRecord,
    StepSample,
    UnknownFactError,
)
from tests.diagnosis import synthetic


def measurements() -> Measurements:
    """What the recorder writes: dicts in the order the facts became known."""
    return Measurements(
        meta={"backend": "jax", "script": "train.py", "error": None, "probe_notes": {}},
        steps=[StepSample(0, 0, 0.1, 0.02, 0.1, 32)],
        input={"kind": "generator", "batch_size": 32, "tf_data_prefetch": None, "main_thread": True},
        model={"class": "Sequential", "run_eagerly": False, "host_ops": []},
        env={"gpus_visible": 0, "gpus_used": 0},
        probes={"model_alone": ProbeResult(1000.0, 1.0, 10, {"s_per_step": 0.03})},
        overhead={"doctor_s_total": 0.01},
    )


def test_measurements_become_typed_facts():
    record = RunRecord.from_measurements(measurements())
    assert record.input.kind == "generator" and record.input.batch_size == 32
    assert record.input.main_thread is True and record.input.tf_data_prefetch is None
    assert record.model.class_name == "Sequential"  # "class" in the JSON form
    assert record.meta.backend == "jax" and record.env.gpus_visible == 0
    assert record.overhead.doctor_s_total == 0.01
    assert record.input.dtypes is None  # not measured: None, not a KeyError


@pytest.mark.parametrize("group", ["meta", "input", "model", "env", "overhead"])
def test_a_misspelled_key_from_the_probes_fails_loudly(group):
    written = measurements()
    getattr(written, group)["batch_sise"] = 1
    with pytest.raises(UnknownFactError, match="batch_sise"):
        RunRecord.from_measurements(written)


def test_the_error_suggests_the_fact_meant():
    with pytest.raises(UnknownFactError, match=r"'batch_sise' \(did you mean 'batch_size'\?\)"):
        InputFacts.from_dict({"kind": "arrays", "batch_sise": 64})


def test_a_misspelled_attribute_fails_loudly():
    facts = InputFacts(kind="arrays")
    with pytest.raises(UnknownFactError, match="main_thraed"):
        facts.main_thraed = True
    with pytest.raises(AttributeError):
        _ = facts.main_thraed
    with pytest.raises(TypeError):
        ModelFacts(run_eagerlly=True)


def test_an_unknown_probe_fails_loudly():
    written = measurements()
    written.probes["model_alnoe"] = ProbeResult(1.0, 1.0, 1)
    with pytest.raises(UnknownFactError, match="model_alnoe"):
        RunRecord.from_measurements(written)


def test_an_unknown_probe_note_or_record_part_fails_loudly():
    written = measurements()
    written.meta["probe_notes"] = {"input_fre": "not run"}
    with pytest.raises(UnknownFactError, match="input_fre"):
        RunRecord.from_measurements(written)
    data = synthetic.input_bound_generator().to_dict()
    data["stpes"] = []
    with pytest.raises(UnknownFactError, match="stpes"):
        RunRecord.from_dict(data)


def test_a_saved_record_loads_back_unchanged(tmp_path):
    path = tmp_path / "record.json"
    record = RunRecord.from_measurements(measurements())
    record.save(path)
    data = json.loads(path.read_text())
    # the keys the probes wrote, in their order, explicit None included
    assert list(data["input"]) == ["kind", "batch_size", "tf_data_prefetch", "main_thread"]
    assert data["model"]["class"] == "Sequential"
    assert data["meta"]["error"] is None
    again = RunRecord.load(path)
    assert again == record
    assert json.dumps(again.to_dict()) == json.dumps(data)


def test_facts_set_after_loading_are_saved():
    record = synthetic.input_bound_generator()
    record.input.tf_data_py_function = True
    record.meta.probe_notes = {"input_free": "not run"}
    data = record.to_dict()
    assert data["input"]["tf_data_py_function"] is True
    assert data["meta"]["probe_notes"] == {"input_free": "not run"}
    assert RunRecord.from_dict(data).input.tf_data_py_function is True


def test_a_record_with_an_unknown_fact_does_not_load():
    data = synthetic.input_bound_generator().to_dict()
    data["env"]["gpus_vissible"] = 1
    with pytest.raises(UnknownFactError, match="gpus_vissible"):
        RunRecord.from_dict(data)


def test_a_newer_schema_says_upgrade():
    data = RunRecord(meta=RunFacts(backend="jax")).to_dict()
    data["schema_version"] = RECORD_SCHEMA_VERSION + 1
    with pytest.raises(ValueError, match="Upgrade stoke"):
        RunRecord.from_dict(data)


def test_the_recorder_hands_over_a_typed_record_and_rejects_a_misspelled_write():
    from stoke.diagnosis.measure.recorder import DoctorOptions, Recorder

    recorder = Recorder(DoctorOptions(probes=False), argv=["train.py"], script="train.py")
    recorder.record.input["kind"] = "generator"
    record = recorder.finish()
    assert isinstance(record, RunRecord)
    assert record.meta.script == "train.py" and record.meta.exit_status == "completed"
    assert record.input.kind == "generator"

    recorder = Recorder(DoctorOptions(probes=False), argv=["train.py"], script="train.py")
    recorder.record.input["knid"] = "generator"
    with pytest.raises(UnknownFactError, match="knid"):
        recorder.finish()


def test_a_schema_1_record_gets_its_in_graph_estimate_moved_out_of_wait_s():
    # schema 1 wrote the TensorFlow in-graph estimate into wait_s: schema 2 keeps wait_s for
    # what was timed and the estimate apart
    data = synthetic.make_record(kind="tf.data", wait_s=0.03, step_s=0.04, model_alone=6400.0,
                                 input_extra={"wait_method": "estimated-from-model-alone"}).to_dict()
    data["schema_version"] = 1
    for step in data["steps"]:
        del step["wait_timed"], step["wait_estimated_s"]
    record = RunRecord.from_dict(data)
    assert record.schema_version == RECORD_SCHEMA_VERSION
    assert all(not s.wait_timed and s.wait_s == 0.0 for s in record.steps)
    assert record.steps[5].wait_estimated_s == pytest.approx(0.03)
    assert record.steps[5].wait_used_s == pytest.approx(0.03)
    # a timed record of schema 1 is unchanged
    timed = synthetic.input_bound_generator().to_dict()
    timed["schema_version"] = 1
    assert RunRecord.from_dict(timed).steps == synthetic.input_bound_generator().steps


def test_an_estimated_wait_round_trips_apart_from_the_timed_one():
    steps = [StepSample(0, 0, 0.1, 0.0, 0.1, 32, wait_timed=False, wait_estimated_s=0.07),
             StepSample(1, 0, 0.2, 0.0, 0.1, 32, wait_timed=False),
             StepSample(2, 0, 0.3, 0.02, 0.1, 32)]
    record = RunRecord.from_dict(json.loads(json.dumps(RunRecord(steps=steps).to_dict())))
    assert record.steps == steps
    assert [s.wait_used_s for s in record.steps] == [0.07, 0.0, 0.02]


def test_an_in_graph_wait_is_the_step_less_the_probes_call_of_as_many_batches():
    # steps_per_execution=8: the model-alone probe's call trains on 8 batches too, in Keras'
    # compiled loop (batches_per_call); one that ran 1 batch a call is scaled to the step's 8
    from stoke.diagnosis.measure.recorder import DoctorOptions, Recorder

    for per_call, call_s in ((8, 0.032), (1, 0.004)):
        recorder = Recorder(DoctorOptions(probes=False, warmup_steps=0), argv=["t.py"],
                            script="t.py")
        recorder.clock.waits_timed = False
        recorder.clock.restart()
        time.sleep(0.05)
        recorder.clock.end_step(time.perf_counter(), synced=False, sync_s=0.0)
        recorder.record.input["wait_method"] = "estimated-from-model-alone"
        recorder.record.model["steps_per_execution"] = 8
        recorder.record.probes["model_alone"] = ProbeResult(
            512 / call_s, 1.0, 10, {"s_per_step": call_s, "batches_per_call": per_call})
        (step,) = recorder.finish().steps
        assert step.wait_estimated_s == pytest.approx(step.step_s - 0.032), per_call


def test_the_recorder_estimates_only_the_waits_it_could_not_time():
    from stoke.diagnosis.measure.recorder import DoctorOptions, Recorder

    recorder = Recorder(DoctorOptions(probes=False, warmup_steps=0), argv=["t.py"], script="t.py")
    clock = recorder.clock
    clock.restart()
    time.sleep(0.006)
    clock.note_batch(wait_s=0.005, samples=32)  # a first fit, its pull timed
    clock.end_step(time.perf_counter(), synced=False, sync_s=0.0)
    clock.waits_timed = False  # a second fit pulls in the graph
    for _ in range(3):
        time.sleep(0.002)
        clock.end_step(time.perf_counter(), synced=False, sync_s=0.0)
    recorder.record.input["wait_method"] = "estimated-from-model-alone"
    recorder.record.model["steps_per_execution"] = 1
    recorder.record.probes["model_alone"] = ProbeResult(32 / 0.001, 1.0, 10, {"s_per_step": 0.001})
    record = recorder.finish()
    timed, *in_graph = record.steps
    assert timed.wait_timed and timed.wait_s == pytest.approx(0.005)
    assert timed.wait_estimated_s is None
    for step in in_graph:
        assert not step.wait_timed and step.wait_s == 0.0
        assert step.wait_estimated_s == pytest.approx(step.step_s - 0.001)
