"""Never wrong silently (issue 12, part B): dtype changes within an epoch, resuming repeat(),
per-worker global rng, the workers' import path, worker caps, stuck workers, clear errors.

Each test is a scenario a user met; each failed before the fix it guards.
"""

from __future__ import annotations

import collections
import inspect
import json
import os
import subprocess
import sys
import threading
import time
import warnings

import numpy as np
import pytest

import stoke

EXECUTORS = ["inline", "thread", "process"]


# -- dtype changes within an epoch ---------------------------------------------------------

def uint8_then_uint16(index):
    return np.uint8(5) if index == 0 else np.uint16(1000)


def int32_then_huge(index):
    return np.int32(7) if index == 0 else np.int64(2**40 + 5)


def float16_then_big(index):
    return np.zeros(3, np.float16) if index == 0 else np.full(3, 1e6, np.float32)


def uint8_then_small_uint16(index):
    return np.uint8(5) if index == 0 else np.uint16(200)


def int_label_then_numpy(index):
    image = np.full((2, 2), index, np.uint8)
    return (image, 3) if index == 0 else (image, np.int32(index))


@pytest.mark.parametrize("executor", EXECUTORS)
@pytest.mark.parametrize("make", [uint8_then_uint16, int32_then_huge, float16_then_big],
                         ids=["uint8-uint16", "int32-2**40", "float16-1e6"])
def test_a_later_sample_that_does_not_fit_the_first_dtype_is_refused(executor, make):
    pipe = stoke.from_sequence(list(range(8))).map(make).batch(4)
    with pytest.raises(stoke.LayoutError) as info:
        list(pipe.iter(executor=executor, workers=1))
    message = str(info.value)
    assert "sample 1" in message and "sample 0" in message
    first, later = np.asarray(make(0)).dtype, np.asarray(make(1)).dtype
    assert str(first) in message and str(later) in message


@pytest.mark.parametrize("executor", EXECUTORS)
def test_a_narrower_dtype_whose_values_fit_is_stored_unchanged(executor):
    pipe = stoke.from_sequence(list(range(8))).map(uint8_then_small_uint16).batch(4)
    batches = list(pipe.iter(executor=executor, workers=1, copy=True))
    assert np.concatenate(batches).tolist() == [5] + [200] * 7


@pytest.mark.parametrize("executor", EXECUTORS)
def test_python_int_labels_then_numpy_labels_keep_their_values(executor):
    pipe = stoke.from_sequence(list(range(6))).map(int_label_then_numpy).batch(3)
    labels = [y for _, y in pipe.iter(executor=executor, workers=1, copy=True)]
    assert np.concatenate(labels).tolist() == [3, 1, 2, 3, 4, 5]


def float64_out_of_float32_range(index):
    return np.float64(1e300 if index == 2 else 1.0)


def test_float64_beyond_float32_range_is_refused_not_made_inf():
    pipe = stoke.from_sequence(list(range(4))).map(float64_out_of_float32_range).batch(4)
    with pytest.raises(stoke.LayoutError, match="keep_float64=True"):
        list(pipe.iter(executor="inline"))
    kept = list(stoke.from_sequence(list(range(4))).map(float64_out_of_float32_range)
                .batch(4, keep_float64=True).iter(executor="inline", copy=True))
    assert kept[0][2] == 1e300


def big_endian_sample(index):
    return np.arange(3, dtype=">f4") + index, np.array(index, dtype=">i8")


@pytest.mark.parametrize("executor", EXECUTORS)
def test_big_endian_samples_arrive_in_native_byte_order(executor):
    pipe = stoke.from_sequence(list(range(4))).map(big_endian_sample).batch(2)
    batches = list(pipe.iter(executor=executor, workers=1, copy=True))
    for x, y in batches:
        assert x.dtype == np.dtype("float32") and x.dtype.isnative
        assert y.dtype == np.dtype("int64") and y.dtype.isnative
    assert batches[1][0].tolist() == [[2, 3, 4], [3, 4, 5]]


# -- resuming repeat(n) ---------------------------------------------------------------------

@pytest.mark.parametrize("executor", ["inline", "process"])
def test_resuming_a_repeat_pipeline_yields_only_the_epochs_that_were_left(executor):
    pipe = stoke.from_arrays(np.arange(12)).shuffle(seed=3).batch(4).repeat(3)
    everything = [b.tolist() for b in pipe.iter(executor=executor, workers=1, copy=True)]
    assert len(everything) == 9

    iterator = pipe.iter(executor=executor, workers=1, copy=True)
    seen = [next(iterator).tolist() for _ in range(4)]  # epoch 0 and one batch of epoch 1
    saved = json.loads(json.dumps(iterator.state().to_dict()))  # through a checkpoint file
    iterator.close()

    rest = [b.tolist() for b in pipe.iter(executor=executor, workers=1, state=saved, copy=True)]
    assert seen + rest == everything  # 9 batches, 3 epochs: none added, none lost


def test_a_state_saved_after_the_last_epoch_of_repeat_starts_the_next_iteration():
    pipe = stoke.from_arrays(np.arange(8)).batch(4).repeat(2)
    iterator = pipe.iter(executor="inline")
    assert len(list(iterator)) == 4
    resumed = pipe.iter(executor="inline", state=iterator.state())
    assert len(list(resumed)) == 4 and resumed.state().epoch == 4  # epochs 2 and 3


# -- the workers' import path -----------------------------------------------------------------

USER_MODULE = """
import numpy as np

class Squares:  # a dataset class in the user's project, next to train.py
    def __len__(self):
        return 6

    def __getitem__(self, index):
        return np.int64(index * index)
"""

TRAIN_SCRIPT = """
import collections
import inspect
import json
import os
import subprocess
import sys
import threading
import time
import warnings
import stoke
from mydata import Squares

pipe = stoke.from_sequence(Squares()).batch(3)
print(json.dumps([b.tolist() for b in pipe.iter(executor="process", workers=2, copy=True)]))
"""

PLANTED = "open({marker!r}, 'w').write('ran'); raise SystemExit('planted module ran')\n"


def run_python(args, cwd, tmp_path):
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(stoke.__file__)))
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


@pytest.fixture
def project(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    (project / "mydata.py").write_text(USER_MODULE)
    (project / "train.py").write_text(TRAIN_SCRIPT)
    return project


def test_a_stale_stoke_in_the_current_directory_never_runs_in_the_workers(project, tmp_path):
    elsewhere = tmp_path / "elsewhere"  # the user cds somewhere with an old checkout in it
    marker = tmp_path / "planted-ran"
    for package in ("stoke", "stoke/executors"):
        (elsewhere / package).mkdir(parents=True)
        (elsewhere / package / "__init__.py").write_text(PLANTED.format(marker=str(marker)))
    (elsewhere / "stoke/executors/worker.py").write_text(PLANTED.format(marker=str(marker)))

    done = run_python([str(project / "train.py")], elsewhere, tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [[0, 1, 4], [9, 16, 25]]
    assert not marker.exists()


def test_the_users_modules_still_import_in_the_workers_from_a_notebook_like_trainer(project,
                                                                                   tmp_path):
    # ``python -c`` (like a notebook) imports from the current directory: so do the workers
    done = run_python(["-c", TRAIN_SCRIPT], project, tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [[0, 1, 4], [9, 16, 25]]


# -- the dataset's own global rng in process workers ----------------------------------------

TUTORIAL_MODULE = """
import random
import numpy as np

np.random.seed(0)  # "for reproducibility", at the top of the dataset's module
random.seed(0)


class Augmented:
    '''A tutorial Sequence: batch i of 4 images, each flipped / shifted at random.'''

    def __len__(self):
        return 16

    def __getitem__(self, index):
        shift = np.random.randint(0, 2**31, size=4)
        flip = np.array([random.random() for _ in range(4)])
        return shift.astype(np.int64), flip

    def sample(self, index):
        return self[index][0][:1]
"""


@pytest.fixture
def tutorial_module(tmp_path, monkeypatch):
    (tmp_path / "tutorial_data.py").write_text(TUTORIAL_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    import tutorial_data

    yield tutorial_data
    sys.modules.pop("tutorial_data", None)


def test_process_workers_draw_different_augmentations_from_global_numpy_and_random(
        tutorial_module):
    dataset = tutorial_module.Augmented()
    with stoke.accelerate(dataset, workers=2, executor="process") as acc:
        batches = [(x.copy(), flip.copy()) for x, flip in acc.iter()]
    shifts = [tuple(x.tolist()) for x, _ in batches]
    flips = [tuple(f.tolist()) for _, f in batches]
    assert len(batches) == 16
    assert len(set(shifts)) == 16 and len(set(flips)) == 16  # no worker repeats another


def test_pipeline_process_workers_draw_different_global_random_numbers(tutorial_module):
    dataset = tutorial_module.Augmented()
    pipe = stoke.from_sequence(list(range(16))).map(dataset.sample).seed_with(7).batch(1)
    draws = [int(b[0][0]) for b in pipe.iter(executor="process", workers=2, copy=True)]
    assert len(set(draws)) == 16  # no worker repeats the other's draws


# -- limits: worker count, stuck workers ------------------------------------------------------

def cores():
    return len(os.sched_getaffinity(0))


def test_more_workers_than_cores_are_cut_to_the_cores_with_a_warning():
    pipe = stoke.from_arrays(np.arange(8)).batch(2)
    with pytest.warns(stoke.StokeWarning, match="more than the .* core"):
        with pipe.loader(workers=cores() + 3, executor="thread") as loader:
            assert loader.workers == cores()
            assert np.concatenate([b.copy() for b in loader.iter()]).tolist() == list(range(8))


def test_oversubscribe_starts_every_worker_asked_for():
    pipe = stoke.from_arrays(np.arange(8)).batch(2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pipe.loader(workers=cores() + 3, executor="thread", oversubscribe=True) as loader:
            assert loader.workers == cores() + 3


def test_stuck_workers_are_reported_within_30_seconds_by_default():
    # what pipe.iter(), loader() and to_keras() use
    from stoke.executors.options import LoaderOptions

    assert LoaderOptions().timeout_s <= 30
    assert inspect.signature(stoke.accelerate).parameters["timeout_s"].default <= 30


RELEASE = threading.Event()


def wait_for_release_on_2(index):
    if index == 2:
        RELEASE.wait(60)  # a lock that is never released, a dead socket...
    return np.int64(index)


def test_a_hung_thread_worker_is_reported_with_where_it_waits():
    pipe = stoke.from_sequence(list(range(8))).map(wait_for_release_on_2).batch(2)
    RELEASE.clear()
    try:
        with pytest.raises(stoke.WorkerHungError) as info, \
                pytest.warns(stoke.StokeWarning, match="still stuck after the loader closed"):
            list(pipe.iter(executor="thread", workers=2, timeout_s=1))
    finally:
        RELEASE.set()
    message = str(info.value)
    assert "using no CPU" in message and "worker thread" in message
    assert "samples [2, 3]" in message
    assert "in wait_for_release_on_2" in message and __file__ in message


def busy_first_sample(index):
    if index == 0:  # like a first sample that imports a framework: slow, but working
        deadline = time.process_time() + 2.5
        while time.process_time() < deadline:
            pass
    return np.int64(index)


@pytest.mark.parametrize("executor", ["thread", "process"])
def test_a_slow_but_busy_first_batch_is_not_reported_as_stuck(executor):
    pipe = stoke.from_sequence(list(range(4))).map(busy_first_sample).batch(2)
    with pytest.warns(stoke.StokeWarning, match="the workers are busy"):
        batches = [b.tolist() for b in pipe.iter(executor=executor, workers=1, timeout_s=0.5,
                                                  copy=True)]
    assert batches == [[0, 1], [2, 3]]


# -- clear errors ------------------------------------------------------------------------------

Sample = collections.namedtuple("Sample", ["image", "label"])


def as_namedtuple(index):
    return Sample(np.full((2, 2), index, np.float32), np.int64(index))


@pytest.mark.parametrize("executor", EXECUTORS)
def test_namedtuple_samples_batch_into_namedtuples(executor):
    pipe = stoke.from_sequence(list(range(6))).map(as_namedtuple).batch(3)
    batches = list(pipe.iter(executor=executor, workers=1, copy=True))
    assert [b.label.tolist() for b in batches] == [[0, 1, 2], [3, 4, 5]]
    assert batches[1].image.shape == (3, 2, 2) and batches[1].image[0, 0, 0] == 3
    image, label = batches[0]  # still unpacks as a tuple
    assert type(batches[0]).__name__ == "Sample" and batches[0]._fields == ("image", "label")


def mixed_keys(index):
    return {0: np.float32(index), "label": np.int64(index)}


@pytest.mark.parametrize("executor", EXECUTORS)
def test_a_dict_with_mixed_key_types_batches(executor):
    pipe = stoke.from_sequence(list(range(4))).map(mixed_keys).batch(2)
    batches = list(pipe.iter(executor=executor, workers=1, copy=True))
    assert [b["label"].tolist() for b in batches] == [[0, 1], [2, 3]]
    assert batches[1][0].tolist() == [2.0, 3.0]


def exit_on_5(index):
    if index == 5:
        sys.exit("no more")  # a BaseException, not an Exception
    return np.int64(index)


@pytest.mark.parametrize("executor", EXECUTORS)
def test_a_base_exception_in_map_names_its_sample(executor):
    pipe = stoke.from_sequence(list(range(8))).map(exit_on_5).batch(2)
    with pytest.raises(stoke.SampleError) as info:
        list(pipe.iter(executor=executor, workers=1))
    assert info.value.index == 5 and info.value.original_type == "SystemExit"
    assert "no more" in str(info.value)


@pytest.mark.parametrize("executor", EXECUTORS)
def test_numpy_integers_are_accepted_as_batch_size_workers_and_counts(executor):
    config = np.array([4, 2, 2])  # read from an array, a config file, argparse + numpy...
    batch_size, workers, epochs = config
    pipe = stoke.from_arrays(np.arange(8)).batch(batch_size).repeat(epochs)
    batches = [b.tolist() for b in pipe.iter(executor=executor, workers=workers, copy=True)]
    assert batches == [[0, 1, 2, 3], [4, 5, 6, 7]] * 2
    assert len(stoke.from_arrays(np.arange(8)).shard(np.int64(1), np.int64(2)).batch(2)) == 2
    with pytest.raises(ValueError, match="batch size must be an int >= 1. Received: 2.5"):
        stoke.from_arrays(np.arange(8)).batch(2.5)
    with pytest.raises(ValueError, match="Received: True"):
        stoke.from_arrays(np.arange(8)).batch(True)


def test_the_keras_fallback_advice_is_something_keras_accepts():
    import stoke.keras.adapter as adapter

    source = inspect.getsource(adapter)
    assert "model.fit(pipe.iter(" not in source  # Keras rejects stoke's iterator object


CTRL_C_SCRIPT = """
import sys, time
import numpy as np
import stoke

def heavy_import(x):
    return x

pipe = stoke.from_arrays(np.zeros((64, 4), np.float32)).map(heavy_import).batch(8)
print("STARTING", flush=True)
try:
    for _ in pipe.iter(executor="process", workers=2):
        pass
except KeyboardInterrupt:
    print("INTERRUPTED", flush=True)
    sys.exit(130)
"""


def test_ctrl_c_while_workers_start_prints_no_worker_tracebacks(tmp_path):
    import signal

    script = tmp_path / "train.py"
    script.write_text(CTRL_C_SCRIPT)
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(stoke.__file__)))
    process = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=env,
                               start_new_session=True)  # its own terminal-like group
    try:
        assert process.stdout.readline().strip() == "STARTING"
        time.sleep(0.15)  # the workers are importing numpy and stoke now
        os.killpg(process.pid, signal.SIGINT)  # what a Ctrl-C at the terminal does
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert "stoke/executors/worker" not in err and "<frozen runpy>" not in err, err
    assert err.count("Traceback") <= 1  # the trainer's own KeyboardInterrupt at most


class LabelsGrowWide:
    """A Sequence whose first batch has small uint8 labels, later ones uint16 labels."""

    def __len__(self):
        return 4

    def __getitem__(self, index):
        x = np.full((2, 3), index, np.float32)
        y = np.array([1, 2], np.uint8) if index == 0 else np.array([1000, 1001], np.uint16)
        return x, y


@pytest.mark.parametrize("executor", ["thread", "process"])
def test_an_accelerated_sequence_never_narrows_a_later_batch(executor):
    with pytest.warns(stoke.StokeWarning, match="does not fit the layout of batch 0"):
        with stoke.accelerate(LabelsGrowWide(), workers=1, executor=executor) as acc:
            labels = [y.tolist() for _, y in acc.iter()]
    assert labels == [[1, 2], [1000, 1001], [1000, 1001], [1000, 1001]]
