"""Host code in the model (issue 14: ``np.sin(inputs)`` in a layer, run eagerly): the gain of its
fix comes from the compiled-step probe (the step with the host layers stood in, compiled) and
is the one figure the headline, both findings that fix it, the terminal, the JSON and the HTML
print. Synthetic records: the arithmetic and the agreement, no training."""

from __future__ import annotations

import json

import pytest

from stoke.diagnosis.judge.analysis import analyse_run, host_code_fix_prediction
from stoke.diagnosis.judge.diagnosis import analyse
from stoke.diagnosis.judge.words import speedup
from stoke.diagnosis.record import ProbeResult
from stoke.diagnosis.report.html import render_html
from stoke.diagnosis.report.json_report import to_json
from stoke.diagnosis.report.terminal import terminal_text
from tests.diagnosis import synthetic
from tests.diagnosis.synthetic import make_record

HOST_MODEL = synthetic.numpy_layer_eager().model.to_dict()


def numpy_layer_record(compiled_s: float | None = 0.004, input_alone: float = 64 / 0.0015,
                       notes: dict | None = None):
    """synthetic.numpy_layer_eager (a 40 ms eager step; fit's loop 0.5 ms, ready pull 1 ms)
    with the compiled step at ``compiled_s`` (None: not run, ``notes`` say why)."""
    record = synthetic.numpy_layer_eager()
    record.probes["input_alone"].samples_per_s = input_alone
    if compiled_s is None:
        del record.probes["compiled_step"]
        record.meta.probe_notes = notes
    else:
        record.probes["compiled_step"].detail["s_per_step"] = compiled_s
    return record


def test_the_fix_gain_is_the_run_step_over_the_compiled_step_with_loop_and_pull():
    numbers = host_code_fix_prediction(numpy_layer_record(), step_s=0.040, wait_s=0.0,
                                       batch_size=64, input_alone=64 / 0.0015)
    # 4 ms compiled step + 0.5 ms of fit's loop + the pipeline's 1 ms ready pull, in graph
    assert numbers["fixed_step_s"] == pytest.approx(0.0055)
    assert numbers["speedup"] == pytest.approx(0.040 / 0.0055)
    assert numbers["limited_by"] == "the compiled step and fit's loop"


def test_the_fix_never_goes_past_the_input_alone():
    # the input alone makes a batch in 20 ms: the fixed step cannot be shorter
    record = numpy_layer_record(input_alone=64 / 0.020)
    numbers = host_code_fix_prediction(record, step_s=0.040, wait_s=0.0, batch_size=64,
                                       input_alone=64 / 0.020)
    assert numbers["fixed_step_s"] == pytest.approx(0.020)
    assert numbers["speedup"] == pytest.approx(2.0)
    assert numbers["limited_by"] == "the input alone"


def test_one_figure_in_headline_findings_terminal_json_and_html():
    diagnosis = analyse(numpy_layer_record())
    assert diagnosis.verdict != "input-bound"
    gain = diagnosis.prediction.if_host_code_fixed
    assert gain is not None and gain > 5
    words = speedup(gain)
    host, eager = diagnosis.finding("host-op-in-model"), diagnosis.finding("run-eagerly")
    # the same fix (the layer on the device, then compile): the same expected gain
    assert host.expected_gain == eager.expected_gain == round(gain, 2)
    assert words in host.message and "stood in by the identity" in host.message
    assert "expected_gain_not_predicted" not in host.evidence
    text = terminal_text(diagnosis, width=200)
    assert f"host-op-in-model): {words}" in text  # the headline
    assert f"expected {words}" in text  # the findings' gains
    assert "Host code fixed (probe)" in text
    data = json.loads(to_json(diagnosis))
    assert data["prediction"]["if_host_code_fixed"] == pytest.approx(gain)
    by_id = {f["id"]: f for f in data["findings"]}
    assert by_id["host-op-in-model"]["expected_gain"] == host.expected_gain
    assert by_id["run-eagerly"]["expected_gain"] == host.expected_gain
    html = render_html(diagnosis)
    assert "Host code fixed" in html and words in html
    # the input's own prediction is untouched: the model fix is not an input wait
    assert diagnosis.predicted_speedup == analyse_run(numpy_layer_record()).predicted_speedup


def test_no_stand_in_means_no_number_and_the_reason():
    why = ("no traceable stand-in for numpy_sin: its output (32, 64) float64 differs from its "
           "input (32, 64) float32 (the identity cannot stand in for it)")
    diagnosis = analyse(numpy_layer_record(compiled_s=None, notes={"compiled_step": why}))
    host, eager = diagnosis.finding("host-op-in-model"), diagnosis.finding("run-eagerly")
    assert host.expected_gain is None and eager.expected_gain is None
    assert diagnosis.prediction.if_host_code_fixed is None
    assert "No gain is predicted" in host.message and "float64 differs" in host.message
    assert "float64 differs" in host.evidence["expected_gain_not_predicted"]
    assert "host-op-in-model)" not in terminal_text(diagnosis, width=200).split("Findings")[0]


def test_a_model_without_host_code_gets_no_host_fix_figure():
    record = make_record(kind="arrays", wait_s=0.0, step_s=0.040, backend="tensorflow",
                         model_extra={"run_eagerly": True})
    diagnosis = analyse(record)
    assert diagnosis.prediction.if_host_code_fixed is None
    assert diagnosis.prediction.host_code_fix == {}
    assert diagnosis.finding("run-eagerly").expected_gain is None


def test_a_run_that_failed_in_the_layer_says_why_there_is_no_number():
    # JAX builds the model on tracers: np.sin(convert_to_numpy(x)) fails before any step
    error = ("TracerArrayConversionError: The numpy.ndarray conversion method __array__() was "
             "called on traced array. Exception encountered when calling SinFeatures.call().")
    record = make_record(kind="arrays", wait_s=0.0, step_s=0.040, backend="jax", steps=[],
                         model_extra={"run_eagerly": True}, meta_extra={"error": error})
    diagnosis = analyse(record)
    host = diagnosis.finding("host-op-in-model")
    assert host is not None and host.expected_gain is None
    assert "failed inside the layer" in host.evidence["expected_gain_not_predicted"]


# s06_lambda_numpy.py on JAX: Keras re-raises the Lambda's failure from the model's call, and
# its message names the model only (cut at 160 characters, the finding read "...when its
# variables have "); the failure's frames name the Lambda, its function and the user's line
KERAS_BUILD_ERROR = (
    "RuntimeError: Unable to automatically build the model. Please build it yourself before "
    "calling fit/evaluate/predict. A model is 'built' when its variables have been created and "
    "its `self.built` attribute is True.\nException encountered:\n'Exception encountered when "
    "calling Sequential.call().\n\n'str' object has no attribute '_error_repr''")
LAMBDA_FAILURE = {
    "layer": "lambda", "class": "Lambda", "function": "<lambda>",
    "site": "s06_lambda_numpy.py:11", "raised_in": "__array__",
    "error": ("TracerArrayConversionError: The numpy.ndarray conversion method __array__() was "
              "called on traced array with shape float32[32,32]"),
}


def test_a_run_that_failed_in_a_lambda_names_the_lambda_its_line_and_the_whole_error():
    record = make_record(kind="arrays", wait_s=0.0, step_s=0.040, backend="torch", steps=[],
                         model_extra={"run_eagerly": True, "failed_in_layer": LAMBDA_FAILURE},
                         meta_extra={"error": KERAS_BUILD_ERROR})
    diagnosis = analyse(record)
    host = diagnosis.finding("host-op-in-model")
    assert host.evidence["host_op_layers"] == ["lambda"]  # not "Sequential"
    assert "<lambda> at s06_lambda_numpy.py:11" in host.message
    assert "with shape float32[32,32])" in host.message  # the whole first line, not cut
    # the fix is in the Lambda's function; run-eagerly's fix starts with it (compiling alone
    # would fail inside the Lambda as the run did)
    assert "keras.layers.Lambda(lambda x: ops." in host.fix
    eager = diagnosis.finding("run-eagerly")
    assert eager.evidence["host_op_layers"] == ["lambda"]
    assert eager.fix.index("ops.") < eager.fix.index("model.compile")


def test_a_failure_read_from_its_message_keeps_its_first_sentence_whole():
    # a record without the failure's frames: the layer the message names, and its first
    # sentence whole (it was cut at 160 characters, mid-sentence)
    error = KERAS_BUILD_ERROR.replace("'str' object has no attribute '_error_repr'",
                                      "TracerArrayConversionError: __array__() on a traced array")
    record = make_record(kind="arrays", wait_s=0.0, step_s=0.040, backend="jax", steps=[],
                         model_extra={"run_eagerly": True}, meta_extra={"error": error})
    host = analyse(record).finding("host-op-in-model")
    assert "(RuntimeError: Unable to automatically build the model)" in host.message
    assert "variables have " not in host.message


def test_on_torch_the_eager_step_without_host_code_is_compared_with_the_model_alone():
    # torch does not compile: the probe times the same eager step without the host round
    # trip; the model-alone probe, just before, the step with it. Their ratio is the gain,
    # not the run's step against a probe taken under another load
    record = make_record(kind="arrays", wait_s=0.0, step_s=0.140, backend="torch",
                         model_alone=64 / 0.100, input_alone=64 / 0.0015,
                         gpus_visible=0, gpus_used=0, model_extra=HOST_MODEL,
                         model_detail={"s_per_step": 0.100})
    record.probes["compiled_step"] = ProbeResult(
        samples_per_s=64 / 0.109, seconds=1.0, batches=9,
        detail={"s_per_step": 0.109, "loop_s_per_step": 0.0, "stood_in": ["numpy_sin"],
                "jit_compile": False})
    diagnosis = analyse(record)
    assert diagnosis.prediction.host_code_fix["compared_with"] == "model-alone probe"
    assert diagnosis.prediction.if_host_code_fixed == pytest.approx(1.0)
    record.probes["compiled_step"].detail["s_per_step"] = 0.050  # the host trip was half
    assert analyse(record).prediction.if_host_code_fixed == pytest.approx(2.0)
