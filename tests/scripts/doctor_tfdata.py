"""A training script on a tf.data pipeline written the slow way: a Python-free but
sequential map (no num_parallel_calls) and no prefetch."""

import keras
import numpy as np
import tensorflow as tf


def augment(image, label):
    image = tf.image.random_flip_left_right(image)
    image = tf.image.adjust_brightness(image, 0.1)
    return image, label


def make_dataset():
    rng = np.random.default_rng(0)
    images = rng.random((512, 16, 16, 3), dtype=np.float32)
    labels = rng.integers(0, 10, size=(512,))
    return tf.data.Dataset.from_tensor_slices((images, labels)).map(augment).batch(32)


def make_model():
    model = keras.Sequential(
        [
            keras.Input((16, 16, 3)),
            keras.layers.Conv2D(8, 3, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(10),
        ]
    )
    model.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


if __name__ == "__main__":
    make_model().fit(make_dataset(), epochs=2, verbose=0)
    print("AFTER FIT", flush=True)
