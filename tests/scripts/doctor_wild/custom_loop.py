"""A custom training loop (GradientTape), no fit(), and 16 intra-op threads set on whatever
machine it runs on: the doctor measures no step, but still reports the setup it sees."""

import tensorflow as tf

tf.config.threading.set_intra_op_parallelism_threads(64)
import keras  # noqa: E402

model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(1)])
optimizer = keras.optimizers.SGD()
x, y = tf.random.normal((64, 8)), tf.random.normal((64, 1))
for _ in range(3):
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean((model(x) - y) ** 2)
    optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables),
                                  model.trainable_variables))
print("TRAINED", flush=True)
