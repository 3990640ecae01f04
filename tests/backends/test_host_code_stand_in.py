"""The traceable stand-in the compiled-step probe puts in place of a host layer's ``call``
(stoke.diagnosis.measure.host_code): chosen from what the watched step saw, put back after."""

from __future__ import annotations

import keras
import numpy as np

from stoke.diagnosis.measure.host_code import IDENTITY, stand_in_for, stood_in


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
