"""stoke's float64 warning points at the user's line, whatever path made the batch: a Sequence
in worker processes or threads, a generator, a pipeline. Python prints a warning with its
file and line; a warning that names stoke's own files sends the user looking in the wrong
place (issue 14)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import stoke
from stoke.errors import StokeWarning, user_stacklevel


class Float64Sequence:
    def __len__(self):
        return 3

    def __getitem__(self, index):
        return np.full((2, 3), index, np.float64), np.zeros((2,), np.float32)


def float64_batches():
    for index in range(3):
        yield np.full((2, 3), index, np.float64), np.zeros((2,), np.float32)


def _float64_warnings(caught):
    return [w for w in caught if issubclass(w.category, StokeWarning) and "float64" in str(w.message)]


@pytest.mark.parametrize(
    ("make", "executor"),
    [(Float64Sequence, "process"), (Float64Sequence, "thread"), (float64_batches, "thread")],
)
def test_accelerate_float64_warning_points_at_the_users_line(make, executor):
    source = make() if make is Float64Sequence else make
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with stoke.accelerate(source, executor=executor, workers=1) as acc:
            batches = [np.array(x) for x, _ in acc.iter()]
    found = _float64_warnings(caught)
    assert len(found) == 1, [str(w.message) for w in caught]
    assert found[0].filename == __file__, (found[0].filename, found[0].lineno)
    assert [b.dtype for b in batches] == [np.float32] * 3


def test_pipeline_float64_warning_points_at_the_users_line():
    pipe = stoke.from_arrays(np.zeros((8, 3), np.float64), np.zeros(8, np.float32)).batch(4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        batches = [np.array(x) for x, _ in pipe]
    found = _float64_warnings(caught)
    assert len(found) == 1, [str(w.message) for w in caught]
    assert found[0].filename == __file__, (found[0].filename, found[0].lineno)
    assert [b.dtype for b in batches] == [np.float32] * 2


def test_user_stacklevel_is_one_in_user_code():
    def warn_here():
        warnings.warn("here", StokeWarning, stacklevel=user_stacklevel())

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warn_here()
    assert caught[0].filename == __file__
