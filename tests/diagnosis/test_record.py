"""The run record's typed facts: what the probes write becomes attributes at one boundary, a
misspelled fact fails loudly there (and on the attribute), and the JSON form round-trips."""

from __future__ import annotations

import json

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
