"""`stoke doctor` from the command line on a script that calls ``fit`` twice (pretraining,
then fine-tuning with another batch size): the terminal, JSON and HTML reports describe each
fit, agree with each other, and never print a batch size averaged over the fits (issue 14).
Properties of the reports, not timings: the figures themselves depend on the machine's load."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import keras
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from doctor_accuracy import child_env  # noqa: E402

from stoke.diagnosis.judge.words import rate  # noqa: E402
from tests.diagnosis.test_report_agreement import FORBIDDEN, html_text  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tests" / "scripts" / "doctor_multi_fit.py"
BACKEND = keras.backend.backend()


def run_doctor(tmp_path: Path, *script_args: str) -> tuple[dict, str, str, str]:
    report, page = tmp_path / "doctor.json", tmp_path / "doctor.html"
    out = subprocess.run(
        [sys.executable, "-m", "stoke", "doctor", "--json", str(report), "--html", str(page),
         "--probe-seconds", "0.3", "--", sys.executable, str(SCRIPT), *script_args],
        env=child_env(BACKEND), capture_output=True, text=True, timeout=600, check=False,
        cwd=str(ROOT),
    )
    assert report.exists(), (out.stdout + out.stderr)[-3000:]
    return (json.loads(report.read_text()), re.sub(r"\s+", " ", out.stdout),
            html_text(page.read_text(encoding="utf-8")), out.stdout)


@pytest.mark.skipif(BACKEND != "jax", reason="the reports render each fit's record the same way on "
                    "every backend: one keeps the suite within CI's time")
def test_pretrain_then_fine_tune_is_reported_per_fit(tmp_path):
    data, terminal, page, stdout = run_doctor(tmp_path, "--mode", "finetune", "--load-ms", "3",
                                      "--steps-per-epoch", "20")
    assert [(f["number"], f["batch_size"], f["epochs"], f["steps"]) for f in data["fits"]] == [
        (1, 16, 2, 40), (2, 4, 1, 20)]
    assert {s["fit"] for s in data["steps"]} == {0, 1}
    for text in (terminal, page):
        assert "fit 1: batch 16, 2 epochs, 40 steps" in text
        assert "fit 2: batch 4, 1 epoch, 20 steps" in text
        assert not re.search(r"batch 1[0-5]\.\d", text), "a batch size averaged over the fits"
        assert "barely waits" not in text
        if data["throughput"] is not None:
            assert rate(data["throughput"]) in text
        for pattern in FORBIDDEN[:6]:
            assert not pattern.search(text), pattern.pattern
    # the report box starts on a line of its own, after the script's last output
    box = stdout.index("╭")
    assert stdout.index("AFTER FIT") < box and stdout[box - 1] == "\n"
