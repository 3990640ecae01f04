"""A Keras-2-era training script, as users wrote them: `fit_generator` with a Python
generator that loops forever, `evaluate_generator`, `predict_generator`, and `fit` on a
generator with `workers`.

Keras 3 alone: AttributeError: 'Functional' object has no attribute 'fit_generator'.
Under `stoke run`: trains, each generator running in a stoke worker process. Prints TRAINED.
"""

import numpy as np
from keras.layers import Dense, Input
from keras.models import Model

NUM_CLASSES = 2


def batch_generator(x, y, batch_size=32):
    while True:
        idx = np.random.randint(0, len(x), batch_size)
        yield x[idx], y[idx]


def image_generator(x, batch_size=16):
    for start in range(0, len(x), batch_size):
        yield x[start:start + batch_size]


x = np.random.rand(300, 12).astype("float32")
y = (x.sum(axis=1) > 6).astype("int32")

inputs = Input(shape=(12,))
hidden = Dense(8, activation="relu")(inputs)
outputs = Dense(NUM_CLASSES, activation="softmax")(hidden)
model = Model(inputs=inputs, outputs=outputs)
model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", metrics=["accuracy"])

model.fit_generator(batch_generator(x, y, 32),
                    steps_per_epoch=5,
                    epochs=2,
                    validation_data=batch_generator(x[:64], y[:64], 16),
                    validation_steps=2,
                    workers=2,
                    use_multiprocessing=True,
                    verbose=2)
model.fit(batch_generator(x, y, 32), steps_per_epoch=3, epochs=1, verbose=0, workers=1)
loss, accuracy = model.evaluate_generator(batch_generator(x, y, 32), steps=3)
predictions = model.predict_generator(image_generator(x[:40]), steps=3)
assert predictions.shape == (40, NUM_CLASSES), predictions.shape
print("TRAINED", f"loss={loss:.3f}")
