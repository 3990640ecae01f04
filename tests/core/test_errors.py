"""Bad input gets a clear error and loses nothing; nothing hangs; nothing is left behind.

(The suite's conftest checks after each test that no worker process and no shared-memory
segment remains.)
"""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import psutil
import pytest

import stoke
from tests.core import helpers

EXECUTORS = ["inline", "thread", "process"]


def labelled(n=32):
    return stoke.from_arrays(np.zeros((n, 4), np.float32), np.arange(n))


@pytest.mark.parametrize("executor", EXECUTORS)
def test_failing_sample_names_index_type_and_traceback(executor):
    pipe = labelled().map(helpers.fail_on_13).batch(4)
    with pytest.raises(stoke.SampleError) as info:
        for _ in pipe.iter(executor=executor, workers=2):
            pass
    error = info.value
    assert error.index == 13 and error.original_type == "ValueError"
    assert "sample thirteen is cursed" in str(error)
    assert "fail_on_13" in error.worker_traceback and "helpers.py" in error.worker_traceback
    assert "map(fail_on_13)" in str(error)


def test_state_before_a_failure_lets_the_user_resume():
    pipe = labelled().map(helpers.fail_on_13).batch(4)
    iterator = pipe.iter(executor="process", workers=2)
    seen = []
    with pytest.raises(stoke.SampleError):
        for _, y in iterator:
            seen += y.tolist()
    assert seen == list(range(12))
    assert iterator.state().chunk == 3  # the failing batch was not delivered


@pytest.mark.parametrize("fn, code", [(helpers.kill_self_on_7, -9), (helpers.exit_123_on_5, 123)])
def test_dead_worker_is_reported_with_exit_code_and_batch(fn, code):
    pipe = labelled().map(fn).batch(4)
    started = time.monotonic()
    with pytest.raises(stoke.WorkerDiedError) as info:
        for _ in pipe.iter(executor="process", workers=2):
            pass
    assert time.monotonic() - started < 30
    assert info.value.exitcode == code
    message = str(info.value)
    assert "worker process" in message and "samples [" in message
    if code == -9:
        assert "SIGKILL" in message


def test_hung_worker_is_reported_after_timeout():
    pipe = labelled().map(helpers.hang_on_3).batch(2)
    started = time.monotonic()
    with pytest.raises(stoke.WorkerHungError, match="timeout_s"):
        for _ in pipe.iter(executor="process", workers=2, timeout_s=2):
            pass
    assert time.monotonic() - started < 20


def test_unpicklable_function_suggests_the_fix():
    lock = threading.Lock()

    def uses_lock(sample):
        with lock:
            return sample

    pipe = labelled().map(uses_lock).batch(4)
    with pytest.raises(stoke.UnpicklableError) as info:
        pipe.iter(executor="process", workers=2)
    message = str(info.value)
    assert "map(" in message and "module level" in message and 'executor="thread"' in message
    # "auto" falls back to threads and works
    assert sum(len(y) for _, y in pipe.iter(executor="auto", workers=2)) == 32


@pytest.mark.parametrize("executor", EXECUTORS)
def test_ragged_samples_name_index_and_both_shapes(executor):
    pipe = labelled().map(helpers.ragged_at_6).batch(4)
    with pytest.raises(stoke.LayoutError) as info:
        for _ in pipe.iter(executor=executor, workers=2):
            pass
    message = str(info.value)
    assert "sample 6" in message and "(5,)" in message and "(4,)" in message
    assert "sample 0" in message


def test_string_fields_are_refused_with_advice():
    pipe = stoke.from_sequence(["a", "b"]).batch(2)
    with pytest.raises(stoke.LayoutError, match="decode or encode"):
        list(pipe.iter(executor="inline"))


def _worker_pids(iterator) -> list[int]:
    return iterator.loader.pool.worker_pids()


def test_garbage_collected_iterator_stops_its_workers():
    pipe = labelled(256).batch(4)
    iterator = pipe.iter(executor="process", workers=2)
    next(iterator)
    pids = _worker_pids(iterator)
    del iterator
    gc.collect()
    deadline = time.monotonic() + 60  # generous: worker exit waits for a CPU on a loaded machine
    while any(helpers.running(p) for p in pids):
        assert time.monotonic() < deadline, "workers outlived their iterator"
        time.sleep(0.05)


def test_close_mid_epoch_stops_workers():
    iterator = labelled(256).batch(4).iter(executor="process", workers=2)
    next(iterator)
    pids = _worker_pids(iterator)
    iterator.close()
    assert not any(helpers.running(p) for p in pids)


SCRIPT = textwrap.dedent("""
    import signal, sys, time
    import numpy as np
    import stoke

    # Ctrl-C as a trainer in a terminal gets it. A test run started in the background
    # (`make test &`, nohup) hands its children SIGINT ignored, and Python keeps it so.
    signal.signal(signal.SIGINT, signal.default_int_handler)

    def slow(s):
        time.sleep(0.05)
        return s

    pipe = stoke.from_arrays(np.zeros((10000, 8), np.float32)).map(slow).batch(4)
    it = pipe.iter(executor="process", workers=2)
    next(it)
    try:
        # inside the try: a Ctrl-C that lands while print returns is still caught
        print("STARTED", flush=True)
        for _ in it:
            pass
    except KeyboardInterrupt:
        print("INTERRUPTED", flush=True)
        raise
""")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_ctrl_c_or_kill_of_the_trainer_leaves_nothing(tmp_path, sig):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    # stderr to a file, not a pipe nobody reads while waiting: a full pipe would block the
    # writer (the trainer's traceback, the workers' output) and look like a hang
    stderr_path = tmp_path / "stderr.txt"
    with open(stderr_path, "w") as stderr:
        proc = subprocess.Popen([sys.executable, "-X", "faulthandler", str(script)],
                                stdout=subprocess.PIPE, stderr=stderr, env=env, text=True)
    try:
        assert proc.stdout.readline().strip() == "STARTED"
        workers = psutil.Process(proc.pid).children()
        assert len(workers) == 2
        proc.send_signal(sig)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGABRT)  # faulthandler: every thread's stack to stderr
            proc.wait(timeout=10)
            pytest.fail(f"the trainer did not exit after {sig!r}:\n"
                        f"{stderr_path.read_text()[-6000:]}")
        gone, alive = psutil.wait_procs(workers, timeout=60)
        assert not alive, "workers outlived the trainer"
    finally:
        if proc.poll() is None:
            proc.kill()
    if sig == signal.SIGINT:
        out = proc.stdout.read()
        assert "INTERRUPTED" in out, stderr_path.read_text()[-6000:]
        assert proc.returncode != 0


USER_SCRIPT_FAILING_MAP = textwrap.dedent("""
    import numpy as np, stoke

    def decode(sample):
        x, y = sample
        if int(y) == 13:
            raise KeyError("no such file: 13.jpg")
        return sample

    pipe = stoke.from_arrays(np.zeros((32, 4), np.float32), np.arange(32)).map(decode).batch(4)
    try:
        for _ in pipe.iter(executor="{executor}", workers=2):
            pass
    except stoke.SampleError as error:
        print(error.index, error.original_type)
        print(error.worker_traceback)
""")


@pytest.mark.parametrize("executor", ["inline", "thread", "process"])
def test_failing_map_in_a_user_script_names_the_script_in_the_traceback(tmp_path, executor):
    """Users define map functions in their training script, not in an importable module:
    the worker traceback must still point at the script's file and line."""
    script = tmp_path / "train.py"
    script.write_text(USER_SCRIPT_FAILING_MAP.replace("{executor}", executor))
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.startswith("13 KeyError"), out.stdout
    assert f'File "{script}", line 7, in decode' in out.stdout, out.stdout
    assert 'raise KeyError("no such file: 13.jpg")' in out.stdout, out.stdout


USER_SCRIPT_FAILING_SEQUENCE = textwrap.dedent("""
    import numpy as np, stoke

    class Images:
        def __len__(self):
            return 8

        def __getitem__(self, index):
            if index == 5:
                raise FileNotFoundError("batch_5.npz")
            return np.zeros((2, 4), np.float32), np.zeros(2, np.float32)

    def stream(n):
        for i in range(n):
            if i == 3:
                raise RuntimeError("stream broke at 3")
            yield np.array([i], np.float32)

    for dataset, args in [(Images(), ()), (stream, (6,))]:
        with stoke.accelerate(dataset, *args, executor="process") as acc:
            try:
                for _ in acc.iter():
                    pass
            except stoke.SampleError as error:
                print(error)
""")


def test_failing_accelerated_sequence_in_a_user_script_names_the_script_and_line(tmp_path):
    """A Keras-2-era Sequence (or generator) lives in the training script: it travels to the
    worker processes by value, and the error still names the script, the line and its
    text."""
    script = tmp_path / "train.py"
    script.write_text(USER_SCRIPT_FAILING_SEQUENCE)
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.startswith("sample 5 failed in Images.__getitem__"), out.stdout
    assert f'File "{script}", line 10, in __getitem__' in out.stdout, out.stdout
    assert 'raise FileNotFoundError("batch_5.npz")' in out.stdout, out.stdout
    assert "sample 3 failed in stream (generator)" in out.stdout, out.stdout
    assert f'File "{script}", line 16, in stream' in out.stdout, out.stdout
    assert 'raise RuntimeError("stream broke at 3")' in out.stdout, out.stdout
    assert "<dynamic-code>" not in out.stdout, out.stdout
