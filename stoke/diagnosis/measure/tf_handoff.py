"""TensorFlow: a batch the doctor pulled itself, handed to Keras' step as its own iterator would.

Where the doctor times the wait on TensorFlow it pulls each batch eagerly
(:func:`stoke.diagnosis.measure.timing.tf_pull_outside_graph`) and gives Keras' train function
the batch. Given as a Python iterator (``iter((batch,))``), Keras calls its compiled step on
the batch's tensors: a step traced for the batch's concrete shapes, where the run's own step
is traced for the dataset's element spec (``(None, 32, 32, 3)``, or an unknown rank). A
different graph: weights that drifted from the run's (about 1e-7 relative after 84 steps,
grown to the loss's sixth decimal by the end: the red-team's s11_tfkeras_aug.py, even with
``--no-probes``), and a script that fails on its own (a ``py_function`` map without output
shapes: "Cannot take the length of shape with unknown rank") ran under the doctor.

:class:`Handoff` gives the step an iterator of the run's own element spec instead: a
``tf.data`` pipeline that takes each batch from a queue the doctor fills right before the
call, its shapes relaxed to the spec's. Keras then runs the very function it runs on its own
iterator, traced for the same spec. Only for element specs of plain tensors
(:func:`can_hand_over`); others (ragged, sparse, Keras' optionals for ``None``) keep the
Python iterator. Owns nothing else.
"""

from __future__ import annotations

from typing import Any


def can_hand_over(element_spec) -> bool:
    """Whether every leaf of ``element_spec`` is a plain ``tf.TensorSpec``."""
    import tensorflow as tf

    leaves = tf.nest.flatten(element_spec)
    return bool(leaves) and all(type(leaf) is tf.TensorSpec for leaf in leaves)


class Handoff:
    """An iterator of ``element_spec`` whose next element is the batch given to :meth:`hand`."""

    def __init__(self, element_spec) -> None:
        import tensorflow as tf

        self.element_spec = element_spec
        leaves = tf.nest.flatten(element_spec)
        # no shapes on the queue: each leaf comes out of it unknown, then takes the spec's
        self._queue = tf.queue.FIFOQueue(1, dtypes=[leaf.dtype for leaf in leaves])

        def take(_):
            taken = self._queue.dequeue()
            taken = list(taken) if isinstance(taken, (list, tuple)) else [taken]
            shaped = [tf.ensure_shape(tensor, leaf.shape) if leaf.shape.rank is not None
                      else tensor for tensor, leaf in zip(taken, leaves)]
            return tf.nest.pack_sequence_as(element_spec, shaped)

        options = tf.data.Options()
        options.autotune.enabled = False  # nothing read ahead: the queue holds one batch
        options.experimental_optimization.inject_prefetch = False
        dataset = tf.data.Dataset.from_tensors(0).repeat().map(take).with_options(options)
        self._iterator = iter(dataset)

    def hand(self, batch) -> Any:
        """The iterator to call Keras' train function with, ``batch`` its next element."""
        import tensorflow as tf

        self._queue.enqueue(tf.nest.flatten(batch))
        return self._iterator

    def drop_unread(self) -> None:
        """A call that raised before taking its batch (a step that failed to trace): the queue
        is emptied for the next. Never raises: the call's own error is the one to report."""
        try:
            for _ in range(int(self._queue.size())):
                self._queue.dequeue()
        except Exception:
            pass


class Handoffs:
    """One :class:`Handoff` per element spec a model's training iterators have (a script may
    fit one model on several datasets), made on first use."""

    def __init__(self) -> None:
        self._made: list[Handoff] = []

    def for_iterator(self, iterator) -> Handoff | None:
        """The handoff for ``iterator``'s element spec, or None where it cannot hand over."""
        spec = getattr(iterator, "element_spec", None)
        if spec is None:
            return None
        for handoff in self._made:
            if handoff.element_spec == spec:
                return handoff
        try:
            if not can_hand_over(spec):
                return None
            handoff = Handoff(spec)
        except Exception:  # the Python iterator stands in, as before
            return None
        self._made.append(handoff)
        return handoff
