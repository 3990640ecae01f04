"""The doctor reads the Keras-2 calls the shim translated (``stoke.legacy.shim.conversions()``,
the adopt area's contract) into the record, and the findings diagnose them as the user wrote
them. Until the adopt branch is merged the shim has no ``conversions``: nothing is recorded."""

from __future__ import annotations

from dataclasses import dataclass

from stoke.diagnosis.measure.recorder import DoctorOptions, Recorder
from stoke.diagnosis.run import bootstrap
from stoke.legacy import shim


@dataclass(frozen=True)
class Conversion:  # the contract's fields, as the adopt area's shim defines them
    filename: str
    lineno: int
    call_source: str
    method: str
    input_kind: str
    legacy_arguments: tuple
    accelerated: bool


def test_conversions_reach_the_record_as_plain_json(monkeypatch):
    made = [Conversion("/home/u/train.py", 41, "model.fit_generator(gen(), 20)", "fit_generator",
                       "generator", (("workers", 4),), False)]
    monkeypatch.setattr(shim, "conversions", lambda: list(made), raising=False)
    recorder = Recorder(DoctorOptions(probes=False))
    bootstrap.note_keras2_conversions(recorder)
    recorded = recorder.record.meta["keras2_conversions"]
    assert recorded[0]["method"] == "fit_generator" and recorded[0]["lineno"] == 41
    assert isinstance(recorded[0]["legacy_arguments"], str)  # JSON-safe


def test_a_shim_without_conversions_records_nothing(monkeypatch):
    monkeypatch.delattr(shim, "conversions", raising=False)
    recorder = Recorder(DoctorOptions(probes=False))
    bootstrap.note_keras2_conversions(recorder)
    assert "keras2_conversions" not in recorder.record.meta
