"""JAX device feed: ``jax.device_put`` in the prefetch thread, honouring the active
``keras.distribution`` layout (so Keras' own ``device_put`` on the result is a no-op), and
an optional jitted ``device_transform`` run on the device."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np


def make_transfer(device_transform: Callable[[Any], Any] | None) -> Callable[[Any], Any]:
    import jax
    from keras.src.distribution import distribution_lib

    distribution = distribution_lib.distribution()
    transform = jax.jit(device_transform) if device_transform is not None else None
    shardings: dict[tuple, Any] = {}

    def sharding_for(shape: tuple) -> Any:
        if distribution is None:
            return None
        if shape not in shardings:
            shardings[shape] = distribution.get_data_layout(shape).backend_layout
        return shardings[shape]

    # On the CPU, XLA may alias an aligned host buffer instead of copying it (may_alias is
    # not honoured there), and ring slots are reused: give it memory of its own.
    on_cpu = jax.default_backend() == "cpu"

    def put(array: Any) -> Any:
        if on_cpu:
            array = np.array(array)
        return jax.device_put(array, sharding_for(array.shape), may_alias=False)

    def transfer(batch: Any) -> Any:
        out = jax.tree_util.tree_map(put, batch)
        if transform is not None:
            out = transform(out)
        # the ring slot is recycled after this returns: the copy must be complete
        return jax.block_until_ready(out)

    return transfer


def multi_process() -> bool:
    import jax

    return jax.process_count() > 1
