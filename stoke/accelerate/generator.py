"""A generator run by stoke: :class:`AcceleratedGenerator`, in one worker process, as
``replicas`` copies in worker processes, or (when it cannot be sent) in a background thread.

Owns choosing where it runs (fixed before the first item, said in ``tuning()`` with why),
finding the function behind a generator object, and Keras' view of one continuing stream.
How far ahead process workers run is tuned by :mod:`stoke.autotune.prefetch`. Leaves what a worker runs to :mod:`.generator_program`, how
the copies' items are taken in turn to :mod:`.streams`, and the answers to Keras' requests
to :mod:`.keras_requests`.
"""

from __future__ import annotations

import inspect
import sys
import threading
import types
import warnings
import weakref
from collections.abc import Callable, Iterator
from typing import Any

from stoke.accelerate.accelerated import Accelerated
from stoke.accelerate.channel_loader import ChannelLoader
from stoke.accelerate.generator_program import GeneratorProgram, accepted_names, replica_kwargs
from stoke.accelerate.items import cast_float64, float64_message
from stoke.accelerate.keras_face import held_weakly_by_keras
from stoke.accelerate.keras_requests import (
    KeptBatches,
    KerasRequests,
    as_keras_batch,
    copy_batch,
)
from stoke.accelerate.streams import process_stream, round_robin_inline, thread_stream
from stoke.autotune.prefetch import PrefetchTuner
from stoke.autotune.report import Decision, Tuning
from stoke.data.pipeline import Pipeline
from stoke.errors import StokeError, StokeWarning, UnpicklableError, user_stacklevel
from stoke.executors.host import available_cores, memory_budget_bytes
from stoke.executors.options import LoaderOptions

PROCESS_WHY = (
    "the generator runs apart from the trainer, on a core of its own when one is free (a "
    "crash in it raises instead of killing the training); chosen before its first item: "
    "a running generator cannot move between a process and a thread")
ONE_COPY_WHY = (
    "a generator is one stream in one order, and its state lives where it runs: one "
    "worker runs it, however many cores (Keras 2's workers=N ran N copies of it, each "
    "yielding the same items, in processes, or shared one between threads). "
    "replicas=N runs N copies, for a generator that shards (worker_index/worker_count) or "
    "draws (seed)")
COPIES_WHY = (
    "replicas set by you: each copy's items depend on the number of copies (its shard, its "
    "seed), so the number is not tuned")


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


class AcceleratedGenerator(Accelerated):
    """A generator run by stoke: in a worker process, as ``replicas`` copies in worker
    processes, or (when it cannot be sent to one) in a background thread.

    ``iter()`` yields its items, one pass (the generator run to its end; each later
    ``iter()`` starts it again). ``model.fit(acc, steps_per_epoch=...)`` takes it; Keras'
    epochs then continue one stream, as they did with ``fit_generator``.

    ``endless``: Keras sees a stream without an epoch length (``num_batches`` None), so the
    Keras call must say how many steps to take (``fit(steps_per_epoch=...)``,
    ``evaluate(steps=...)``). Keras then keeps one iterator over it for the whole call;
    with an epoch length, Keras on TensorFlow makes a new ``tf.data`` generator iterator
    every epoch, which cost 0.4 s an epoch in ``benchmarks/keras2_run.py`` (``stoke run``
    sets it when the script gave the steps).

    Without ``steps_per_epoch`` (given to ``accelerate``), Keras reads it as it reads a plain
    generator (:mod:`.keras_face`): ``fit(acc)`` trains one epoch of every item and ends
    it where the generator ends, with Keras' own "ran out of data" warning, exactly as
    ``fit(gen())`` does; each of Keras' calls (``fit``, ``evaluate``, ``predict``) reads a
    new pass (:meth:`keras_batches`).
    """

    endless = False

    def __init__(self, data: Any, args: tuple, kwargs: dict, workers: int | str = "auto",
                 executor: str = "auto", seed: int = 0, replicas: int | None = None,
                 steps_per_epoch: int | None = None, options: dict | None = None,
                 keep_float64: bool = False) -> None:
        self.keep_float64 = bool(keep_float64)
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
            accepted = accepted_names(fn)
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
        self._loader: ChannelLoader | None = None
        self._stream: Iterator[Any] | None = None  # the current pass
        self._passes = 0
        self._lock = threading.RLock()
        self._requests = KerasRequests()  # which of Keras' iterators asks (keras_requests)
        self._kept = KeptBatches()  # the last items given, by item number
        self._items_given = 0
        self._closed = False
        self._copies_told = False  # each worker was sent its copy's index
        if self._kind == "process":
            self._start_loader()  # workers load the generator while the caller goes on

    def _choose_kind(self, executor: str) -> str:
        """Where the generator runs (fixed for good); :attr:`kind_why` says why."""
        self.kind_why = ("not a process: a generator object that was started, or a generator "
                         "expression, cannot be moved to one")
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
                self.kind_why = (f"not a process: it cannot be pickled ({type(exc).__name__}"
                                 f": {exc})")
                warnings.warn(
                    f"stoke.accelerate runs {self.name} in a thread, not a process: it cannot "
                    f"be pickled ({type(exc).__name__}: {exc}). Define it at module level to "
                    "run it in a worker process.", StokeWarning, stacklevel=5)
                return "thread"
            self.kind_why = PROCESS_WHY
            return "process"
        self.kind_why = "set by you"
        return executor

    # -- public ---------------------------------------------------------------------------
    @property
    def executor(self) -> str:
        return self._kind

    def tuning(self) -> Tuning:
        """Where the generator runs and why, and how far ahead it runs: in process workers,
        the ring depth tuned by measurement (steps/s, the consumer's wait, the trainer's
        CPU per step, the copies' CPU per item; see :mod:`stoke.autotune.prefetch`). The
        executor and the number of copies are fixed (a running generator cannot move, and
        its copies' items depend on their number): the report says so."""
        if self._kind == "process":
            return self._start_loader().tuning()
        depth = self._thread_depth() if self._kind == "thread" else 1
        decisions = tuple(Decision(what, choice, why, 0.0, 0)
                          for what, choice, why in self._fixed_decisions())
        ring_why = ("ring_slots set by you" if self._options.get("ring_slots") else
                    "2 per copy + 2") + f"; {depth} item(s) ahead per copy, not tuned in threads"
        return Tuning(self._kind, self.replicas, depth, depth, tuned=False, settled=True,
                      settled_after_s=0.0, cpu_budget_cores=None, memory_budget_bytes=None,
                      decisions=(*decisions, Decision("ring", depth, ring_why, 0.0, 0)))

    def _fixed_decisions(self) -> tuple[tuple[str, Any, str], ...]:
        copies_why = ONE_COPY_WHY if self.replicas == 1 else COPIES_WHY
        return (("executor", self._kind, self.kind_why),
                ("workers", self.replicas, copies_why))

    def iter(self) -> Iterator[Any]:
        """The generator's items, from its start to its end."""
        with self._lock:
            self._stop_stream()
            stream = self._stream = self._new_stream()
        yield from stream

    def close(self) -> None:
        with self._lock:
            self._closed = True
            let_go = self._requests.clear()
            self._stop_stream()
            if self._loader is not None:
                self._loader.close()
        del let_go  # after the lock (see KerasRequests.take_let_go)

    def __repr__(self) -> str:
        return (f"AcceleratedGenerator({self.name}, {self.replicas} cop"
                f"{'y' if self.replicas == 1 else 'ies'}, {self._kind})")

    # -- Keras' PyDataset protocol ---------------------------------------------------------
    @property
    def num_batches(self) -> int | None:
        return None if self.endless else self.steps_per_epoch

    def __getitem__(self, index: int) -> Any:
        """What Keras calls: the next item of the running stream, whatever the index. A new
        iterator of Keras' (after the model's build took an item, say) is given again the
        items an unfinished earlier one got, while they are kept; one that goes on after an
        epoch's end (``fit(steps_per_epoch=k)``) goes on (see :mod:`.keras_requests`)."""
        index = int(index)
        caller = sys._getframe(1)  # the iterator of Keras' that asks (its generator's frame)
        with self._lock:
            stream, new = self._requests.stream(caller, index)
            if new:
                held_weakly_by_keras(self, caller)
            let_go = self._requests.take_let_go()  # dropped on return, after the lock  # noqa: F841
            if new:
                stream.base = self._first_item_for(stream.previous)
            position = stream.asked_before(index)
            if position is None:
                position = stream.take(index, self._requests.epoch_ends)
            key = stream.base + position
            if key < self._items_given:
                batch = self._kept.get(key)
                if batch is not None:
                    return batch
                stream.base = self._items_given - position  # no longer kept: a new item
            batch = as_keras_batch(self._next_item())
            self._kept.put(self._items_given, batch)
            self._items_given += 1
            return batch

    # -- Keras' generator adapter (no epoch length: see keras_face) -------------------------
    def keras_batches(self) -> Iterator[Any]:
        """A new pass of the generator as Keras' generator adapter reads it: each item copied
        out of the ring as a Keras batch (lists as tuples, a bare array as ``(x,)``), to the
        generator's end. Holds this object weakly (TensorFlow keeps what ``tf.data`` iterates
        for good: see :func:`~.keras_face.held_weakly_by_keras`); another reader starting a
        pass (``iter()``, a second Keras call) ends this one with an error, not silently."""
        with self._lock:
            self._stop_stream()
            self._stream = self._new_stream()
            number = self._passes
        return _keras_pass(weakref.ref(self), number)

    def next_keras_batch(self, number: int) -> Any:
        """The next batch of pass ``number`` (see :meth:`keras_batches`), or None at its end."""
        with self._lock:
            if self._passes != number:
                raise StokeError(
                    f"this pass of {self.name} was ended by another reader of it (iter(), or "
                    "another of Keras' calls): give each reader its own stoke.accelerate")
            if self._stream is None:
                return None
            try:
                item = next(self._stream)
            except StopIteration:
                self._stream = None
                return None
            batch = copy_batch(item)
        return batch if isinstance(batch, (tuple, dict)) else (batch,)

    def _first_item_for(self, previous) -> int:
        """Where a new Keras iterator starts: at the first item of the one before it if that
        one stopped early (the model's build) and its items are still kept, else at a new item."""
        steps = self.steps_per_epoch
        if previous is None or (steps is not None and previous.next_position >= steps):
            return self._items_given
        if self._items_given - previous.base > KeptBatches.KEEP:
            return self._items_given
        return previous.base

    def on_epoch_begin(self) -> None:
        pass

    def on_epoch_end(self) -> None:
        with self._lock:
            self._requests.epoch_ended()

    def _next_item(self) -> Any:
        if self._stream is None:
            self._stream = self._new_stream()
        try:
            return copy_batch(next(self._stream))
        except StopIteration:
            self._stream = None
        if self.steps_per_epoch is None:
            raise StokeError(
                f"{self.name} ended, and Keras asked for more: it cannot know an epoch's "
                "length from a generator. Pass steps_per_epoch to fit (or to "
                "stoke.accelerate), or make the generator loop forever.")
        self._stream = self._new_stream()  # a known epoch length: start it again
        try:
            return copy_batch(next(self._stream))
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
            return self._as_float32(round_robin_inline(makers))
        return self._as_float32(thread_stream(makers, self._thread_depth(),
                                              self._options.get("timeout_s"), self.name))

    def _thread_depth(self) -> int:
        """Items each copy's thread makes ahead."""
        depth = self._options.get("ring_slots") or 2 * self.replicas + 2
        return max(1, depth // self.replicas)

    def _as_float32(self, stream: Iterator[Any]) -> Iterator[Any]:
        """Items made outside the ring: float64 cast here (process workers cast in the ring)."""
        if self.keep_float64:
            yield from stream
            return
        warned = False
        try:
            for item in stream:
                item, cast = cast_float64(item)
                if cast and not warned:
                    warned = True
                    warnings.warn(float64_message(cast), StokeWarning,
                                  stacklevel=user_stacklevel())
                yield item
        finally:
            stream.close()

    def _maker(self, index: int) -> Callable[[], Iterator[Any]]:
        def make():
            extra = replica_kwargs(self.fn, self.kwargs, index, self.replicas, self.seed)
            return iter(self.fn(*self.args, **{**self.kwargs, **extra}))

        return make

    def _start_loader(self) -> ChannelLoader:
        """Make the loader and start its worker processes, without waiting for them."""
        if self._loader is None:
            program = GeneratorProgram(self.fn, self.args, self.kwargs, self.seed,
                                       self.keep_float64)
            # one worker per copy, however many the cores: each runs its own copy
            options = LoaderOptions(workers=self.replicas, executor="process",
                                    oversubscribe=True, **self._options)
            # how far ahead the copies run: tuned (stoke.autotune.prefetch)
            tuner = PrefetchTuner(self.replicas, machine_cores=available_cores(),
                                  memory_budget_bytes=memory_budget_bytes(
                                      options.memory_budget_bytes),
                                  ring_slots=options.ring_slots,
                                  fixed=self._fixed_decisions())
            self._loader = ChannelLoader(Pipeline(range(1)), options, program, tuner)
            self._loader.start()
        return self._loader

    def _get_loader(self) -> ChannelLoader:
        loader = self._start_loader()
        if not self._copies_told:
            self._copies_told = True
            for k in range(self.replicas):
                loader.send({"replica": (k, self.replicas)}, worker=k, what="the copy's index")
        return loader

    def _process_stream(self, restart: bool) -> Iterator[Any]:
        loader = self._get_loader()
        if restart:
            loader.send({"restart": True}, what="the generator's restart")
        return process_stream(loader, self.replicas, self.name)


def _keras_pass(ref: weakref.ref, number: int) -> Iterator[Any]:
    """The batches of pass ``number`` of the generator ``ref`` refers to (see
    :meth:`AcceleratedGenerator.keras_batches`); ends when it is collected."""
    while True:
        accelerated = ref()
        if accelerated is None:
            return
        batch = accelerated.next_keras_batch(number)
        del accelerated
        if batch is None:
            return
        yield batch


def _signature(fn: Callable) -> str:
    try:
        return str(inspect.signature(fn))
    except (TypeError, ValueError):
        return "(...)"
