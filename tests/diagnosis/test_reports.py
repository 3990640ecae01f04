"""The renderers: terminal text, the JSON schema, and the single-file HTML report - escaped,
self-contained, and drawn for real by headless Chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import xml.etree.ElementTree as ElementTree

import numpy as np
import pytest

from stoke.diagnosis.judge.diagnosis import DIAGNOSIS_SCHEMA_VERSION, analyse
from stoke.diagnosis.report import render_html, terminal_text, to_json, write_html, write_json
from stoke.diagnosis.report.html import COMPUTE_COLOUR, WAIT_COLOUR
from tests.diagnosis import synthetic
from tests.diagnosis.synthetic import make_record

MALICIOUS = "<script>alert(1)</script>.py"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def malicious_record():
    """Every string the user's run can put in the record, made hostile."""
    return make_record(
        kind="generator", wait_s=0.03, step_s=0.04, model_alone=64 / 0.009, input_alone=2000.0,
        gpu_kernel_active=[25.0],
        input_extra={"main_thread": True, "dtypes": {"<b>x</b>": "float64"}},
        model_extra={"host_ops": ["<img src=x onerror=alert(2)>"]},
        meta_extra={
            "script": MALICIOUS,
            "argv": [MALICIOUS, "--name=<iframe src=//evil>"],
            "error": "ValueError: <script>alert(3)</script> & \"quotes\"",
            "hostname": "<svg onload=alert(4)>",
        },
    )


# -- terminal ----------------------------------------------------------------------------------


def test_terminal_shows_verdict_numbers_and_fix():
    text = terminal_text(analyse(synthetic.input_bound_generator()), width=110)
    assert "INPUT-BOUND" in text
    assert "1,600 samples/s" in text
    assert "75.0% of step time" in text
    assert "×4.00" in text
    assert "7,111 samples/s" in text  # model alone
    assert "Doctor overhead" in text
    assert "generator-on-main-thread" in text
    assert "stoke.accelerate(train_generator)" in text


@pytest.mark.parametrize(
    ("record", "verdict"),
    [
        (synthetic.compute_bound_tf_data(), "COMPUTE-BOUND"),
        (synthetic.partly_input_bound(), "PARTLY-INPUT-BOUND"),
    ],
)
def test_terminal_verdicts(record, verdict):
    assert verdict in terminal_text(analyse(record))


def test_terminal_prints_user_text_literally():
    record = make_record(wait_s=0.03, step_s=0.04, meta_extra={"script": "[bold red]x[/].py"})
    assert "[bold red]x[/].py" in terminal_text(analyse(record))


def test_terminal_with_colour_and_no_steps():
    record = make_record(wait_s=0.0, step_s=0.0, steps=[], meta_extra={"error": "boom"})
    text = terminal_text(analyse(record), colour=True)
    assert "UNKNOWN" in text and "boom" in text and "\x1b[" in text


# -- JSON --------------------------------------------------------------------------------------


def test_json_report_round_trip(tmp_path):
    diagnosis = analyse(synthetic.input_bound_generator())
    path = write_json(diagnosis, tmp_path / "doctor.json")
    data = json.loads(path.read_text())
    assert data == json.loads(to_json(diagnosis))
    assert data["schema_version"] == DIAGNOSIS_SCHEMA_VERSION
    assert data["verdict"] == "input-bound"
    assert data["input_wait_fraction"] == pytest.approx(0.75)
    assert data["throughput"] == pytest.approx(1600.0)
    assert data["predicted_speedup"] == pytest.approx(4.0)
    assert data["findings"][0]["id"] == "generator-on-main-thread"
    assert data["findings"][0]["severity"] == "high"
    assert "stoke.accelerate(" in data["findings"][0]["fix"]
    assert isinstance(data["findings"][0]["evidence"], dict)
    first = data["findings"][0]
    assert first["expected_gain"] == pytest.approx(
        first["evidence"]["speedup_with_stoke_on_these_cores"])
    assert len(data["steps"]) == 100 and {"wait_s", "step_s", "batch_size"} <= set(data["steps"][0])
    assert data["system"] and "cpu_other_pct" in data["system"][0]
    assert data["probes"]["model_alone"]["samples_per_s"] == pytest.approx(64 / 0.009)
    assert data["meta"]["script"] == "train.py"


# -- HTML --------------------------------------------------------------------------------------


def test_html_escapes_everything_from_the_run():
    page = render_html(analyse(malicious_record()))
    for raw in ("<script", "<img", "<iframe", "<svg onload", "<b>x</b>", "onerror=alert(2)>"):
        assert raw not in page, raw
    assert "&lt;script&gt;alert(1)&lt;/script&gt;.py" in page
    assert "&lt;img src=x onerror=alert(2)&gt;" in page
    assert "ValueError: &lt;script&gt;alert(3)&lt;/script&gt; &amp; &quot;quotes&quot;" in page


def test_html_is_self_contained():
    page = render_html(analyse(malicious_record()))
    # no tag loads anything (escaped user text such as "&lt;img src=x" is not a tag)
    external = re.findall(r"<[^>]*\b(?:src|href)\s*=|@import|url\(|<link|<script", page, flags=re.I)
    assert external == []
    addresses = set(re.findall(r"https?://[^\s\"'<>]+", page))
    assert addresses <= {"http://www.w3.org/2000/svg"}


def test_html_plots_are_valid_svg():
    for record in (synthetic.input_bound_generator(), malicious_record(),
                   make_record(wait_s=0.0, step_s=0.0, steps=[])):
        page = render_html(analyse(record))
        charts = re.findall(r"<svg .*?</svg>", page, flags=re.S)
        assert len(charts) == 3
        for chart in charts:
            ElementTree.fromstring(chart)  # well-formed: every user string escaped


def test_html_step_chart_bins_long_runs():
    steps = synthetic.make_steps(count=5000, wait_s=0.01, step_s=0.02)
    page = render_html(analyse(make_record(wait_s=0.01, step_s=0.02, steps=steps)))
    step_chart = re.findall(r"<svg .*?</svg>", page, flags=re.S)[0]
    assert step_chart.count(f"fill=\"{WAIT_COLOUR}\"") <= 201


@pytest.mark.skipif(
    CHROMIUM is None,
    reason="headless Chromium is not installed (Debian: apt-get install -y chromium), so the "
    "HTML report cannot be rendered",
)
def test_html_report_renders_in_headless_chromium(tmp_path):
    image_module = pytest.importorskip("PIL.Image")
    page = write_html(analyse(malicious_record()), tmp_path / "report.html")
    screenshot = tmp_path / "report.png"
    result = subprocess.run(
        [
            CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}",
            f"--screenshot={screenshot}", "--window-size=1200,2000", page.as_uri(),
        ],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert screenshot.exists(), f"Chromium wrote no screenshot:\n{result.stderr[-2000:]}"
    image = image_module.open(screenshot).convert("RGB")
    assert image.size == (1200, 2000)
    pixels = np.asarray(image, dtype=np.int16).reshape(-1, 3)
    non_white = np.count_nonzero(pixels.min(axis=1) < 235)
    assert non_white / len(pixels) > 0.05, "the page looks blank"
    distinct = len(np.unique(pixels, axis=0))
    assert distinct > 1000, f"only {distinct} colours: no text and plots drawn"

    def near(colour: str) -> int:
        target = np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)], dtype=np.int16)
        return int(np.count_nonzero(np.abs(pixels - target).max(axis=1) <= 12))

    assert near(WAIT_COLOUR) > 2000, "the waiting bars of the step chart are not drawn"
    assert near(COMPUTE_COLOUR) > 1000, "the computing bars of the step chart are not drawn"


def test_html_system_chart_decimates_long_runs():
    record = make_record(wait_s=0.01, step_s=0.02, gpu_kernel_active=[50.0])
    record.system = synthetic.make_system(3000.0, gpu_kernel_active=[50.0], every_s=0.25)
    system_chart = re.findall(r"<svg .*?</svg>", render_html(analyse(record)), flags=re.S)[2]
    for points in re.findall(r"<polyline points=\"([^\"]*)\"", system_chart):
        assert len(points.split()) <= 600


def test_every_report_says_when_the_wait_is_an_estimate():
    steps = synthetic.make_steps(wait_s=0.03, step_s=0.04, estimated=True)
    record = make_record(kind="tf.data", wait_s=0.0, step_s=0.0, steps=steps, backend="tensorflow",
                         model_alone=64 / 0.010, input_alone=64 / 0.03,
                         input_extra={"wait_method": "estimated-from-model-alone"})
    diagnosis = analyse(record)
    text = terminal_text(diagnosis, width=200)
    assert "75.0% of step time (estimated: step time minus the model-alone step" in text
    assert "waiting for input (estimated)" in text
    assert "confidence" in text
    data = json.loads(to_json(diagnosis))
    assert data["input_wait_source"] == "model-alone-estimate"
    assert data["input_wait_estimated_steps"] == diagnosis.steady.steps_used
    assert data["prediction"]["confidence"] != "high"
    assert data["steps"][5]["wait_timed"] is False and data["steps"][5]["wait_s"] == 0.0
    assert data["steps"][5]["wait_estimated_s"] == pytest.approx(0.03)
    page = render_html(diagnosis)
    assert "(estimated, not timed)" in page
    assert "The wait is not timed: estimated" in page
    assert "wait 30.00 ms (estimated)" in page  # a bar's title
    timed = render_html(analyse(synthetic.input_bound_generator()))
    assert "estimated" not in timed.split("<footer")[0].split("Where each step goes")[1].split("</section>")[0]


def test_steps_fed_the_probes_kept_batches_are_named_where_a_generator_was_probed():
    text = terminal_text(analyse(synthetic.input_bound_generator()), width=200)
    assert "2 warm-up or fed the batches the input probe kept left out" in text
    arrays = make_record(kind="arrays", wait_s=0.001, step_s=0.04, input_alone=9000.0)
    assert "2 warm-up left out" in terminal_text(analyse(arrays), width=200)
