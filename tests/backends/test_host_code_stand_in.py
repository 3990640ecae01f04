"""Host code in the model (stoke.diagnosis.measure.host_code), on the backend the runner picked,
without a doctor run: the watch of an eager step (a user layer's ``call``, a Lambda layer's
function), the layer a failure is read from, and the traceable stand-in the compiled-step
probe puts in place of a host layer, chosen from what the watched step saw, put back after."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from stoke.diagnosis.measure.host_code import (
    IDENTITY,
    failed_in_layer,
    stand_in_for,
    stood_in,
    watch_host_code,
)

BACKEND = keras.backend.backend()
HERE = "test_host_code_stand_in.py:"


class HostSin(keras.layers.Layer):
    def call(self, inputs):
        return np.sin(keras.ops.convert_to_numpy(inputs))


def test_identity_only_for_the_same_shape_and_dtype():
    x = keras.ops.ones((4, 3))
    assert stand_in_for(x, np.sin(np.ones((4, 3), "float32"))) == IDENTITY
    assert "float64" in stand_in_for(x, np.ones((4, 3)))  # np.sin on float64: another dtype
    assert "(4, 1)" in stand_in_for(x, np.ones((4, 1), "float32"))
    assert "not a single array" in stand_in_for(x, (x, x))


def test_stood_in_returns_the_input_and_puts_the_call_back():
    # called on concrete arrays only (JAX cannot build this layer on symbolic tensors)
    layer = HostSin(name="host_sin")
    x = np.full((2, 3), 0.5, "float32")
    with stood_in(layer, ["host_sin"]):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x)), x)
    assert HostSin.call.__qualname__ == "HostSin.call"
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x)), np.sin(x), rtol=1e-6)


def host_log(t):
    return np.log1p(np.abs(t))


def test_a_lambda_running_numpy_is_named_with_its_function_and_stood_in():
    # s06_lambda_numpy.py: Lambda(lambda t: np.log1p(np.abs(t))) went unnamed on TensorFlow,
    # run eagerly: only user layer classes were watched, and Lambda is Keras' own class.
    # Called on concrete arrays (JAX cannot build it on symbolic tensors, torch on tensors
    # that require grad: the failure test below)
    layer = keras.layers.Lambda(host_log, name="host_log")
    x = keras.ops.convert_to_tensor(np.full((2, 3), 0.5, "float32"))
    with watch_host_code(layer, BACKEND) as seen:
        layer(x)
    assert list(seen.found) == ["host_log"], seen.found
    assert f"host_log ({HERE}" in seen.found["host_log"]
    assert seen.classes == {"host_log": "Lambda"}
    assert seen.stand_ins == {"host_log": IDENTITY}
    assert layer.function is host_log  # put back
    with stood_in(layer, ["host_log"]):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x)), 0.5)
    assert layer.function is host_log
    np.testing.assert_allclose(np.asarray(layer(x)), np.log1p(0.5), rtol=1e-6)


def test_a_lambda_on_device_ops_is_not_named():
    layer = keras.layers.Lambda(lambda t: keras.ops.log1p(keras.ops.abs(t)))
    with watch_host_code(layer, BACKEND) as seen:
        layer(keras.ops.ones((2, 3)))
    assert seen.found == {}


@pytest.mark.skipif(BACKEND != "tensorflow", reason="NumPy on the step's tensors runs on TF eagerly")
def test_a_tf_keras_lambda_in_an_eager_train_step_is_found():
    # s06_lambda_numpy.py's model, written the tf.keras way, one eager training step watched
    import tensorflow as tf

    model = tf.keras.Sequential([
        tf.keras.Input((3,)), tf.keras.layers.Dense(4, activation="relu"),
        tf.keras.layers.Lambda(lambda t: np.log1p(np.abs(t)), name="log_abs"),
        tf.keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse", run_eagerly=True)
    x, y = np.ones((8, 3), "float32"), np.ones((8, 1), "float32")
    with watch_host_code(model, BACKEND) as seen:
        model.train_on_batch(x, y)
    assert list(seen.found) == ["log_abs"], seen.found
    assert f"<lambda> ({HERE}" in seen.found["log_abs"]
    assert seen.stand_ins == {"log_abs": IDENTITY}


def test_a_run_failing_in_a_lambda_names_the_lambda_and_the_users_line():
    # TensorFlow compiled: a symbolic tensor; torch: a tensor that requires grad; JAX: a tracer
    # (on JAX Keras' message names the Sequential only: s06_lambda_numpy.py)
    try:
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4),
                                  keras.layers.Lambda(lambda t: np.log1p(np.abs(t)),
                                                      name="log_abs")])
        model.compile(optimizer="sgd", loss="mse", run_eagerly=BACKEND != "tensorflow")
        model.train_on_batch(np.ones((8, 3), "float32"), np.ones((8, 4), "float32"))
    except Exception as error:
        failure = failed_in_layer(error)
    else:
        pytest.fail("NumPy on the step's tensors ran")
    assert failure is not None
    assert (failure["layer"], failure["class"], failure["function"]) == ("log_abs", "Lambda", "<lambda>")
    assert failure["site"].startswith(HERE), failure
    assert failure["raised_in"] == "__array__", failure


def test_a_failure_outside_any_layer_names_none():
    try:
        np.asarray([1.0]).reshape((3, 3))
    except ValueError as error:
        assert failed_in_layer(error) is None
