"""What a worker runs for a generator: :class:`GeneratorProgram` (one copy of the
generator, asked for its next item by each task) and the keyword arguments each copy gets
(:func:`replica_kwargs`).

Leaves the order in which copies are read to :mod:`.streams`, and the adapter to
:mod:`.generator`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from stoke.accelerate.items import ROWS_END, ItemLayout, shape_item
from stoke.data.program import FILTERED, sample_error
from stoke.data.structure import DtypePolicy
from stoke.errors import StokeError

PROBE_INDEX = -2  # make the first item, keep it for the first chunk


class GeneratorProgram:
    """The program for a generator: each task asks copy ``worker_index`` for its next item.

    A worker holds one copy of the generator (the trainer tells it which, by message). The
    probe's item is kept and delivered again by the first task, so no item is lost to it.
    """

    steps: tuple = ()
    has_filter = False

    def __init__(self, fn: Callable, args: tuple, kwargs: dict, seed: int,
                 keep_float64: bool = False) -> None:
        self.dtype_policy = DtypePolicy(keep_float64=keep_float64)  # float64 -> float32
        self.fn = fn
        self.source = fn
        self.args = args
        self.kwargs = kwargs
        self.seed = seed
        self.template: ItemLayout | None = None
        self.replica = (0, 1)
        self._generator: Iterator | None = None
        self._pending: Any = None
        self._finished = False
        self.stage = f"{getattr(fn, '__qualname__', fn)} (generator)"

    def run(self, index: int, epoch: int) -> Any:
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
        shaped = shape_item(self.template, item, f"item {index} of {self.stage}")
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
    accepted = accepted_names(fn)
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


def accepted_names(fn: Callable) -> set[str]:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return set()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return {"worker_index", "worker_count"}
    return {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
