"""``stoke demo``'s own words: the line that says who used the cores, and a figure from
another machine only as read from a results file (that machine, that date), else none."""

from __future__ import annotations

import json

from stoke.commands.demo import measured_elsewhere, who_uses_the_cores


def test_the_line_names_the_cores_and_who_used_them():
    naive = {"trainer_cores": 1.0, "worker_cores": 0.0, "other_cores": 0.05}
    fed = {"trainer_cores": 0.4, "worker_cores": 1.5, "other_cores": 0.0, "workers": 2,
           "executor": "process"}
    line = who_uses_the_cores(naive, fed, 2)
    assert line.startswith("2 cores.")
    assert "trainer used 1.0" in line and "the model 0.4" in line
    assert "2 process workers 1.5" in line
    assert "busy machine" not in line


def test_the_line_says_when_other_processes_took_the_cores():
    naive = {"trainer_cores": 0.3, "worker_cores": 0.0, "other_cores": 1.6}
    fed = {"trainer_cores": 0.1, "worker_cores": 0.2, "other_cores": 1.5, "workers": 1}
    line = who_uses_the_cores(naive, fed, 2)
    assert "Other processes took up to 1.6 cores" in line
    assert "no more here" in line  # 1 worker on 2 cores: the tuner's measurement said so


def test_a_figure_from_elsewhere_comes_from_a_results_file_with_its_machine_and_date(tmp_path):
    assert measured_elsewhere("jax", tmp_path) is None  # no file: nothing shown
    record = {"backend": "jax", "cores": 16, "date": "2026-11-22 16:03:40",
              "rows": [{"feeder": "model-alone", "share_of_ceiling": 1.0},
                       {"feeder": "stoke", "share_of_ceiling": 0.861}]}
    (tmp_path / "fit_gpu-h100-jax.json").write_text(json.dumps(record))
    line = measured_elsewhere("jax", tmp_path)
    assert line == ("h100, 16 cores, 2026-11-22: stoke fed Keras at 86% of the model-alone "
                    "rate (fit_gpu-h100-jax.json)")
    assert measured_elsewhere("torch", tmp_path) is None  # another backend's file only


def test_the_repository_results_are_read_as_they_are():
    line = measured_elsewhere("jax")
    if line is not None:  # a checkout with benchmarks/results
        assert "fit_gpu-" in line and "cores" in line
