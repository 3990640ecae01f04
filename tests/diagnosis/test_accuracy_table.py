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
