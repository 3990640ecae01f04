"""Keras-2 era, `from tensorflow import keras`: a keras.utils.Sequence whose on_epoch_end
reshuffles with the global np.random, np.empty (float64) batch buffers, trained with
fit_generator (Sequence as validation_data too), then evaluate_generator and
predict_generator.

Keras 3 alone: AttributeError: 'Sequential' object has no attribute 'fit_generator'.
Prints TRAINED with the losses (the same under `stoke run` as under Keras 3's own loop:
the same batches in the same order).
"""

import sys

import numpy as np
from tensorflow import keras


class DataGenerator(keras.utils.Sequence):
    def __init__(self, x, y, batch_size=16, shuffle=True):
        self.x, self.y = x, y
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.on_epoch_end()

    def __len__(self):
        return int(np.floor(len(self.x) / self.batch_size))

    def __getitem__(self, index):
        indexes = self.indexes[index * self.batch_size:(index + 1) * self.batch_size]
        X = np.empty((self.batch_size, self.x.shape[1]))
        Y = np.empty((self.batch_size,), dtype=int)
        for i, k in enumerate(indexes):
            X[i] = self.x[k]
            Y[i] = self.y[k]
        return X, Y

    def on_epoch_end(self):
        self.indexes = np.arange(len(self.x))
        if self.shuffle:
            np.random.shuffle(self.indexes)


keras.utils.set_random_seed(1)
x = np.random.rand(160, 6)
y = (x[:, 0] + x[:, 1] > 1).astype(int)
training_generator = DataGenerator(x, y)
validation_generator = DataGenerator(x[:48], y[:48], shuffle=False)

model = keras.Sequential([keras.Input(shape=(6,)), keras.layers.Dense(8, activation="relu"),
                          keras.layers.Dense(2, activation="softmax")])
model.compile(optimizer=keras.optimizers.Adam(lr=0.01), loss="sparse_categorical_crossentropy")
history = model.fit_generator(generator=training_generator, validation_data=validation_generator,
                              epochs=2, shuffle=False, use_multiprocessing=True, workers=6,
                              verbose=0)
loss = model.evaluate_generator(validation_generator, workers=2)
predictions = model.predict_generator(validation_generator)
assert predictions.shape == (48, 2), predictions.shape
assert len(history.history["loss"]) == 2 and np.isfinite(history.history["loss"][-1])
print("TRAINED", f"loss={history.history['loss'][-1]:.6f}", f"eval={loss:.6f}")
sys.stdout.flush()
