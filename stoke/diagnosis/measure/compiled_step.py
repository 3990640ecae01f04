"""The compiled-step probe: the train step the host-op fix gives, timed on a cached batch.

A layer that computes with NumPy on the step's tensors (``host-op-in-model``) keeps the step
eager, and its fix (``keras.ops`` in the layer, then compile without ``run_eagerly``) wins
what compiling wins: the eager dispatch of every layer, and the host round trip. That gain
cannot be read from the eager run, so this probe times the fixed step itself: the layers the
host-code watch found (:mod:`stoke.diagnosis.measure.host_code`) have their ``call`` (a Lambda
layer its ``function``) stood in
by a traceable stand-in (the identity, only where their output has their input's shape and
dtype: :func:`~stoke.diagnosis.measure.host_code.stand_in_for`), the model's ``run_eagerly``
is turned off and ``jit_compile`` resolved as Keras' ``"auto"`` would without it, and a new
train function is made and repeated on the probe step's batch already on the device, as the
model-alone probe does (:func:`~stoke.diagnosis.measure.model_probe.time_train_function`).

What each backend compiles: TensorFlow a ``tf.function`` (XLA where Keras' ``"auto"`` picks
it: not on a CPU-only machine), JAX a ``jax.jit`` step (its NumPy layer can only run eagerly:
a NumPy call on a tracer fails), torch the same eager step (Keras' ``"auto"`` does not
compile on torch: the fix there removes the host round trip only, and that is what is timed).

Out of sight and given back: the train function is called directly, never through ``fit``
(no callback, progress bar or history sees it); every model, optimizer and metric variable
is snapshotted and restored (TensorFlow, torch; JAX steps on a copy of the state); the
layers' ``call``, the model's ``run_eagerly``, ``jit_compile`` and ``train_function`` are put
back, even when tracing fails. Owns this probe only: the schedule gives it its seconds, the
analysis turns its step into the fix's predicted gain
(:func:`stoke.diagnosis.judge.analysis.host_code_fix_prediction`).
"""

from __future__ import annotations

from typing import Any

from stoke.diagnosis.measure.model_probe import MAX_MODEL_STEPS, time_train_function
from stoke.diagnosis.measure.probe_schedule import Probe, ProbeNotRun
from stoke.diagnosis.record import ProbeResult

# What tracing and compiling the fixed step costs before its first timed step, in eager steps
# of the run (tracing runs the step's Python once, then the graph is optimised): an estimate
# for the budget only.
COMPILE_EAGER_STEPS = 3.0


def compiled_step_probe(
    backend: str,
    timed_function,
    result: Any,
    batch: Any,
    host_ops: list[str],
    stand_ins: dict[str, str],
    step_s: float,
    loop_s: float,
) -> Probe | None:
    """The compiled-step probe of a ``fit`` whose watched step found host layers
    (``host_ops``, with ``stand_ins`` from the watch: the record's ``model.host_ops`` and
    ``model.host_op_stand_ins``); None when it found none. Skipped, with the reason, when a
    host layer has no traceable stand-in. ``step_s``: the run's eager step; ``loop_s``: the
    fit loop's own time per step outside the train function (kept in the result: the fixed
    run pays it too)."""
    from stoke.diagnosis.measure.host_code import IDENTITY

    layers = [str(name) for name in host_ops]
    if not layers:
        return None
    missing = {name: stand_ins.get(name, "not watched in a step") for name in layers
               if stand_ins.get(name) != IDENTITY}
    skipped = None
    if missing:
        skipped = "no traceable stand-in for " + "; ".join(
            f"{name}: {why}" for name, why in missing.items())

    def run(seconds: float, deadline: float) -> ProbeResult:
        if batch is None:
            raise ProbeNotRun("no batch was cached for the probe")
        return time_compiled_step(backend, timed_function, result, batch, layers, seconds,
                                  deadline, loop_s)

    return Probe(
        "compiled_step",
        "compiled-step",
        run,
        fixed_s=COMPILE_EAGER_STEPS * step_s,
        unit_s=0.1 * step_s,
        max_units=MAX_MODEL_STEPS,
        skipped=skipped,
    )


def time_compiled_step(backend, timed_function, result, batch, layers, seconds, deadline,
                       loop_s: float = 0.0) -> ProbeResult:
    """Time the train step with ``layers`` stood in by the identity and compiled as the fix
    compiles it (see the module docstring); everything the probe changed is put back."""
    from stoke.diagnosis.measure.facts import leading_dim
    from stoke.diagnosis.measure.host_code import stood_in
    from stoke.diagnosis.measure.timing import TimedTrainFunction

    model = timed_function.model
    saved_function = model.train_function
    saved_eagerly = model.run_eagerly
    saved_jit = model.jit_compile
    try:
        model.run_eagerly = False
        jit_compile = _auto_jit_compile(model, backend)
        model.jit_compile = jit_compile
        with stood_in(model, layers):
            model.make_train_function(force=True)
            function = model.train_function
            if isinstance(function, TimedTrainFunction):  # the doctor's hook wrapped it
                function = function.original
            steps, elapsed, state = time_train_function(
                backend, function, timed_function.sync, model, result, batch, seconds, deadline)
    finally:
        model.train_function = saved_function
        model.jit_compile = saved_jit
        model.run_eagerly = saved_eagerly
    batch_size = leading_dim(batch)
    return ProbeResult(
        samples_per_s=batch_size * steps / elapsed if elapsed > 0 else 0.0,
        seconds=elapsed,
        batches=steps,
        detail={
            "method": (
                "the train step with the host layers' call (a Lambda layer's function) stood "
                "in by the identity, "
                "run_eagerly off" + (", jit_compile on" if jit_compile else "")
                + ("" if backend == "torch" else ", compiled")
                + ", repeated on one batch already on the device, synchronised once at the end"
            ),
            "stood_in": list(layers),
            "stand_in": "identity",
            "jit_compile": bool(jit_compile),
            "s_per_step": elapsed / steps,
            "loop_s_per_step": loop_s,
            "batch_size": batch_size,
            "weights": (
                "trained a copy of the state; the run's own state was untouched"
                if state == "copy"
                else "all model, optimizer and metric variables snapshotted and restored"
            ),
            "restored": ("the layers' call (a Lambda layer's function), run_eagerly, "
                         "jit_compile and the train function"),
        },
    )


def _auto_jit_compile(model, backend: str) -> bool:
    """What ``compile(jit_compile="auto")`` picks once ``run_eagerly`` is off (Keras' own rule:
    torch never, TensorFlow not on a CPU-only machine, JAX where the model supports it)."""
    try:
        return bool(model._resolve_auto_jit_compile())
    except Exception:
        return backend == "jax"

