"""A Keras-2-era script: fit_generator on a plain generator that does real Python work per
batch. --keras3: the same generator through model.fit (how the plain run is timed under
Keras 3, where fit_generator does not exist). --fixed: one batch made in advance."""

import argparse
import time

import numpy as np
from _timing import EpochTimes
from keras.layers import Dense, Input
from keras.models import Model

parser = argparse.ArgumentParser()
parser.add_argument("--fixed", action="store_true")
parser.add_argument("--keras3", action="store_true")
parser.add_argument("--load-ms", type=float, default=15.0)
parser.add_argument("--epochs", type=int, default=3)
parser.add_argument("--steps-per-epoch", type=int, default=20)
args = parser.parse_args()


def batch_generator(batch_size=32):
    if args.fixed:
        batch = (np.random.rand(batch_size, 12).astype("float32"),
                 np.random.randint(0, 2, batch_size))
        while True:
            yield batch
    while True:
        time.sleep(args.load_ms / 1000)  # reading and decoding the files
        yield (np.random.rand(batch_size, 12).astype("float32"),
               np.random.randint(0, 2, batch_size))


inputs = Input(shape=(12,))
outputs = Dense(2, activation="softmax")(Dense(64, activation="relu")(inputs))
model = Model(inputs=inputs, outputs=outputs)
model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
timer = EpochTimes(args.steps_per_epoch)
if args.keras3 or args.fixed:
    model.fit(batch_generator(), steps_per_epoch=args.steps_per_epoch, epochs=args.epochs,
              callbacks=[timer], verbose=0)
else:
    model.fit_generator(batch_generator(), steps_per_epoch=args.steps_per_epoch,
                        epochs=args.epochs, callbacks=[timer], verbose=0)
timer.report(fixed=args.fixed)
