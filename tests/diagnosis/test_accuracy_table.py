"""benchmarks/doctor_accuracy.py's table: how a row is marked (no Keras, no run)."""

from __future__ import annotations

import sys
from pathlib import Path

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
