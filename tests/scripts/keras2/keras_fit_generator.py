"""Keras-2 era, `import keras` / `from keras.models import ...`: fit_generator on a plain
generator that loops forever (steps_per_epoch), a generator as validation_data,
evaluate_generator and predict_generator on a finite generator, fit with workers.

Keras 3 alone: AttributeError: 'Functional' object has no attribute 'fit_generator'.
Prints TRAINED with the losses (the same as Keras 3's own loop gives).
"""

import keras
import numpy as np
from keras.layers import Dense, Input
from keras.models import Model

keras.utils.set_random_seed(2)
x = np.random.rand(240, 12).astype("float32")
y = (x.sum(axis=1) > 6).astype("int32")


def batch_generator(x, y, batch_size=32):
    start = 0
    while True:
        yield x[start:start + batch_size], y[start:start + batch_size]
        start = (start + batch_size) % (len(x) - batch_size)


def image_generator(x, batch_size=16):
    for start in range(0, len(x), batch_size):
        yield x[start:start + batch_size]


inputs = Input(shape=(12,))
outputs = Dense(2, activation="softmax")(Dense(8, activation="relu")(inputs))
model = Model(inputs=inputs, outputs=outputs)
model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", metrics=["accuracy"])

history = model.fit_generator(batch_generator(x, y, 32), steps_per_epoch=5, epochs=2,
                              validation_data=batch_generator(x[:64], y[:64], 16),
                              validation_steps=2, workers=2, use_multiprocessing=True,
                              max_queue_size=4, verbose=0)
model.fit(batch_generator(x, y, 32), steps_per_epoch=3, epochs=1, verbose=0, workers=1)
loss, accuracy = model.evaluate_generator(batch_generator(x, y, 32), steps=3)
predictions = model.predict_generator(image_generator(x[:40]), steps=3)
assert predictions.shape == (40, 2), predictions.shape
assert len(history.history["val_loss"]) == 2
print("TRAINED", f"loss={history.history['loss'][-1]:.6f}", f"eval={loss:.6f}")
