"""The training state the doctor's probes borrow and give back.

Owns the three ways a probe leaves the run's weights as training left them: a copy of a JAX
training state (Keras donates the state to each step, so a probe steps on a copy), a snapshot
of every model, optimizer and metric variable put back afterwards (TensorFlow, torch), and
handing a JAX state back to the model (the last step's before the doctor ends a ``fit`` early,
or the state an abandoned input-free window saved). And torch's global random state, which
a probe's steps and a fresh ``DataLoader`` iterator draw from (:func:`snapshot_torch_random`). Used by
:mod:`stoke.diagnosis.measure.model_probe`, :mod:`stoke.diagnosis.measure.input_free` and the
recorder's step limit; Keras and JAX are imported inside the functions.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any


def copy_jax_state(state: Any) -> Any:
    """A copy of a JAX training state (every array copied where it lives).

    ``jax.device_put(a, may_alias=False)`` copies buffers without compiling anything, and
    keeps each array as committed (to its sharding) as it was: ``jnp.array(a, copy=True)``
    compiled one ``jit(copy)`` per shape and dtype (measured: 0.4 s of a short CPU run's 7 s
    under the doctor), and naming the sharding commits an uncommitted state, which makes the
    train step compile again (seconds) when the probe steps on the copy."""
    import jax
    import jax.numpy as jnp

    def copy(leaf):
        if isinstance(leaf, jax.Array):
            try:
                return jax.device_put(leaf, may_alias=False)
            except Exception:  # an older JAX without may_alias
                pass
        return jnp.array(leaf, copy=True)

    return jax.tree_util.tree_map(copy, state)


def snapshot_variables(model) -> Callable[[], None]:
    """Copy every model, optimizer and metric variable (on its device); the returned function
    puts them back. The optimizers are ``model.optimizer`` and any other the model holds as an
    attribute: a custom ``train_step`` may apply its own (keras.io's GAN keeps
    ``d_optimizer`` and ``g_optimizer``, ``model.optimizer`` None), and Keras' layer tracking
    does not see optimizers."""
    import keras

    variables = []
    seen = set()
    groups = (
        getattr(model, "variables", []),
        *(optimizer.variables for optimizer in model_optimizers(model)),
        getattr(model, "metrics_variables", []),
    )
    for group in groups:
        for variable in group:
            if id(variable) not in seen:
                seen.add(id(variable))
                variables.append(variable)
    saved = [keras.ops.copy(variable.value) for variable in variables]
    restore_random = snapshot_torch_random()

    def restore() -> None:
        for variable, value in zip(variables, saved, strict=True):
            variable.assign(value)
        restore_random()

    return restore


def snapshot_global_random(loader: Any = None) -> Callable[[], None]:
    """Python's, NumPy's and torch's global random states (:func:`snapshot_torch_random`),
    and a torch ``DataLoader``'s own generators (``loader``: its ``generator=``, its
    sampler's), which a second iterator over it draws from as training's does; the returned
    function puts them back. For the input-alone probe's fresh iterator, whose
    batches are dropped: Keras' array adapter draws each iterator's shuffle from NumPy's
    global stream (``np.random.permutation``, JAX and NumPy paths), a script's dataset may
    draw its augmentations there (a seeded JAX run with Dropout on shuffled arrays trained to
    other weights under the doctor: the probe's iterator had drawn a permutation). Draws the
    run's own background producers (a prefetching ``tf.data`` map in Python, a ``PyDataset``'s
    threads) make while the probe runs come back too: they are made again, not lost."""
    import random

    import numpy as np

    python_state, numpy_state = random.getstate(), np.random.get_state()
    restore_torch = snapshot_torch_random()
    generators = _loader_generators(loader)
    generator_states = [generator.get_state() for generator in generators]

    def restore() -> None:
        random.setstate(python_state)
        np.random.set_state(numpy_state)
        restore_torch()
        for generator, state in zip(generators, generator_states, strict=True):
            generator.set_state(state)

    return restore


def _loader_generators(loader: Any) -> list:
    """The torch generators a ``DataLoader`` draws from of its own (``generator=``, its
    sampler's, its batch sampler's sampler's), each once; [] for anything else."""
    torch = sys.modules.get("torch")
    if torch is None or loader is None:
        return []
    batch_sampler = getattr(loader, "batch_sampler", None)
    owners = (loader, getattr(loader, "sampler", None), getattr(batch_sampler, "sampler", None))
    found: list = []
    for owner in owners:
        generator = getattr(owner, "generator", None)
        if isinstance(generator, torch.Generator) and all(generator is not g for g in found):
            found.append(generator)
    return found


def snapshot_torch_random() -> Callable[[], None]:
    """torch's global random state (the CPU generator, and each CUDA device's once CUDA is
    initialised); the returned function puts it back. A probe draws from it where the run
    would not: Keras' torch dropout without a seed is ``torch.nn.functional.dropout`` on the
    global generator, and a ``DataLoader``'s new iterator draws its base seed and its
    sampler's there (the red-team's s23_determinism.py and s25_torch_loader_seeded.py, seeded
    with ``keras.utils.set_random_seed``: History and weights differed from the second epoch
    on under the doctor). Not Python's or NumPy's global streams here (the model probes): the
    run's own input threads may draw from those while they run. A no-op when torch was never
    imported."""
    torch = sys.modules.get("torch")
    if torch is None:
        return lambda: None
    cpu = torch.random.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None

    def restore() -> None:
        torch.random.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)

    return restore


def model_optimizers(model) -> list:
    """``model.optimizer`` and every other Keras optimizer the model holds as an attribute,
    each once."""
    import keras

    found = []
    candidates = [getattr(model, "optimizer", None), *vars(model).values()]
    for candidate in candidates:
        if isinstance(candidate, keras.optimizers.Optimizer) and all(
                candidate is not other for other in found):
            found.append(candidate)
    return found


def hand_jax_state_to_model(model, result) -> None:
    """Give the model a JAX training state ``result = (logs, state)`` to sync into its
    variables: the last step's before ending a ``fit`` early (Keras' ``fit`` does this after
    the train function returns; its ``finally`` then syncs it), or the state an abandoned
    input-free window saved."""
    try:
        _logs, state = result
        trainable, non_trainable, optimizer_variables, metrics_variables = state
        model._jax_state = {
            "trainable_variables": trainable,
            "non_trainable_variables": non_trainable,
            "optimizer_variables": optimizer_variables,
            "metrics_variables": metrics_variables,
        }
        model._jax_state_synced = False
    except Exception:
        pass
