"""A Sequence/PyDataset run by stoke's workers: :class:`AcceleratedSequence`, its passes,
and the per-index program (:class:`_ItemProgram`) its workers run.

Owns the epoch protocol around a dataset: passes in the plan's order, the dataset's
``on_epoch_begin``/``on_epoch_end`` hooks called in the trainer, and the state they change
sent to process workers before the next pass. Leaves the item layout to :mod:`.items`, the
message channel to :mod:`.updates`/:mod:`.channel_loader`, sending a Keras dataset without
Keras to :mod:`.keras_base`, and the answers to Keras' requests to :mod:`.keras_requests`.
"""

from __future__ import annotations

import dataclasses
import itertools
import pickle
import random
import sys
import threading
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np

from stoke.accelerate.accelerated import Accelerated
from stoke.accelerate.channel_loader import ChannelLoader
from stoke.accelerate.items import (
    ROWS_MISFIT,
    ItemLayout,
    cast_float64,
    cut_rows,
    describe_layout,
    item_arrays,
    shape_item,
)
from stoke.accelerate.keras_base import detached_copy
from stoke.accelerate.keras_face import held_weakly_by_keras
from stoke.accelerate.keras_requests import KeptBatches, KerasRequests, KerasStream, copy_batch
from stoke.accelerate.updates import fingerprints, pickled_state
from stoke.accelerate.worker_start import WorkerStart
from stoke.autotune.report import Decision, Tuning
from stoke.data.pipeline import Pipeline
from stoke.data.plan import IteratorState
from stoke.data.program import sample_error
from stoke.data.structure import DtypePolicy, unflatten
from stoke.errors import StokeError, StokeWarning
from stoke.executors.choose import first_workers
from stoke.executors.host import available_cores
from stoke.executors.options import LoaderOptions
from stoke.executors.stand_in_random import StandInRandom

_WRAPPED = itertools.count()  # the Sequences this process wrapped: each stand-in's stream


class _ItemProgram:
    """The per-index program for a Sequence: ``dataset[index]``, shaped for the ring.

    Follows the executors' program protocol (``run``, ``source``, ``steps``,
    ``dtype_policy``, ``has_filter``). When sent to worker processes, a dataset whose class
    derives from ``keras.utils.PyDataset`` travels as a copy whose Keras base is replaced by
    a stand-in (:mod:`.keras_base`), so that workers need not import Keras and a backend.
    """

    steps: tuple = ()
    has_filter = False

    def __init__(self, dataset: Any, seed: int = 0, keep_float64: bool = False) -> None:
        self.source = dataset
        self.seed = seed
        self.dtype_policy = DtypePolicy(keep_float64=keep_float64)  # float64 -> float32
        self.template: ItemLayout | None = None
        self.stage = f"{type(dataset).__name__}.__getitem__"

    def run(self, index: int, epoch: int) -> Any:
        try:
            item = self.source[index]
        except Exception as exc:  # noqa: BLE001 - re-raised with where it happened
            raise sample_error(index, self.stage, exc) from exc
        return shape_item(self.template, item, f"batch {index} of {type(self.source).__name__}")

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
        return (_rebuild_item_program, (detached_copy(self.source), self.seed, self.template,
                                        self.dtype_policy.keep_float64))


def _rebuild_item_program(dataset: Any, seed: int, template: ItemLayout | None,
                          keep_float64: bool = False) -> _ItemProgram:
    program = _ItemProgram(dataset, seed, keep_float64)
    program.template = template
    return program


class _Pass:
    """One pass over a Sequence: its batch iterator, the item order, and the batches kept to
    answer Keras again (keys are positions in the pass). A pass begun at ``first`` (a Keras
    stream that goes on after the dataset's state changed) delivers the positions from there."""

    def __init__(self, epoch: int, batches, order: np.ndarray, first: int = 0) -> None:
        self.epoch = epoch
        self.batches = batches
        self.order = order
        self.first = first
        self.delivered = first
        self.complete = False
        self.kept = KeptBatches()
        self.made_with: dict[str, bytes] | None = None  # deferring: the dataset's state then

    def close(self) -> None:
        if self.batches is not None:
            self.batches.close()
            self.batches = None


class AcceleratedSequence(Accelerated):
    """A Sequence/PyDataset whose ``__getitem__`` runs in stoke's workers.

    ``iter()`` yields numpy batches pass after pass; ``model.fit(acc)`` takes it directly
    (with Keras imported, it is also a ``keras.utils.PyDataset``). Batches from ``iter()``
    are zero-copy views into the ring, never overwritten while referenced; Keras gets copies.

    ``endless``: Keras sees one stream of passes without an epoch length (``num_batches``
    None), as Keras 2's ``fit_generator`` read a Sequence through its ``OrderedEnqueuer``:
    each of Keras' epochs takes the next ``steps_per_epoch`` batches, wrapping around; the
    dataset's ``on_epoch_end`` (and ``on_epoch_begin``) run where a pass ends and the next
    begins, not at Keras' epoch ends. The Keras call must give the steps (``stoke run`` sets
    it for a Keras-2 call whose steps differ from ``len(dataset)``; Keras 3 alone ends such
    an epoch at the pass's end: epochs of 4, 1, 4 steps for 4 of 5 batches). Set it before
    the Keras call; ``iter()`` is not affected. With ``shuffle=True`` each pass is a
    permutation (Keras 2's ``fit_generator`` default); else ``0..n-1``, wrapping around::

        acc = stoke.accelerate(Batches())  # 5 batches
        acc.endless = True
        model.fit(acc, steps_per_epoch=4, epochs=3, shuffle=False)
        # epochs of 4 steps: batches 0-3; 4, 0, 1, 2; 3, 4, 0, 1

    (README.md, "Fewer steps than batches", has it as a script to run.)
    """

    endless = False

    def __init__(self, dataset: Any, workers: int | str = "auto", executor: str = "auto",
                 shuffle: bool | None = None, seed: int = 0, options: dict | None = None,
                 keep_float64: bool = False) -> None:
        self.dataset = dataset
        self.keep_float64 = bool(keep_float64)
        self.shuffle = shuffle  # None: as the consumer asks (Keras' fit shuffles by default)
        self._keras_shuffles: bool | None = None  # seen in fit's requests; None: not yet
        self._random_at_epoch_begin: Any = None  # Python's random state when Keras began
        self.seed = int(seed)
        self.epoch = 0  # the epoch of the next pass
        length = len(dataset)
        if not isinstance(length, int) or length < 0:
            raise TypeError(f"len() of the dataset must be an int >= 0. Received: {length!r}")
        self._options = LoaderOptions(workers=workers, executor=executor, **(options or {}))
        # executor="auto": while every worker still starts, the trainer makes the batches
        # asked (see _made_here); "process": every batch in a worker
        self._start_in_trainer = executor == "auto"
        # executor and workers "auto": no worker starts until the batches made in the
        # trainer say that workers pay (see stoke.accelerate.worker_start)
        self._worker_start = (
            WorkerStart(available_cores(),
                        batches_per_epoch=length, workers=first_workers(self._options))
            if executor == "auto" and workers == "auto" else None)
        # for batches made in the trainer: a stream of this wrapper's own (a Sequence wrapped
        # again for each fit, or a training and a validation set, draw other numbers)
        self._stand_in_random = StandInRandom(self.seed, stream=next(_WRAPPED))
        self._loader: ChannelLoader | None = None
        self._pass: _Pass | None = None
        self._workers_state: dict[str, bytes] | None = None  # what workers with a copy hold
        self._hooks_called = False
        # deferring: note the dataset's state at each pass's first batch (a full pickle of
        # it: 8 ms for 1,000 short lists, 0.5 ms a batch of a 16-batch epoch), needed only
        # for a pass still open at an epoch's end: Keras' look at batch 0 to build the model
        # (at a fit's start), fit(steps_per_epoch=k) (every epoch). So: until a pass has
        # completed; a pass not noted that is open at a hook is taken as made with another
        # state (it is dropped), and every pass is noted from then on (so a later fit of a
        # fresh model, whose build looks at batch 0, pays it again: the order is kept)
        self._note_state_each_pass = True
        self._note_for_good = False
        self._endless_began = False  # endless: the first pass began (on Keras' first epoch)
        self._warned_misfit = False
        self._template: ItemLayout | None = None
        self._requests = KerasRequests()  # which of Keras' iterators asks (keras_requests)
        self._lock = threading.RLock()
        self._closed = False
        if self._worker_start is None:
            # the workers start now, loading the dataset (and what it imports: Keras, say)
            # while the caller builds its model; the first batch waits only for what is left
            self._get_loader().start()

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

    def close(self) -> None:
        """Stop the workers and free the ring. Safe to call twice."""
        with self._lock:
            self._closed = True
            let_go = self._requests.clear()
            if self._pass is not None:
                self._pass.close()
                self._pass = None
            if self._loader is not None:
                self._loader.close()
        del let_go  # after the lock (see KerasRequests.take_let_go)

    @property
    def executor(self) -> str:
        """The executor the workers run in ("process", "thread", "inline"; "inline" while
        the trainer makes the batches because workers would not pay yet)."""
        if self._deferring():
            return "inline"
        return self._get_loader().pool.kind

    @property
    def worker_count(self) -> int:
        """The workers running (0 while the trainer makes the batches)."""
        if self._deferring():
            return 0
        return self._get_loader().pool.workers

    def tuning(self):
        """The workers this dataset runs with and why: with ``executor`` and ``workers``
        "auto", when the workers started (or why not yet: see
        :mod:`stoke.accelerate.worker_start`), what the tuner measured (steps/s, the
        trainer's CPU per step, other processes' share of the cores) and chose (see
        :class:`stoke.autotune.report.Tuning`)."""
        starts = ()
        if self._worker_start is not None:
            starts = tuple(Decision("start", answer.start, answer.why(), 0.0, answer.batches)
                           for answer in self._worker_start.answers)
            if self._deferring():
                return Tuning("inline", 0, None, None, tuned=True, settled=False,
                              settled_after_s=None, cpu_budget_cores=self._options.cpu_budget_cores,
                              memory_budget_bytes=None, decisions=starts)
        report = self._get_loader().tuning()
        return dataclasses.replace(report, decisions=(*starts, *report.decisions))

    def __repr__(self) -> str:
        where = "not started"
        if self._deferring():
            where = "batches made in the trainer"
        elif self._loader is not None and self._loader.started:
            where = f"{self.worker_count} {self.executor} worker(s)"
        return (f"AcceleratedSequence({type(self.dataset).__name__}, {len(self)} batches, "
                f"{where})")

    # -- Keras' PyDataset protocol ----------------------------------------------------------
    @property
    def num_batches(self) -> int | None:
        return None if self.endless else len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        """What Keras calls: the n-th new index one of Keras' iterators asks gets the n-th
        batch of the pass it reads, in the pass's order, whatever the index; an iterator
        that goes on after an epoch's end (``fit(steps_per_epoch=k)``) goes on in its pass
        (see :mod:`.keras_requests`)."""
        if not isinstance(index, (int, np.integer)):
            raise TypeError(f"batch index must be an int. Received: {index!r}")
        index = int(index)
        if index < 0 or (index >= len(self.dataset) and not self.endless):
            raise IndexError(f"batch index {index} out of range for {len(self.dataset)} batches")
        caller = sys._getframe(1)  # the iterator of Keras' that asks (its generator's frame)
        with self._lock:
            stream, new = self._requests.stream(caller, index)
            if new:
                held_weakly_by_keras(self, caller)
            let_go = self._requests.take_let_go()  # dropped on return, after the lock  # noqa: F841
            snapshot, self._random_at_epoch_begin = self._random_at_epoch_begin, None
            if not new:
                position = stream.asked_before(index)
                if position is not None:
                    return self._again(stream.reads, position)
                current = self._pass_going_on(stream, index, snapshot)
            else:
                current = self._pass_for_new_stream(stream, index, snapshot)
            position = stream.take(index, self._requests.epoch_ends)
            if position < current.delivered:  # given to an earlier stream of this pass
                return self._again(current, position)
            got = self._next()
            if got is None:
                raise IndexError(f"the pass has no batch {position}: the dataset has "
                                 f"{len(self.dataset)} batches now")
            batch, position = got
            batch = copy_batch(batch)
            current.kept.put(position, batch)
            return batch

    def _again(self, current: _Pass, position: int) -> Any:
        """The batch at ``position`` of a pass, given once already: kept, or made again
        here (in the trainer, with the dataset as it is now)."""
        batch = current.kept.get(position)
        if batch is None:
            batch = copy_batch(self._made_here(int(current.order[position])))
        return batch

    def _pass_for_new_stream(self, stream: KerasStream, index: int, snapshot: Any) -> _Pass:
        """Keras started over (a new iterator): the stream reads the open pass from its
        first batch (batches given already are given again), in Keras' order."""
        current = self._pass or self._open_pass()
        if snapshot is not None:
            current = self._follow_keras_order(index, current, snapshot)
        if current.first or current.complete:  # it cannot give its first batches again
            self._abandon_pass()
            current = self._open_pass()
        stream.reads = current
        return current

    def _pass_going_on(self, stream: KerasStream, index: int, snapshot: Any) -> _Pass:
        """Keras continues an iterator (``fit(steps_per_epoch=k)``): the next batch of its
        pass. When that pass was dropped (the dataset's state changed at an epoch's end),
        a pass of the same order begins at the stream's next position, so that Keras gets
        the batches its own adapter would: the next indices, with the dataset as it is now."""
        previous = stream.reads
        read_all = stream.next_position >= len(previous.order)
        if read_all or (self._pass is not previous and len(self.dataset) != len(previous.order)):
            # nothing left of its order (or the dataset's length changed): start over
            if read_all and self.endless:
                self._turn_endless_pass()
            stream.restart()
            return self._pass_for_new_stream(stream, index, snapshot)
        if self._pass is previous:
            return previous
        if self._pass is not None:
            self._abandon_pass()
        loader = self._get_loader()
        order = tuple(int(i) for i in previous.order)
        if tuple(loader.plan.order(previous.epoch).tolist()) != order:
            loader.plan = dataclasses.replace(loader.plan, fixed_order=order)
        self.epoch = previous.epoch
        stream.reads = self._open_pass(keep_order=True, first=stream.next_position)
        return stream.reads

    def _turn_endless_pass(self) -> None:
        """Endless mode, a stream read its whole pass: the pass ends (the dataset's
        ``on_epoch_end``) and the next begins (``on_epoch_begin``), as Keras 2's enqueuer
        went on from one pass to the next."""
        self._end_pass(call_hook=True, prefetch_next=True)
        self._call_hook("on_epoch_begin")

    def on_epoch_begin(self) -> None:
        if self.endless and self._endless_began:  # passes begin where the stream turns
            return
        self._endless_began = self.endless
        with self._lock:
            self._call_hook("on_epoch_begin")
            # Keras' PyDataset adapter shuffles right after this (fit's shuffle=True, the
            # default): random.shuffle(list(range(n))) with Python's global random
            self._random_at_epoch_begin = random.getstate()

    def on_epoch_end(self) -> None:
        if self.endless:  # Keras' epoch ends inside a pass; the stream goes on
            return
        with self._lock:
            self._requests.epoch_ended()
            self._end_pass(call_hook=True, prefetch_next=True)

    # -- Keras' order ---------------------------------------------------------------------------
    def _follow_keras_order(self, index: int, current: _Pass, snapshot: Any) -> _Pass:
        """At the first request of a Keras epoch: is fit shuffling (its default), and in
        which order? Keras draws its permutation from Python's ``random`` just after
        ``on_epoch_begin``; the same draw on a copy of that state predicts it, and the first
        index asked confirms it. Then the pass is (re)opened in that order, so the model
        sees the batches in the order Keras itself would give. With ``shuffle`` given to
        ``accelerate``, that choice stands. Only a new iterator of Keras' draws an order
        (``snapshot``: Python's random state at ``on_epoch_begin``)."""
        if self.shuffle is not None:
            return current
        predicted = keras_permutation(snapshot, len(self.dataset))
        if index == predicted[0] and (index != 0 or self._keras_shuffles):
            self._keras_shuffles = True
            if current.delivered or list(current.order) != predicted:
                return self._reopen_pass(tuple(predicted))
        elif index == 0:
            if self._keras_shuffles:  # fit(shuffle=False) after fit(shuffle=True)
                self._keras_shuffles = False
                return self._reopen_pass(None)
            self._keras_shuffles = False
        return current  # an order it cannot predict: the pass's order, each batch once

    def _reopen_pass(self, order: tuple[int, ...] | None) -> _Pass:
        if self._pass is not None:
            self._abandon_pass()
        loader = self._get_loader()
        loader.plan = dataclasses.replace(loader.plan, fixed_order=order)
        return self._open_pass(keep_order=True)

    # -- passes -----------------------------------------------------------------------------
    def _get_loader(self) -> ChannelLoader:
        if self._closed:
            raise StokeError("this accelerated dataset is closed; call stoke.accelerate again")
        if self._loader is None:
            pipeline = Pipeline(self.dataset, shuffled=bool(self.shuffle), seed=self.seed)
            # workers="auto": process workers tuned as to_keras' are (stoke.executors.choose)
            loader = ChannelLoader(pipeline, self._options,
                                   _ItemProgram(self.dataset, self.seed, self.keep_float64))
            loader.notify(self._pool_started, self._layout_known)
            self._loader = loader
        return self._loader

    def _pool_started(self, pool) -> None:
        if not pool.shares_program:
            self._workers_state = fingerprints(self.dataset)

    def _layout_known(self) -> None:
        self._template = self._loader.template()
        self._loader.send({"template": self._template}, what="the batch layout")

    def _open_pass(self, keep_order: bool = False, first: int = 0) -> _Pass:
        """Open the next pass (from position ``first``); its batches are made by the
        workers, or, while they are still starting, in the trainer (see :meth:`_next`)."""
        loader = self._get_loader()
        if not self._deferring():
            loader.start()  # (when closed before: the error says so)
        length = len(self.dataset)
        if length != loader.plan.length:  # Keras reads len() again every epoch; so do we
            loader.plan = dataclasses.replace(loader.plan, length=length, fixed_order=None)
        if not keep_order and self._keras_shuffles:
            # prepared ahead (at the last epoch's end): Keras' next permutation, predicted
            # from Python's random now; checked again at the epoch's first request
            order = tuple(keras_permutation(random.getstate(), length))
            loader.plan = dataclasses.replace(loader.plan, fixed_order=order)
        self._pass = _Pass(self.epoch, None, loader.plan.order(self.epoch), first)
        if not self._deferring() and (not self._start_in_trainer or loader.workers_up()):
            self._start_in_workers(self._pass)
        return self._pass

    def _deferring(self) -> bool:
        """Are the workers not started because they would not pay yet (the trainer makes
        the batches: see :mod:`stoke.accelerate.worker_start`)?"""
        return self._worker_start is not None and not (
            self._loader is not None and self._loader.started)

    def _start_in_workers(self, current: _Pass) -> None:
        """The workers make the rest of the pass, from its next position."""
        loader = self._get_loader()
        loader.pool  # the workers are up; with the dataset as it is now  # noqa: B018
        self._sync_state()
        if len(self.dataset):
            # the ring is laid out for batch 0, a full batch: the pass's next one may be the
            # smaller last batch (a shuffled order, or workers that take over at its end),
            # and a ring sized for it would fit no other
            loader.scheduler.ensure_layout(current.epoch, np.array([0], np.int64))
        current.batches = loader.iter(state=IteratorState(epoch=current.epoch,
                                                          chunk=current.delivered))

    def _made_here(self, index: int) -> Any:
        """Batch ``index`` made in the trainer, as a worker would deliver it (float64 as
        float32 unless kept): before the workers start (:meth:`_made_before_workers`), while
        every worker still loads the dataset (and what it imports: the trainer has all of
        that already, so ``fit``'s first steps need not wait for the workers' start-up), a
        batch that does not fit the ring, a batch given again. The dataset draws from global
        random streams of the trainer's stand-in
        (:class:`~stoke.executors.stand_in_random.StandInRandom`), new numbers for each batch;
        the user's own streams are left as they were."""
        try:
            with self._stand_in_random:
                item = self.dataset[index]
        except Exception as exc:  # noqa: BLE001 - re-raised with where it happened
            raise sample_error(index, f"{type(self.dataset).__name__}.__getitem__",
                               exc) from exc
        treedef, arrays = item_arrays(item, f"batch {index} of {type(self.dataset).__name__}")
        item = unflatten(treedef, arrays)
        if not self.keep_float64:
            item, cast = cast_float64(item)
            if cast:
                self._loader.warn_float64([f"[0]{path}" for path in cast])
        return item

    def _made_before_workers(self, index: int) -> Any:
        """Batch ``index`` made in the trainer before any worker starts, timed; the workers
        start when the times say they pay (they take over once one is up)."""
        rule = self._worker_start
        # (noting turns on only in _state_changed, which drops the open pass: a pass is
        # noted at its first batch or not at all)
        if self._pass.made_with is None and self._note_state_each_pass:
            self._pass.made_with = fingerprints(self.dataset)
        began = rule.now()
        item = self._made_here(index)
        rule.made(began, rule.now())
        if rule.should_start():
            self._get_loader().start()
        return item

    def _next(self) -> tuple[Any, int] | None:
        """The next batch of the open pass and its position, or None at its end."""
        current = self._pass
        if current.complete:
            return None
        try:
            if current.batches is None:
                if self._deferring():
                    return self._deliver(current, self._made_before_workers(
                        int(current.order[current.delivered])))
                if self._start_in_trainer and not self._loader.workers_up():
                    return self._deliver(current, self._made_here(
                        int(current.order[current.delivered])))
                self._start_in_workers(current)
            sample = next(current.batches)
        except StopIteration:
            current.complete = True
            current.close()
            return None
        except BaseException:
            current.close()
            self._pass = None
            raise
        return self._deliver(current, self._unwrap(sample, int(current.order[current.delivered])))

    def _deliver(self, current: _Pass, batch: Any) -> tuple[Any, int]:
        position = current.delivered
        current.delivered += 1
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
        return cut_rows(self._template, item, rows)

    def _made_in_trainer(self, index: int) -> Any:
        item = self._made_here(index)
        if not self._warned_misfit:
            self._warned_misfit = True
            template = self._template
            treedef, arrays = item_arrays(item, f"batch {index}")
            warnings.warn(
                f"stoke.accelerate: batch {index} of {type(self.dataset).__name__} "
                f"({describe_layout(treedef, arrays)}) does not fit the layout of batch 0 "
                f"({describe_layout(template.treedef, template.shapes)}), so it was made in the "
                "trainer process, not in a worker (a smaller last batch is fine; other shapes "
                "are not). Return batches of one shape from __getitem__ for full speed.",
                StokeWarning, stacklevel=4)
        return item

    def _end_pass(self, call_hook: bool, prefetch_next: bool = False) -> None:
        """End of an epoch. A finished pass is closed. An unfinished one (Keras ends an epoch
        early, e.g. after taking one batch to build the model) stays open unless the
        dataset's state changes, so that no prepared batch is thrown away for nothing.

        ``prefetch_next``: with workers that hold a copy of the dataset (processes), open
        the next pass at once, with the state ``on_epoch_end`` left, so that its first
        batches are made while the model finishes this epoch (last step, validation,
        callbacks). If the state changes again before the next epoch begins (a callback's
        doing), that work is dropped and redone."""
        current = self._pass
        if current is not None and current.complete:
            current.close()
            self._pass = None
            self.epoch += 1
            if not self._note_for_good:  # passes end complete: no state noted
                self._note_state_each_pass = False
        if call_hook:
            self._call_hook("on_epoch_end")
        if (prefetch_next and self._pass is None and not self._closed
                and self._loader is not None and not self._deferring()
                and not self._loader.shares_program):
            self._open_pass()

    def _call_hook(self, name: str) -> None:
        """Call the dataset's ``name`` hook (if it has one) in the trainer; an open pass
        whose batches no longer match the dataset's state is dropped."""
        hook = getattr(self.dataset, name, None)
        if (hook is not None and self._pass is not None and not self._deferring()
                and self._loader.shares_program):
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
        """Does the dataset differ from the copy the workers hold (deferring, no worker holds
        one: from what the open pass's batches were made with, by a hook or by anyone since,
        a callback's ``on_train_begin`` say, after Keras took batch 0 to build the model)?"""
        if self._deferring():
            current = self._pass
            if current is None:
                return False
            began = current.delivered > current.first
            if current.made_with is None:  # not noted: its batches taken as made with another
                if began:
                    self._note_for_good = self._note_state_each_pass = True
                return began
            return fingerprints(self.dataset) != current.made_with
        if self._workers_state is None:
            return True
        return fingerprints(self.dataset) != self._workers_state

    def _sync_state(self) -> None:
        """Send process workers the attributes the dataset's hooks changed."""
        if not self._hooks_called or self._workers_state is None:
            return
        self._hooks_called = False
        now = fingerprints(self.dataset)
        sent = self._workers_state
        if now == sent:
            return
        from stoke.executors.payload import dumps

        if not hasattr(self.dataset, "__dict__"):
            update = {"dataset": dumps(detached_copy(self.dataset))}
        else:
            changed = [k for k in now if sent.get(k) != now[k]]
            update = {"state": pickled_state(self.dataset, changed),
                      "deleted": [k for k in sent if k not in now]}
        self._loader.send(update, what="the dataset's state after on_epoch_end")
        self._workers_state = now


def keras_permutation(random_state: Any, length: int) -> list[int]:
    """The batch order Keras' PyDataset adapter draws with ``shuffle=True`` from Python's
    global random in this state (``random.shuffle(list(range(length)))``), drawn on a copy."""
    draw = random.Random()
    draw.setstate(random_state)
    order = list(range(length))
    draw.shuffle(order)
    return order
