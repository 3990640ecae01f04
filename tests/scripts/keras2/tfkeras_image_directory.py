"""Keras-2 era, `from tensorflow.keras.preprocessing.image import ImageDataGenerator`:
flow_from_directory with validation_split subsets (training and validation) over a folder of
PNGs this script writes, trained with fit_generator(workers=..., use_multiprocessing=True),
then evaluate_generator.

Keras 3 alone: AttributeError: ... no attribute 'fit_generator'.
Prints TRAINED with the losses (the same as Keras 3's own loop gives on JAX and torch).
"""

import os
import sys
import tempfile

import numpy as np
import tensorflow as tf
from PIL import Image
from tensorflow.keras.layers import Conv2D, Dense, Flatten, Input
from tensorflow.keras.models import Sequential
from tensorflow.keras.preprocessing.image import ImageDataGenerator

tf.keras.utils.set_random_seed(3)
with tempfile.TemporaryDirectory(prefix="keras2-images-") as root:  # removed on failure too
    for label, colour in (("cats", 40), ("dogs", 200)):
        os.makedirs(os.path.join(root, label))
        for i in range(20):
            pixels = np.clip(np.random.normal(colour, 30, (16, 16, 3)), 0, 255).astype("uint8")
            Image.fromarray(pixels).save(os.path.join(root, label, f"{i}.png"))

    datagen = ImageDataGenerator(rescale=1.0 / 255, horizontal_flip=True, rotation_range=10,
                                 validation_split=0.25)
    train_generator = datagen.flow_from_directory(root, target_size=(16, 16), batch_size=6,
                                                  class_mode="binary", subset="training", seed=7)
    validation_generator = datagen.flow_from_directory(root, target_size=(16, 16), batch_size=5,
                                                       class_mode="binary", subset="validation",
                                                       shuffle=False)

    model = Sequential([Input(shape=(16, 16, 3)), Conv2D(4, 3, activation="relu"), Flatten(),
                        Dense(1, activation="sigmoid")])
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    history = model.fit_generator(train_generator, steps_per_epoch=len(train_generator), epochs=2,
                                  validation_data=validation_generator, shuffle=False,
                                  workers=4, use_multiprocessing=True, verbose=0)
    loss, accuracy = model.evaluate_generator(validation_generator, workers=2)
    assert train_generator.samples == 30 and validation_generator.samples == 10
print("TRAINED", f"loss={history.history['loss'][-1]:.6f}", f"eval={loss:.6f}")
sys.stdout.flush()
