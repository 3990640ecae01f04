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
