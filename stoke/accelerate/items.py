"""The layout of one item (a whole batch) in the ring, and fitting items to it.

Owns :class:`ItemLayout` (structure, shapes and dtypes of a slot), turning an item into
numeric arrays (:func:`item_arrays`), what a worker puts in a slot (:func:`shape_item`:
a smaller last batch padded, a misfit marked) and what the trainer takes out of it
(:func:`cut_rows`). The ring itself belongs to ``stoke.executors``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from stoke.data.structure import TreeDef, fits_dtype, flatten, leaf_paths, unflatten
from stoke.errors import LayoutError

ROWS_MISFIT = -1  # the item does not fit the slot layout: made again in the trainer
ROWS_END = -2  # the generator copy is exhausted
ROWS_NONE = -3  # the item's first array has no leading (batch) dimension


@dataclass(frozen=True)
class ItemLayout:
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
        go (another structure, other shapes, a dtype whose values would change)."""
        if treedef != self.treedef or len(arrays) != len(self.shapes):
            return None
        pairs = zip(arrays, self.dtypes, strict=True)
        if not all(array.dtype == dtype or fits_dtype(array, np.dtype(dtype))
                   for array, dtype in pairs):
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


def item_arrays(item: Any, where: str) -> tuple[TreeDef, list[np.ndarray]]:
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


def shape_item(template: ItemLayout | None, item: Any, where: str) -> tuple[Any, np.int64]:
    """What the worker puts in the ring for one item: ``(item, rows)``."""
    treedef, arrays = item_arrays(item, where)
    if template is None:  # the probe that the layout is taken from
        rows = arrays[0].shape[0] if arrays and arrays[0].ndim else ROWS_NONE
        return unflatten(treedef, arrays), np.int64(rows)
    fitted = template.fit(treedef, arrays)
    if fitted is None:
        return template.zeros(), np.int64(ROWS_MISFIT)
    arrays, rows = fitted
    return unflatten(template.treedef, arrays), np.int64(rows)


FLOAT64_ADVICE = ("stoke.accelerate delivers float64 as float32 (accelerators train in "
                  "float32; as stoke's pipelines do). Pass stoke.accelerate(..., "
                  "keep_float64=True) to keep float64.")


def float64_message(paths) -> str:
    """The one warning about float64 fields cast, naming them (item paths, e.g. ``[0]``;
    ``""``: the batch is one float64 array)."""
    named = [path for path in paths if path]
    if not named:
        return f"stoke: the batches are float64 arrays: {FLOAT64_ADVICE}"
    return f"stoke: float64 field(s) {', '.join(named)} of the batches: {FLOAT64_ADVICE}"


def cast_float64(item: Any) -> tuple[Any, list[str]]:
    """``item`` with its float64 arrays as float32 (for batches made outside the ring),
    and the paths of those cast (``""``: the item is one array)."""
    treedef, leaves = flatten(item)
    paths = [""] if treedef[0] == "leaf" else leaf_paths(treedef)
    cast = [path for path, leaf in zip(paths, leaves, strict=True)
            if getattr(leaf, "dtype", None) == np.float64]
    if not cast:
        return item, []
    return unflatten(treedef, [leaf.astype(np.float32) if getattr(leaf, "dtype", None)
                               == np.float64 else leaf for leaf in leaves]), cast


def cut_rows(template: ItemLayout, item: Any, rows: int) -> Any:
    if template.rows is None or not 0 <= rows < template.rows:
        return item
    treedef, leaves = flatten(item)
    return unflatten(treedef, [leaf[:rows] if template.is_batch_leaf(i) else leaf
                               for i, leaf in enumerate(leaves)])


def describe_layout(treedef: TreeDef, arrays_or_shapes) -> str:
    shapes = [tuple(getattr(a, "shape", a)) for a in arrays_or_shapes]
    pairs = zip(leaf_paths(treedef), shapes, strict=True)
    return ", ".join(f"{path} {shape}" for path, shape in pairs)
