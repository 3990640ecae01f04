"""Running one chunk of indices into one batch slot: the inner loop of every worker.

Also the probe that finds the first sample of an epoch, from which the batch layout is made.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stoke.data.program import FILTERED, SampleProgram, prefetch_chunk
from stoke.data.structure import BatchLayout, TreeDef, check_fits, flatten, to_leaf_arrays
from stoke.errors import LayoutError, SampleError


@dataclass(frozen=True)
class Task:
    """One unit of work: run ``indices`` of ``epoch`` into ring slot ``slot``.

    ``kind`` is "chunk" or "probe" (probe: return the first sample that passes the filters).
    """

    task_id: int
    kind: str
    epoch: int
    indices: np.ndarray
    slot: int = -1


@dataclass(frozen=True)
class Result:
    """What a worker says about a task: rows written, float64 leaves cast, or the error."""

    task_id: int
    rows: int = 0
    cast_paths: tuple[str, ...] = ()
    error: BaseException | None = None
    probe: tuple[int, TreeDef, list[np.ndarray]] | None = None
    worker: str = ""


def run_task(program: SampleProgram, task: Task, layout: BatchLayout | None,
             slot_views: list[np.ndarray] | None, worker: str) -> Result:
    """Run a task; errors in user code come back inside the result, never raised."""
    try:
        if task.kind == "probe":
            return Result(task.task_id, probe=probe_first(program, task), worker=worker)
        rows, cast = fill_slot(program, task, layout, slot_views)
        return Result(task.task_id, rows=rows, cast_paths=tuple(cast), worker=worker)
    except (SampleError, LayoutError) as exc:
        return Result(task.task_id, error=exc, worker=worker)


def probe_first(program: SampleProgram, task: Task):
    for index in task.indices:
        sample = program.run(int(index), task.epoch)
        if sample is FILTERED:
            continue
        treedef, leaves = flatten(sample)
        arrays, _ = to_leaf_arrays(leaves, program.dtype_policy, int(index), treedef)
        return int(index), treedef, arrays
    return None


def fill_slot(program: SampleProgram, task: Task, layout: BatchLayout,
              slot_views: list[np.ndarray]) -> tuple[int, list[str]]:
    """Write each kept sample of the chunk into the next row of the slot."""
    if layout.padding is not None:
        from stoke.data.padding import fill_padded_slot

        return fill_padded_slot(program, task, layout, slot_views)
    row = 0
    cast_paths: set[str] = set()
    specs = layout.leaves
    prefetch_chunk(program, task.indices)  # remote shards: the whole chunk's reads at once
    for index in task.indices.tolist():
        sample = program.run(index, task.epoch)
        if sample is FILTERED:
            continue
        treedef, leaves = flatten(sample)
        if treedef == layout.treedef and _fits_exactly(specs, leaves):
            for view, leaf in zip(slot_views, leaves):  # the common case, checked: write it
                view[row] = leaf
            row += 1
            continue
        arrays, cast = to_leaf_arrays(leaves, program.dtype_policy, index, treedef)
        check_fits(layout, arrays, treedef, index)
        for view, array in zip(slot_views, arrays):
            view[row] = array
        cast_paths.update(cast)
        row += 1
    return row, sorted(cast_paths)


def _fits_exactly(specs, leaves) -> bool:
    """Is every leaf an array (or numpy scalar) of exactly its spec's shape and dtype? Then
    it needs no conversion and no check: the fast path of :func:`fill_slot`."""
    for spec, leaf in zip(specs, leaves):
        if not isinstance(leaf, (np.ndarray, np.generic)) or leaf.shape != spec.shape \
                or leaf.dtype != spec.numpy_dtype:
            return False
    return True

