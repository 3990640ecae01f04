"""Never wrong silently (issue 12, part B): dtype changes within an epoch, resuming repeat(),
per-worker global rng, the workers' import path, worker caps, stuck workers, clear errors.

Each test is a scenario a user met; each failed before the fix it guards.
"""

from __future__ import annotations

import json

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
