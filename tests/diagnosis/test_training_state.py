"""The random states a probe gives back (stoke.diagnosis.measure.training_state): a probe's
fresh iterator over the run's input draws as training's would, and must leave no trace."""

from __future__ import annotations

import random

import numpy as np
import pytest

from stoke.diagnosis.measure.training_state import snapshot_global_random


def test_global_streams_come_back_after_a_probes_draws():
    random.seed(1)
    np.random.seed(1)
    expected = (random.random(), np.random.permutation(8).tolist())
    random.seed(1)
    np.random.seed(1)
    restore = snapshot_global_random()
    random.random(), np.random.permutation(8)  # the probe's iterator: Keras' shuffle
    restore()
    assert (random.random(), np.random.permutation(8).tolist()) == expected


def test_a_dataloaders_own_generator_comes_back_after_a_second_iterator_over_it():
    # the reviewer's case: DataLoader(shuffle=True, generator=g), the usual reproducible torch
    # recipe; the probe's iterator shares g with training's, which would shuffle otherwise
    torch = pytest.importorskip("torch")
    from torch.utils.data import DataLoader

    def epochs(probe: bool) -> list[list[int]]:
        loader = DataLoader(list(range(12)), batch_size=4, shuffle=True,
                            generator=torch.Generator().manual_seed(0))
        orders = [torch.cat(list(loader)).tolist()]
        if probe:
            restore = snapshot_global_random(loader)
            next(iter(loader))
            restore()
        orders.append(torch.cat(list(loader)).tolist())
        return orders

    assert epochs(probe=True) == epochs(probe=False)
