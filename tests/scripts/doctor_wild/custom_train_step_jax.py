"""keras.io "Customizing what happens in fit() with JAX": the script sets KERAS_BACKEND=jax
itself and overrides ``train_step(self, state, data)`` (``stateless_call``,
``jax.value_and_grad``, ``optimizer.stateless_apply``, metrics by ``stateless_update_state``),
with its own loss tracker and a metric listed in its ``metrics`` property. Fed by a tf.data
pipeline whose ``.map(preprocess)`` decodes each image in Python (``tf.py_function``) with no
num_parallel_calls and no prefetch. --fixed: one batch's decoded images cached and repeated
(the input made free; the same model and train_step)."""

import os

os.environ["KERAS_BACKEND"] = "jax"

import argparse  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from _timing import EpochTimes  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--fixed", action="store_true")
parser.add_argument("--epochs", type=int, default=3)
parser.add_argument("--steps-per-epoch", type=int, default=20)
parser.add_argument("--decode-ms", type=float, default=1.0)
args = parser.parse_args()
BATCH = 32
IMAGE = 32

paths = [f"data/train/{i:05d}.png" for i in range(BATCH * args.steps_per_epoch)]
labels = np.random.randint(0, 10, len(paths)).astype("int32")


def decode(path):
    time.sleep(args.decode_ms / 1000)  # read and decode the file
    image = np.random.randint(0, 256, (IMAGE, IMAGE, 3), dtype=np.uint8)
    return (image / 255.0).astype("float32")


def preprocess(path, label):
    image = tf.py_function(decode, [path], tf.float32)
    image.set_shape((IMAGE, IMAGE, 3))
    return image, label


class CustomModel(keras.Model):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.accuracy = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        self.loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @property
    def metrics(self):
        return [self.loss_tracker, self.accuracy]

    def compute_loss_and_updates(self, trainable_variables, non_trainable_variables, x, y,
                                 training=False):
        y_pred, non_trainable_variables = self.stateless_call(
            trainable_variables, non_trainable_variables, x, training=training)
        loss = self.loss_fn(y, y_pred)
        return loss, (y_pred, non_trainable_variables)

    def train_step(self, state, data):
        (trainable_variables, non_trainable_variables, optimizer_variables,
         metrics_variables) = state
        x, y = data
        grad_fn = jax.value_and_grad(self.compute_loss_and_updates, has_aux=True)
        (loss, (y_pred, non_trainable_variables)), grads = grad_fn(
            trainable_variables, non_trainable_variables, x, y, training=True)
        trainable_variables, optimizer_variables = self.optimizer.stateless_apply(
            optimizer_variables, grads, trainable_variables)
        loss_vars = self.loss_tracker.stateless_update_state(metrics_variables[:2], loss)
        acc_vars = self.accuracy.stateless_update_state(metrics_variables[2:], y, y_pred)
        logs = {"loss": self.loss_tracker.stateless_result(loss_vars),
                "accuracy": self.accuracy.stateless_result(acc_vars)}
        state = (trainable_variables, non_trainable_variables, optimizer_variables,
                 loss_vars + acc_vars)
        return logs, state


dataset = tf.data.Dataset.from_tensor_slices((paths, labels)).shuffle(len(paths))
dataset = dataset.map(preprocess)
if args.fixed:
    dataset = dataset.take(BATCH).cache().repeat(args.steps_per_epoch)
dataset = dataset.batch(BATCH)

inputs = keras.Input((IMAGE, IMAGE, 3))
x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(inputs)
x = keras.layers.GlobalAveragePooling2D()(x)
outputs = keras.layers.Dense(10)(x)
model = CustomModel(inputs, outputs)
model.compile(optimizer="adam")
timer = EpochTimes(args.steps_per_epoch)
model.fit(dataset, epochs=args.epochs, callbacks=[timer], verbose=0)
timer.report(fixed=args.fixed, backend=keras.backend.backend(),
             optimizer_iterations=int(model.optimizer.iterations.numpy()))
