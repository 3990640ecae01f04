"""`import tensorflow as tf`, a `keras.Model` subclass overriding `train_step` with a
`tf.GradientTape` (Keras' "customizing what happens in fit" guide, TensorFlow), fed by a
tf.data pipeline whose `.map(preprocess)` decodes each image in Python
(`tf.py_function`) with no num_parallel_calls and no prefetch. --fixed: one batch's decoded
images cached and repeated (the input made free; the same model and train_step)."""

import argparse
import time

import numpy as np
import tensorflow as tf
from _timing import EpochTimes

parser = argparse.ArgumentParser()
parser.add_argument("--fixed", action="store_true")
parser.add_argument("--epochs", type=int, default=3)
parser.add_argument("--steps-per-epoch", type=int, default=20)
parser.add_argument("--decode-ms", type=float, default=1.0)
parser.add_argument("--decode", choices=("file", "python", "tf"), default="file",
                    help="file: waits on the file (sleep); python: CPU work in Python; "
                         "tf: no py_function, heavy TensorFlow image ops in the map")
parser.add_argument("--prefetch", action="store_true",
                    help="end the pipeline with .prefetch(tf.data.AUTOTUNE), the map still sequential")
args = parser.parse_args()
BATCH = 32
IMAGE = 32

paths = [f"data/train/{i:05d}.png" for i in range(BATCH * args.steps_per_epoch)]
labels = np.random.randint(0, 10, len(paths)).astype("int32")


def decode(path):
    if args.decode == "file":
        time.sleep(args.decode_ms / 1000)  # read and decode the file
    else:
        ends = time.perf_counter() + args.decode_ms / 1000
        while time.perf_counter() < ends:  # decode in Python
            sum(range(200))
    image = np.random.randint(0, 256, (IMAGE, IMAGE, 3), dtype=np.uint8)
    return (image / 255.0).astype("float32")


def heavy_tf(path):
    seed = tf.strings.to_hash_bucket_fast(path, 1 << 30)
    image = tf.random.stateless_uniform((256, 256, 3), seed=tf.stack([seed, seed]))
    image = tf.image.resize(image, (192, 192))
    image = tf.image.adjust_contrast(tf.image.adjust_saturation(image, 1.2), 0.9)
    image = tf.nn.avg_pool2d(image[None], 6, 6, "VALID")[0]
    return tf.image.resize(image, (IMAGE, IMAGE))


def preprocess(path, label):
    if args.decode == "tf":
        image = heavy_tf(path)
    else:
        image = tf.py_function(decode, [path], tf.float32)
        image.set_shape((IMAGE, IMAGE, 3))
    image = tf.image.random_flip_left_right(image)
    return image, label


class CustomModel(tf.keras.Model):
    def train_step(self, data):
        x, y = data
        with tf.GradientTape() as tape:
            y_pred = self(x, training=True)
            loss = self.compute_loss(y=y, y_pred=y_pred)
        gradients = tape.gradient(loss, self.trainable_variables)
        self.optimizer.apply_gradients(zip(gradients, self.trainable_variables))
        for metric in self.metrics:
            if metric.name == "loss":
                metric.update_state(loss)
            else:
                metric.update_state(y, y_pred)
        return {m.name: m.result() for m in self.metrics}


dataset = tf.data.Dataset.from_tensor_slices((paths, labels)).shuffle(len(paths))
dataset = dataset.map(preprocess)
if args.fixed:
    dataset = dataset.take(BATCH).cache().repeat(args.steps_per_epoch)
dataset = dataset.batch(BATCH)
if args.prefetch:
    dataset = dataset.prefetch(tf.data.AUTOTUNE)

inputs = tf.keras.Input((IMAGE, IMAGE, 3))
x = tf.keras.layers.Conv2D(8, 3, strides=2, activation="relu")(inputs)
x = tf.keras.layers.GlobalAveragePooling2D()(x)
outputs = tf.keras.layers.Dense(10)(x)
model = CustomModel(inputs, outputs)
model.compile(optimizer="adam",
              loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
              metrics=["accuracy"])
timer = EpochTimes(args.steps_per_epoch)
model.fit(dataset, epochs=args.epochs, callbacks=[timer], verbose=0)
timer.report(fixed=args.fixed, optimizer_iterations=int(model.optimizer.iterations.numpy()))
