"""Keras-2 era, `from keras.preprocessing.image import ImageDataGenerator` (an ImportError on
Keras 3 alone): flow(x, y) with augmentation fed to fit(workers=..., max_queue_size=...), and
flow_from_dataframe over PNG files, then predict with workers.

Prints TRAINED with the losses (the same as Keras 3's own loop gives on JAX and torch).
"""

import os
import tempfile

import keras
import numpy as np
import pandas as pd
from keras import layers
from keras.preprocessing.image import ImageDataGenerator
from PIL import Image

keras.utils.set_random_seed(4)
x = np.random.rand(48, 12, 12, 3)
y = (x.mean(axis=(1, 2, 3)) > 0.5).astype("float32")

datagen = ImageDataGenerator(width_shift_range=0.1, zoom_range=0.1, horizontal_flip=True)
model = keras.Sequential([keras.Input(shape=(12, 12, 3)), layers.Conv2D(4, 3, activation="relu"),
                          layers.GlobalAveragePooling2D(), layers.Dense(1, activation="sigmoid")])
model.compile(optimizer="adam", loss="binary_crossentropy")
history = model.fit(datagen.flow(x, y, batch_size=8, seed=11), epochs=2, shuffle=False,
                    workers=3, use_multiprocessing=True, max_queue_size=6, verbose=0)

with tempfile.TemporaryDirectory(prefix="keras2-frame-") as root:  # removed on failure too
    rows = []
    for i in range(12):
        name = f"img{i}.png"
        Image.fromarray((x[i] * 255).astype("uint8")).save(os.path.join(root, name))
        rows.append({"filename": name, "label": str(int(y[i]))})
    frame = pd.DataFrame(rows)
    frame_iterator = ImageDataGenerator(rescale=1 / 255.0).flow_from_dataframe(
        frame, directory=root, x_col="filename", y_col="label", target_size=(12, 12),
        class_mode="binary", batch_size=4, shuffle=False)
    predictions = model.predict(frame_iterator, workers=2, verbose=0)
    assert predictions.shape == (12, 1), predictions.shape
print("TRAINED", f"loss={history.history['loss'][-1]:.6f}", f"pred={float(predictions.sum()):.6f}")
