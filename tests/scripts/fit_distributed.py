"""Train from pipe.to_keras() under a multi-device distribution on 2 CPU devices.

Run with KERAS_BACKEND=jax (keras.distribution.DataParallel on 2 virtual devices) or
KERAS_BACKEND=tensorflow (tf.distribute.MirroredStrategy on 2 logical CPUs). Prints a JSON
line with what it saw.
"""

import json
import os
import sys

backend = os.environ["KERAS_BACKEND"]
if backend == "jax":
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
if backend == "tensorflow":
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])

import keras  # noqa: E402
import numpy as np  # noqa: E402

import stoke  # noqa: E402

x = np.random.default_rng(0).random((128, 8)).astype("float32")
y = (x.sum(1) > 4).astype("int64")
pipe = stoke.from_arrays(x, y).shuffle(0).batch(16, drop_remainder=True)


def build():
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(2)])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


report = {"backend": backend}
if backend == "jax":
    import jax

    keras.distribution.set_distribution(keras.distribution.DataParallel())
    feed = pipe.to_keras(workers=2, executor="process")
    first = next(iter(feed.get_jax_iterator()))
    report["devices"] = len(jax.devices())
    report["batch_devices"] = len(first[0].sharding.device_set)
    model = build()
    history = model.fit(feed, epochs=2, verbose=0)
else:
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    report["devices"] = strategy.num_replicas_in_sync
    with strategy.scope():
        model = build()
    feed = pipe.to_keras(workers=2, executor="process")
    history = model.fit(feed, epochs=2, verbose=0)
    report["batch_devices"] = strategy.num_replicas_in_sync
report["losses"] = history.history["loss"]
feed.close()
print(json.dumps(report))
sys.stdout.flush()
