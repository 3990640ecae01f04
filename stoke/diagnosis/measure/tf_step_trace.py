"""TensorFlow: Keras' step traced for the dataset's element spec before the doctor feeds it.

Where the doctor times the wait on TensorFlow it pulls each batch eagerly
(:func:`stoke.diagnosis.measure.timing.tf_pull_outside_graph`) and gives Keras' train function
the batch as a Python iterator (``iter((batch,))``): Keras then calls its one-step function
(``one_step_on_data``, a ``tf.function``) on the batch's tensors. Left to itself, that function
is traced for the batch's concrete shapes, where the run without the doctor traces it (inside
its loop over the dataset's iterator) for the dataset's element spec: ``(None, 32, 32, 3)``, or
an unknown rank. A different graph: weights that drifted from the run's (about 1e-7 relative
after 84 steps, the loss's sixth decimal by the end: the red-team's s11_tfkeras_aug.py, even
with ``--no-probes``), and a script that fails on its own (a ``py_function`` map without
output shapes: "Cannot take the length of shape with unknown rank") ran under the doctor.

:func:`trace_for_spec` traces that function for the element spec first; a ``tf.function``
calls the trace whose signature its inputs fit, so every batch then runs the graph the run
traces without the doctor, and a step that cannot be traced for the spec fails here as it
fails there. (Handing each batch to Keras through an iterator of the spec, a queue-fed
``tf.data`` pipeline, ran the same graph too, but cost 0.4 ms a step: a 0.6 ms step took 1.0.)
Only for element specs of plain tensors (Keras turns its optionals for ``None`` into ``None``
before the function; ragged and sparse keep their own path), and only where Keras' train
function is the one this module knows (Keras 3.15: a closure over ``one_step_on_data``);
elsewhere nothing is traced ahead. Owns nothing else.
"""

from __future__ import annotations


def one_step_function(train_function):
    """Keras' compiled one-step function inside ``train_function`` (a ``tf.function``), or
    None where it is not there (run eagerly, or another Keras)."""
    code = getattr(train_function, "__code__", None)
    closure = getattr(train_function, "__closure__", None)
    if code is None or not closure:
        return None
    cells = dict(zip(code.co_freevars, closure))
    cell = cells.get("one_step_on_data")
    if cell is None:
        return None
    step = getattr(cell.cell_contents, "__wrapped__", cell.cell_contents)  # Keras' optionals
    return step if hasattr(step, "get_concrete_function") else None


def plain_tensor_spec(element_spec) -> bool:
    """Whether every leaf of ``element_spec`` is a plain ``tf.TensorSpec``."""
    import tensorflow as tf

    leaves = tf.nest.flatten(element_spec)
    return bool(leaves) and all(type(leaf) is tf.TensorSpec for leaf in leaves)


def trace_for_spec(train_function, element_spec) -> bool:
    """Trace Keras' one-step function inside ``train_function`` for ``element_spec``, as the
    run without the doctor traces it; whether it was. A trace that fails raises the error the
    run without the doctor raises at its first step."""
    step = one_step_function(train_function)
    if step is None or element_spec is None or not plain_tensor_spec(element_spec):
        return False
    step.get_concrete_function(element_spec)
    return True
