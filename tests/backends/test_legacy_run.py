"""``stoke run``: Keras-2-era scripts (``tests/scripts/legacy_*.py``, written as users wrote
them) fail on plain Keras 3 and train under ``stoke run``, on the backend in
``KERAS_BACKEND``. Each script runs in its own process, as a user would run it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPTS = os.path.join(ROOT, "tests", "scripts")
# script -> what Keras 3 alone says
KERAS3_ERRORS = {
    "legacy_sequence_fit.py": "fit() got an unexpected keyword argument",
    "legacy_fit_generator.py": "object has no attribute 'fit_generator'",
}
NOTE = "to run this script without `stoke run`"


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": ROOT}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=280)


def test_every_legacy_script_is_covered():
    found = sorted(n for n in os.listdir(SCRIPTS) if n.startswith("legacy_") and n.endswith(".py"))
    assert found == sorted(KERAS3_ERRORS)


@pytest.mark.skipif(os.environ.get("KERAS_BACKEND") != "jax", reason="Keras 3's API refuses the "
                    "calls the same way on every backend: one keeps the suite within CI's time")
@pytest.mark.parametrize("script", sorted(KERAS3_ERRORS))
def test_legacy_script_fails_on_keras3_alone(script):
    result = _run(os.path.join("tests", "scripts", script))
    assert result.returncode != 0
    assert KERAS3_ERRORS[script] in result.stderr, result.stderr[-2000:]


@pytest.mark.parametrize("script", sorted(KERAS3_ERRORS))
def test_legacy_script_trains_under_stoke_run(script):
    path = os.path.join("tests", "scripts", script)
    result = _run("-m", "stoke", "run", path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "TRAINED" in result.stdout, result.stdout[-2000:]
    assert result.stderr.count(NOTE) == 1, result.stderr[-3000:]
    assert f"{path}:" in result.stderr  # the note names the line to change


@pytest.mark.skipif(os.environ.get("KERAS_BACKEND") != "jax", reason="a script without Keras: "
                    "one backend keeps the suite within CI's time")
def test_stoke_run_passes_arguments_and_exit_status(tmp_path):
    script = tmp_path / "exits.py"
    script.write_text("import sys\nprint(sys.argv[1:])\nsys.exit(int(sys.argv[1]))\n")
    result = _run("-m", "stoke", "run", str(script), "3", "--flag")
    assert result.returncode == 3
    assert "['3', '--flag']" in result.stdout
    missing = _run("-m", "stoke", "run", str(tmp_path / "nope.py"))
    assert missing.returncode == 2 and "no such script" in missing.stderr


TUNED_SCRIPT = """
import logging
import os
import sys
import time

import numpy as np
import keras

TRAINER = os.getpid()  # travels with the Sequence: a worker sees the trainer's pid here

handler = logging.StreamHandler(sys.stderr)
logging.getLogger("stoke").addHandler(handler)
logging.getLogger("stoke").setLevel(logging.DEBUG)


class Batches(keras.utils.Sequence):
    def __len__(self):
        return 64

    def __getitem__(self, index):
        if os.getpid() == TRAINER:
            # stoke makes the first batches in the trainer while its workers start; slow
            # ones here leave the workers (and the tuner) time to take over
            time.sleep(0.25)
        return np.full((4, 3), index, np.float32), np.full((4, 1), index % 2, np.float32)


model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
model.compile("sgd", "mse")
model.fit(Batches(), epochs=1, workers=4, use_multiprocessing=True, verbose=0)
print("TRAINED")
"""


@pytest.mark.skipif(os.environ.get("KERAS_BACKEND") != "jax", reason="stoke run's tuner and its "
                    "log are the same on every backend: one keeps the suite within CI's time")
def test_stoke_run_tunes_the_workers_the_script_asked_for(tmp_path):
    """``fit(workers=4)`` caps the cores of tuned workers (the tuner's decisions are logged);
    ``stoke run --workers 2`` fixes the count (no tuner)."""
    script = tmp_path / "tuned.py"
    script.write_text(TUNED_SCRIPT)
    tuned = _run("-m", "stoke", "run", str(script))
    assert tuned.returncode == 0 and "TRAINED" in tuned.stdout, tuned.stderr[-3000:]
    assert "stoke: ring -> " in tuned.stderr, tuned.stderr[-3000:]  # the tuner sized the ring
    fixed = _run("-m", "stoke", "run", "--workers", "2", str(script))
    assert fixed.returncode == 0 and "TRAINED" in fixed.stdout, fixed.stderr[-3000:]
    assert "stoke: ring -> " not in fixed.stderr and "stoke: ring of " in fixed.stderr


GENERATOR_SCRIPT = """
import numpy as np
import keras


def batches(batch_size=8):
    number = 0
    while True:
        yield np.full((batch_size, 3), number, np.float32), np.zeros((batch_size, 1))
        number += 1


model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
model.compile("sgd", "mse")
model.fit_generator(batches(), steps_per_epoch=5, epochs=2, workers=4,
                    use_multiprocessing=True, verbose=0)
model.fit(batches(), steps_per_epoch=3, epochs=1, workers=2, use_multiprocessing=True,
          max_queue_size=3, verbose=0)
print("TRAINED")
"""


@pytest.mark.skipif(os.environ.get("KERAS_BACKEND") != "jax", reason="stoke run --tuning reports "
                    "a feed the same way on every backend: one keeps the suite within CI's time")
def test_stoke_run_tuning_says_how_a_generator_was_fed(tmp_path):
    """``stoke run --tuning``: a generator runs as one copy whatever ``workers=`` asked
    (said, with why), its ring depth tuned unless the script chose ``max_queue_size``."""
    script = tmp_path / "generator.py"
    script.write_text(GENERATOR_SCRIPT)
    result = _run("-m", "stoke", "run", "--quiet", "--tuning", str(script))
    assert result.returncode == 0 and "TRAINED" in result.stdout, result.stderr[-3000:]
    reports = result.stderr.split("stoke: ")
    fit_generator = next(r for r in reports if r.startswith("fit_generator() was fed by"))
    fit = next(r for r in reports if r.startswith("fit() was fed by"))
    for report in (fit_generator, fit):
        assert "AcceleratedGenerator(batches, 1 copy, process)" in report, report
        assert "workers: 1 -- a generator is one stream in one order" in report, report
    assert "ring: 10 -- 10 in rotation (as Keras' max_queue_size=10" in fit_generator, \
        fit_generator
    assert "ring: 3 -- ring_slots set by you (max_queue_size" in fit, fit
    assert "`shuffle=True` was passed" not in result.stderr, result.stderr[-3000:]


SHUFFLE_SCRIPT = """
import sys

import numpy as np
import tensorflow as tf


def batches():
    while True:
        yield np.zeros((4, 3), np.float32), np.zeros((4, 1), np.float32)


model = tf.keras.Sequential([tf.keras.Input((3,)), tf.keras.layers.Dense(1)])
model.compile("sgd", "mse")
model.fit_generator(batches(), steps_per_epoch=2, verbose=0)
model.fit(batches(), steps_per_epoch=2, workers=2, verbose=0)
print("SCRIPT PASSES SHUFFLE", file=sys.stderr, flush=True)
model.fit_generator(batches(), steps_per_epoch=2, shuffle=True, verbose=0)
print("TRAINED")
"""


@pytest.mark.skipif(os.environ.get("KERAS_BACKEND") != "tensorflow", reason="Keras' shuffle "
                    "warning and the shim's routing are the same on every backend; the script is "
                    "tf.keras: TensorFlow's own keeps the suite within CI's time")
def test_keras_says_shuffle_is_ignored_only_when_the_script_passed_it(tmp_path):
    """Keras warns "`shuffle=True` was passed, but will be ignored" for data in its own
    order; the shim's routing (fit_generator's Keras-2 default, a generator made endless)
    must not make it say so of a call that never passed shuffle."""
    script = tmp_path / "shuffle.py"
    script.write_text(SHUFFLE_SCRIPT)
    result = _run("-m", "stoke", "run", "--quiet", str(script))
    assert result.returncode == 0 and "TRAINED" in result.stdout, result.stderr[-3000:]
    before, _, after = result.stderr.partition("SCRIPT PASSES SHUFFLE")
    assert "`shuffle=True` was passed" not in before, before[-3000:]
    assert "`shuffle=True` was passed" in after, after[-3000:]


FEWER_STEPS_SCRIPT = """
{imports}
import numpy as np

SEEN = []  # the batch of each training step (its labels say which)
PASS_ENDS = []
STEPS = []
RECORD = []  # set at a training step's start: its loss records its batch


class Batches({keras}.utils.Sequence):
    def __len__(self):
        return 5

    def __getitem__(self, index):
        return np.full((4, 3), index, np.float32), np.full((4, 1), index, np.float32)

    def on_epoch_end(self):
        PASS_ENDS.append(len(SEEN))


class Steps({keras}.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        STEPS.append(0)

    def on_train_batch_begin(self, batch, logs=None):
        STEPS[-1] += 1
        RECORD.append(True)


def loss(y_true, y_pred):
    if RECORD:  # a training step, not Keras' build
        RECORD.clear()
        SEEN.append(int({keras}.ops.convert_to_numpy(y_true)[0, 0]))
    return {keras}.ops.mean({keras}.ops.square(y_true - y_pred))


model = {keras}.Sequential([{keras}.Input((3,)), {keras}.layers.Dense(1)])
model.compile("sgd", loss, run_eagerly=True)
# the ImageDataGenerator tutorials' steps_per_epoch=generator.samples // batch_size: one
# batch fewer than len() when the last batch is partial
model.fit_generator(Batches(), steps_per_epoch=4, epochs=3, workers=2, callbacks=[Steps()],
                    verbose=0{shuffle})
print("STEPS", STEPS)
print("SEEN", SEEN)
print("PASS_ENDS", PASS_ENDS)
"""


def _printed(stdout: str, name: str) -> list:
    import ast

    line = next(line for line in stdout.splitlines() if line.startswith(name + " "))
    return ast.literal_eval(line.removeprefix(name + " "))

def _assert_keras2_epochs(result, shuffle: str) -> None:
    """The fewer-steps script trained Keras 2's epochs: 3 of 4 steps over one stream of passes
    of its 5-batch Sequence, ``on_epoch_end`` where each pass ends, and no Keras 3 warnings."""
    assert _printed(result.stdout, "STEPS") == [4, 4, 4], result.stdout[-2000:]
    seen = _printed(result.stdout, "SEEN")
    if shuffle:  # in order, wrapping around
        assert seen == [0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 1], seen
    else:  # fit_generator's shuffle=True: each pass a permutation, each batch once
        assert len(seen) == 12 and sorted(seen[:5]) == sorted(seen[5:10]) == [0, 1, 2, 3, 4]
        # the script never passed shuffle: no Keras warning that it "will be ignored"
        assert "`shuffle=True` was passed" not in result.stderr, result.stderr[-3000:]
    # the pass ends (at least the two read in full; the feed may have begun a third)
    assert len(_printed(result.stdout, "PASS_ENDS")) >= 2, result.stdout[-2000:]
    assert "ran out of data" not in result.stderr, result.stderr[-3000:]



@pytest.mark.parametrize("imports, keras, shuffle", [
    ("import tensorflow as tf", "tf.keras", ", shuffle=False"),
    ("from tensorflow import keras", "keras", ""),
    ("import keras", "keras", ", shuffle=False"),
])
def test_fit_generator_with_fewer_steps_than_batches_goes_on_as_keras2_did(
        tmp_path, imports, keras, shuffle):
    """Keras 2's ``fit_generator`` read a Sequence through an enqueuer that looped over it
    (``on_epoch_end`` after each pass), so ``steps_per_epoch=len - 1`` trained len - 1 steps
    every epoch, each epoch taking the next batches. Keras 3 alone ends the pass after len
    batches: epochs of 4, 1, 4 steps, with "Your input ran out of data"."""
    script = tmp_path / "fewer_steps.py"
    script.write_text(FEWER_STEPS_SCRIPT.format(imports=imports, keras=keras, shuffle=shuffle))
    result = _run("-m", "stoke", "run", str(script))
    assert result.returncode == 0, result.stderr[-3000:]
    _assert_keras2_epochs(result, shuffle)


@pytest.mark.parametrize("mode, imports, keras, shuffle", [
    ("--no-accelerate", "import keras", "keras", ", shuffle=False"),
    ("--no-accelerate", "from tensorflow import keras", "keras", ""),
    ("doctor", "import tensorflow as tf", "tf.keras", ", shuffle=False"),
])
def test_fit_generator_with_fewer_steps_goes_on_as_keras2_did_without_stokes_feed(
        tmp_path, mode, imports, keras, shuffle):
    """``stoke run --no-accelerate`` and ``stoke doctor`` feed nothing through stoke, yet the
    script trains as under ``stoke run``: Keras 2's epochs of ``steps_per_epoch`` batches
    (the Sequence read in the trainer as one stream of passes), not Keras 3's 4, 1, 4. The
    doctor measures that input as the script's own Sequence, not as a stoke feed."""
    import json

    script = tmp_path / "fewer_steps.py"
    script.write_text(FEWER_STEPS_SCRIPT.format(imports=imports, keras=keras, shuffle=shuffle))
    report = tmp_path / "report.json"
    if mode == "doctor":
        result = _run("-m", "stoke", "doctor", "--probe-seconds", "0.3", "--probe-after", "3",
                      "--json", str(report), "--", sys.executable, str(script))
    else:
        result = _run("-m", "stoke", "run", mode, str(script))
    assert result.returncode == 0, result.stderr[-3000:]
    _assert_keras2_epochs(result, shuffle)
    # the note says that Keras 3 alone would end the epochs early, and how to keep Keras 2's
    assert "acc.endless = True" in result.stderr, result.stderr[-3000:]
    if mode == "doctor":
        facts = json.loads(report.read_text())["input"]
        assert facts["kind"] == "pydataset" and facts["adapter"] == "PyDatasetAdapter", facts


CLASS_WEIGHT_SCRIPT = """
import time

import numpy as np
import keras

def batches():
    rng = np.random.default_rng(0)
    while True:
        time.sleep(0.004)  # Python making each batch, on the trainer's thread
        x = rng.normal(size=(16, 8)).astype("float32")
        yield x, (x.sum(axis=1) > 0).astype("int32")

model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(1, activation="sigmoid")])
model.compile(optimizer="adam", loss="binary_crossentropy")
model.fit(batches(), steps_per_epoch=30, epochs=3, class_weight={0: 1.0, 1: 4.0}, verbose=0)
print("TRAINED")
"""


@pytest.mark.skipif(os.environ.get("KERAS_BACKEND") == "tensorflow", reason="the shim's class_weight "
                    "path is the same on every backend: two keep the suite within CI's time")
def test_the_doctor_says_it_ran_a_keras2_class_weight_on_a_generator(tmp_path):
    """Keras 2 took ``fit(generator, class_weight=...)``; Keras 3 refuses it. The doctor runs
    it as Keras 2 did (it diagnoses what the user wrote) and says so: the report names the
    call, and the fix is ``stoke run`` with the Keras-3 change spelled out (the red-team's
    a04_classweight_gen.py: exit 0 under the doctor against 1 plain, no word of it, and a
    fix, ``stoke.accelerate(gen)`` with class_weight, that raises)."""
    import json

    script = tmp_path / "weighted.py"
    script.write_text(CLASS_WEIGHT_SCRIPT)
    plain = _run(str(script))
    assert plain.returncode == 1 and "class_weight" in plain.stderr, plain.stderr[-2000:]
    report = tmp_path / "report.json"
    result = _run("-m", "stoke", "doctor", "--probe-seconds", "0.3", "--probe-after", "5",
                  "--json", str(report), "--", sys.executable, str(script))
    assert result.returncode == 0 and "TRAINED" in result.stdout, result.stderr[-3000:]
    assert "fit(class_weight=) (weighted.py:" in " ".join(result.stdout.split())
    record = json.loads(report.read_text())
    (conversion,) = record["meta"]["keras2_conversions"]
    assert "class_weight={0: 1.0, 1: 4.0}" in conversion["legacy_arguments"]
    fixes = {f["id"]: f["fix"] for f in record["findings"]}
    fix = fixes["generator-on-main-thread"]
    assert fix.startswith("stoke run ") and "drop class_weight=" in fix, fix
