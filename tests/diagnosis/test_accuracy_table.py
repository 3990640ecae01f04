"""benchmarks/doctor_accuracy.py's table: how a row is marked (no Keras, no run)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from doctor_accuracy import row_mark  # noqa: E402


def test_a_row_whose_finding_says_why_it_predicts_nothing_is_marked_so():
    assert row_mark({"within_tolerance": True, "predicted_speedup": 2.0}) == "ok"
    assert row_mark({"within_tolerance": False, "predicted_speedup": 2.0}) == "OFF"
    assert row_mark({"within_tolerance": False, "predicted_speedup": None}) == "OFF"
    assert row_mark({"within_tolerance": False, "predicted_speedup": None,
                  "not_predicted_why": "the step cannot be compiled"}).startswith("NOT PREDICTED")


def test_a_wild_twin_is_timed_over_more_epochs_and_runs_first_every_other_round(monkeypatch):
    """A corpus row's measured speedup: both sides timed over WILD_TIMED_EPOCHS epochs, the
    twin first every other round (session 9: tfdata_plain's twin, the same script, measured
    x0.48 from two runs a side of two steady epochs each, the plain side always first)."""
    import doctor_accuracy

    report = {"findings": [], "predicted_speedup": 1.0, "verdict": "compute-bound"}
    monkeypatch.setattr(doctor_accuracy, "run_under_doctor",
                        lambda *args, **kwargs: (report, None, ""))
    calls = []
    # each side's runs, in the order they come: one slow run of the twin among three
    step_s = {"plain": iter([2.0, 2.1, 1.9]), "fixed": iter([1.0, 3.0, 1.05])}

    def run_plain(backend, script_args, timeout=300, script=None):
        side = "fixed" if "--fixed" in script_args else "plain"
        calls.append((side, script_args))
        return {"step_s": next(step_s[side])}

    monkeypatch.setattr(doctor_accuracy, "run_plain", run_plain)
    row = doctor_accuracy.measure_wild("tensorflow", "tfdata_plain.py", [], rounds=3, quick=False)
    assert [side for side, _ in calls] == ["plain", "fixed", "fixed", "plain", "plain", "fixed"]
    epochs = ["--epochs", str(doctor_accuracy.WILD_TIMED_EPOCHS)]
    assert all(args[-2:] == epochs for _, args in calls)
    assert row["measured_speedup"] == 2.0 / 1.05  # the medians: the slow twin run left out
    assert row["measured_speedup_fastest"] == 1.9 / 1.0
    assert row["spread"]["fixed"] == 3.0 / 1.0 - 1.0


def test_a_plain_runs_step_is_its_steady_epochs_median_so_one_event_does_not_decide_it():
    from doctor_accuracy import steady_step_s

    # custom_train_step_jax.py's fixed twin, 20 steps an epoch, measured on 2 cores: one epoch
    # of 494 ms among 26-80 ms ones (the first epoch, compilation, is never counted)
    epochs = [0.843, 0.494, 0.040, 0.080, 0.051, 0.072]
    mean_step_s = sum(epochs[1:]) / (5 * 20)
    step_s = steady_step_s({"step_s": mean_step_s, "epoch_s": epochs})
    assert step_s == pytest.approx(0.072 / 20)  # the median epoch, over its 20 steps
    # work that recurs every epoch is in every epoch: it stays
    assert steady_step_s({"step_s": 0.5 / 20, "epoch_s": [2.0, 0.5, 0.5, 0.5]}) == pytest.approx(0.5 / 20)
    # a run that recorded no epochs keeps its own figure
    assert steady_step_s({"step_s": 0.01}) == 0.01


def test_more_doctor_rounds_run_the_doctor_among_the_plain_runs_and_take_the_median(monkeypatch):
    """--doctor-rounds: the doctor again at the start of the later rounds, between the plain
    runs, and the row's prediction the median of its runs' (one doctor run is one moment of a
    machine whose speed drifts; the plain runs' median is spread over minutes)."""
    import doctor_accuracy

    predictions = iter([1.0, 1.6, 1.3])
    order = []

    def run_under_doctor(*args, **kwargs):
        order.append("doctor")
        return {"findings": [], "predicted_speedup": next(predictions),
                "verdict": "input-bound"}, None, ""

    def run_plain(backend, script_args, timeout=300, script=None):
        order.append("fixed" if "--fixed" in script_args else "plain")
        return {"step_s": 0.5 if "--fixed" in script_args else 0.65}

    monkeypatch.setattr(doctor_accuracy, "run_under_doctor", run_under_doctor)
    monkeypatch.setattr(doctor_accuracy, "run_plain", run_plain)
    row = doctor_accuracy.measure_wild("tensorflow", "sequence_float64.py", [], rounds=4,
                                       quick=False, doctor_rounds=3)
    assert order == ["doctor", "plain", "fixed", "doctor", "fixed", "plain",
                     "doctor", "plain", "fixed", "fixed", "plain"]
    assert row["predicted_rounds"] == [1.0, 1.6, 1.3]
    assert row["predicted_speedup"] == 1.3
    assert row["relative_error"] == pytest.approx(1.3 / 1.3 - 1.0)
    assert row["spread"]["predicted"] == pytest.approx(0.6)
    # one doctor run (the default): its prediction, no spread
    predictions = iter([1.6])
    row = doctor_accuracy.measure_wild("tensorflow", "sequence_float64.py", [], rounds=2,
                                       quick=False)
    assert row["predicted_speedup"] == 1.6 and row["spread"]["predicted"] is None
