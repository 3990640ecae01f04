"""Keras-2-era scripts (``tests/scripts/keras2/``: three import styles; fit with workers,
fit_generator, evaluate_generator, predict_generator, ImageDataGenerator, a Sequence that
reshuffles with the global ``np.random``), each run as a user runs it, under ``stoke run``
and under ``stoke doctor``, on the backend in ``KERAS_BACKEND``.

"Same batches as Keras": a script whose batches are deterministic prints its losses; under
``stoke run`` they must equal those of ``stoke run --no-accelerate`` (the calls translated,
the data read by Keras 3's own loop, as under the doctor), to the last printed digit. The
image iterators' batches are compared with Keras' own loop in-process below.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CORPUS = os.path.join("tests", "scripts", "keras2")
SCRIPTS = sorted(n for n in os.listdir(os.path.join(ROOT, CORPUS)) if n.endswith(".py"))
# scripts whose training batches are deterministic (seeded, no augmentation drawn in a
# worker's own np.random): their training losses must equal Keras 3's own loop's
EXACT = {"fromtf_fit_generator.py", "keras_fit_generator.py", "tf_fit_workers.py"}
HEADER = "to run this script without `stoke run`, change:"


def _run(*args: str, timeout: float = 400) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": ROOT}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def _doctor_command(script: str, report: str) -> tuple[str, ...]:
    return ("-m", "stoke", "doctor", "--probe-seconds", "0.3", "--probe-after", "3",
            "--json", report, "--", sys.executable, os.path.join(CORPUS, script))


@pytest.fixture(scope="module")
def corpus_runs(tmp_path_factory):
    """Every run of the corpus (``stoke run``; ``--no-accelerate`` for the exact ones;
    ``stoke doctor``), started together a few at a time (each is mostly start-up), so the
    corpus costs minutes, not the sum of its runs. Keys: ``(mode, script)``."""
    from concurrent.futures import ThreadPoolExecutor

    folder = tmp_path_factory.mktemp("doctor")
    commands = {}
    for script in SCRIPTS:
        path = os.path.join(CORPUS, script)
        commands["run", script] = ("-m", "stoke", "run", path)
        if script in EXACT:
            commands["keras", script] = ("-m", "stoke", "run", "--no-accelerate", path)
        commands["doctor", script] = _doctor_command(script, str(folder / f"{script}.json"))
    try:
        parallel = min(4, max(2, len(os.sched_getaffinity(0))))
    except AttributeError:  # pragma: no cover - macOS
        parallel = 2
    with ThreadPoolExecutor(parallel) as pool:
        futures = {key: pool.submit(_run, *command) for key, command in commands.items()}
        runs = {key: future.result() for key, future in futures.items()}
    return runs, folder


def _trained(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stderr[-4000:]
    lines = [line for line in result.stdout.splitlines() if line.startswith("TRAINED")]
    assert len(lines) == 1, result.stdout[-2000:]
    match = re.search(r"callback_batches=(\d+)", lines[0])
    assert match is None or int(match.group(1)) == 8, lines[0]  # 2 epochs x 4 steps
    return lines[0]


def test_corpus_has_every_style():
    text = {n: open(os.path.join(ROOT, CORPUS, n)).read() for n in SCRIPTS}
    joined = "\n".join(text.values())
    for style in ("import tensorflow as tf", "from tensorflow import keras", "import keras",
                  "from tensorflow.keras", "from keras."):
        assert style in joined, style
    for call in ("fit_generator(", "evaluate_generator(", "predict_generator(", "workers=",
                 "ImageDataGenerator", "flow_from_directory(", "flow_from_dataframe(",
                 ".flow(", "np.random.shuffle", "class_weight=", "callbacks=", "lr=",
                 "decay="):
        assert call in joined, call


@pytest.mark.parametrize("script", SCRIPTS)
def test_stoke_run_trains_on_keras_batches(script, corpus_runs):
    runs, _ = corpus_runs
    path = os.path.join(CORPUS, script)
    result = runs["run", script]
    trained = _trained(result)
    assert result.stderr.count(HEADER) == 1, result.stderr[-3000:]
    advice = [line for line in result.stderr.splitlines() if line.startswith(f"    {path}:")]
    assert advice, result.stderr[-3000:]
    assert len(advice) == len(set(advice))  # each call once
    assert all("→" in line for line in advice)
    if script in EXACT:  # the training loss, to the last printed digit
        keras_own = _trained(runs["keras", script])
        assert trained.split()[1] == keras_own.split()[1], (trained, keras_own)


@pytest.mark.parametrize("script", SCRIPTS)
def test_stoke_doctor_runs_the_script(script, corpus_runs):
    runs, folder = corpus_runs
    _trained(runs["doctor", script])
    assert json.loads((folder / f"{script}.json").read_text())["verdict"]


@pytest.mark.skipif(os.environ.get("KERAS_BACKEND") != "tensorflow", reason="the shim's install "
                    "under a first TensorFlow import does not depend on the backend: TensorFlow's "
                    "own keeps the suite within CI's time")
def test_tensorflow_first_gets_the_shim_and_its_conversions(tmp_path):
    """TensorFlow imported first (its __init__ probes find_spec("keras")), keras reached as
    tf.keras: the shim is in place, and conversions() names the script's call."""
    script = tmp_path / "tf_first.py"
    script.write_text(
        "import tensorflow as tf\n"
        "import numpy as np\n"
        "from stoke.legacy import shim\n"
        "m = tf.keras.Sequential([tf.keras.Input((3,)), tf.keras.layers.Dense(1)])\n"
        "m.compile(loss='mse')\n"
        "ds = tf.data.Dataset.from_tensor_slices((np.ones((8, 3)), np.ones(8))).batch(4)\n"
        "m.fit(ds, epochs=1, verbose=0,\n"
        "      workers=4)\n"
        "[c] = shim.conversions()\n"
        "print('CONVERSION', c.lineno, c.method, c.input_kind, c.legacy_arguments,"
        " c.accelerated, c.call_source)\n")
    result = _run("-m", "stoke", "run", str(script))
    assert result.returncode == 0, result.stderr[-3000:]
    assert ("CONVERSION 7 fit tf.data ('workers=4',) False "
            "m.fit(ds, epochs=1, verbose=0, workers=4)") in result.stdout
    assert "delete workers=..." in result.stderr  # not "ran through stoke.accelerate"
    assert "stoke.accelerate(ds)" not in result.stderr


@pytest.mark.skipif(os.environ.get("KERAS_BACKEND") != "jax", reason="the Keras-2 shim names a call "
                    "the same way on every backend: one keeps the suite within CI's time")
def test_keras2_call_without_equivalent_is_named(tmp_path):
    script = tmp_path / "classes.py"
    script.write_text(
        "import keras, numpy as np\n"
        "m = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])\n"
        "labels = m.predict_classes(np.ones((4, 3)))\n")
    result = _run("-m", "stoke", "run", str(script))
    assert result.returncode == 1
    assert f"{script}:3: `m.predict_classes(np.ones((4, 3)))`" in result.stderr
    assert "np.argmax(model.predict(x), axis=-1)" in result.stderr


@pytest.mark.skipif(os.environ.get("KERAS_BACKEND") != "jax", reason="the Keras-2 shim passes a script's exception through "
                    "the same way on every backend: one keeps the suite within CI's time")
def test_scripts_own_exception_passes_through(tmp_path):
    script = tmp_path / "raises.py"
    script.write_text("import keras\n\ndef load():\n    raise KeyError('no such column: age')\n\n"
                      "load()\n")
    result = _run("-m", "stoke", "run", str(script))
    assert result.returncode == 1
    trace = result.stderr[result.stderr.index("Traceback (most recent call last):"):]
    plain = _run(str(script))  # what python itself prints
    assert plain.returncode == 1
    assert trace == plain.stderr[plain.stderr.index("Traceback (most recent call last):"):]
    assert f'File "{script}", line 6, in <module>' in trace
    assert f'File "{script}", line 4, in load' in trace
    assert trace.rstrip().endswith("KeyError: 'no such column: age'")
    assert "stoke/legacy" not in trace and "runpy" not in trace


@pytest.mark.skipif(os.environ.get("KERAS_BACKEND") != "jax", reason="the image iterator's batches "
                    "are NumPy on every backend: one keeps the suite within CI's time")
@pytest.mark.parametrize("seed", [11, None])
def test_image_iterator_gives_keras_batches(seed):
    """flow() with augmentation, read through stoke.accelerate by 2 process workers: with a
    seed, the very batches of Keras' own loop (it[0..n-1], on_epoch_end, ...); without one,
    every sample once an epoch."""
    import keras
    from keras.src.trainers.data_adapters.py_dataset_adapter import PyDatasetAdapter

    import stoke

    image = keras.src.legacy.preprocessing.image
    x = np.random.RandomState(0).rand(44, 6, 6, 3)
    y = np.arange(44).astype("float32")
    generator = image.ImageDataGenerator(width_shift_range=0.2, horizontal_flip=True)
    reference = []
    adapter = PyDatasetAdapter(generator.flow(x, y, batch_size=8, seed=seed), shuffle=False)
    for _ in range(3):
        adapter.on_epoch_begin()
        reference += list(adapter.get_numpy_iterator())
        adapter.on_epoch_end()
    with stoke.accelerate(generator.flow(x, y, batch_size=8, seed=seed), workers=2,
                          executor="process") as accelerated:
        assert accelerated.executor == "process"
        got = [tuple(np.array(a) for a in batch) for batch in accelerated.iter(epochs=3)]
    assert len(got) == len(reference) == 18
    for epoch in range(3):
        labels = np.concatenate([b[1] for b in got[epoch * 6:(epoch + 1) * 6]])
        assert sorted(labels.tolist()) == list(range(44))
    if seed is not None:
        for ours, theirs in zip(got, reference, strict=True):
            np.testing.assert_array_equal(ours[1], theirs[1])
            np.testing.assert_allclose(ours[0], theirs[0], rtol=1e-6)


def test_accelerate_casts_float64_once_with_opt_out():
    import keras

    import stoke

    class Tutorial(keras.utils.Sequence):
        def __len__(self):
            return 3

        def __getitem__(self, index):
            x = np.empty((4, 2))
            x[:] = index
            return x, np.arange(4)

    with pytest.warns(stoke.StokeWarning, match=r"float64 field\(s\) \[0\].*keep_float64=True"):
        with stoke.accelerate(Tutorial(), workers=1) as accelerated:
            batches = list(accelerated.iter())
    assert [b[0].dtype for b in batches] == [np.float32] * 3
    assert [b[1].dtype for b in batches] == [np.int64] * 3
    with stoke.accelerate(Tutorial(), workers=1, keep_float64=True) as accelerated:
        assert next(iter(accelerated.iter()))[0].dtype == np.float64


def test_conversions_are_frozen_records():
    from dataclasses import FrozenInstanceError, fields

    from stoke.legacy.conversions import Conversion

    assert [f.name for f in fields(Conversion)] == [
        "filename", "lineno", "call_source", "method", "input_kind", "legacy_arguments",
        "accelerated", "read_as_stream"]
    record = Conversion("train.py", 42, "model.fit_generator(training_generator, workers=6)",
                        "fit_generator", "sequence", ("workers=6",), True)
    with pytest.raises(FrozenInstanceError):
        record.lineno = 1
    assert record.advice() == ("train.py:42 `model.fit_generator(..., workers=6)` → "
                               "`model.fit(stoke.accelerate(training_generator), ...)` "
                               "(and `import stoke`)")
    assert re.search(r"delete workers=\.\.\.", Conversion(
        "t.py", 1, "m.fit(ds, workers=4)", "fit", "tf.data", ("workers=4",), False).advice())
    # a Sequence given fewer steps than its length: the advice keeps Keras 2's epochs
    call = "model.fit_generator(seq, steps_per_epoch=4)"
    fed = Conversion("t.py", 3, call, "fit_generator", "sequence", (), True, True).advice()
    assert fed == ("t.py:3 `model.fit_generator(...)` → `acc = stoke.accelerate(seq)`, "
                   "`acc.endless = True`, `model.fit(acc, ...)` (and `import stoke`; without "
                   "`endless`, Keras 3 ends an epoch where the Sequence ends, as it does "
                   "without stoke)")
    plain = Conversion("t.py", 3, call, "fit_generator", "sequence", (), False, True).advice()
    assert plain.startswith("t.py:3 `model.fit_generator(...)` → `model.fit(seq, ...)`; Keras 3 "
                            "ends an epoch where seq ends"), plain
    assert "`acc.endless = True`" in plain


@pytest.mark.skipif(os.environ.get("KERAS_BACKEND") != "jax", reason="the Keras-2 shim converts optimizer arguments "
                    "the same way on every backend: one keeps the suite within CI's time")
def test_optimizers_take_keras2_lr_and_decay(tmp_path):
    """`SGD(lr=0.1, decay=0.5)`: Keras 3 refuses lr and ignores decay; under the shim it is
    Keras 2's time decay (0.1 / (1 + 0.5 * 2) after two updates), noted once with its line."""
    script = tmp_path / "optimizers.py"
    script.write_text(
        "import numpy as np\n"
        "from keras import Input, Sequential, layers\n"
        "from keras.optimizers import SGD, Adam\n"
        "m = Sequential([Input((3,)), layers.Dense(1)])\n"
        "opt = SGD(lr=0.1, decay=0.5, momentum=0.9)\n"
        "m.compile(optimizer=opt, loss='mse')\n"
        "m.fit(np.ones((8, 3)), np.ones(8), batch_size=4, epochs=1, verbose=0)\n"
        "print('LR', round(float(opt.learning_rate), 6), 'ADAM', float(Adam(lr=0.5).learning_rate))\n")
    result = _run("-m", "stoke", "run", str(script))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "LR 0.05 ADAM 0.5" in result.stdout
    # the script's path as the note prints it: relative to the current folder when shorter
    shown = min(str(script), os.path.relpath(script, ROOT), key=len)
    assert f"{shown}:5 `SGD(..., lr=0.1, decay=0.5)` → `SGD(learning_rate=keras.optimizers." \
           "schedules.InverseTimeDecay(0.1, decay_steps=1, decay_rate=0.5), ...)`" \
        in result.stderr
    assert f"{shown}:8 `Adam(..., lr=0.5)` → `Adam(learning_rate=0.5, ...)`" in result.stderr


@pytest.mark.skipif(os.environ.get("KERAS_BACKEND") != "jax", reason="the Keras-2 shim names Keras 1 arguments "
                    "the same way on every backend: one keeps the suite within CI's time")
def test_keras1_arguments_are_named_with_what_to_write(tmp_path):
    script = tmp_path / "keras1.py"
    script.write_text(
        "import keras, numpy as np\n"
        "def gen():\n"
        "    while True:\n"
        "        yield np.ones((4, 3)), np.ones(4)\n"
        "m = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])\n"
        "m.compile(loss='mse')\n"
        "m.fit_generator(gen(), samples_per_epoch=100,\n"
        "                nb_epoch=2)\n")
    result = _run("-m", "stoke", "run", str(script))
    assert result.returncode == 1
    assert (f"{script}:7: `m.fit_generator(gen(), samples_per_epoch=100, nb_epoch=2)`: Keras 1 "
            "argument(s) samples_per_epoch= (write steps_per_epoch=samples // batch_size), "
            "nb_epoch= (write epochs=...)") in result.stderr, result.stderr[-2000:]


@pytest.mark.skipif(os.environ.get("KERAS_BACKEND") != "jax", reason="the Keras-2 shim counts float "
                    "steps the same way on every backend: one keeps the suite within CI's time")
def test_float_steps_count_as_keras2_counted_them(tmp_path):
    """Keras 2's own ImageDataGenerator example passes ``steps_per_epoch=len(x_train) / 32``
    (a float; Keras 2 ran steps while ``steps_done < steps_per_epoch``: ceil); Keras 3's
    ``range()`` refuses it with ``TypeError: 'float' object cannot be interpreted as an
    integer``."""
    script = tmp_path / "float_steps.py"
    script.write_text(
        "import keras, numpy as np\n"
        "from keras.preprocessing.image import ImageDataGenerator\n"
        "x, y = np.random.rand(44, 6, 6, 3), np.arange(44) % 2\n"
        "class Steps(keras.callbacks.Callback):\n"
        "    def on_epoch_begin(self, epoch, logs=None):\n"
        "        self.steps = 0\n"
        "    def on_train_batch_end(self, batch, logs=None):\n"
        "        self.steps += 1\n"
        "    def on_epoch_end(self, epoch, logs=None):\n"
        "        print('STEPS', self.steps, flush=True)\n"
        "m = keras.Sequential([keras.Input((6, 6, 3)), keras.layers.Flatten(),"
        " keras.layers.Dense(1, activation='sigmoid')])\n"
        "m.compile(loss='binary_crossentropy')\n"
        "datagen = ImageDataGenerator(horizontal_flip=True)\n"
        "m.fit_generator(datagen.flow(x, y, batch_size=8), steps_per_epoch=len(x) / 8, epochs=2,"
        " validation_data=datagen.flow(x, y, batch_size=8), validation_steps=len(x) / 16,"
        " callbacks=[Steps()], verbose=0)\n"
        "print('EVAL', m.evaluate_generator(datagen.flow(x, y, batch_size=8), steps=len(x) / 8))\n")
    result = _run("-m", "stoke", "run", str(script))
    assert result.returncode == 0, result.stderr[-3000:]
    assert [line for line in result.stdout.splitlines() if line.startswith("STEPS")] == \
        ["STEPS 6", "STEPS 6"], result.stdout[-2000:]
    assert "EVAL" in result.stdout


NOTE_DURING_FIT = """
import keras, numpy as np


class RecompileLater(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 0:  # a Keras-2 optimizer made while fit runs (its progress bar is open)
            self.made = keras.optimizers.SGD(lr=0.01)


m = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
m.compile(optimizer="sgd", loss="mse")
m.fit(np.ones((16, 3)), np.ones(16), batch_size=4, epochs=2, verbose=1,
      callbacks=[RecompileLater()])
print("FIT DONE", flush=True)
"""


@pytest.mark.skipif(os.environ.get("KERAS_BACKEND") != "jax", reason="the Keras-2 shim holds its notes "
                    "the same way on every backend: one keeps the suite within CI's time")
@pytest.mark.parametrize("runner", ["stoke run", "stoke doctor"])
def test_a_note_that_comes_during_fit_waits_for_its_end(tmp_path, runner):
    script = tmp_path / "note_during_fit.py"
    script.write_text(NOTE_DURING_FIT)
    command = ("-m", "stoke", "run", "--no-accelerate", str(script)) if runner == "stoke run" \
        else ("-m", "stoke", "doctor", "--no-probes", "--", "python", str(script))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": ROOT}
    # one pipe for both streams: the lines in the order the script wrote them
    result = subprocess.run([sys.executable, *command], cwd=ROOT, env=env, timeout=400,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = result.stdout.splitlines()
    assert result.returncode == 0, result.stdout[-3000:]
    advice = [i for i, line in enumerate(lines) if "`SGD(..., lr=0.01)`" in line]
    last_epoch = [i for i, line in enumerate(lines) if line.startswith("Epoch 2/2")]
    done = lines.index("FIT DONE")
    assert len(advice) == 1 and last_epoch, result.stdout[-3000:]
    # after the last epoch's progress, before the script goes on: not inside fit's output
    assert last_epoch[0] < advice[0] < done, result.stdout[-3000:]
    assert lines[advice[0] - 1].endswith("stoke run`, change:"), result.stdout[-3000:]
