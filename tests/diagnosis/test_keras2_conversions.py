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


def _conversion(call_source: str, input_kind: str, method: str = "fit_generator") -> dict:
    return {"filename": "/home/u/train.py", "lineno": 41, "call_source": call_source,
            "method": method, "input_kind": input_kind, "legacy_arguments": "()",
            "accelerated": False}


def test_the_fix_names_the_scripts_own_sequence():
    """``fit_generator(training_batches, ...)`` over a Sequence: the fix accelerates
    ``training_batches``, not a made-up ``train_dataset``."""
    from stoke.diagnosis.judge.diagnosis import analyse
    from tests.diagnosis.synthetic import make_record

    conversions = [
        _conversion("model.evaluate_generator(test_batches, steps=3)", "sequence",
                    "evaluate_generator"),  # not the training call
        _conversion("model.fit_generator(training_batches, epochs=2, workers=1)", "sequence"),
    ]
    record = make_record(kind="pydataset", wait_s=0.03, step_s=0.04,
                         input_extra={"pydataset_workers": 0, "main_thread": True},
                         meta_extra={"keras2_conversions": conversions})
    finding = analyse(record).finding("generator-on-main-thread")
    assert "stoke.accelerate(training_batches)" in finding.fix, finding.fix
    assert "train_dataset" not in finding.fix
    # workers that cannot keep up: the same name
    record = make_record(
        kind="pydataset", wait_s=0.03, step_s=0.04, model_alone=64 / 0.009, input_alone=1400.0,
        input_extra={"pydataset_workers": 4, "use_multiprocessing": True, "main_thread": False},
        meta_extra={"keras2_conversions": [_conversion(
            "model.fit_generator(generator=self.train_seq, workers=4)", "sequence")]})
    finding = analyse(record).finding("input-too-slow")
    assert "stoke.accelerate(self.train_seq)" in finding.fix, finding.fix
    # not known (a Keras 3 call, no conversion): the generic name
    record = make_record(kind="pydataset", wait_s=0.03, step_s=0.04,
                         input_extra={"pydataset_workers": 0, "main_thread": True})
    assert "stoke.accelerate(train_dataset)" in \
        analyse(record).finding("generator-on-main-thread").fix


def test_the_keras2_generator_fix_names_the_scripts_own_generator():
    from stoke.diagnosis.judge.diagnosis import analyse
    from tests.diagnosis.synthetic import make_record

    record = make_record(kind="generator", wait_s=0.03, step_s=0.04, model_alone=64 / 0.009,
                         input_alone=64 / 0.03, input_extra={"main_thread": True},
                         meta_extra={"keras2_conversions": [_conversion(
                             "model.fit_generator(batch_generator(x, y, 32), 20)",
                             "generator")]})
    finding = analyse(record).finding("generator-on-main-thread")
    assert "stoke run" in finding.fix
    assert "stoke.accelerate(batch_generator(x, y, 32))" in finding.fix, finding.fix


def test_a_sequences_ignored_workers_are_named_not_denied():
    """``fit_generator(seq, workers=6, use_multiprocessing=True)``, read on the trainer's
    thread under Keras 3: the finding says the call's workers start nothing, rather than that
    the user gave none (a real script: movie-genre's keras_script.py)."""
    from stoke.diagnosis.judge.diagnosis import analyse
    from tests.diagnosis.synthetic import make_record

    conversion = _conversion("model.fit_generator(generator=training_generator, "
                             "use_multiprocessing=True, workers=6)", "sequence")
    conversion["legacy_arguments"] = "('workers=6', 'use_multiprocessing=True')"
    record = make_record(kind="pydataset", wait_s=0.03, step_s=0.04,
                         input_extra={"pydataset_workers": 1, "main_thread": True},
                         meta_extra={"keras2_conversions": [conversion]})
    message = analyse(record).finding("generator-on-main-thread").message
    assert "fit() has no workers=6, use_multiprocessing=True" in message, message
    conversion["legacy_arguments"] = "()"  # a call without them: plainly no workers
    message = analyse(record).finding("generator-on-main-thread").message
    assert "with no workers on the trainer's main thread" in message, message
