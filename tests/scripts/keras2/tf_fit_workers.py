"""Keras-2 era, `import tensorflow as tf; tf.keras...`: the multiprocessing snippet —
fit on an infinite generator with steps_per_epoch, workers, use_multiprocessing,
class_weight and a callback; evaluate with workers.

Keras 3 alone: TypeError: fit() got an unexpected keyword argument 'use_multiprocessing'.
Prints TRAINED with the losses (the same as Keras 3's own loop gives).
"""

import numpy as np
import tensorflow as tf

tf.keras.utils.set_random_seed(0)
rng = np.random.RandomState(0)
x = rng.rand(256, 10).astype("float32")
y = (x[:, 0] > 0.5).astype("int32")


def gen(batch_size=32):
    i = 0
    while True:
        start = (i * batch_size) % len(x)
        yield x[start:start + batch_size], y[start:start + batch_size]
        i += 1


class Count(tf.keras.callbacks.Callback):
    batches = 0

    def on_train_batch_end(self, batch, logs=None):
        Count.batches += 1


model = tf.keras.models.Sequential([
    tf.keras.layers.Input(shape=(10,)),
    tf.keras.layers.Dense(8, activation="relu"),
    tf.keras.layers.Dense(2, activation="softmax"),
])
model.compile(optimizer=tf.keras.optimizers.SGD(lr=0.05, decay=1e-3, momentum=0.9),
              loss="sparse_categorical_crossentropy", metrics=["accuracy"])
history = model.fit(gen(), steps_per_epoch=4, epochs=2, use_multiprocessing=True, workers=4,
                    class_weight={0: 1.0, 1: 2.0}, callbacks=[Count()], verbose=0)
loss = model.evaluate(gen(), steps=2, workers=2, verbose=0)
assert Count.batches >= 8, Count.batches
assert len(history.history["loss"]) == 2
print("TRAINED", f"loss={history.history['loss'][-1]:.6f}", f"eval={loss[0]:.6f}",
      f"callback_batches={Count.batches}")
