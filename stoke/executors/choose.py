"""The chooser: from a loader's options to the pool that runs its program and the tuner that
watches it (or none). The one home of the decisions on executor, workers and budgets.

- :func:`start_pool` starts the pool without waiting (its workers load the program in the
  background while the caller builds a model); :func:`finish_start` waits for it and returns
  its :class:`~stoke.autotune.tuner.Tuner`, or None when the user fixed the setting.
- A loader is tuned (:func:`tunes`) when ``workers`` is "auto", or ``executor`` is "auto"
  with more than one worker: an :class:`~stoke.executors.auto.AutoPool` that the tuner
  resizes and may switch between processes and threads. Otherwise a fixed pool
  (:func:`make_pool`): ``workers`` cut to the cores unless ``oversubscribe``.
- A *pinned* pool (``stoke.accelerate``: messages and generator copies go to a given worker)
  is always a plain pool; with ``workers="auto"`` and process workers its worker count is
  tuned through a resizer (:func:`tune_pinned`, e.g.
  :class:`~stoke.accelerate.tuned_workers.TunedWorkers`).
- Budgets: the tuner's cores are every core this process may run on unless
  ``cpu_budget_cores``, its memory a quarter of the available memory unless
  ``memory_budget_bytes`` (both read in :mod:`stoke.executors.host`).
- Callers that know more say so here: ``to_keras`` (:func:`for_training`) and ``stoke run``
  (:func:`for_legacy_script`: tuned, the script's ``workers`` capping the cores).

The measurements and decisions of tuning itself are :mod:`stoke.autotune.tuner`'s; the
options and their checks :mod:`stoke.executors.options`'s.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any

from stoke.autotune.target import TunerTarget
from stoke.autotune.tuner import Tuner, TunerSettings
from stoke.errors import UnpicklableError
from stoke.executors.auto import AutoPool
from stoke.executors.host import available_cores, memory_budget_bytes
from stoke.executors.inline import InlinePool
from stoke.executors.limits import cap_workers
from stoke.executors.options import LoaderOptions, check_workers
from stoke.executors.threads import ThreadPool
from stoke.executors.trainer_first import TrainerFirst

log = logging.getLogger("stoke")

AUTO_EXECUTOR_WHY = (
    "process workers run your code apart from the trainer, so that a sample that crashes "
    "(a segfault in a C extension) raises WorkerDiedError instead of killing the training; "
    "thread workers only when process workers cannot run the pipeline")


# -- what the options mean ----------------------------------------------------------------
def resolve_workers(workers: int | str) -> int:
    """The worker count of a fixed pool: "auto" is every core this process may use."""
    check_workers(workers)
    if workers == "auto":
        return max(1, available_cores())
    return int(workers)  # numpy integers too (np.int64(4) from a config or an array)


def tunes(options: LoaderOptions) -> bool:
    """Does this loader tune? Yes when workers or executor is "auto" (and not inline)."""
    if options.executor in ("inline", "ray"):  # ray sizes itself to its cluster
        return False
    if options.workers == "auto":
        return True
    return options.executor == "auto" and options.workers > 1


def first_workers(options: LoaderOptions, settings: TunerSettings | None = None) -> int:
    """The worker count a tuned pool starts with."""
    settings = settings or TunerSettings()
    if options.workers != "auto":
        return options.workers
    cores = options.cpu_budget_cores or available_cores()
    return max(1, min(settings.start_workers, cores))


def make_tuner(kind: str, options: LoaderOptions, settings: TunerSettings | None = None
               ) -> Tuner:
    """A tuner of ``kind`` workers within ``options``' budgets (cores: every core this
    process may use unless ``cpu_budget_cores``; memory: a quarter of what is available
    unless ``memory_budget_bytes``); attach it to a pool that runs
    ``first_workers(options)``."""
    machine = available_cores()
    cores = options.cpu_budget_cores or machine
    budget = memory_budget_bytes(options.memory_budget_bytes)
    fixed = None if options.workers == "auto" else options.workers
    return Tuner((kind,), cores, fixed_workers=fixed, memory_budget_bytes=budget,
                 ring_slots=options.ring_slots, settings=settings, machine_cores=machine)


# -- starting a pool ------------------------------------------------------------------------
def make_pool(program, options: LoaderOptions,
              on_thread_fallback: Callable[[UnpicklableError], None] | None = None,
              wait: bool = True):
    """The fixed pool ``options`` ask for. "auto" means process workers, even for one; when
    the program cannot be pickled it falls back to threads, logged (or told to
    ``on_thread_fallback``, given the error). ``wait=False``: process workers load the
    program in the background (``pool.wait_ready()`` waits for them)."""
    workers = resolve_workers(options.workers)
    kind = options.executor
    if kind == "auto":
        kind = "process"  # even one worker process overlaps with the consumer
    workers = cap_workers(workers, available_cores(), kind, options.oversubscribe)
    if kind == "ray":
        from stoke.executors.ray import RayPool

        auto = options.workers == "auto"  # on a cluster: its CPUs, not this machine's cores
        return RayPool(program, None if auto else workers, ray_address=options.ray_address)
    if kind == "inline":
        return InlinePool(program)
    if kind == "thread":
        return ThreadPool(program, workers)
    from stoke.executors.processes import ProcessPool

    try:
        return ProcessPool(program, workers, wait=wait)
    except UnpicklableError as exc:
        if options.executor != "auto":
            raise
        if on_thread_fallback is None:
            log.info("stoke: using thread workers: %s", exc)
        else:
            on_thread_fallback(exc)
        return ThreadPool(program, workers)


def start_pool(program: Any, options: LoaderOptions, *, pinned: bool = False,
               on_thread_fallback: Callable[[UnpicklableError], None] | None = None,
               settings: TunerSettings | None = None, trainer_first: bool = False):
    """The pool of a loader, started without waiting: its workers load the program in the
    background while the caller goes on (building a model, say); :func:`finish_start`
    waits for them.

    Tuned (:func:`tunes`): an :class:`AutoPool`; ``executor="auto"`` runs process workers,
    thread workers only when the pipeline cannot be pickled or process workers cannot load
    it (user code in the trainer's threads could take the trainer down with it).
    ``pinned``: a plain pool whose workers can be addressed one by one (``stoke.accelerate``),
    starting with the tuner's first worker count when ``workers="auto"``.
    ``trainer_first`` (``to_keras`` with ``executor="auto"``): process workers are wrapped in
    a :class:`~stoke.executors.trainer_first.TrainerFirst`, so that the caller makes the
    batches asked for until one worker is up."""
    if pinned:
        if options.workers == "auto":
            options = dataclasses.replace(options, workers=first_workers(options, settings))
        return make_pool(program, options, on_thread_fallback=on_thread_fallback, wait=False)
    if not tunes(options):
        pool = make_pool(program, options, on_thread_fallback=on_thread_fallback, wait=False)
    else:
        kinds = ("process", "thread") if options.executor == "auto" else (options.executor,)
        pool = AutoPool(program, kinds, first_workers(options, settings), wait=False)
    if trainer_first and pool.kind == "process":
        return TrainerFirst(pool, program)
    return pool


def finish_start(pool, options: LoaderOptions, settings: TunerSettings | None = None,
                 *, resizer: TunerTarget | None = None) -> Tuner | None:
    """Wait until the workers of ``pool`` (from :func:`start_pool`) are up (one of them;
    none when the trainer makes the first batches meanwhile); returns the tuner of a tuned
    pool (:func:`tunes`: the worker count and ring depth within the cores the trainer
    leaves, measured, and the memory budget), else None. ``resizer``: the pool is pinned
    (``start_pool(..., pinned=True)``); its tuner, if any, is :func:`tune_pinned`'s, through
    ``resizer``."""
    pool.wait_ready(first=True)  # the others take tasks once they are up
    if resizer is not None:
        return tune_pinned(pool, options, resizer, settings)
    if isinstance(pool, TrainerFirst):
        pool = pool.workers_pool
    if not tunes(options):  # start_pool made a fixed pool
        return None
    tuner = make_tuner(pool.kind, options, settings)
    if options.executor == "auto" and pool.kind == "process":
        tuner.decide("executor", "process", AUTO_EXECUTOR_WHY)
    tuner.attach(pool)
    return tuner


def tune_pinned(pool, options: LoaderOptions, resizer: TunerTarget,
                settings: TunerSettings | None = None) -> Tuner | None:
    """The tuner of a pinned pool (from ``start_pool(..., pinned=True)``, up): with
    ``workers="auto"`` and process workers, a tuner that resizes it through ``resizer``
    (a :class:`~stoke.autotune.target.TunerTarget`); else None."""
    if options.workers != "auto" or pool.kind != "process":
        return None
    tuner = make_tuner("process", options, settings)
    tuner.attach(resizer)
    return tuner


# -- what callers know --------------------------------------------------------------------
def for_training(program: Any, workers: int | str, executor: str) -> tuple[int | str, str]:
    """``(workers, executor)`` for a feed of ``model.fit`` (``to_keras``).

    Tuned by measurement (:mod:`stoke.autotune.tuner`): the workers get the cores the trainer
    leaves, measured (its own CPU time per step), not a whole core reserved for it. Under
    ``fit`` the trainer's own Python (dispatch, callbacks) competes with thread workers for
    the GIL, and a trial window during compilation measures the trainer, not the workers:
    so ``executor="auto"`` means processes whenever the program can travel. A Ray cluster
    with ``workers="auto"`` gets every core here but the trainer's."""
    if workers == "auto" and executor == "ray":
        return max(1, available_cores() - 1), executor
    if executor == "auto":
        from stoke.executors.payload import can_pickle

        executor = "process" if can_pickle(program) else "thread"
    return workers, executor


def for_legacy_script(workers: int | str, asked: Any) -> dict[str, Any]:
    """The worker options (``stoke.accelerate``'s ``workers`` and ``cpu_budget_cores``) of a
    dataset of a Keras-2 script run by ``stoke run``: ``workers`` given to stoke (``stoke
    run --workers N``) is a fixed count; else the workers are tuned as ``to_keras``' are,
    and what the script asked for (``fit(workers=N)`` or the dataset's own ``workers``)
    caps the cores they may take (at most the cores this process may use). Keras 2's
    default, one worker, is no cap: it was rarely a choice."""
    if workers != "auto":
        return {"workers": workers}
    if isinstance(asked, int) and not isinstance(asked, bool) and asked > 1:
        return {"workers": "auto", "cpu_budget_cores": min(asked, available_cores())}
    return {"workers": "auto"}
