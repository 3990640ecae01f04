"""A Keras-2-era training script, as users wrote them: a hand-written Sequence with
on_epoch_end shuffling, fed with `workers`/`use_multiprocessing`/`max_queue_size`.

Keras 3 alone: TypeError: fit() got an unexpected keyword argument 'workers'.
Under `stoke run`: trains, the Sequence running in stoke's workers. Prints TRAINED.
"""

import sys

import numpy as np
from keras.layers import Dense
from keras.models import Sequential
from keras.utils import Sequence, to_categorical


class DataGenerator(Sequence):
    """Generates data for Keras"""

    def __init__(self, x, labels, batch_size=32, n_classes=3, shuffle=True):
        self.x = x
        self.labels = to_categorical(labels, num_classes=n_classes)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.on_epoch_end()

    def __len__(self):
        """Denotes the number of batches per epoch"""
        return int(np.ceil(len(self.x) / float(self.batch_size)))

    def __getitem__(self, index):
        """Generate one batch of data"""
        indexes = self.indexes[index * self.batch_size:(index + 1) * self.batch_size]
        X = self.x[indexes] + np.random.normal(0.0, 0.01, (len(indexes), self.x.shape[1]))
        y = self.labels[indexes]
        return X, y

    def on_epoch_end(self):
        """Updates indexes after each epoch"""
        self.indexes = np.arange(len(self.x))
        if self.shuffle:
            np.random.shuffle(self.indexes)


rng = np.random.RandomState(0)
x_train = rng.normal(size=(200, 8))
y_train = (x_train[:, 0] > 0).astype(int) + (x_train[:, 1] > 1).astype(int)
x_val, y_val = x_train[:50], y_train[:50]

training_generator = DataGenerator(x_train, y_train, batch_size=32)
validation_generator = DataGenerator(x_val, y_val, batch_size=16, shuffle=False)

model = Sequential()
model.add(Dense(16, activation="relu", input_shape=(8,)))
model.add(Dense(3, activation="softmax"))
model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])

history = model.fit(training_generator,
                    validation_data=validation_generator,
                    epochs=2,
                    verbose=2,
                    use_multiprocessing=True,
                    workers=4,
                    max_queue_size=10)
score = model.evaluate(validation_generator, verbose=0, workers=2, use_multiprocessing=True)
predictions = model.predict(validation_generator, verbose=0, workers=2)
assert predictions.shape == (50, 3), predictions.shape
assert len(history.history["loss"]) == 2
print("TRAINED", f"loss={history.history['loss'][-1]:.3f}", f"score={score}")
sys.stdout.flush()
