"""``stoke.accelerate``: the loader code users already have, run by stoke's workers.

Owns two adapters and what they need beyond the feeder core:

- a ``keras.utils.PyDataset``/``Sequence`` (anything with ``len()`` and
  ``__getitem__(batch_index)``): each item is a whole batch. Items are read by stoke's
  persistent workers into the shared-memory ring, one item per slot, in the plan's order;
  ``on_epoch_begin``/``on_epoch_end`` run in the trainer and the state they change reaches
  the workers before the next pass (a message with the changed attributes, not a restart);
  a smaller last batch is padded in the worker and cut back in the trainer; an item of any
  other shape is made again in the trainer (and said so, once).
- a generator function: it runs in a worker process (off the trainer's main thread, items
  handed over through the ring) or, when the user says it can be replicated, as several
  copies in parallel, each told its ``worker_index``/``worker_count`` (or given its own
  ``seed``).

The returned object iterates numpy batches (``acc.iter()``) and is what ``model.fit`` takes:
it also speaks Keras' ``PyDataset`` protocol (see :func:`_keras_face`). Plans, executors and
the ring belong to ``stoke.loader``/``stoke.executors``; the device feed to ``stoke.keras``.

What each kind guarantees
-------------------------
Sequence: every pass (epoch) delivers each batch index exactly once, in order ``0..n-1``
(``shuffle=True``: a permutation seeded by ``(seed, epoch)``), the same arrays as
``dataset[i]`` would return after the same ``on_epoch_begin``/``on_epoch_end`` calls,
whatever the number of workers.

Generator, one copy (``replicas=None``): every item the generator yields, once, in its order.

Generator, ``replicas=N``: copy ``k`` runs ``fn(*args, worker_index=k, worker_count=N)`` (the
parameters it accepts; or ``seed=`` a seed of its own); items are taken from the copies in
turn (0, 1, ..., N-1, 0, ...; a finished copy drops out), so the order is deterministic when
the copies are. Each item of each copy is delivered once; that the copies together cover the
data exactly once is the generator's promise (shard by ``worker_index``).

>>> acc = stoke.accelerate(MySequence(paths, batch_size=64))     # doctest: +SKIP
>>> model.fit(acc, epochs=10)                                       # doctest: +SKIP
>>> for x, y in acc.iter(): ...                                     # doctest: +SKIP
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import inspect
import logging
import pickle
import queue
import sys
import threading
import time
import traceback
import types
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from stoke.errors import LayoutError, StokeError, StokeWarning, UnpicklableError
from stoke.executors.chunk import Task
from stoke.loader import POLL_S, Loader, LoaderOptions, resolve_workers
from stoke.pipeline import Pipeline
from stoke.program import FILTERED, sample_error
from stoke.structure import DtypePolicy, TreeDef, flatten, leaf_paths, unflatten

log = logging.getLogger("stoke")

__all__ = ["AcceleratedGenerator", "AcceleratedSequence", "accelerate"]

CONTROL_INDEX = -1  # a task for this index carries a message to the worker's program
PROBE_INDEX = -2  # generators: make the first item, keep it for the first chunk
ROWS_MISFIT = -1  # the item does not fit the slot layout: made again in the trainer
ROWS_END = -2  # the generator copy is exhausted
ROWS_NONE = -3  # the item's first array has no leading (batch) dimension
KERAS_PYDATASET = "keras.src.trainers.data_adapters.py_dataset_adapter.PyDataset"


# ======================================================================================
# The entry point
# ======================================================================================


def accelerate(data: Any, *args: Any, workers: int | str = "auto", executor: str = "auto",
               shuffle: bool = False, seed: int = 0, replicas: int | None = None,
               steps_per_epoch: int | None = None, kwargs: dict | None = None,
               ring_slots: int | None = None, timeout_s: float | None = 300.0,
               memory_budget_bytes: int | None = None):
    """Run ``data``'s own loading code in stoke's workers; returns what ``model.fit`` takes.

    ``data`` is one of:

    - a ``keras.utils.PyDataset``/``Sequence``, or any object with ``len()`` and
      ``__getitem__(batch_index)`` returning a whole batch. ``workers`` process workers
      (``"auto"``: one per core) run ``__getitem__``. ``shuffle=True`` permutes the batch
      order each epoch, seeded by ``(seed, epoch)``; Keras' ``fit(shuffle=...)`` does not
      reorder an accelerated dataset (as for a ``tf.data`` dataset).
    - a generator function, called as ``data(*args, **kwargs)`` in a worker process (on a
      copy of the arguments; large arrays among them are shared, not copied). With
      ``replicas=N``, N copies run in parallel; each gets the keyword arguments it accepts
      among ``worker_index``, ``worker_count`` and ``seed`` (see the module docstring for
      what each mode guarantees). ``steps_per_epoch`` gives Keras an epoch length.
    - a generator object (``gen()``, already called): stoke finds the function and the
      arguments it was called with and runs it as above; if it cannot (it was started, or
      is a generator expression), it runs in a background thread of the trainer.

    ``executor``: ``"process"`` (shared-memory ring), ``"thread"``, ``"inline"`` or
    ``"auto"`` (processes; threads when the dataset cannot be pickled). ``timeout_s``: the
    longest wait for one batch. ``ring_slots``/``memory_budget_bytes``: see
    :class:`~stoke.loader.LoaderOptions`.

    Close the result (``acc.close()`` or ``with``) to stop its workers early; they also stop
    when it is garbage collected and at exit.
    """
    if isinstance(data, (AcceleratedSequence, AcceleratedGenerator)):
        return data
    if executor not in ("auto", "process", "thread", "inline"):
        raise ValueError(
            "executor must be one of 'auto', 'process', 'thread', 'inline'. "
            f"Received: executor={executor!r}"
        )
    options = dict(ring_slots=ring_slots, timeout_s=timeout_s,
                   memory_budget_bytes=memory_budget_bytes)
    if steps_per_epoch is not None and (not isinstance(steps_per_epoch, int)
                                        or steps_per_epoch < 1):
        raise ValueError(
            f"steps_per_epoch must be a positive int or None. Received: {steps_per_epoch!r}"
        )
    if inspect.isgeneratorfunction(data) or inspect.isgenerator(data):
        if shuffle:
            raise ValueError(
                "shuffle=True needs random access; a generator can only be read in order. "
                "Shuffle inside the generator, or give a Sequence (len + __getitem__)."
            )
        if inspect.isgenerator(data) and (args or kwargs):
            raise TypeError(
                "arguments go with a generator *function*: accelerate(gen_fn, *args). "
                f"Received a generator object ({data.__name__}) and arguments {args or kwargs}."
            )
        return _keras_face(AcceleratedGenerator(
            data, args, dict(kwargs or {}), workers=workers, executor=executor, seed=seed,
            replicas=replicas, steps_per_epoch=steps_per_epoch, options=options))
    if args or kwargs or replicas is not None:
        raise TypeError(
            "args, kwargs and replicas are for generator functions; "
            f"{type(data).__name__} is not one. Received: args={args!r}, kwargs={kwargs!r}, "
            f"replicas={replicas!r}."
        )
    if callable(data) and not (hasattr(data, "__len__") and hasattr(data, "__getitem__")):
        raise TypeError(
            f"accelerate got the callable {getattr(data, '__qualname__', data)!r}, which is "
            "not a generator function (it has no `yield`). Give a generator function, a "
            "generator, or a Sequence/PyDataset (len + __getitem__(batch_index))."
        )
    if isinstance(data, Pipeline):
        raise TypeError(
            "this is a stoke pipeline already: give it to Keras with pipe.to_keras(), or read "
            "it with pipe.iter(). stoke.accelerate is for a Sequence or generator you have.")
    if not (hasattr(data, "__len__") and hasattr(data, "__getitem__")):
        raise TypeError(
            "accelerate needs a keras.utils.PyDataset/Sequence (or any object with len() and "
            "__getitem__(batch_index)), a generator function or a generator. "
            f"Received: {type(data).__name__}."
        )
    if steps_per_epoch is not None:
        raise TypeError(
            "steps_per_epoch is for generators; a Sequence's epoch is len(dataset) batches. "
            "To train on fewer, pass steps_per_epoch to fit."
        )
    return _keras_face(AcceleratedSequence(data, workers=workers, executor=executor,
                                           shuffle=shuffle, seed=seed, options=options))


# ======================================================================================
# Worker side: what runs for one item, and the message channel to the workers' copy
# ======================================================================================

_INBOX: collections.deque = collections.deque()  # messages delivered to this process


class _ControlMessage:
    """Sent to a worker in place of a task. Unpickling it there files the payload in this
    module's inbox and yields an ordinary one-index task for :data:`CONTROL_INDEX`; the
    program takes the payload from the inbox when it runs that index. So a message reaches
    the worker's copy of the program between two tasks, in the order it was sent, through
    the executor's own protocol."""

    def __init__(self, task_id: int, payload: bytes) -> None:
        self.task_id = task_id
        self.payload = payload

    def __reduce__(self):
        return (_deliver_control, (self.task_id, self.payload))


def _deliver_control(task_id: int, payload: bytes) -> Task:
    _INBOX.append(payload)
    return _control_task(task_id)


def _control_task(task_id: int) -> Task:
    return Task(task_id, "probe", 0, np.array([CONTROL_INDEX], np.int64), -1)


@dataclass(frozen=True)
class _Template:
    """The layout of one item, as the ring holds it: its structure, shapes and dtypes.
    ``rows`` is the batch dimension (the first array's leading size), if it has one."""

    treedef: TreeDef
    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[str, ...]

    @property
    def rows(self) -> int | None:
        return self.shapes[0][0] if self.shapes and self.shapes[0] else None

    def is_batch_leaf(self, position: int) -> bool:
        shape = self.shapes[position]
        return bool(shape) and shape[0] == self.rows

    def zeros(self) -> Any:
        pairs = zip(self.shapes, self.dtypes, strict=True)
        return unflatten(self.treedef, [np.zeros(shape, dtype) for shape, dtype in pairs])

    def fit(self, treedef: TreeDef,
            arrays: list[np.ndarray]) -> tuple[list[np.ndarray], int] | None:
        """The arrays as they go into a slot, and their number of rows; None if they cannot
        go (another structure, other shapes, a dtype that does not cast)."""
        if treedef != self.treedef or len(arrays) != len(self.shapes):
            return None
        pairs = zip(arrays, self.dtypes, strict=True)
        if not all(np.can_cast(array.dtype, dtype, "same_kind") for array, dtype in pairs):
            return None
        if all(a.shape == s for a, s in zip(arrays, self.shapes, strict=True)):
            return arrays, (self.rows if self.rows is not None else ROWS_NONE)
        rows = self.rows
        if rows is None or not arrays[0].ndim or not 0 <= arrays[0].shape[0] < rows:
            return None
        short = arrays[0].shape[0]
        padded = []
        for position, (array, shape) in enumerate(zip(arrays, self.shapes, strict=True)):
            if self.is_batch_leaf(position):
                if array.shape != (short, *shape[1:]):
                    return None
                full = np.zeros(shape, self.dtypes[position])
                full[:short] = array
                padded.append(full)
            elif array.shape == shape:
                padded.append(array)
            else:
                return None
        return padded, short


def _item_arrays(item: Any, where: str) -> tuple[TreeDef, list[np.ndarray]]:
    """Flatten one item (a batch) into numeric arrays; refuse what cannot go in the ring."""
    treedef, leaves = flatten(_lists_of_scalars_as_arrays(item))
    arrays = []
    for path, leaf in zip(leaf_paths(treedef), leaves, strict=True):
        array = np.asarray(leaf)
        if array.dtype.kind not in "biufc":
            kind = "list" if isinstance(leaf, _ScalarList) else type(leaf).__name__
            raise LayoutError(
                f"{where}: field {path} is {kind} (dtype {array.dtype}); "
                "stoke moves numeric arrays through shared memory. Return numpy arrays from "
                "__getitem__ (e.g. np.asarray(labels, dtype=np.int64)); leave out None fields."
            )
        arrays.append(array)
    return treedef, arrays


class _ScalarList(np.ndarray):
    """Marks an array that was a list of scalars in the item (for error messages)."""


def _lists_of_scalars_as_arrays(node: Any) -> Any:
    """A list of numbers in a batch is one array (``y = [0, 1, 1]``), as Keras reads it;
    other lists and tuples are structure (several inputs or outputs)."""
    if isinstance(node, dict):
        return {k: _lists_of_scalars_as_arrays(v) for k, v in node.items()}
    if isinstance(node, (list, tuple)) and not hasattr(node, "_fields"):
        if isinstance(node, list) and node and all(
                isinstance(v, (int, float, bool, complex, str, bytes, np.generic)) for v in node):
            return np.asarray(node).view(_ScalarList)
        return type(node)(_lists_of_scalars_as_arrays(v) for v in node)
    return node


def _shape_item(template: _Template | None, item: Any, where: str) -> tuple[Any, np.int64]:
    """What the worker puts in the ring for one item: ``(item, rows)``."""
    treedef, arrays = _item_arrays(item, where)
    if template is None:  # the probe that the layout is taken from
        rows = arrays[0].shape[0] if arrays and arrays[0].ndim else ROWS_NONE
        return unflatten(treedef, arrays), np.int64(rows)
    fitted = template.fit(treedef, arrays)
    if fitted is None:
        return template.zeros(), np.int64(ROWS_MISFIT)
    arrays, rows = fitted
    return unflatten(template.treedef, arrays), np.int64(rows)


class _ItemProgram:
    """The per-index program for a Sequence: ``dataset[index]``, shaped for the ring.

    Follows the executors' program protocol (``run``, ``source``, ``steps``,
    ``dtype_policy``, ``has_filter``). When sent to worker processes, a dataset whose class
    derives from ``keras.utils.PyDataset`` travels as a copy whose Keras base is replaced by
    a stand-in (:func:`_detach_keras`), so that workers need not import Keras and a backend.
    """

    steps: tuple = ()
    has_filter = False
    dtype_policy = DtypePolicy(keep_float64=True)  # batches as __getitem__ returns them

    def __init__(self, dataset: Any, seed: int = 0) -> None:
        self.source = dataset
        self.seed = seed
        self.template: _Template | None = None
        self.stage = f"{type(dataset).__name__}.__getitem__"

    def run(self, index: int, epoch: int) -> Any:
        if index == CONTROL_INDEX:
            return self._receive()
        try:
            item = self.source[index]
        except Exception as exc:  # noqa: BLE001 - re-raised with where it happened
            raise sample_error(index, self.stage, exc) from exc
        return _shape_item(self.template, item, f"batch {index} of {type(self.source).__name__}")

    def _receive(self) -> Any:
        payload = _INBOX.popleft()
        try:
            self.apply(pickle.loads(payload))
        except Exception as exc:  # noqa: BLE001
            raise sample_error(-1, "the update of the dataset's state in a worker", exc) from exc
        return FILTERED

    def apply(self, update: dict) -> None:
        """Apply a message from the trainer (in a worker's copy)."""
        if "template" in update:
            self.template = update["template"]
        if "dataset" in update:
            self.source = pickle.loads(update["dataset"])
        state = getattr(self.source, "__dict__", None)
        for name, data in update.get("state", {}).items():
            state[name] = pickle.loads(data)
        for name in update.get("deleted", ()):
            state.pop(name, None)

    def __reduce__(self):
        return (_rebuild_item_program, (_detached_copy(self.source), self.seed, self.template))


def _rebuild_item_program(dataset: Any, seed: int, template: _Template | None) -> _ItemProgram:
    program = _ItemProgram(dataset, seed)
    program.template = template
    return program


class _StreamProgram:
    """The program for a generator: each task asks copy ``worker_index`` for its next item.

    A worker holds one copy of the generator (the trainer tells it which, by message). The
    probe's item is kept and delivered again by the first task, so no item is lost to it.
    """

    steps: tuple = ()
    has_filter = False
    dtype_policy = DtypePolicy(keep_float64=True)

    def __init__(self, fn: Callable, args: tuple, kwargs: dict, seed: int) -> None:
        self.fn = fn
        self.source = fn
        self.args = args
        self.kwargs = kwargs
        self.seed = seed
        self.template: _Template | None = None
        self.replica = (0, 1)
        self._generator: Iterator | None = None
        self._pending: Any = None
        self._finished = False
        self.stage = f"{getattr(fn, '__qualname__', fn)} (generator)"

    def run(self, index: int, epoch: int) -> Any:
        if index == CONTROL_INDEX:
            payload = _INBOX.popleft()
            try:
                self.apply(pickle.loads(payload))
            except Exception as exc:  # noqa: BLE001
                raise sample_error(-1, "a message to the generator's worker", exc) from exc
            return FILTERED
        if self._pending is not None:
            item, self._pending = self._pending, None
            if index != PROBE_INDEX:
                return item
            self._pending = item
            return item
        if self._finished:
            return FILTERED if index == PROBE_INDEX else self._end()
        try:
            if self._generator is None:
                self._generator = iter(self.fn(*self.args, **self._call_kwargs()))
            item = next(self._generator)
        except StopIteration:
            self._finished = True
            return FILTERED if index == PROBE_INDEX else self._end()
        except Exception as exc:  # noqa: BLE001 - re-raised with where it happened
            self._finished = True
            raise sample_error(index, self.stage, exc) from exc
        shaped = _shape_item(self.template, item, f"item {index} of {self.stage}")
        if index == PROBE_INDEX:
            self._pending = shaped
        return shaped

    def _end(self) -> Any:
        if self.template is None:  # pragma: no cover - a chunk before the probe
            raise StokeError("the generator's layout is not known yet")
        return self.template.zeros(), np.int64(ROWS_END)

    def _call_kwargs(self) -> dict:
        index, count = self.replica
        return {**self.kwargs, **replica_kwargs(self.fn, self.kwargs, index, count, self.seed)}

    def apply(self, update: dict) -> None:
        if "template" in update:
            self.template = update["template"]
        if "replica" in update:
            self.replica = tuple(update["replica"])
        if update.get("restart"):
            self._generator = None
            self._pending = None
            self._finished = False

    def __getstate__(self):
        state = dict(self.__dict__)
        state.update(_generator=None, _pending=None, _finished=False)
        return state


def replica_kwargs(fn: Callable, given: dict, index: int, count: int, seed: int) -> dict:
    """The keyword arguments copy ``index`` of ``count`` gets: those ``fn`` accepts among
    ``worker_index``, ``worker_count`` and, with several copies, ``seed`` (a seed of its
    own, derived from the ``seed`` given to the function, or else accelerate's)."""
    accepted = _accepted_names(fn)
    extra: dict[str, Any] = {}
    if "worker_index" in accepted:
        extra["worker_index"] = index
    if "worker_count" in accepted:
        extra["worker_count"] = count
    if count > 1 and "seed" in accepted:
        base = given.get("seed", seed)
        base = 0 if base is None else int(base)
        extra["seed"] = int(np.random.SeedSequence([base, index]).generate_state(1)[0])
    if count == 1:  # one copy: what the caller gave wins
        extra = {k: v for k, v in extra.items() if k not in given}
    return extra


def _accepted_names(fn: Callable) -> set[str]:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return set()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return {"worker_index", "worker_count"}
    return {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


# ======================================================================================
# Sending a Keras dataset to workers without Keras
# ======================================================================================


class _PyDatasetStandIn:
    """What a dataset's ``keras.utils.PyDataset`` base becomes in a worker process: the same
    small surface (Keras' own class only stores three settings and defines no-op hooks)."""

    def __init__(self, workers=1, use_multiprocessing=False, max_queue_size=10):
        self._workers = workers
        self._use_multiprocessing = use_multiprocessing
        self._max_queue_size = max_queue_size

    workers = property(lambda self: getattr(self, "_workers", 1))
    use_multiprocessing = property(lambda self: getattr(self, "_use_multiprocessing", False))
    max_queue_size = property(lambda self: getattr(self, "_max_queue_size", 10))

    @property
    def num_batches(self):
        return len(self) if hasattr(self, "__len__") else None

    def on_epoch_begin(self):
        pass

    def on_epoch_end(self):
        pass

    def __iter__(self):
        for index in range(len(self)):
            yield self[index]


_DETACHED: dict[type, type] = {}


def _is_keras_pydataset(cls: type) -> bool:
    return f"{cls.__module__}.{cls.__qualname__}" == KERAS_PYDATASET


def _has_keras_base(cls: type) -> bool:
    return any(_is_keras_pydataset(c) for c in cls.__mro__)


def _detach_keras(cls: type) -> type:
    """A copy of ``cls`` (and of its bases up to Keras') whose ``keras.utils.PyDataset`` base
    is :class:`_PyDatasetStandIn`. Methods are the same code; ``super()`` inside them refers
    to the copy. cloudpickle sends such a class by value, so a worker imports only what the
    methods use, not the module that defined the class (nor Keras)."""
    if cls in _DETACHED:
        return _DETACHED[cls]
    bases = tuple(
        _PyDatasetStandIn if _is_keras_pydataset(base)
        else _detach_keras(base) if _has_keras_base(base)
        else base
        for base in cls.__bases__
    )
    class_cell = types.CellType()
    namespace = {}
    for name, value in cls.__dict__.items():
        if name in ("__dict__", "__weakref__"):
            continue
        namespace[name] = _rebind_class_cell(value, class_cell)
    copy = type(cls)(cls.__name__, bases, namespace)
    copy.__qualname__ = cls.__qualname__
    copy.__module__ = cls.__module__
    class_cell.cell_contents = copy
    _DETACHED[cls] = copy
    return copy


def _rebind_class_cell(value: Any, cell: types.CellType) -> Any:
    """``value`` with its ``__class__`` closure cell (what ``super()`` uses) set to ``cell``."""
    if isinstance(value, (staticmethod, classmethod)):
        return type(value)(_rebind_class_cell(value.__func__, cell))
    if isinstance(value, property):
        return property(*(_rebind_class_cell(f, cell) if f else None
                          for f in (value.fget, value.fset, value.fdel)), value.__doc__)
    if not isinstance(value, types.FunctionType) or "__class__" not in value.__code__.co_freevars:
        return value
    closure = tuple(
        cell if name == "__class__" else original
        for name, original in zip(value.__code__.co_freevars, value.__closure__, strict=True)
    )
    function = types.FunctionType(value.__code__, value.__globals__, value.__name__,
                                  value.__defaults__, closure)
    function.__kwdefaults__ = value.__kwdefaults__
    function.__qualname__ = value.__qualname__
    function.__module__ = value.__module__
    function.__doc__ = value.__doc__
    function.__dict__.update(value.__dict__)
    return function


def _detached_copy(dataset: Any) -> Any:
    """``dataset`` as it is sent to workers: with its Keras base replaced, when it has one
    and plain instance attributes (else unchanged)."""
    cls = type(dataset)
    if not _has_keras_base(cls) or not hasattr(dataset, "__dict__"):
        return dataset
    own = [c for c in cls.__mro__ if c is not object and not _is_keras_pydataset(c)]
    if any("__slots__" in c.__dict__ for c in own):
        return dataset
    try:
        copy = object.__new__(_detach_keras(cls))
    except Exception:  # noqa: BLE001 - an unusual class: send it as it is
        log.debug("stoke: could not detach %s from Keras", cls, exc_info=True)
        return dataset
    copy.__dict__.update(dataset.__dict__)
    return copy


# ======================================================================================
# Trainer side: a loader with a channel to its workers
# ======================================================================================


def _start_pool(program: Any, options: LoaderOptions):
    """Like the loader's own choice, except that "auto" means process workers even for
    one worker (the point is to get the work off the trainer's thread), and that an
    unpicklable dataset falls back to threads with a warning."""
    from stoke.executors.inline import InlinePool
    from stoke.executors.threads import ThreadPool

    workers = resolve_workers(options.workers)
    kind = options.executor
    if kind == "inline":
        return InlinePool(program)
    if kind == "thread":
        return ThreadPool(program, workers)
    from stoke.executors.processes import ProcessPool

    try:
        return ProcessPool(program, workers)
    except UnpicklableError as exc:
        if kind != "auto":
            raise
        warnings.warn(f"stoke.accelerate runs in threads, not processes: {exc}", StokeWarning,
                      stacklevel=4)
        return ThreadPool(program, workers)


class _ChannelLoader(Loader):
    """A :class:`~stoke.loader.Loader` that can also message its workers' copy of the
    program (:meth:`send`) and route a task to one worker. Both use the executors' existing
    task protocol (see :class:`_ControlMessage`); they are what a ``pool.broadcast`` /
    ``pool.submit(task, worker=k)`` in the core would replace."""

    def __init__(self, pipeline: Pipeline, options: LoaderOptions, program: Any) -> None:
        super().__init__(pipeline, options)
        self.program = program
        self._probe_worker: int | None = None
        self.on_pool_started: Callable[[Any], None] | None = None
        self.on_layout: Callable[[], None] | None = None

    @property
    def pool(self):
        if self._shutdown.pool is None and not self.closed:
            self._shutdown.pool = _start_pool(self.program, self.options)
            if self.on_pool_started is not None:
                self.on_pool_started(self._shutdown.pool)
        return Loader.pool.fget(self)

    @property
    def process_workers(self) -> bool:
        return self.pool.kind == "process"

    def send(self, update: dict, worker: int | None = None, what: str = "a message") -> None:
        """Deliver ``update`` to the program in every worker (or in ``worker``), after the
        tasks already sent to it and before any sent later; waits until it was applied."""
        pool = self.pool
        if pool.kind != "process":
            self.program.apply(update)  # threads and inline share the trainer's program
            return
        import cloudpickle

        payload = cloudpickle.dumps(update, protocol=5)
        targets = range(pool.workers) if worker is None else [worker]
        task_ids = []
        for target in targets:
            task_id = self._new_task_id()
            _send_to_worker(pool, target, _control_task(task_id), _ControlMessage(task_id, payload))
            task_ids.append(task_id)
        for task_id in task_ids:
            self._raise_if_failed(self._wait(task_id, what))

    def _new_task_id(self) -> int:
        task_id = self._next_task_id
        self._next_task_id += 1
        return task_id

    def submit_to(self, worker: int, kind: str, epoch: int, indices: np.ndarray, slot: int) -> int:
        task_id = self._new_task_id()
        task = Task(task_id, kind, epoch, indices, slot)
        if self.pool.kind == "process":
            _send_to_worker(self.pool, worker, task, task)
        else:
            self.pool.submit(task)
        return task_id

    def _submit(self, kind: str, epoch: int, indices: np.ndarray, slot: int = -1) -> int:
        if kind == "probe" and self._probe_worker is not None:
            return self.submit_to(self._probe_worker, kind, epoch, indices, slot)
        return super()._submit(kind, epoch, indices, slot)

    def _ensure_layout(self, epoch: int, indices: np.ndarray) -> bool:
        if self._layout is not None:
            return True
        ready = super()._ensure_layout(epoch, indices)
        if ready and self.on_layout is not None:
            self.on_layout()
        return ready

    def template(self) -> _Template:
        """The item layout, from the ring's: the slot holds ``(item, rows)``."""
        layout = self._layout
        item_def = layout.treedef[1][0]
        specs = layout.leaves[:-1]
        return _Template(item_def, tuple(s.shape for s in specs), tuple(s.dtype for s in specs))

    def drain(self) -> None:
        """Wait until every abandoned task is back (thread workers must be idle before the
        trainer changes the dataset they read)."""
        if self._shutdown.pool is None:
            return
        pool = self.pool
        if pool.kind == "inline":
            pool.pending.clear()
            self._free_slots.extend(s for s in self._orphans.values() if s >= 0)
            self._orphans.clear()
            return
        started = time.monotonic()
        while self._orphans:
            result = pool.next_result(POLL_S)
            if result is None:
                timeout = self.options.timeout_s
                if timeout is not None and time.monotonic() - started > timeout:
                    self.close()
                    raise StokeError(f"abandoned batches did not come back in {timeout:.0f} s")
                continue
            slot = self._orphans.pop(result.task_id, None)
            if slot is None:
                self._results[result.task_id] = result
            elif slot >= 0:
                self._free_slots.append(slot)


def _send_to_worker(pool, index: int, task: Task, message: Any) -> None:
    """Send ``message`` (a task, or what unpickles into ``task``) to process worker
    ``index``, accounted as ``task`` so that a dead worker names it."""
    worker = pool._workers[index]
    worker.outstanding[task.task_id] = task
    try:
        worker.conn.send(("task", message))
    except (BrokenPipeError, ConnectionResetError, OSError):
        raise worker.died() from None


def _fingerprints(obj: Any) -> dict[str, bytes]:
    """A digest of each attribute of ``obj`` (of the whole object if it has no
    ``__dict__``), to find what ``on_epoch_end`` changed, in place or not."""
    import cloudpickle

    items = vars(obj).items() if hasattr(obj, "__dict__") else [("", obj)]
    digests = {}
    for name, value in items:
        buffers: list[pickle.PickleBuffer] = []
        digest = hashlib.sha1(usedforsecurity=False)
        try:
            digest.update(cloudpickle.dumps(value, protocol=5, buffer_callback=buffers.append))
            for buffer in buffers:
                digest.update(buffer.raw())
        except Exception:  # noqa: BLE001 - unpicklable: never equal, so sending it says why
            digest.update(f"unpicklable {id(value)} {time.monotonic()}".encode())
        digests[name] = digest.digest()
    return digests


def _pickled_state(dataset: Any, names: list[str]) -> dict[str, bytes]:
    """The attributes ``names`` of ``dataset``, pickled for the workers."""
    import cloudpickle

    state = vars(dataset)
    pickled = {}
    for name in names:
        try:
            pickled[name] = cloudpickle.dumps(state[name], protocol=5)
        except Exception as exc:  # noqa: BLE001 - turned into advice
            raise UnpicklableError(
                f"{type(dataset).__name__}.{name} ({type(state[name]).__name__}), set or "
                "changed in the trainer (by on_epoch_end/on_epoch_begin), cannot be sent to "
                f"the worker processes: {type(exc).__name__}: {exc}. Keep handles such as "
                "open files out of the dataset's attributes (open them lazily in "
                "__getitem__), or use executor=\"thread\".") from exc
    return pickled


# ======================================================================================
# Sequences
# ======================================================================================


class _Answers:
    """Which batch each of Keras' requests got, for the Keras face of both kinds.

    Keras may ask for an index twice (TensorFlow's signature probe asks for the first two
    before the epoch asks again), and may end an epoch early, after one batch to build the
    model, then start over, with indices in a shuffled order. A batch already handed out is
    therefore handed out again: to the same index within the epoch, and to the first new
    indices of the next epoch, in the order it was first given. So every batch is trained on,
    once an epoch, in the stream's order, whatever indices Keras asks for. Batches are keys
    (a position in the pass, or an item number); the last few are kept to answer again.
    """

    KEEP = 8

    def __init__(self) -> None:
        self.by_index: dict[int, int] = {}
        self.carry: collections.deque[int] = collections.deque()
        self.batches: collections.OrderedDict[int, Any] = collections.OrderedDict()

    def lookup(self, index: int) -> int | None:
        """The key this index gets again, or None for a new batch."""
        if index in self.by_index:
            return self.by_index[index]
        if self.carry:
            key = self.by_index[index] = self.carry.popleft()
            return key
        return None

    def batch(self, key: int) -> Any:
        """The batch of ``key`` if it is still kept, else None."""
        if key in self.batches:
            self.batches.move_to_end(key)
            return self.batches[key]
        return None

    def record(self, index: int, key: int, batch: Any) -> None:
        self.by_index[index] = key
        self.batches[key] = batch
        while len(self.batches) > self.KEEP:
            self.batches.popitem(last=False)

    def answered(self) -> int:
        return len(self.by_index)

    def next_epoch(self, carry_over: bool) -> None:
        """A new epoch of requests: the batches of this one are given again first (an
        epoch that ended early), or forgotten."""
        if carry_over:
            self.carry = collections.deque(sorted({*self.by_index.values(), *self.carry}))
        else:
            self.carry.clear()
            self.batches.clear()
        self.by_index = {}


class _Pass:
    """One pass over a Sequence: its batch iterator, the item order, and the answers given
    to Keras' requests (keys are positions in the pass)."""

    def __init__(self, epoch: int, batches, order: np.ndarray) -> None:
        self.epoch = epoch
        self.batches = batches
        self.order = order
        self.delivered = 0
        self.complete = False
        self.answers = _Answers()

    def close(self) -> None:
        if self.batches is not None:
            self.batches.close()
            self.batches = None


class AcceleratedSequence:
    """A Sequence/PyDataset whose ``__getitem__`` runs in stoke's workers.

    ``iter()`` yields numpy batches pass after pass; ``model.fit(acc)`` takes it directly
    (with Keras imported, it is also a ``keras.utils.PyDataset``). Batches from ``iter()``
    are views into the ring, valid until the next one is asked for; Keras gets copies.
    """

    def __init__(self, dataset: Any, workers: int | str = "auto", executor: str = "auto",
                 shuffle: bool = False, seed: int = 0, options: dict | None = None) -> None:
        self.dataset = dataset
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.epoch = 0  # the epoch of the next pass
        length = len(dataset)
        if not isinstance(length, int) or length < 0:
            raise TypeError(f"len() of the dataset must be an int >= 0. Received: {length!r}")
        self._options = LoaderOptions(workers=workers, executor=executor, **(options or {}))
        self._loader: _ChannelLoader | None = None
        self._pass: _Pass | None = None
        self._workers_state: dict[str, bytes] | None = None  # what process workers hold
        self._hooks_called = False
        self._warned_misfit = False
        self._template: _Template | None = None
        self._lock = threading.RLock()
        self._closed = False

    # -- public ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.dataset)

    def iter(self, epochs: int | None = 1) -> Iterator[Any]:
        """Batches of ``epochs`` passes (None: forever). Each pass calls the dataset's
        ``on_epoch_begin()`` (when it has one), reads every batch once, then calls
        ``on_epoch_end()``, as Keras does around an epoch."""
        if epochs is not None and epochs < 1:
            raise ValueError(f"epochs must be >= 1 or None. Received: epochs={epochs}")
        done = 0
        while epochs is None or done < epochs:
            with self._lock:
                self._end_pass(call_hook=False)
                if self._pass is not None and self._pass.delivered:  # left by another reader
                    self._abandon_pass()
                self._call_hook("on_epoch_begin")
                current = self._pass or self._open_pass()
            while True:
                with self._lock:
                    if self._pass is not current:
                        raise StokeError("this pass was ended by another user of the dataset")
                    got = self._next()
                if got is None:
                    break
                yield got[0]
            done += 1
            with self._lock:
                self._end_pass(call_hook=True, prefetch_next=epochs is None or done < epochs)

    def __iter__(self) -> Iterator[Any]:
        return self.iter()

    def close(self) -> None:
        """Stop the workers and free the ring. Safe to call twice."""
        with self._lock:
            self._closed = True
            if self._pass is not None:
                self._pass.close()
                self._pass = None
            if self._loader is not None:
                self._loader.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def executor(self) -> str:
        """The executor the workers run in ("process", "thread", "inline")."""
        return self._get_loader().pool.kind

    def to_keras(self):
        """This object as ``model.fit`` takes it. It already is, when Keras was imported
        before ``stoke.accelerate`` was called; else this imports Keras."""
        return keras_face(self)

    @property
    def worker_count(self) -> int:
        return self._get_loader().pool.workers

    def __repr__(self) -> str:
        where = "not started"
        if self._loader is not None and self._loader._shutdown.pool is not None:
            where = f"{self.worker_count} {self.executor} worker(s)"
        return (f"AcceleratedSequence({type(self.dataset).__name__}, {len(self)} batches, "
                f"{where})")

    # -- Keras' PyDataset protocol ----------------------------------------------------------
    def __getitem__(self, index: int) -> Any:
        """What Keras calls: each index asked for in a pass gets the next batch of the pass,
        in the pass's order, whatever the index (see :class:`_Answers`)."""
        if not isinstance(index, (int, np.integer)):
            raise TypeError(f"batch index must be an int. Received: {index!r}")
        index = int(index)
        if not 0 <= index < len(self.dataset):
            raise IndexError(f"batch index {index} out of range for {len(self.dataset)} batches")
        with self._lock:
            current = self._pass or self._open_pass()
            position = current.answers.lookup(index)
            if position is not None:
                batch = current.answers.batch(position)
                if batch is None:  # no longer kept: make it again here
                    batch = _copy_batch(self.dataset[int(current.order[position])])
                return batch
            got = self._next()
            if got is None:  # every batch of this pass was given: a new pass
                self._end_pass(call_hook=False)
                current = self._open_pass()
                got = self._next()
                if got is None:
                    raise IndexError("the dataset has no batches")
            batch, position = got
            batch = _copy_batch(batch)
            current.answers.record(index, position, batch)
            return batch

    def on_epoch_begin(self) -> None:
        with self._lock:
            self._call_hook("on_epoch_begin")

    def on_epoch_end(self) -> None:
        with self._lock:
            self._end_pass(call_hook=True, prefetch_next=True)

    # -- passes -----------------------------------------------------------------------------
    def _get_loader(self) -> _ChannelLoader:
        if self._closed:
            raise StokeError("this accelerated dataset is closed; call stoke.accelerate again")
        if self._loader is None:
            pipeline = Pipeline(self.dataset, shuffled=self.shuffle, seed=self.seed)
            loader = _ChannelLoader(pipeline, self._options, _ItemProgram(self.dataset, self.seed))
            loader.on_pool_started = self._pool_started
            loader.on_layout = self._layout_known
            self._loader = loader
        return self._loader

    def _pool_started(self, pool) -> None:
        if pool.kind == "process":
            self._workers_state = _fingerprints(self.dataset)

    def _layout_known(self) -> None:
        self._template = self._loader.template()
        self._loader.send({"template": self._template}, what="the batch layout")

    def _open_pass(self) -> _Pass:
        loader = self._get_loader()
        loader.pool  # start the workers with the dataset as it is now  # noqa: B018
        self._sync_state()
        length = len(self.dataset)
        if length != loader.plan.length:  # Keras reads len() again every epoch; so do we
            loader.plan = dataclasses.replace(loader.plan, length=length)
        batches = loader.iter(epoch=self.epoch)
        self._pass = _Pass(self.epoch, batches, loader.plan.order(self.epoch))
        return self._pass

    def _next(self) -> tuple[Any, int] | None:
        """The next batch of the open pass and its position, or None at its end."""
        current = self._pass
        if current.complete:
            return None
        try:
            sample = next(current.batches)
        except StopIteration:
            current.complete = True
            current.close()
            return None
        except BaseException:
            current.close()
            self._pass = None
            raise
        position = current.delivered
        current.delivered += 1
        batch = self._unwrap(sample, int(current.order[position]))
        if current.delivered == len(current.order):
            # the last batch: the pass is complete now, not when someone asks past its end
            # (its slot stays valid until the next pass submits work, after the next request)
            current.complete = True
            current.close()
        return batch, position

    def _unwrap(self, sample: Any, index: int) -> Any:
        item, rows = sample
        rows = int(rows)
        if rows == ROWS_MISFIT:
            return self._made_in_trainer(index)
        return _cut_rows(self._template, item, rows)

    def _made_in_trainer(self, index: int) -> Any:
        item = self.dataset[index]
        if not self._warned_misfit:
            self._warned_misfit = True
            template = self._template
            treedef, arrays = _item_arrays(item, f"batch {index}")
            warnings.warn(
                f"stoke.accelerate: batch {index} of {type(self.dataset).__name__} "
                f"({_describe(treedef, arrays)}) does not fit the layout of batch 0 "
                f"({_describe(template.treedef, template.shapes)}), so it was made in the "
                "trainer process, not in a worker (a smaller last batch is fine; other shapes "
                "are not). Return batches of one shape from __getitem__ for full speed.",
                StokeWarning, stacklevel=4)
        return item

    def _end_pass(self, call_hook: bool, prefetch_next: bool = False) -> None:
        """End of an epoch. A finished pass is closed. An unfinished one (Keras ends an epoch
        early, e.g. after taking one batch to build the model) stays open unless the
        dataset's state changes, so that no prepared batch is thrown away for nothing.

        ``prefetch_next``: with process workers, open the next pass at once, with the state
        ``on_epoch_end`` left, so that its first batches are made while the model finishes
        this epoch (last step, validation, callbacks). If the state changes again before
        the next epoch begins (a callback's doing), that work is dropped and redone."""
        current = self._pass
        if current is not None and current.complete:
            current.close()
            self._pass = None
            self.epoch += 1
        elif current is not None:
            current.answers.next_epoch(carry_over=True)
        if call_hook:
            self._call_hook("on_epoch_end")
        if (prefetch_next and self._pass is None and not self._closed
                and self._loader is not None and self._loader.process_workers):
            self._open_pass()

    def _call_hook(self, name: str) -> None:
        """Call the dataset's ``name`` hook (if it has one) in the trainer; an open pass
        whose batches no longer match the dataset's state is dropped."""
        hook = getattr(self.dataset, name, None)
        if hook is not None and self._pass is not None and not self._loader.process_workers:
            # thread/inline workers read the trainer's dataset: stop them before it changes
            self._abandon_pass()
            self._loader.drain()
        if hook is not None:
            hook()
        self._hooks_called = True
        if self._pass is not None and self._state_changed():
            self._abandon_pass()

    def _abandon_pass(self) -> None:
        current, self._pass = self._pass, None
        current.close()
        if current.delivered:  # a pass nobody read keeps its epoch (and its permutation)
            self.epoch += 1

    def _state_changed(self) -> bool:
        if self._workers_state is None:
            return True
        return _fingerprints(self.dataset) != self._workers_state

    def _sync_state(self) -> None:
        """Send process workers the attributes the dataset's hooks changed."""
        if not self._hooks_called or self._workers_state is None:
            return
        self._hooks_called = False
        now = _fingerprints(self.dataset)
        sent = self._workers_state
        if now == sent:
            return
        import cloudpickle

        if not hasattr(self.dataset, "__dict__"):
            update = {"dataset": cloudpickle.dumps(_detached_copy(self.dataset), protocol=5)}
        else:
            changed = [k for k in now if sent.get(k) != now[k]]
            update = {"state": _pickled_state(self.dataset, changed),
                      "deleted": [k for k in sent if k not in now]}
        self._loader.send(update, what="the dataset's state after on_epoch_end")
        self._workers_state = now

def _copy_batch(batch: Any) -> Any:
    treedef, leaves = flatten(batch)
    return _as_keras(unflatten(treedef, [np.array(leaf) for leaf in leaves]))


def _as_keras(batch: Any) -> Any:
    """Keras unpacks tuples as (x, y, sample_weight): lists become tuples."""
    return tuple(batch) if isinstance(batch, list) else batch


def _describe(treedef: TreeDef, arrays_or_shapes) -> str:
    shapes = [tuple(getattr(a, "shape", a)) for a in arrays_or_shapes]
    pairs = zip(leaf_paths(treedef), shapes, strict=True)
    return ", ".join(f"{path} {shape}" for path, shape in pairs)


# ======================================================================================
# Generators
# ======================================================================================


def _find_generator_call(generator: types.GeneratorType) -> tuple[Callable, tuple, dict] | None:
    """The function and arguments a not-yet-started generator was made with, if they can be
    found (its frame's locals are exactly the bound arguments before it starts)."""
    import gc

    if inspect.getgeneratorstate(generator) != inspect.GEN_CREATED:
        return None
    code = generator.gi_code
    if code.co_name == "<genexpr>":
        return None
    functions = [f for f in gc.get_referrers(code)
                 if isinstance(f, types.FunctionType) and f.__code__ is code]
    if len(functions) != 1:
        return None
    fn = functions[0]
    bound = dict(generator.gi_frame.f_locals)
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    try:
        for param in inspect.signature(fn).parameters.values():
            if param.name not in bound:
                return None
            value = bound[param.name]
            if param.kind is param.POSITIONAL_ONLY:
                args.append(value)
            elif param.kind is param.VAR_POSITIONAL:
                args.extend(value)
            elif param.kind is param.VAR_KEYWORD:
                kwargs.update(value)
            else:
                kwargs[param.name] = value
    except (TypeError, ValueError):
        return None
    return fn, tuple(args), kwargs


class AcceleratedGenerator:
    """A generator run by stoke: in a worker process, as ``replicas`` copies in worker
    processes, or (when it cannot be sent to one) in a background thread.

    ``iter()`` yields its items, one pass (the generator run to its end; each later
    ``iter()`` starts it again). ``model.fit(acc, steps_per_epoch=...)`` takes it; Keras'
    epochs then continue one stream, as they did with ``fit_generator``.
    """

    def __init__(self, data: Any, args: tuple, kwargs: dict, workers: int | str = "auto",
                 executor: str = "auto", seed: int = 0, replicas: int | None = None,
                 steps_per_epoch: int | None = None, options: dict | None = None) -> None:
        if replicas is not None and (not isinstance(replicas, int) or replicas < 1):
            raise ValueError(f"replicas must be a positive int or None. Received: {replicas!r}")
        if workers != "auto" and workers != (replicas or 1):
            raise ValueError(
                "a generator runs as one copy in one worker unless you say it can be "
                f"replicated: pass replicas={workers} (each copy gets the worker_index and "
                "worker_count parameters it accepts, to shard its data) instead of "
                f"workers={workers}. Received: workers={workers!r}, replicas={replicas!r}."
            )
        self.replicas = replicas or 1
        self.seed = int(seed)
        self.steps_per_epoch = steps_per_epoch
        self.generator_object = None
        if inspect.isgenerator(data):
            found = _find_generator_call(data)
            if found is None:
                self.generator_object = data
                fn, args, kwargs = None, (), {}
                if replicas not in (None, 1):
                    raise ValueError(
                        f"replicas={replicas} needs the generator function, not a generator "
                        "object that was already started: accelerate(gen_fn, *args, "
                        "replicas=...).")
            else:
                fn, args, kwargs = found
        else:
            fn = data
        self.fn, self.args, self.kwargs = fn, tuple(args), dict(kwargs)
        self.name = getattr(fn or data, "__qualname__", type(data).__name__)
        if self.replicas > 1:
            accepted = _accepted_names(fn)
            if not ({"worker_index", "seed"} & accepted):
                raise ValueError(
                    f"replicas={self.replicas} runs {self.replicas} copies of {self.name}; "
                    "unless each copy differs, every item comes "
                    f"{self.replicas} times. Give {self.name} a worker_index parameter (and "
                    "worker_count) to shard its data, or a seed parameter to draw "
                    f"independently. Received: {self.name}{_signature(fn)}."
                )
        self.executor_requested = executor
        self._options = options or {}
        self._kind = self._choose_kind(executor)
        self._loader: _ChannelLoader | None = None
        self._stream: Iterator[Any] | None = None  # the current pass
        self._passes = 0
        self._lock = threading.RLock()
        self._answers = _Answers()
        self._items_given = 0
        self._closed = False

    def _choose_kind(self, executor: str) -> str:
        if self.generator_object is not None:
            if executor == "process":
                raise UnpicklableError(
                    "this generator object cannot be moved to a worker process (it was "
                    "started, or is a generator expression): pass the generator function, "
                    "accelerate(gen_fn, *args), or use executor=\"thread\".")
            return "inline" if executor == "inline" else "thread"
        if executor == "auto":
            try:
                import cloudpickle

                # (big arrays among the arguments are not copied for this check)
                cloudpickle.dumps((self.fn, self.args, self.kwargs), protocol=5,
                                  buffer_callback=lambda _: False)
            except Exception as exc:  # noqa: BLE001 - explained in the warning
                warnings.warn(
                    f"stoke.accelerate runs {self.name} in a thread, not a process: it cannot "
                    f"be pickled ({type(exc).__name__}: {exc}). Define it at module level to "
                    "run it in a worker process.", StokeWarning, stacklevel=5)
                return "thread"
            return "process"
        return executor

    # -- public ---------------------------------------------------------------------------
    @property
    def executor(self) -> str:
        return self._kind

    def to_keras(self):
        """This object as ``model.fit`` takes it (see :meth:`AcceleratedSequence.to_keras`)."""
        return keras_face(self)

    def iter(self) -> Iterator[Any]:
        """The generator's items, from its start to its end."""
        with self._lock:
            self._stop_stream()
            stream = self._stream = self._new_stream()
        yield from stream

    def __iter__(self) -> Iterator[Any]:
        return self.iter()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._stop_stream()
            if self._loader is not None:
                self._loader.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"AcceleratedGenerator({self.name}, {self.replicas} cop"
                f"{'y' if self.replicas == 1 else 'ies'}, {self._kind})")

    # -- Keras' PyDataset protocol ---------------------------------------------------------
    @property
    def num_batches(self) -> int | None:
        return self.steps_per_epoch

    def __getitem__(self, index: int) -> Any:
        """What Keras calls: the next item of the running stream, whatever the index (see
        :class:`_Answers` for indices asked again)."""
        index = int(index)
        with self._lock:
            key = self._answers.lookup(index)
            if key is not None:
                batch = self._answers.batch(key)
                if batch is not None:
                    return batch
            batch = _as_keras(self._next_item())
            self._answers.record(index, self._items_given, batch)
            self._items_given += 1
            return batch

    def on_epoch_begin(self) -> None:
        pass

    def on_epoch_end(self) -> None:
        with self._lock:
            steps = self.steps_per_epoch
            self._answers.next_epoch(carry_over=steps is not None
                                     and self._answers.answered() < steps)

    def _next_item(self) -> Any:
        if self._stream is None:
            self._stream = self._new_stream()
        try:
            return _copy_batch(next(self._stream))
        except StopIteration:
            self._stream = None
        if self.steps_per_epoch is None:
            raise StokeError(
                f"{self.name} ended, and Keras asked for more: it cannot know an epoch's "
                "length from a generator. Pass steps_per_epoch to fit (or to "
                "stoke.accelerate), or make the generator loop forever.")
        self._stream = self._new_stream()  # a known epoch length: start it again
        try:
            return _copy_batch(next(self._stream))
        except StopIteration:
            raise StokeError(f"{self.name} yielded no item") from None

    # -- streams ------------------------------------------------------------------------------
    def _stop_stream(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.close()

    def _new_stream(self) -> Iterator[Any]:
        if self._closed:
            raise StokeError("this accelerated generator is closed; call stoke.accelerate again")
        first = self._passes == 0
        self._passes += 1
        if self._kind == "process":
            return self._process_stream(restart=not first)
        if self.generator_object is not None:
            if not first:
                raise StokeError(
                    "a generator object can be read only once; give the generator function "
                    "(accelerate(gen_fn, *args)) to read it again.")
            makers = [lambda: self.generator_object]
        else:
            makers = [self._maker(k) for k in range(self.replicas)]
        if self._kind == "inline":
            return _round_robin_inline(makers)
        depth = self._options.get("ring_slots") or 2 * self.replicas + 2
        return _thread_stream(makers, max(1, depth // self.replicas),
                              self._options.get("timeout_s"), self.name)

    def _maker(self, index: int) -> Callable[[], Iterator[Any]]:
        def make():
            extra = replica_kwargs(self.fn, self.kwargs, index, self.replicas, self.seed)
            return iter(self.fn(*self.args, **{**self.kwargs, **extra}))

        return make

    def _get_loader(self) -> _ChannelLoader:
        if self._loader is None:
            program = _StreamProgram(self.fn, self.args, self.kwargs, self.seed)
            options = LoaderOptions(workers=self.replicas, executor="process", **self._options)
            pipeline = Pipeline(range(1))
            loader = _ChannelLoader(pipeline, options, program)
            self._loader = loader
            for k in range(self.replicas):
                loader.send({"replica": (k, self.replicas)}, worker=k, what="the copy's index")
        return self._loader

    def _process_stream(self, restart: bool) -> Iterator[Any]:
        loader = self._get_loader()
        if restart:
            loader.send({"restart": True}, what="the generator's restart")
        return _process_stream(loader, self.replicas, self.name)


def _signature(fn: Callable) -> str:
    try:
        return str(inspect.signature(fn))
    except (TypeError, ValueError):
        return "(...)"


def _process_stream(loader: _ChannelLoader, copies: int, name: str) -> Iterator[Any]:
    """Items of ``copies`` generator copies (worker k runs copy k), taken in turn."""
    active = list(range(copies))
    if loader._layout is None:
        while active:
            loader._probe_worker = active[0]
            if loader._ensure_layout(0, np.array([PROBE_INDEX], np.int64)):
                break
            active.pop(0)  # this copy yielded nothing
        loader._probe_worker = None
        if not active:
            return
        loader.send({"template": loader.template()}, what="the item layout")
    template = loader.template()
    slots_each = max(1, len(loader._free_slots) // copies)
    inflight: dict[int, collections.deque] = {k: collections.deque() for k in range(copies)}
    sequence = dict.fromkeys(range(copies), 0)
    held = -1
    try:
        turn = 0
        while active:
            for k in active:  # keep every copy busy
                while loader._free_slots and len(inflight[k]) < slots_each:
                    slot = loader._free_slots.popleft()
                    task_id = loader.submit_to(k, "chunk", 0,
                                               np.array([sequence[k]], np.int64), slot)
                    inflight[k].append((task_id, slot, sequence[k]))
                    sequence[k] += 1
            k = active[turn % len(active)]
            task_id, slot, number = inflight[k].popleft()
            result = loader._raise_if_failed(
                loader._wait(task_id, f"item {number} of copy {k} of {name}"))
            views = loader._ring_views(slot)
            item, rows = unflatten(loader._layout.treedef, [v[0] for v in views])
            rows = int(rows)
            if result.rows == 0 or rows == ROWS_END:
                loader._free_slots.append(slot)
                for task_id, slot, _ in inflight.pop(k):
                    loader._orphans[task_id] = slot
                active.remove(k)
                continue
            held = slot
            yield _cut_rows(template, item, rows)
            loader._free_slots.append(held)
            held = -1
            turn = (active.index(k) + 1) if k in active else turn
    finally:
        if held >= 0:
            loader._free_slots.append(held)
        for tasks in inflight.values():
            for task_id, slot, _ in tasks:
                loader._orphans[task_id] = slot


def _cut_rows(template: _Template, item: Any, rows: int) -> Any:
    if template.rows is None or not 0 <= rows < template.rows:
        return item
    treedef, leaves = flatten(item)
    return unflatten(treedef, [leaf[:rows] if template.is_batch_leaf(i) else leaf
                               for i, leaf in enumerate(leaves)])


def _round_robin_inline(makers: list[Callable[[], Iterator[Any]]]) -> Iterator[Any]:
    generators = [make() for make in makers]
    while generators:
        for generator in list(generators):
            try:
                yield next(generator)
            except StopIteration:
                generators.remove(generator)


_END = object()


def _thread_stream(makers: list[Callable[[], Iterator[Any]]], depth: int,
                   timeout_s: float | None, name: str) -> Iterator[Any]:
    """Each copy in its own daemon thread, ``depth`` items ahead; taken in turn."""
    stop = threading.Event()
    queues = [queue.Queue(depth) for _ in makers]

    def produce(make, out: queue.Queue) -> None:
        try:
            for item in make():
                while not stop.is_set():
                    try:
                        out.put((item, None), timeout=POLL_S)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            outcome = (_END, None)
        except BaseException as exc:  # noqa: BLE001 - raised in the trainer
            outcome = (_END, (exc, traceback.format_exc()))
        while not stop.is_set():
            try:
                out.put(outcome, timeout=POLL_S)
                return
            except queue.Full:
                continue

    threads = [threading.Thread(target=produce, args=(make, q), daemon=True,
                                name=f"stoke-generator-{k}")
               for k, (make, q) in enumerate(zip(makers, queues, strict=True))]
    for thread in threads:
        thread.start()
    active = list(range(len(makers)))
    try:
        turn = 0
        while active:
            k = active[turn % len(active)]
            started = time.monotonic()
            while True:
                try:
                    item, error = queues[k].get(timeout=POLL_S)
                    break
                except queue.Empty:
                    if timeout_s is not None and time.monotonic() - started > timeout_s:
                        raise StokeError(
                            f"{name} (copy {k}) produced nothing in {timeout_s:.0f} s. If it "
                            "really takes this long, pass a larger timeout_s.") from None
            if item is _END:
                if error is not None:
                    exc, text = error
                    raise StokeError(
                        f"{name} (copy {k}, in a thread) raised {type(exc).__name__}: {exc}\n"
                        f"--- traceback in the thread ---\n{text.rstrip()}") from exc
                active.remove(k)
                continue
            yield item
            turn = active.index(k) + 1
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=1.0)


# ======================================================================================
# Keras
# ======================================================================================

_KERAS_FACES: dict[type, type] = {}


def _keras_face(acc: Any) -> Any:
    """Make ``acc`` something ``model.fit`` takes, when Keras is already imported: its class
    also derives from ``keras.utils.PyDataset`` (with ``workers=1``, so Keras adds no
    enqueuer). The one place to switch to the device feed of ``stoke.keras`` later."""
    if "keras" not in sys.modules:
        return acc
    import keras

    base = type(acc)
    face = _KERAS_FACES.get(base)
    if face is None:
        face = type(base.__name__, (base, keras.utils.PyDataset), {
            "__module__": __name__, "__doc__": base.__doc__,
        })
        _KERAS_FACES[base] = face
    acc.__class__ = face
    keras.utils.PyDataset.__init__(acc, workers=1, use_multiprocessing=False, max_queue_size=10)
    return acc


def keras_face(acc: Any) -> Any:
    """``acc`` as Keras takes it (imports Keras if needed)."""
    import keras  # noqa: F401 - makes _keras_face apply

    return _keras_face(acc)
